//! ListOffsets: earliest, latest, max-timestamp and by-timestamp lookups per partition.
//! With isolation level read_committed (1), "latest" is the last stable offset and a
//! by-timestamp answer must lie below it, as for Kafka.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::wire::{code, leader_epoch_error, NONE};
use crate::broker::Broker;
use crate::partition::{FetchIsolation, Partition};
use crate::record_scan::{first_at_or_after, max_timestamp_record};

/// An answer to one partition's query.
struct Found {
    offset: i64,
    timestamp: i64,
}

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
/// Enough bytes to read one batch header; the read returns the whole batch anyway.
const ONE_BATCH_BYTES: usize = 1;
/// ListOffsetsRequest.isolation_level of a read_committed consumer.
const READ_COMMITTED: i8 = 1;

/// ListOffsetsRequest.replica_id of Kafka's debugging tools, which may ask a follower.
const DEBUGGING_REPLICA_ID: i32 = -2;

pub fn handle(broker: &Broker, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let read_committed = request.isolation_level == READ_COMMITTED;
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let base = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1)
                        .with_leader_epoch(-1);
                    let Some(partition) = broker.replicas.get(&name, p.partition_index) else {
                        return base
                            .with_error_code(code(broker.not_hosted_error(&name, p.partition_index)));
                    };
                    // Only the leader answers, but for Kafka's debugging replica id.
                    if request.replica_id.0 != DEBUGGING_REPLICA_ID && !partition.is_leader() {
                        return base.with_error_code(code(ResponseError::NotLeaderOrFollower));
                    }
                    let epoch = partition.leader_epoch();
                    if let Some(e) = leader_epoch_error(p.current_leader_epoch, epoch) {
                        return base.with_error_code(code(e));
                    }
                    match lookup(&partition, p.timestamp, read_committed) {
                        Ok(Some(found)) => base
                            .with_error_code(NONE)
                            .with_offset(found.offset)
                            .with_timestamp(found.timestamp)
                            // The field exists from v4; the codec refuses it earlier.
                            .with_leader_epoch(if version >= 4 { epoch } else { -1 }),
                        Ok(None) => base.with_error_code(NONE),
                        Err(e) => {
                            tracing::warn!(topic = %name, partition = p.partition_index, error = %e, "offset lookup failed");
                            base.with_error_code(code(ResponseError::KafkaStorageError))
                        }
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// The offset (and timestamp) answering `timestamp`; `None` when no record qualifies.
fn lookup(
    partition: &Partition,
    timestamp: i64,
    read_committed: bool,
) -> Result<Option<Found>, String> {
    // The end of what a consumer of this isolation level may read.
    let end = if read_committed {
        partition.last_stable_offset()
    } else {
        partition.high_watermark()
    };
    match timestamp {
        LATEST => Ok(Some(Found {
            offset: end,
            timestamp: -1,
        })),
        EARLIEST => Ok(Some(Found {
            offset: partition.log_start_offset(),
            timestamp: -1,
        })),
        MAX_TIMESTAMP => {
            let Some((_, base)) = partition.with_log(|log| log.max_timestamp()) else {
                return Ok(None);
            };
            let batch = read_batch(partition, base)?;
            Ok(max_timestamp_record(&batch)?.map(|r| Found {
                offset: r.offset,
                timestamp: r.timestamp,
            }))
        }
        t if t >= 0 => {
            let base = partition
                .with_log(|log| log.batch_for_timestamp(t))
                .map_err(|e| e.to_string())?;
            let Some(base) = base.filter(|b| *b < end) else {
                return Ok(None);
            };
            let batch = read_batch(partition, base)?;
            Ok(first_at_or_after(&batch, t)?
                .filter(|r| r.offset < end)
                .map(|r| Found {
                    offset: r.offset,
                    timestamp: r.timestamp,
                }))
        }
        other => Err(format!("unsupported timestamp query {other}")),
    }
}

fn read_batch(partition: &Partition, base_offset: i64) -> Result<bytes::Bytes, String> {
    let read = partition
        .read(
            base_offset,
            ONE_BATCH_BYTES,
            true,
            FetchIsolation::HighWatermark,
        )
        .map_err(|e| e.to_string())?;
    if read.records.is_empty() {
        return Err(format!("no batch at offset {base_offset}"));
    }
    Ok(read.records)
}
