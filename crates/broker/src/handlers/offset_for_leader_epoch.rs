//! OffsetForLeaderEpoch (KIP-101, KIP-279, KIP-320): for each partition, the largest leader
//! epoch at or below the one asked for and the offset where it ended in this leader's log,
//! so a follower (or a consumer after a leader change) finds where its log diverges.
//! Answered by the partition's leader only; the request's replica id (consumer -1, debug
//! -2, or a follower's broker id) does not change the answer.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::wire::{code, leader_epoch_error, NONE};
use crate::broker::Broker;

/// Kafka's UNDEFINED answer: no epoch at or below the one asked for.
const UNDEFINED_EPOCH: i32 = -1;
const UNDEFINED_OFFSET: i64 = -1;

pub fn handle(
    broker: &Broker,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    end_offset(
                        broker,
                        t.topic.0.as_str(),
                        p.partition,
                        p.current_leader_epoch,
                        p.leader_epoch,
                    )
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default()
        .with_throttle_time_ms(0)
        .with_topics(topics)
}

/// One partition's answer.
fn end_offset(
    broker: &Broker,
    topic: &str,
    index: i32,
    current_leader_epoch: i32,
    leader_epoch: i32,
) -> EpochEndOffset {
    let answer = EpochEndOffset::default()
        .with_partition(index)
        .with_leader_epoch(UNDEFINED_EPOCH)
        .with_end_offset(UNDEFINED_OFFSET);
    let partition = match broker.led_partition(topic, index) {
        Ok(p) => p,
        Err(e) => return answer.with_error_code(code(e)),
    };
    if let Some(e) = leader_epoch_error(current_leader_epoch, partition.leader_epoch()) {
        return answer.with_error_code(code(e));
    }
    match partition.end_offset_for_epoch(leader_epoch) {
        Some((found, end)) => answer
            .with_error_code(NONE)
            .with_leader_epoch(found)
            .with_end_offset(end),
        None => answer.with_error_code(NONE),
    }
}
