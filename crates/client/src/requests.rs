//! Request-building helpers shared by the admin client and the consumer, so that both
//! encode the same Kafka structures (topic names, per-topic grouping, offset commits) the
//! same way.

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

/// A protocol topic name from a plain string.
pub(crate) fn topic_name(t: &str) -> TopicName {
    TopicName(StrBytes::from_string(t.to_string()))
}

/// Groups `(topic, partition, value)` items by topic, keeping first-seen topic order.
pub(crate) fn by_topic<V: Clone>(items: &[(String, i32, V)]) -> Vec<(String, Vec<(i32, V)>)> {
    let mut out: Vec<(String, Vec<(i32, V)>)> = Vec::new();
    for (t, p, v) in items {
        match out.iter_mut().find(|(name, _)| name == t) {
            Some((_, ps)) => ps.push((*p, v.clone())),
            None => out.push((t.clone(), vec![(*p, v.clone())])),
        }
    }
    out
}

/// The topics of an OffsetCommit request for `(topic, partition, offset)` items. Both the
/// admin client (`alter_consumer_group_offsets`) and the consumer's commit send the same
/// shape; the leader epoch is left at the codec default of -1 ("unknown"), which is what
/// both want.
pub(crate) fn offset_commit_topics(
    offsets: &[(String, i32, i64)],
) -> Vec<OffsetCommitRequestTopic> {
    by_topic(offsets)
        .into_iter()
        .map(|(t, ps)| {
            OffsetCommitRequestTopic::default()
                .with_name(topic_name(&t))
                .with_partitions(
                    ps.into_iter()
                        .map(|(p, o)| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(o)
                        })
                        .collect(),
                )
        })
        .collect()
}

/// The topics of a ListOffsets request for `(topic, partition, timestamp)` items, where the
/// timestamp is a time or one of the special values (-1 latest, -2 earliest, -3 max
/// timestamp). Both the admin client's `list_offsets` and the consumer's offset reset send
/// this shape, with the leader epoch unknown (-1).
pub(crate) fn list_offsets_topics(items: &[(String, i32, i64)]) -> Vec<ListOffsetsTopic> {
    by_topic(items)
        .into_iter()
        .map(|(t, ps)| {
            ListOffsetsTopic::default()
                .with_name(topic_name(&t))
                .with_partitions(
                    ps.into_iter()
                        .map(|(p, timestamp)| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_current_leader_epoch(-1)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_commit_leader_epoch_is_unknown() {
        let topics = offset_commit_topics(&[("a".into(), 0, 5), ("b".into(), 1, 7)]);
        assert_eq!(topics.len(), 2);
        let p = &topics[0].partitions[0];
        assert_eq!((p.partition_index, p.committed_offset), (0, 5));
        assert_eq!(p.committed_leader_epoch, -1);
    }
}
