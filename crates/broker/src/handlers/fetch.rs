//! Fetch: read whole record batches below the high watermark (read_uncommitted) or the last
//! stable offset (read_committed, with the aborted transactions in range), within the
//! request's byte limits, and long-poll until min_bytes are available or max_wait_ms passes.
//!
//! The wait is a delayed operation: it subscribes to the high-watermark notifications of the
//! partitions it reads and re-reads only when one of them moves, never on a timer loop. The
//! LSO moves only together with the HW (a transaction marker is an append), so the same
//! notifications serve read_committed.
//!
//! A follower's fetch (replica id ≥ 0) reads up to the log end, is refused unless this broker
//! leads the partition and the follower is a replica of it, reports where the follower's log
//! diverges from this one (KIP-595's diverging epoch: the follower truncates and fetches
//! again), and records the follower's fetch offset as its LEO, which moves the HW and may
//! ask the controller to add the follower to the ISR. It waits for the log end to move (a
//! leadership change wakes it too); the follower learns the HW from the next answer.
//!
//! Records stay in their segment files (`FetchedRecords::File`) when a partition's read is at
//! least [`ZERO_COPY_MIN_BYTES`]: the response is encoded with a placeholder there and the
//! connection sends those bytes from the file (`dispatch::Reply`). Smaller reads are copied:
//! one `sendfile` per few bytes costs more than the copy.
//!
//! Consumers of Fetch v11+ may read from a follower, below its HW (KIP-392); with
//! `replica.selector.class` set the leader answers a consumer whose `client.rack` it knows
//! with an in-sync replica of that rack as its preferred read replica.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId};
use tokio::sync::watch;

use gregor_storage::{FetchedRecords, FileRecords};

use super::wire::{code, current_leader, leader_epoch_error, storage_error, NONE};
use crate::broker::Broker;
use crate::partition::{FetchIsolation, Partition};
use crate::replication_throttle::{is_throttled, UNLIMITED};

/// Reads at least this large are sent from their segment file without a copy.
pub const ZERO_COPY_MIN_BYTES: usize = 16 << 10;

/// The largest max_wait_ms honoured, so a client cannot park a connection for hours.
const MAX_WAIT_MS_CAP: i32 = 30_000;
/// FetchRequest.isolation_level of a read_committed consumer.
const READ_COMMITTED: i8 = 1;
/// The first Fetch version whose consumers may read from followers (KIP-392).
const FOLLOWER_READS_VERSION: i16 = 11;

/// The response, and the file slices of the partitions whose records are a placeholder
/// (`records: None`), in the order they are encoded.
pub async fn handle(
    broker: &Broker,
    request: FetchRequest,
    version: i16,
) -> (FetchResponse, Vec<FileRecords>) {
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(request.max_wait_ms.clamp(0, MAX_WAIT_MS_CAP) as u64);
    let min_bytes = request.min_bytes.max(0) as usize;
    // max_bytes appeared in v3; all supported versions carry it.
    let max_bytes = if request.max_bytes <= 0 {
        i32::MAX
    } else {
        request.max_bytes
    } as usize;
    let targets: Vec<(usize, usize, Option<Arc<Partition>>)> = request
        .topics
        .iter()
        .enumerate()
        .flat_map(|(ti, t)| {
            let name = t.topic.0.as_str();
            t.partitions
                .iter()
                .enumerate()
                .map(move |(pi, p)| (ti, pi, broker.replicas.get(name, p.partition)))
        })
        .collect();
    let from_follower = request.replica_id.0 >= 0;
    loop {
        // Subscribed before reading, so a change right after the read still wakes the wait.
        let mut watches: Vec<watch::Receiver<i64>> = targets
            .iter()
            .filter_map(|(_, _, p)| p.as_ref())
            .map(|p| {
                // A follower waits for new records; the HW reaches it with them (or when
                // the wait ends), as in Kafka: waking it on every HW move too would double
                // the fetches per write.
                if from_follower {
                    p.subscribe_leo()
                } else {
                    p.subscribe_hw()
                }
            })
            .collect();
        let (response, files, bytes, had_error) =
            read_all(broker, &request, &targets, max_bytes, version);
        let now = tokio::time::Instant::now();
        if bytes >= min_bytes || had_error || now >= deadline {
            return (response, files);
        }
        let waiting = broker.metrics.fetch_waiting();
        let woken = !watches.is_empty()
            && tokio::time::timeout_at(deadline, any_changed(&mut watches))
                .await
                .is_ok();
        drop(waiting);
        if !woken {
            // Timed out with nothing new: the last read is the answer.
            let (response, files, _, _) = read_all(broker, &request, &targets, max_bytes, version);
            return (response, files);
        }
    }
}

/// Completes when any receiver sees a new value (or its partition is gone).
async fn any_changed(watches: &mut [watch::Receiver<i64>]) {
    let mut changes: Vec<Pin<Box<dyn Future<Output = _> + Send + '_>>> = watches
        .iter_mut()
        .map(|w| Box::pin(w.changed()) as Pin<Box<_>>)
        .collect();
    std::future::poll_fn(|cx| {
        for change in changes.iter_mut() {
            if change.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}

/// One pass over every requested partition. Returns the response, the file slices of its
/// placeholders in encoding order, the record bytes in it, and whether any partition had an
/// error (which ends a long poll at once, as in Kafka).
fn read_all(
    broker: &Broker,
    request: &FetchRequest,
    targets: &[(usize, usize, Option<Arc<Partition>>)],
    max_bytes: usize,
    version: i16,
) -> (FetchResponse, Vec<FileRecords>, usize, bool) {
    // Partitions are pushed topic by topic in request order, which is the encoding order.
    debug_assert!(targets
        .windows(2)
        .all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
    let mut files = Vec::new();
    let zero_copy_min = if broker.config().zero_copy_fetch() {
        ZERO_COPY_MIN_BYTES
    } else {
        usize::MAX
    };
    let mut topics: Vec<FetchableTopicResponse> = request
        .topics
        .iter()
        .map(|t| {
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_topic_id(t.topic_id)
        })
        .collect();
    let mut total = 0usize;
    let mut had_error = false;
    let read_committed = request.isolation_level == READ_COMMITTED;
    let follower = (request.replica_id.0 >= 0).then_some(request.replica_id.0);
    let client_rack = request.rack_id.as_str();
    // The leader's replication throttle, for a follower's fetch while one is set.
    let throttle = follower
        .map(|_| broker.config().replication_throttle_rates().0)
        .filter(|&rate| rate < UNLIMITED)
        .map(|rate| (rate, broker.image()));
    for (ti, pi, partition) in targets {
        let req = &request.topics[*ti].partitions[*pi];
        let mut data = PartitionData::default()
            .with_partition_index(req.partition)
            .with_high_watermark(-1)
            .with_last_stable_offset(-1)
            .with_log_start_offset(-1)
            .with_preferred_read_replica(BrokerId(-1))
            // Kafka answers null for read_uncommitted and a list for read_committed.
            .with_aborted_transactions(read_committed.then(Vec::new))
            .with_records(Some(Bytes::new()));
        match partition {
            None => {
                let topic = request.topics[*ti].topic.0.as_str();
                data.error_code = code(broker.not_hosted_error(topic, req.partition));
                had_error = true;
            }
            Some(p) => {
                if let Some(e) = leader_epoch_error(req.current_leader_epoch, p.leader_epoch()) {
                    data.error_code = code(e);
                    had_error = true;
                } else if let Some(refused) = refuse_reader(p, follower, version) {
                    data.error_code = code(refused);
                    had_error = true;
                } else if let Some((epoch, end_offset)) =
                    follower.and_then(|_| p.divergence(req.last_fetched_epoch, req.fetch_offset))
                {
                    // Checked before the offset's range, as Kafka does: a deposed leader's
                    // fetch offset may lie past this log's end. Nothing to read until the
                    // follower has cut its log where it diverges.
                    data = with_offsets(data.with_error_code(NONE), p);
                    data.diverging_epoch.epoch = epoch;
                    data.diverging_epoch.end_offset = end_offset;
                    had_error = true;
                } else if let Some(replica) = follower.filter(|_| {
                    req.fetch_offset < p.log_start_offset() || req.fetch_offset > p.log_end_offset()
                }) {
                    tracing::debug!(topic = %p.topic, partition = p.index, replica, offset = req.fetch_offset, "follower fetch out of range");
                    data = data
                        .with_error_code(code(ResponseError::OffsetOutOfRange))
                        .with_high_watermark(p.high_watermark())
                        .with_log_start_offset(p.log_start_offset());
                    had_error = true;
                } else if let Some(preferred) = (follower.is_none()
                    && version >= FOLLOWER_READS_VERSION)
                    .then(|| preferred_read_replica(broker, p, client_rack, req.fetch_offset))
                    .flatten()
                {
                    data = with_offsets(data.with_error_code(NONE), p)
                        .with_preferred_read_replica(BrokerId(preferred));
                    had_error = true;
                } else if let Err(e) = follower.map_or(Ok(()), |replica| {
                    record_follower_fetch(broker, p, replica, req.fetch_offset)
                }) {
                    data.error_code = code(e);
                    had_error = true;
                } else if throttled(broker, &throttle, p, follower)
                    .is_some_and(|rate| broker.leader_throttle.exceeded(rate, Instant::now()))
                {
                    // The throttled replica's quota is spent: nothing this time.
                    data = with_offsets(data.with_error_code(NONE), p);
                } else {
                    let remaining = max_bytes.saturating_sub(total);
                    let limit = (req.partition_max_bytes.max(0) as usize).min(remaining);
                    // The first non-empty partition may exceed the limits by one batch so a
                    // consumer can always make progress, as Kafka does.
                    let min_one_batch = total == 0;
                    let isolation = if follower.is_some() {
                        FetchIsolation::LogEnd
                    } else if read_committed {
                        FetchIsolation::TxnCommitted
                    } else {
                        FetchIsolation::HighWatermark
                    };
                    let read = read_partition(
                        p,
                        req.fetch_offset,
                        limit,
                        min_one_batch,
                        isolation,
                        zero_copy_min,
                    );
                    match read {
                        Ok(read) => {
                            total += read.records.len();
                            if let Some(rate) = throttled(broker, &throttle, p, follower) {
                                broker.leader_throttle.record(
                                    read.records.len(),
                                    rate,
                                    Instant::now(),
                                );
                            }
                            if read_committed {
                                data.aborted_transactions = Some(
                                    read.aborted
                                        .iter()
                                        .map(|&(producer_id, first_offset)| {
                                            AbortedTransaction::default()
                                                .with_producer_id(ProducerId(producer_id))
                                                .with_first_offset(first_offset)
                                        })
                                        .collect(),
                                );
                            }
                            let records = match read.records {
                                FetchedRecords::Memory(bytes) => Some(bytes),
                                FetchedRecords::File(slice) => {
                                    files.push(slice);
                                    None
                                }
                            };
                            data = data
                                .with_error_code(NONE)
                                .with_high_watermark(read.high_watermark)
                                .with_last_stable_offset(read.last_stable_offset)
                                .with_log_start_offset(read.log_start_offset)
                                .with_records(records);
                        }
                        Err(e) => {
                            let (c, _) = storage_error(&e);
                            data = with_offsets(data.with_error_code(c), p);
                            had_error = true;
                        }
                    }
                }
            }
        }
        let stale = [
            ResponseError::NotLeaderOrFollower,
            ResponseError::FencedLeaderEpoch,
        ];
        if stale.iter().any(|&e| data.error_code == code(e)) {
            let topic = request.topics[*ti].topic.0.as_str();
            if let Some((leader, epoch)) = current_leader(&broker.image(), topic, req.partition) {
                // KIP-951 (the field is in Fetch v12+): where the client should go.
                data.current_leader.leader_id = BrokerId(leader);
                data.current_leader.leader_epoch = epoch;
            }
        }
        topics[*ti].partitions.push(data);
    }
    let response = FetchResponse::default()
        .with_error_code(NONE)
        .with_session_id(0)
        .with_responses(topics);
    (response, files, total, had_error)
}

/// The leader throttle's rate if it applies to `follower`'s copy of `p`: a throttle is set
/// (`throttle`: the rate and the image), the topic's `leader.replication.throttled.replicas`
/// names this broker's replica, and the follower is out of the ISR.
fn throttled(
    broker: &Broker,
    throttle: &Option<(u64, Arc<gregor_metadata::MetadataImage>)>,
    p: &Partition,
    follower: Option<i32>,
) -> Option<u64> {
    let (rate, image) = throttle.as_ref()?;
    let follower = follower?;
    let applies = !p.state().isr.contains(&follower)
        && is_throttled(
            image,
            "leader.replication.throttled.replicas",
            &p.topic,
            p.index,
            broker.node_id,
        );
    applies.then_some(*rate)
}

/// `data` reporting the partition's HW, last stable offset and log start offset.
fn with_offsets(data: PartitionData, p: &Partition) -> PartitionData {
    data.with_high_watermark(p.high_watermark())
        .with_last_stable_offset(p.last_stable_offset())
        .with_log_start_offset(p.log_start_offset())
}

/// Why this broker does not serve `p` to this reader: followers fetch only from the leader,
/// consumers read from a follower only from Fetch v11 (KIP-392).
fn refuse_reader(p: &Partition, follower: Option<i32>, version: i16) -> Option<ResponseError> {
    let leads = p.is_leader();
    let follower_read_allowed = version >= FOLLOWER_READS_VERSION && follower.is_none();
    (!leads && !follower_read_allowed).then_some(ResponseError::NotLeaderOrFollower)
}

/// On the leader: takes a follower's fetch offset as its LEO; an ISR change it allows is
/// handed to the ISR manager. A fenced follower (one that crashed, or is in a controlled
/// shutdown) may fetch but not join the ISR (KIP-841): its coming stop would hold the HW.
fn record_follower_fetch(
    broker: &Broker,
    p: &Partition,
    replica: i32,
    fetch_offset: i64,
) -> Result<(), ResponseError> {
    let eligible = broker.image().is_live(replica);
    match p.record_follower_fetch(replica, fetch_offset, broker.clock.now_ms(), eligible) {
        Ok(Some(change)) => {
            broker.isr_manager.request(change);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => {
            tracing::debug!(topic = %p.topic, partition = p.index, replica, error = %e, "follower fetch refused");
            Err(ResponseError::NotLeaderOrFollower)
        }
    }
}

/// KIP-392's rack-aware selector, on the leader: for a consumer in `client_rack`, an
/// in-sync live replica in that rack that has `fetch_offset` (the one furthest ahead), unless
/// the leader is in that rack itself. None: read here.
fn preferred_read_replica(
    broker: &Broker,
    p: &Partition,
    client_rack: &str,
    fetch_offset: i64,
) -> Option<i32> {
    if client_rack.is_empty() || !p.is_leader() || !broker.config().rack_aware_replica_selector() {
        return None;
    }
    let image = broker.image();
    let in_rack = |id: &i32| {
        image
            .brokers
            .get(id)
            .is_some_and(|b| !b.fenced && b.rack.as_deref() == Some(client_rack))
    };
    if in_rack(&broker.node_id) {
        return None;
    }
    let isr = p.state().isr;
    p.follower_leos()
        .into_iter()
        .filter(|(id, leo)| isr.contains(id) && in_rack(id) && *leo >= fetch_offset)
        .max_by_key(|&(id, leo)| (leo, -id))
        .map(|(id, _)| id)
}

fn read_partition(
    p: &Partition,
    offset: i64,
    limit: usize,
    min_one_batch: bool,
    isolation: FetchIsolation,
    zero_copy_min: usize,
) -> Result<crate::partition::PartitionRead<FetchedRecords>, gregor_storage::error::StorageError> {
    if limit == 0 && !min_one_batch {
        // No room left in this response; report offsets only.
        return Ok(crate::partition::PartitionRead {
            records: FetchedRecords::Memory(Bytes::new()),
            high_watermark: p.high_watermark(),
            log_start_offset: p.log_start_offset(),
            last_stable_offset: p.last_stable_offset(),
            aborted: Vec::new(),
        });
    }
    p.read_for_fetch(offset, limit, min_one_batch, isolation, zero_copy_min)
}
