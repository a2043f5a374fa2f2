//! DescribeCluster: the brokers, the controller and the cluster id.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::wire::{s, NONE};
use crate::broker::Broker;

pub fn describe(broker: &Broker, _request: DescribeClusterRequest) -> DescribeClusterResponse {
    let image = broker.image();
    let brokers = image
        .brokers
        .values()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.node_id))
                .with_host(s(b.host.clone()))
                .with_port(b.port as i32)
                .with_rack(b.rack.clone().map(s))
        })
        .collect();
    DescribeClusterResponse::default()
        .with_error_code(NONE)
        .with_cluster_id(s(broker.cluster_id.clone()))
        .with_controller_id(BrokerId(broker.active_controller_id()))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(i32::MIN)
}
