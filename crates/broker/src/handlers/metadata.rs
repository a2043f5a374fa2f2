//! Metadata: the live brokers, the controller, and topics with their partitions' leaders,
//! replicas, ISR and offline replicas. As in KRaft, a fenced broker is not listed, its
//! replicas are offline, and a partition whose leader is not live answers
//! LEADER_NOT_AVAILABLE with leader -1 (clients wait and ask again). Unknown topics are
//! created here when auto.create.topics.enable is on and the client allows it.

use gregor_metadata::controller::validate_topic_name;
use gregor_metadata::{ControllerError, MetadataImage, TopicImage};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};

use super::wire::{code, s, NONE};
use crate::broker::{Broker, CommitError};

pub fn handle(broker: &Broker, request: MetadataRequest, version: i16) -> MetadataResponse {
    // v0 asks for every topic with an empty list; later versions with a null one.
    let requested: Option<Vec<String>> = match request.topics {
        None => None,
        Some(list) if list.is_empty() && version == 0 => None,
        Some(list) => Some(
            list.into_iter()
                .filter_map(|t| t.name.map(|n| n.0.to_string()))
                .collect(),
        ),
    };
    // Before v4 there is no flag and auto-creation follows the broker config alone.
    let allow_auto_create = version < 4 || request.allow_auto_topic_creation;
    let mut topics = Vec::new();
    match requested {
        None => {
            let image = broker.image();
            topics.extend(
                image
                    .topics
                    .values()
                    .map(|t| topic_entry(broker, &image, t)),
            );
        }
        Some(names) => {
            for name in names {
                topics.push(requested_topic(broker, &name, allow_auto_create));
            }
        }
    }
    let image = broker.image();
    let brokers = image
        .live_brokers()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.node_id))
                .with_host(s(b.host.clone()))
                .with_port(b.port as i32)
                .with_rack(b.rack.clone().map(s))
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(s(broker.cluster_id.clone())))
        .with_controller_id(BrokerId(broker.active_controller_id()))
        .with_topics(topics)
        .with_cluster_authorized_operations(i32::MIN)
}

fn requested_topic(broker: &Broker, name: &str, allow_auto_create: bool) -> MetadataResponseTopic {
    let error = |e: ResponseError| {
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(s(name))))
            .with_error_code(code(e))
            .with_topic_authorized_operations(i32::MIN)
    };
    let image = broker.image();
    if let Some(t) = image.topic(name) {
        return topic_entry(broker, &image, t);
    }
    if validate_topic_name(name).is_err() {
        return error(ResponseError::InvalidTopicException);
    }
    if !allow_auto_create {
        return error(ResponseError::UnknownTopicOrPartition);
    }
    match broker.auto_create_topic(name) {
        Ok(true) => match broker.image().topic(name) {
            Some(t) => topic_entry(broker, &broker.image(), t),
            None => error(ResponseError::LeaderNotAvailable),
        },
        Ok(false) => error(ResponseError::UnknownTopicOrPartition),
        Err(CommitError::Refused(ControllerError::InvalidTopic(_))) => {
            error(ResponseError::InvalidTopicException)
        }
        Err(e) => {
            tracing::warn!(topic = name, error = %e, "auto-creation failed");
            error(ResponseError::UnknownServerError)
        }
    }
}

/// A topic's entry as this broker sees it: the image's leaders and ISR, and this broker
/// among the offline replicas of the partitions it could not open (a partition it should
/// lead answers KAFKA_STORAGE_ERROR, as Produce and Fetch do).
fn topic_entry(
    broker: &Broker,
    image: &MetadataImage,
    topic: &TopicImage,
) -> MetadataResponseTopic {
    let ids = |ids: &mut dyn Iterator<Item = &i32>| ids.copied().map(BrokerId).collect();
    let partitions = topic
        .partitions
        .values()
        .map(|p| {
            let leader_live = image.is_live(p.leader);
            let offline_here = p.replicas.contains(&broker.node_id)
                && broker
                    .replicas
                    .offline_reason((topic.topic_id, p.partition))
                    .is_some();
            let offline = |r: &&i32| !image.is_live(**r) || (offline_here && **r == broker.node_id);
            MetadataResponsePartition::default()
                .with_error_code(if offline_here && p.leader == broker.node_id {
                    code(ResponseError::KafkaStorageError)
                } else if leader_live {
                    NONE
                } else {
                    code(ResponseError::LeaderNotAvailable)
                })
                .with_partition_index(p.partition)
                .with_leader_id(BrokerId(if leader_live { p.leader } else { -1 }))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(ids(&mut p.replicas.iter()))
                .with_isr_nodes(ids(&mut p.isr.iter()))
                .with_offline_replicas(ids(&mut p.replicas.iter().filter(offline)))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_error_code(NONE)
        .with_name(Some(TopicName(s(topic.name.clone()))))
        .with_topic_id(topic.topic_id)
        .with_is_internal(crate::internal_topic::is_internal(&topic.name))
        .with_partitions(partitions)
        .with_topic_authorized_operations(i32::MIN)
}
