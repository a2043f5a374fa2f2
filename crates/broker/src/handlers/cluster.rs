//! DescribeCluster (the brokers, the controller and the cluster id) and DescribeQuorum (the
//! metadata quorum).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_quorum_response::{PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, DescribeQuorumRequest,
    DescribeQuorumResponse,
};

use super::wire::{code, s, NONE};
use crate::broker::Broker;

/// DescribeCluster lists the live brokers, as Kafka's KRaft brokers do.
pub fn describe(broker: &Broker, _request: DescribeClusterRequest) -> DescribeClusterResponse {
    let image = broker.image();
    let brokers = image
        .live_brokers()
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

/// The metadata log's topic name, as DescribeQuorum addresses it.
const METADATA_TOPIC: &str = "__cluster_metadata";

/// DescribeQuorum: the metadata quorum's leader, epoch, and each voter's progress as the
/// leader sees it, at any broker (one that is not the leader asks it, as KRaft brokers
/// forward the request to the controller; NOT_LEADER_OR_FOLLOWER when none answers). Offsets are the quorum's
/// log indexes (one per batch); observers are the brokers that follow the log without
/// voting.
pub fn describe_quorum(broker: &Broker, request: DescribeQuorumRequest) -> DescribeQuorumResponse {
    let status = broker.leader_quorum_status();
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let data = PartitionData::default().with_partition_index(p.partition_index);
                    if t.topic_name.0.as_str() != METADATA_TOPIC || p.partition_index != 0 {
                        return data
                            .with_error_code(code(ResponseError::UnknownTopicOrPartition))
                            .with_leader_id(BrokerId(-1))
                            .with_leader_epoch(-1)
                            .with_high_watermark(-1);
                    }
                    let st = match &status {
                        Ok(st) => st,
                        Err(why) => {
                            return data
                                .with_error_code(code(ResponseError::NotLeaderOrFollower))
                                .with_error_message(Some(s(why.clone())))
                                .with_leader_id(BrokerId(-1))
                                .with_leader_epoch(-1)
                                .with_high_watermark(-1);
                        }
                    };
                    let leader = st.leader.unwrap_or(-1);
                    let data = data
                        .with_leader_id(BrokerId(leader))
                        .with_leader_epoch(i32::try_from(st.epoch).unwrap_or(i32::MAX))
                        .with_high_watermark(st.applied_index.map_or(-1, |i| i as i64));
                    if leader != st.node_id {
                        return data.with_error_code(code(ResponseError::NotLeaderOrFollower));
                    }
                    let replica = |id: &i32| {
                        let end = if *id == st.node_id {
                            st.last_index
                        } else {
                            st.replication.get(id).copied().flatten()
                        };
                        ReplicaState::default()
                            .with_replica_id(BrokerId(*id))
                            .with_log_end_offset(end.map_or(-1, |i| i as i64 + 1))
                            .with_last_fetch_timestamp(-1)
                            .with_last_caught_up_timestamp(-1)
                    };
                    data.with_error_code(NONE)
                        .with_current_voters(st.voters.iter().map(replica).collect())
                        .with_observers(st.observers.iter().map(replica).collect())
                })
                .collect();
            TopicData::default()
                .with_topic_name(t.topic_name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeQuorumResponse::default()
        .with_error_code(NONE)
        .with_topics(topics)
}
