//! DescribeTopicPartitions (API 75, KIP-966): topics and their partitions as Metadata gives
//! them, plus each partition's eligible leader replicas, paged: topics in name order, at most
//! `response_partition_limit` partitions (capped at [`MAX_PARTITIONS`]) per response, and a
//! cursor (topic, partition) where the next request goes on.

use gregor_metadata::controller::validate_topic_name;
use gregor_metadata::{MetadataImage, TopicImage};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};

use super::wire::{code, s, NONE};
use crate::broker::Broker;

/// The most partitions one response holds (Kafka's
/// `max.request.partition.size.limit` default).
pub const MAX_PARTITIONS: usize = 2000;

pub fn handle(
    broker: &Broker,
    request: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let image = broker.image();
    let limit = match request.response_partition_limit {
        n if n > 0 => (n as usize).min(MAX_PARTITIONS),
        _ => MAX_PARTITIONS,
    };
    // The topics asked for (all when none is named), in name order.
    let mut names: Vec<String> = if request.topics.is_empty() {
        image.topics.keys().cloned().collect()
    } else {
        request
            .topics
            .iter()
            .map(|t| t.name.0.to_string())
            .collect()
    };
    names.sort();
    names.dedup();
    let cursor = request
        .cursor
        .as_ref()
        .map(|c| (c.topic_name.0.to_string(), c.partition_index.max(0)));
    if let Some((topic, _)) = &cursor {
        if !request.topics.is_empty() && !names.contains(topic) {
            // Kafka refuses a cursor outside the topics asked for: answered as an error on
            // that topic, nothing else.
            return DescribeTopicPartitionsResponse::default()
                .with_topics(vec![error_topic(topic, ResponseError::InvalidRequest)]);
        }
    }
    let mut topics = Vec::new();
    let mut left = limit;
    let mut next_cursor = None;
    let start = cursor
        .as_ref()
        .map_or(0, |(topic, _)| names.partition_point(|n| n < topic));
    for name in &names[start..] {
        let first = match &cursor {
            Some((topic, partition)) if topic == name => *partition,
            _ => 0,
        };
        if left == 0 {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(TopicName(s(name.clone())))
                    .with_partition_index(first),
            );
            break;
        }
        let Some(t) = image.topic(name) else {
            let e = if validate_topic_name(name).is_err() {
                ResponseError::InvalidTopicException
            } else {
                ResponseError::UnknownTopicOrPartition
            };
            topics.push(error_topic(name, e));
            continue;
        };
        let (entry, rest) = topic_entry(&image, t, first, left);
        left -= entry.partitions.len();
        topics.push(entry);
        if let Some(partition) = rest {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(TopicName(s(name.clone())))
                    .with_partition_index(partition),
            );
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}

fn error_topic(name: &str, e: ResponseError) -> DescribeTopicPartitionsResponseTopic {
    DescribeTopicPartitionsResponseTopic::default()
        .with_error_code(code(e))
        .with_name(Some(TopicName(s(name))))
        .with_topic_authorized_operations(i32::MIN)
}

/// `topic` from partition `first` on, at most `limit` partitions; and the first partition
/// left out, if any.
fn topic_entry(
    image: &MetadataImage,
    topic: &TopicImage,
    first: i32,
    limit: usize,
) -> (DescribeTopicPartitionsResponseTopic, Option<i32>) {
    let ids = |ids: &mut dyn Iterator<Item = &i32>| ids.copied().map(BrokerId).collect();
    let mut wanted = topic.partitions.range(first..);
    let partitions = wanted
        .by_ref()
        .take(limit)
        .map(|(_, p)| {
            let leader_live = image.is_live(p.leader);
            DescribeTopicPartitionsResponsePartition::default()
                .with_error_code(if leader_live {
                    NONE
                } else {
                    code(ResponseError::LeaderNotAvailable)
                })
                .with_partition_index(p.partition)
                .with_leader_id(BrokerId(if leader_live { p.leader } else { -1 }))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(ids(&mut p.replicas.iter()))
                .with_isr_nodes(ids(&mut p.isr.iter()))
                .with_eligible_leader_replicas(Some(ids(&mut p.elr.iter())))
                // Gregor keeps the last eligible replica in the ELR instead.
                .with_last_known_elr(Some(Vec::new()))
                .with_offline_replicas(ids(&mut p.replicas.iter().filter(|r| !image.is_live(**r))))
        })
        .collect();
    let rest = wanted.next().map(|(&index, _)| index);
    let entry = DescribeTopicPartitionsResponseTopic::default()
        .with_error_code(NONE)
        .with_name(Some(TopicName(s(topic.name.clone()))))
        .with_topic_id(topic.topic_id)
        .with_is_internal(crate::internal_topic::is_internal(&topic.name))
        .with_partitions(partitions)
        .with_topic_authorized_operations(i32::MIN);
    (entry, rest)
}
