//! The internal topics (`__consumer_offsets`, `__transaction_state`): the one definition of
//! which topics are internal (Metadata reports them so, clients may not produce to them),
//! and reading them back for the coordinators' replay at start-up.

use std::collections::BTreeSet;
use std::sync::Mutex;

use gregor_storage::batch::BatchIter;

use crate::coordinator_services::CoordinatorServices;
use crate::group::offsets_log::{decode_kv_batches, KvBatch};
use crate::partition::{FetchIsolation, Partition};

/// The group coordinator's topic: group metadata and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// The transaction coordinator's topic: the state of every transactional id.
pub const TXN_STATE_TOPIC: &str = "__transaction_state";

/// Whether `topic` is one of the broker's own topics, which only coordinators write.
pub fn is_internal(topic: &str) -> bool {
    topic == OFFSETS_TOPIC || topic == TXN_STATE_TOPIC
}

/// The partition count a coordinator places keys by: its topic's own once the topic exists
/// (with a warning, once per topic and count, when that differs from `configured`), else
/// `configured`.
pub fn key_partition_count(
    services: &dyn CoordinatorServices,
    topic: &str,
    configured: i32,
) -> i32 {
    /// The mismatches already warned of (this runs on every metadata change).
    static WARNED: Mutex<BTreeSet<(String, i32, i32)>> = Mutex::new(BTreeSet::new());
    let Some(count) = services.partition_count(topic) else {
        return configured;
    };
    let first_time = || {
        WARNED
            .lock()
            .expect("warned set poisoned")
            .insert((topic.to_string(), count, configured))
    };
    if count != configured && first_time() {
        tracing::warn!(
            topic,
            partitions = count,
            configured,
            "the internal topic keeps the partition count it was created with"
        );
    }
    count
}

/// Every batch of `partition` from its log start to its log end, decoded (a coordinator
/// that just became leader loads what its log holds, committed or about to be).
pub fn read_kv_batches(partition: &Partition) -> Result<Vec<KvBatch>, String> {
    read_kv_batches_from(partition, partition.log_start_offset()).map(|(batches, _)| batches)
}

/// The batches of `partition` from `from` to its log end, decoded, and the offset after the
/// last one read (where a later read goes on). A batch that does not decode (not written by
/// a coordinator) is skipped with a warning naming the topic, partition and offset, so one
/// bad batch cannot stop the broker from starting.
pub fn read_kv_batches_from(
    partition: &Partition,
    from: i64,
) -> Result<(Vec<KvBatch>, i64), String> {
    const CHUNK_BYTES: usize = 1 << 20;
    let mut out = Vec::new();
    let mut offset = from.max(partition.log_start_offset());
    let end = partition.log_end_offset();
    while offset < end {
        let read = partition
            .read(offset, CHUNK_BYTES, true, FetchIsolation::LogEnd)
            .map_err(|e| e.to_string())?;
        if read.records.is_empty() {
            break;
        }
        let mut next = offset;
        for (header, bytes) in BatchIter::new(&read.records) {
            // A read starts at the batch holding `offset`; batches already seen are skipped.
            let last = header.last_offset();
            if last >= offset {
                match decode_kv_batches(bytes) {
                    Ok(batches) => out.extend(batches),
                    Err(e) => tracing::warn!(
                        topic = %partition.topic,
                        partition = partition.index,
                        offset = header.base_offset,
                        error = %e,
                        "skipping a batch the coordinator cannot decode"
                    ),
                }
            }
            next = next.max(last + 1);
        }
        if next == offset {
            // Not even one whole batch came back (a batch larger than the chunk is read
            // whole, so this means the log ends here).
            break;
        }
        offset = next;
    }
    Ok((out, offset))
}
