//! One partition hosted by this broker: its log, its role (leader or follower, with the
//! epochs, replicas and ISR the metadata gives it) and the offsets that gate readers.
//!
//! Architecture invariant: appends, the log end offset (LEO) and the high watermark (HW)
//! change only here, under the log mutex. Waiters (acks=all produce, long-poll fetch) never
//! poll: they subscribe to `hw_watch`, which is published after every change of the HW.
//! Asserted where they change: HW ≤ LEO, the HW never moves back (but by a follower's
//! truncation), the leader epoch never decreases, the log start offset ≤ HW.
//!
//! Only the leader appends client and coordinator writes; on a follower they are refused
//! with NOT_LEADER_OR_FOLLOWER. Every append names its [`AppendOrigin`] and every read its
//! [`FetchIsolation`], as Kafka's `AppendOrigin` and `FetchIsolation` do.
//!
//! Transactions: a transactional batch starts its producer's transaction here, a marker
//! written by `write_txn_marker` ends it (an abort is added to the log's aborted-transaction
//! index). The last stable offset (LSO) is the smaller of the HW and the first offset of the
//! oldest ongoing transaction; it moves only when the HW moves or a marker is appended, which
//! moves the HW too, so `hw_watch` also wakes read_committed waiters.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::Duration;

use bytes::Bytes;
use gregor_metadata::PartitionImage;
use gregor_storage::batch::{BatchHeader, BatchIter};
use gregor_storage::config::LogConfig;
use gregor_storage::error::StorageError;
use gregor_storage::log::{AppendInfo, Log, ReadResult};
use gregor_storage::log_dir::CheckpointEntry;
use gregor_storage::{AbortedTxn, FetchedRecords};
use tokio::sync::watch;
use uuid::Uuid;

use crate::producer_state::{code, BatchMeta, Check, ProducerStates, ProducerSummary};
use crate::replica_tracker::ReplicaTracker;

#[path = "partition_replication.rs"]
mod replication;
pub use replication::{FollowerFetchError, IsrChange};

#[path = "partition_txn.rs"]
mod txn_marker;

#[cfg(test)]
#[path = "partition_txn_tests.rs"]
mod txn_tests;

#[cfg(test)]
#[path = "partition_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "partition_replication_tests.rs"]
mod replication_tests;

/// Where an append comes from; each origin is checked differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOrigin {
    /// A producer's Produce request: idempotence and transaction checks, sequences recorded.
    Client,
    /// A coordinator's own write (group metadata, offsets, transaction state, transactional
    /// offset commits): batches may carry a producer id and epoch but no sequence numbers,
    /// so only the epoch is checked and nothing is remembered for deduplication.
    Coordinator,
}

/// How far a read may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchIsolation {
    /// Up to the log end offset: what a follower copies.
    LogEnd,
    /// Up to the high watermark: read_uncommitted consumers.
    HighWatermark,
    /// Up to the last stable offset, with the aborted transactions in range:
    /// read_committed consumers.
    TxnCommitted,
}

/// What the metadata says of one partition: its leader, epochs, replicas and ISR, and the
/// ISR size its high watermark needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// The leader's broker id, -1 when there is none.
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: BTreeSet<i32>,
    /// KIP-966's strict min-ISR rule: the HW moves only while the ISR has at least this many
    /// members (the topic's `min.insync.replicas`, at most the replica count), so a replica
    /// that leaves a smaller ISR holds every committed record and may lead (the ELR). 1 with
    /// eligible leader replicas off.
    pub hw_min_isr: usize,
}

impl PartitionState {
    /// Led by broker `node_id`, its only replica, at `leader_epoch`.
    #[cfg(test)]
    pub fn single_replica(node_id: i32, leader_epoch: i32) -> PartitionState {
        PartitionState {
            leader: node_id,
            leader_epoch,
            partition_epoch: 0,
            replicas: vec![node_id],
            isr: BTreeSet::from([node_id]),
            hw_min_isr: 1,
        }
    }
}

impl PartitionState {
    /// The state of `p` whose HW needs an ISR of `min_isr` (capped by the replica count).
    pub fn of(p: &PartitionImage, min_isr: usize) -> PartitionState {
        PartitionState {
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            replicas: p.replicas.clone(),
            isr: p.isr.iter().copied().collect(),
            hw_min_isr: min_isr.clamp(1, p.replicas.len().max(1)),
        }
    }
}

/// Why [`Partition::wait_replicated`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationWait {
    /// The HW did not get there in time.
    TimedOut,
    /// This broker no longer leads the partition.
    NotLeader,
}

/// A partition hosted by this broker, as its leader or a follower.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub topic_id: Uuid,
    /// This broker's id: the partition leads when the state's leader is this id.
    node_id: i32,
    log: Mutex<Log>,
    /// Producers' recent batches and ongoing transactions; locked only while `log` is held.
    producers: Mutex<ProducerStates>,
    /// The leader's view of its followers and the ISR change it asked for; locked only
    /// while `log` is held (lock order: log, producers, replication).
    replication: Mutex<Replication>,
    /// The role from the metadata; written only with `log` held, so an append sees one role
    /// from its check to its write.
    state: RwLock<PartitionState>,
    /// `state.leader_epoch`, readable without a lock.
    leader_epoch: AtomicI32,
    log_start_offset: AtomicI64,
    /// The log end offset the producer-state snapshot on disk was written at, -1 when not
    /// known: a periodic checkpoint with nothing new since skips its write and fsync.
    snapshot_at: AtomicI64,
    /// On a follower: records between the leader's high watermark, as its last fetch answer
    /// gave it, and this replica's log end (Kafka's fetcher `ConsumerLag`).
    follower_lag: AtomicI64,
    /// The log end offset; every change is published (followers' fetches wait on it).
    leo_watch: watch::Sender<i64>,
    /// The high watermark; every change is published to subscribers, and every change of
    /// role wakes them too (a produce waiting for replication must learn it lost the lead).
    hw_watch: watch::Sender<i64>,
    /// KIP-890's verification guards: per producer id, the token of a transactional write
    /// being verified with a transaction coordinator on another broker. A marker for the
    /// producer removes it, so a write verified just before its transaction ended is refused
    /// instead of opening a transaction nobody will end. Locked only while `log` is held.
    verifications: Mutex<(HashMap<i64, u64>, u64)>,
}

/// Kafka's INVALID_TXN_STATE.
const INVALID_TXN_STATE: i16 = 48;

/// Which transactional state an append needs.
enum TxnCheck {
    /// None beyond the usual producer checks.
    Any,
    /// The producer (id, epoch) already has its transaction open here.
    Ongoing((i64, i16)),
    /// The producer's write was verified remotely under this guard token.
    Verified(i64, u64),
}

/// Leader-side replication state, reset whenever this broker becomes leader.
#[derive(Default)]
struct Replication {
    tracker: ReplicaTracker,
    /// The ISR asked of the controller and not yet in the metadata, with the partition
    /// epoch it was based on. The HW counts its members too until it is settled, so an
    /// expansion is safe before it commits and a shrink takes effect only once it has.
    pending_isr: Option<(BTreeSet<i32>, i32)>,
}

/// What a read returned, with the offsets a fetch response reports.
pub struct PartitionRead<R = Bytes> {
    pub records: R,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub last_stable_offset: i64,
    /// For read_committed reads: `(producer id, first offset)` of the aborted transactions
    /// overlapping the returned records. Always empty for read_uncommitted.
    pub aborted: Vec<(i64, i64)>,
}

impl Partition {
    /// Opens the partition on recovered `log` in the role `state` gives broker `node_id`.
    /// The high watermark starts at the checkpointed one (`high_watermark`, capped by the
    /// log), or at the LEO for a partition with one replica or no checkpoint (a log of the
    /// release before replication, where every replica was the whole ISR).
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        topic: String,
        index: i32,
        topic_id: Uuid,
        node_id: i32,
        log: Log,
        state: PartitionState,
        high_watermark: Option<i64>,
        now_ms: i64,
    ) -> Partition {
        let mut log = log;
        let producers = rebuild_producer_states(&mut log);
        let leo = log.log_end_offset();
        let start = log.log_start_offset();
        let hw = if state.replicas.len() <= 1 {
            leo
        } else {
            high_watermark.unwrap_or(leo).clamp(start, leo)
        };
        let partition = Partition {
            topic,
            index,
            topic_id,
            node_id,
            log_start_offset: AtomicI64::new(start),
            snapshot_at: AtomicI64::new(-1),
            follower_lag: AtomicI64::new(0),
            leo_watch: watch::Sender::new(leo),
            leader_epoch: AtomicI32::new(state.leader_epoch),
            hw_watch: watch::Sender::new(hw),
            producers: Mutex::new(producers),
            replication: Mutex::new(Replication::default()),
            log: Mutex::new(log),
            state: RwLock::new(state.clone()),
            verifications: Mutex::new((HashMap::new(), 0)),
        };
        partition.with_role(&state, None, &mut partition.lock(), now_ms);
        partition
    }

    /// Takes a newer state from the metadata (a stale one, of an older partition epoch, is
    /// ignored); returns whether it was taken. Becoming leader records the new epoch in the
    /// leader-epoch cache at the LEO.
    pub fn apply_state(&self, next: PartitionState, now_ms: i64) -> bool {
        let mut log = self.lock();
        let current = self.state();
        if next.partition_epoch < current.partition_epoch
            || (next.partition_epoch == current.partition_epoch && next == current)
        {
            return false;
        }
        assert!(
            next.leader_epoch >= current.leader_epoch,
            "{}-{}: leader epoch went back from {} to {}",
            self.topic,
            self.index,
            current.leader_epoch,
            next.leader_epoch
        );
        *self.state.write().expect("partition state poisoned") = next.clone();
        self.with_role(&next, Some(&current), &mut log, now_ms);
        true
    }

    /// Acts on the role in `state` (already stored), coming from `previous`, with the log
    /// locked: a new leadership records its epoch at the LEO and starts tracking its
    /// followers afresh; a settled ISR change may move the HW; waiters wake on a change of
    /// leader so they can tell their clients.
    fn with_role(
        &self,
        state: &PartitionState,
        previous: Option<&PartitionState>,
        log: &mut Log,
        now_ms: i64,
    ) {
        self.leader_epoch
            .store(state.leader_epoch, Ordering::Release);
        let leads = state.leader == self.node_id;
        let new_leadership = previous
            .is_none_or(|p| p.leader != state.leader || p.leader_epoch != state.leader_epoch);
        {
            let mut replication = self.replication();
            if new_leadership || !leads {
                *replication = Replication::default();
                if leads {
                    replication.tracker =
                        ReplicaTracker::new(self.node_id, &state.replicas, now_ms);
                }
            } else if previous.is_some_and(|p| p.replicas != state.replicas) {
                // A reassignment added or removed replicas under this leadership.
                replication
                    .tracker
                    .set_replicas(self.node_id, &state.replicas, now_ms);
            }
            if replication
                .pending_isr
                .as_ref()
                .is_some_and(|(_, based_on)| *based_on != state.partition_epoch)
            {
                replication.pending_isr = None;
            }
        }
        if leads && log.latest_epoch().is_none_or(|e| e < state.leader_epoch) {
            log.begin_epoch(state.leader_epoch);
        }
        if leads {
            self.maybe_advance_hw(log);
        }
        if new_leadership {
            tracing::debug!(topic = %self.topic, partition = self.index, leader = state.leader, leader_epoch = state.leader_epoch, isr = ?state.isr, leo = log.log_end_offset(), hw = self.high_watermark(), "new leadership");
            self.hw_watch.send_modify(|_| {});
            self.leo_watch.send_modify(|_| {});
        }
    }

    /// The leader's replication state; call only with the log locked.
    fn replication(&self) -> MutexGuard<'_, Replication> {
        self.replication
            .lock()
            .expect("replication state mutex poisoned")
    }

    /// On the leader, with the log locked: moves the HW to the smallest LEO in the ISR
    /// (counting the members of a pending change) if that is further on, and the committed
    /// ISR is not below `hw_min_isr`.
    fn maybe_advance_hw(&self, log: &Log) {
        let state = self.state.read().expect("partition state poisoned");
        if state.leader != self.node_id || state.isr.len() < state.hw_min_isr {
            return;
        }
        let replication = self.replication();
        let pending = replication.pending_isr.iter().flat_map(|(isr, _)| isr);
        let hw = replication
            .tracker
            .high_watermark(log.log_end_offset(), state.isr.iter().chain(pending));
        drop(replication);
        drop(state);
        if hw > self.high_watermark() {
            self.advance_hw(hw);
        }
    }

    /// The partition's state as the metadata last gave it.
    pub fn state(&self) -> PartitionState {
        self.state.read().expect("partition state poisoned").clone()
    }

    /// Whether this broker leads the partition.
    pub fn is_leader(&self) -> bool {
        self.state.read().expect("partition state poisoned").leader == self.node_id
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        // A panic while holding the lock would leave the log in an unknown state; refuse to
        // continue serving it rather than hide that.
        self.log.lock().expect("partition log mutex poisoned")
    }

    /// The producer states; call only with the log locked (lock order: log, producers).
    fn producers(&self) -> MutexGuard<'_, ProducerStates> {
        self.producers
            .lock()
            .expect("producer state mutex poisoned")
    }

    /// The publishing step of every leader append: LEO, then HW (the smallest LEO in the
    /// ISR; the LEO itself while the ISR is this broker alone).
    fn publish_end(&self, log: &mut Log, producers: &ProducerStates, segments_before: usize) {
        self.snapshot_if_rolled(log, producers, segments_before);
        self.leo_watch.send_replace(log.log_end_offset());
        self.maybe_advance_hw(log);
        self.check_offsets(log);
    }

    /// After an append that rolled a segment: snapshots the producer state there (as Kafka
    /// does), so a restart replays at most one segment to rebuild it.
    fn snapshot_if_rolled(
        &self,
        log: &mut Log,
        producers: &ProducerStates,
        segments_before: usize,
    ) {
        if log.segment_count() != segments_before {
            if let Err(e) = self.save_snapshot(log, producers) {
                tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "cannot snapshot producer state at a segment roll");
            }
        }
    }

    /// The leader's broker id as the metadata last gave it, -1 when there is none.
    pub fn leader(&self) -> i32 {
        self.state.read().expect("partition state poisoned").leader
    }

    /// Moves the HW forward to `hw` (never back) and wakes its waiters.
    fn advance_hw(&self, hw: i64) {
        let previous = self.hw_watch.send_replace(hw);
        assert!(
            hw >= previous,
            "{}-{}: the high watermark moved back from {previous} to {hw}",
            self.topic,
            self.index
        );
    }

    /// The offset invariants, cheap enough for every append: log start ≤ HW ≤ LEO.
    fn check_offsets(&self, log: &Log) {
        let (start, hw, leo) = (
            log.log_start_offset(),
            self.high_watermark(),
            log.log_end_offset(),
        );
        assert!(
            start <= hw && hw <= leo,
            "{}-{}: offsets out of order: log start {start}, HW {hw}, LEO {leo}",
            self.topic,
            self.index
        );
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }
    pub fn high_watermark(&self) -> i64 {
        *self.hw_watch.borrow()
    }
    pub fn log_end_offset(&self) -> i64 {
        *self.leo_watch.borrow()
    }
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.load(Ordering::Acquire)
    }
    /// On a follower, how far its log end is behind the leader's last known high watermark.
    pub fn follower_lag(&self) -> i64 {
        self.follower_lag.load(Ordering::Relaxed)
    }
    pub(crate) fn set_follower_lag(&self, lag: i64) {
        self.follower_lag.store(lag.max(0), Ordering::Relaxed);
    }
    /// Replicas in the ISR, the leader included.
    pub fn isr_size(&self) -> usize {
        self.state
            .read()
            .expect("partition state poisoned")
            .isr
            .len()
    }

    /// A receiver that sees every later change of the high watermark (and of leader).
    pub fn subscribe_hw(&self) -> watch::Receiver<i64> {
        self.hw_watch.subscribe()
    }

    /// Waits until the HW reaches `required_hw` (every ISR member has the records below it),
    /// woken by HW changes, or until leadership moves away or `deadline` passes. The acks=all
    /// wait of a produce and of the coordinators' own writes.
    pub async fn wait_replicated(
        &self,
        required_hw: i64,
        deadline: tokio::time::Instant,
    ) -> Result<(), ReplicationWait> {
        let mut hw = self.subscribe_hw();
        let reached = tokio::time::timeout_at(
            deadline,
            hw.wait_for(|hw| *hw >= required_hw || !self.is_leader()),
        )
        .await;
        if !matches!(reached, Ok(Ok(_))) {
            Err(ReplicationWait::TimedOut)
        } else if !self.is_leader() {
            Err(ReplicationWait::NotLeader)
        } else {
            Ok(())
        }
    }

    /// [`Self::wait_replicated`] for a caller on a blocking thread (the transaction
    /// coordinator writes under its lock), bounded by `timeout`. Returns at once when the HW
    /// is already there (a partition with a single replica).
    pub fn wait_replicated_blocking(
        &self,
        required_hw: i64,
        timeout: Duration,
    ) -> Result<(), ReplicationWait> {
        if self.high_watermark() >= required_hw {
            return Ok(());
        }
        if !self.is_leader() {
            return Err(ReplicationWait::NotLeader);
        }
        let runtime = tokio::runtime::Handle::try_current()
            .expect("a replicated partition is waited for inside the broker's runtime");
        let deadline = tokio::time::Instant::now() + timeout;
        crate::blocking::block_in_place_or_run(|| {
            runtime.block_on(self.wait_replicated(required_hw, deadline))
        })
    }

    /// A receiver that sees every later change of the log end offset (and of leader).
    pub fn subscribe_leo(&self) -> watch::Receiver<i64> {
        self.leo_watch.subscribe()
    }

    /// Appends a record set as leader and advances LEO (and the HW when the ISR is this
    /// broker alone: then a write is committed as soon as it is in the log). Control batches are
    /// refused (only `write_txn_marker` writes them); a transactional batch starts its
    /// producer's transaction here unless one is ongoing. Refused with
    /// [`AppendError::NotLeader`] unless this broker leads the partition.
    pub fn append(
        &self,
        records: &[u8],
        origin: AppendOrigin,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        self.append_from(records, now_ms, origin, TxnCheck::Any)
    }

    /// [`Self::append`] of a transactional write, but only if `producer` = (id, epoch)
    /// already has its transaction open here at that epoch (the coordinator verified an
    /// earlier write of it, and no marker has ended it since); otherwise
    /// [`AppendError::NotInOngoingTxn`] and nothing is written. Lets later writes of a
    /// transaction skip the coordinator.
    pub fn append_to_ongoing_txn(
        &self,
        records: &[u8],
        now_ms: i64,
        producer: (i64, i16),
    ) -> Result<AppendInfo, AppendError> {
        self.append_from(
            records,
            now_ms,
            AppendOrigin::Client,
            TxnCheck::Ongoing(producer),
        )
    }

    /// Starts verifying a transactional write of `producer_id` with a remote transaction
    /// coordinator; the token to append with once it said yes ([`Self::append_verified`]).
    pub fn begin_txn_verification(&self, producer_id: i64) -> u64 {
        let _log = self.lock();
        let mut guards = self.verifications();
        guards.1 += 1;
        let token = guards.1;
        guards.0.insert(producer_id, token);
        token
    }

    /// [`Self::append`] of a transactional write (a client's, or a group coordinator's
    /// TxnOffsetCommit) the remote transaction coordinator verified under `token`; refused
    /// (INVALID_TXN_STATE) if a marker of the producer came in between.
    pub fn append_verified(
        &self,
        records: &[u8],
        now_ms: i64,
        origin: AppendOrigin,
        producer_id: i64,
        token: u64,
    ) -> Result<AppendInfo, AppendError> {
        let check = TxnCheck::Verified(producer_id, token);
        self.append_from(records, now_ms, origin, check)
    }

    fn verifications(&self) -> MutexGuard<'_, (HashMap<i64, u64>, u64)> {
        self.verifications
            .lock()
            .expect("verification guards poisoned")
    }

    fn append_from(
        &self,
        records: &[u8],
        now_ms: i64,
        origin: AppendOrigin,
        check: TxnCheck,
    ) -> Result<AppendInfo, AppendError> {
        let coordinator = origin == AppendOrigin::Coordinator;
        let mut log = self.lock();
        if !self.is_leader() {
            return Err(AppendError::NotLeader);
        }
        let mut producers = self.producers();
        match check {
            TxnCheck::Any => {}
            TxnCheck::Ongoing((producer_id, epoch)) => {
                let open = producers.ongoing_txn(producer_id).is_some()
                    && producers.epoch(producer_id) == Some(epoch);
                if !open {
                    return Err(AppendError::NotInOngoingTxn);
                }
            }
            TxnCheck::Verified(producer_id, token) => {
                let mut guards = self.verifications();
                if guards.0.get(&producer_id) != Some(&token) {
                    return Err(AppendError::Producer(
                        INVALID_TXN_STATE,
                        "the transaction ended while this write was being verified".into(),
                    ));
                }
                guards.0.remove(&producer_id);
            }
        }
        let segments_before = log.segment_count();
        // Idempotent batches are checked against the producer's recent batches first.
        for (header, _) in BatchIter::new(records) {
            if header.is_control() {
                return Err(AppendError::Producer(
                    code::INVALID_RECORD,
                    "clients may not write control batches".into(),
                ));
            }
            if header.producer_id < 0 {
                if header.is_transactional() {
                    return Err(AppendError::Producer(
                        code::INVALID_RECORD,
                        "a transactional batch needs a producer id".into(),
                    ));
                }
                continue;
            }
            if let Err((code, message)) =
                producers.check_txn(header.producer_id, header.is_transactional())
            {
                return Err(AppendError::Producer(code, message));
            }
            if coordinator {
                assert_eq!(
                    header.base_sequence, NO_SEQUENCE,
                    "coordinator writes carry no sequence"
                );
                if let Err((code, message)) =
                    producers.check_marker(header.producer_id, header.producer_epoch)
                {
                    return Err(AppendError::Producer(code, message));
                }
                continue;
            }
            let last_seq = header.base_sequence.wrapping_add(header.last_offset_delta);
            match producers.check(
                header.producer_id,
                header.producer_epoch,
                header.base_sequence,
                last_seq,
            ) {
                Check::Append => {}
                Check::Duplicate {
                    first_offset,
                    last_offset,
                } => {
                    return Err(AppendError::Duplicate {
                        first_offset,
                        last_offset,
                    })
                }
                Check::Reject(code, message) => {
                    tracing::warn!(topic = %self.topic, partition = self.index, code, message, leo = log.log_end_offset(), hw = self.high_watermark(), leader_epoch = self.leader_epoch(), producer = ?producers.entry(header.producer_id), "refused an idempotent batch");
                    return Err(AppendError::Producer(code, message));
                }
            }
        }
        let info = log.append_as_leader(records, self.leader_epoch(), now_ms)?;
        let leo = log.log_end_offset();
        assert_eq!(
            leo,
            info.last_offset + 1,
            "LEO follows the last appended offset"
        );
        let mut first_offset = info.first_offset;
        for (header, _) in BatchIter::new(records) {
            let last_offset = first_offset + header.last_offset_delta as i64;
            if header.producer_id >= 0 && coordinator {
                producers.note_epoch(header.producer_id, header.producer_epoch, now_ms);
                if header.is_transactional() {
                    producers.begin_txn(header.producer_id, first_offset);
                }
            } else if header.producer_id >= 0 {
                let timestamp = if info.log_append_time >= 0 {
                    info.log_append_time
                } else {
                    header.max_timestamp
                };
                producers.record(
                    header.producer_id,
                    header.producer_epoch,
                    batch_meta(&header, first_offset, last_offset),
                    timestamp,
                    now_ms,
                );
                if header.is_transactional() {
                    producers.begin_txn(header.producer_id, first_offset);
                }
            }
            first_offset = last_offset + 1;
        }
        self.publish_end(&mut log, &producers, segments_before);
        Ok(info)
    }

    /// Appends a transaction marker (commit or abort) for the producer and returns its
    /// offset. Refused with INVALID_PRODUCER_EPOCH for an epoch older than the producer's
    /// current epoch here; a newer epoch becomes the current one (fencing older producers).
    /// Ends the producer's ongoing transaction here, if any; an abort is added to the
    /// aborted-transaction index (from the transaction's first offset, or the marker's own
    /// offset when none was ongoing, to the marker).
    pub fn write_txn_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<i64, AppendError> {
        assert!(
            producer_id >= 0 && producer_epoch >= 0,
            "markers need a producer"
        );
        let mut log = self.lock();
        if !self.is_leader() {
            return Err(AppendError::NotLeader);
        }
        self.verifications().0.remove(&producer_id);
        let mut producers = self.producers();
        let segments_before = log.segment_count();
        if let Err((code, message)) = producers
            .check_marker(producer_id, producer_epoch)
            .and_then(|()| producers.check_coordinator_epoch(producer_id, coordinator_epoch))
        {
            return Err(AppendError::Producer(code, message));
        }
        let batch = txn_marker::marker_batch(
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
            now_ms,
        );
        let info = log.append_as_leader(&batch, self.leader_epoch(), now_ms)?;
        let offset = info.first_offset;
        assert_eq!(offset, info.last_offset, "a marker is one record");
        let first_offset = producers.end_txn(
            producer_id,
            producer_epoch,
            coordinator_epoch,
            offset,
            info.max_timestamp,
            now_ms,
        );
        let indexed = if commit {
            Ok(())
        } else {
            let txn = AbortedTxn {
                producer_id,
                first_offset,
                last_offset: offset,
                last_stable_offset: producers.first_unstable_offset().unwrap_or(offset + 1),
            };
            log.append_aborted_txn(txn).map(|added| assert!(added))
        };
        // The marker is in the log whatever happened to its index entry (a restart re-adds
        // a missing one), so LEO and HW move on regardless.
        self.publish_end(&mut log, &producers, segments_before);
        indexed?;
        Ok(offset)
    }

    /// min(first offset of all ongoing transactions, HW).
    pub fn last_stable_offset(&self) -> i64 {
        let _log = self.lock();
        self.lso_locked(&self.producers())
    }

    fn lso_locked(&self, producers: &ProducerStates) -> i64 {
        let hw = self.high_watermark();
        producers
            .first_unstable_offset()
            .map_or(hw, |first| first.min(hw))
    }

    /// Every producer known here, for DescribeProducers.
    pub fn producer_summaries(&self) -> Vec<ProducerSummary> {
        let _log = self.lock();
        self.producers().summaries()
    }

    /// Writes the producer-state snapshot (forgetting producers idle for `expiration_ms`).
    /// The aborted-transaction entries it covers are fsynced first: a replay after a crash
    /// starts at the snapshot and could not re-add them.
    /// Skipped when the snapshot on disk was written at the current log end and no producer
    /// expired: producer state changes only with the log (appends and truncations move its
    /// end) and with expiry.
    pub fn snapshot_producers(&self, now_ms: i64, expiration_ms: i64) -> std::io::Result<()> {
        let mut log = self.lock();
        let mut producers = self.producers();
        let known = producers.len();
        producers.expire(now_ms, expiration_ms);
        if producers.len() == known
            && self.snapshot_at.load(Ordering::Acquire) == log.log_end_offset()
        {
            return Ok(());
        }
        self.save_snapshot(&mut log, &producers)
    }

    /// The snapshot on disk is no longer known to match the log end.
    pub(crate) fn forget_snapshot(&self) {
        self.snapshot_at.store(-1, Ordering::Release);
    }

    /// [`save_producer_snapshot`], remembering the offset it was written at (forgotten when
    /// the write fails: the file may be gone or stale).
    fn save_snapshot(&self, log: &mut Log, producers: &ProducerStates) -> std::io::Result<()> {
        self.snapshot_at.store(-1, Ordering::Release);
        save_producer_snapshot(log, producers)?;
        self.snapshot_at
            .store(log.log_end_offset(), Ordering::Release);
        Ok(())
    }

    /// Reads whole batches from `offset`, never past what `isolation` allows (the LEO, the
    /// HW or the LSO); read_committed reads also return the aborted transactions
    /// overlapping the returned records.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        isolation: FetchIsolation,
    ) -> Result<PartitionRead, StorageError> {
        self.read_with(
            isolation,
            |log, max_offset| {
                let ReadResult { records, .. } =
                    log.read(offset, max_bytes, max_offset, min_one_batch)?;
                // Only read_committed needs where the records end (its aborted transactions).
                let end = (isolation == FetchIsolation::TxnCommitted)
                    .then(|| BatchIter::new(&records).last())
                    .flatten()
                    .map(|(h, _)| h.last_offset() + 1);
                Ok((records, end))
            },
            offset,
        )
    }

    /// [`Partition::read`] for a Fetch response: records of at least `zero_copy_min` bytes
    /// stay in their segment file, to be sent from it; smaller ones are copied.
    pub fn read_for_fetch(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        isolation: FetchIsolation,
        zero_copy_min: usize,
    ) -> Result<PartitionRead<FetchedRecords>, StorageError> {
        self.read_with(
            isolation,
            |log, max_offset| {
                let Some(slice) = log.read_file(offset, max_bytes, max_offset, min_one_batch)?
                else {
                    return Ok((FetchedRecords::Memory(Bytes::new()), None));
                };
                let end = Some(slice.next_offset());
                if slice.len() < zero_copy_min {
                    return Ok((FetchedRecords::Memory(slice.to_bytes()?), end));
                }
                Ok((FetchedRecords::File(slice), end))
            },
            offset,
        )
    }

    /// A read at `offset` under the log lock: `read` gets the offset it must stop below and
    /// returns the records and one past their last offset (`None` when empty).
    fn read_with<R>(
        &self,
        isolation: FetchIsolation,
        read: impl FnOnce(&Log, i64) -> Result<(R, Option<i64>), StorageError>,
        offset: i64,
    ) -> Result<PartitionRead<R>, StorageError> {
        let log = self.lock();
        let hw = self.high_watermark();
        let lso = self.lso_locked(&self.producers());
        let max_offset = match isolation {
            FetchIsolation::LogEnd => log.log_end_offset(),
            FetchIsolation::HighWatermark => hw,
            FetchIsolation::TxnCommitted => lso,
        };
        let (records, end) = read(&log, max_offset)?;
        let aborted = match end {
            Some(end) if isolation == FetchIsolation::TxnCommitted => log
                .collect_aborted_txns(offset, end)
                .into_iter()
                .map(|t| (t.producer_id, t.first_offset))
                .collect(),
            _ => Vec::new(),
        };
        Ok(PartitionRead {
            records,
            high_watermark: hw,
            log_start_offset: log.log_start_offset(),
            last_stable_offset: lso,
            aborted,
        })
    }

    /// OffsetForLeaderEpoch (KIP-101/KIP-279): `(largest epoch ≤ epoch, the end offset of
    /// that epoch here)`, the LEO for this broker's latest epoch; `None` (UNDEFINED) when
    /// `epoch` is newer than any this log knows or the log has no epochs yet.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.lock().end_offset_for_epoch(epoch)
    }

    /// Runs `f` with the log locked (for lookups that need more than one call).
    pub fn with_log<T>(&self, f: impl FnOnce(&mut Log) -> T) -> T {
        f(&mut self.lock())
    }

    /// A follower's truncation (to the end of the last epoch it shares with its leader):
    /// cuts the log at `offset`, rebuilds the producer state from what is left and lowers
    /// the HW to the new LEO if it was above. Refused on the leader, whose log only grows.
    pub fn truncate_to(&self, offset: i64) -> Result<(), AppendError> {
        let mut log = self.lock();
        if self.is_leader() {
            return Err(AppendError::NotFollower);
        }
        log.truncate_to(offset)?;
        self.after_truncation(&mut log);
        Ok(())
    }

    /// After a follower's log was cut: producer state rebuilt from what is left, offsets
    /// published.
    fn after_truncation(&self, log: &mut Log) {
        let rebuilt = rebuild_producer_states(log);
        // The snapshot on disk may cover the part just cut: replaced by one of what is left,
        // or a later rebuild would take the removed tail's producer state for the log's.
        if let Err(e) = self.save_snapshot(log, &rebuilt) {
            tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "cannot snapshot producer state after a truncation");
            ProducerStates::remove_snapshot(log.dir());
            self.forget_snapshot();
        }
        *self.producers() = rebuilt;
        let leo = log.log_end_offset();
        self.leo_watch.send_replace(leo);
        self.log_start_offset
            .store(log.log_start_offset(), Ordering::Release);
        let hw = self.high_watermark();
        if hw > leo || hw < log.log_start_offset() {
            // The one place the HW goes back: a follower's HW was only ever a copy of the
            // leader's, and the log below it is being replaced.
            self.hw_watch
                .send_replace(leo.min(hw).max(log.log_start_offset()));
        }
        self.check_offsets(log);
    }

    /// DeleteRecords: moves the log start offset to `offset` (-1: the high watermark).
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, StorageError> {
        let mut log = self.lock();
        let start = log.delete_records_before(offset, self.high_watermark())?;
        self.log_start_offset.store(start, Ordering::Release);
        self.check_offsets(&log);
        Ok(start)
    }

    /// Time-based roll, retention and removal of deleted files; returns segments deleted.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, StorageError> {
        let mut log = self.lock();
        log.roll_if_due(now_ms)?;
        let outcome = log.apply_retention(now_ms, self.high_watermark())?;
        log.remove_deleted_files(now_ms)?;
        self.log_start_offset
            .store(outcome.log_start_offset, Ordering::Release);
        Ok(outcome.segments_deleted)
    }

    /// One compaction pass: plan under the lock, rewrite without it, swap under it again,
    /// so produce and fetch wait only for the short first and last steps.
    pub fn clean(&self, now_ms: i64, dedupe_buffer_bytes: usize) -> Result<bool, StorageError> {
        let Some(plan) = self.lock().plan_cleaning(now_ms) else {
            return Ok(false);
        };
        let cleaned = gregor_storage::build_cleaned(&plan, dedupe_buffer_bytes)?;
        let mut log = self.lock();
        log.swap_cleaned(cleaned)?;
        self.log_start_offset
            .store(log.log_start_offset(), Ordering::Release);
        Ok(true)
    }

    pub fn set_config(&self, config: LogConfig) {
        self.lock().set_config(config);
    }

    /// Flushes if the time-based flush policy says so.
    pub fn flush_if_due(&self, now_ms: i64) -> Result<(), StorageError> {
        self.lock().flush_if_due(now_ms)
    }

    /// This partition's line in the checkpoint files.
    pub fn checkpoint_entry(&self) -> CheckpointEntry {
        let log = self.lock();
        CheckpointEntry::of(&self.topic, self.index, &log, self.high_watermark())
    }

    /// Flushes everything (clean shutdown).
    pub fn flush(&self) -> Result<(), StorageError> {
        self.lock().flush()
    }

    /// Deletes the partition's files (topic deletion).
    pub fn delete_files(&self) -> Result<(), StorageError> {
        let mut log = self.lock();
        let dir = log.dir().to_path_buf();
        log.flush()?;
        drop(log);
        std::fs::remove_dir_all(&dir).map_err(StorageError::from)
    }
}

/// Writes the producer-state snapshot covering the log up to its end. The transaction
/// indexes are synced first: a restart replays only the log after the snapshot, so it could
/// not re-add an index entry lost before it.
fn save_producer_snapshot(log: &mut Log, producers: &ProducerStates) -> std::io::Result<()> {
    log.sync_txn_indexes().map_err(std::io::Error::other)?;
    producers.save(log.dir(), log.log_end_offset())
}

/// The base sequence of batches that carry none (coordinator writes, markers).
const NO_SEQUENCE: i32 = -1;

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A retried idempotent batch that is already in the log, at these offsets.
    #[error("duplicate batch, first written at offsets {first_offset}..={last_offset}")]
    Duplicate { first_offset: i64, last_offset: i64 },
    /// `append_to_ongoing_txn` found no open transaction of the producer at that epoch.
    #[error("the producer has no transaction open in this partition")]
    NotInOngoingTxn,
    /// This broker does not lead the partition (NOT_LEADER_OR_FOLLOWER).
    #[error("this broker is not the leader of the partition")]
    NotLeader,
    /// Only a follower truncates its log.
    #[error("the leader does not truncate its log")]
    NotFollower,
    /// Refused by the idempotent-producer checks, with the Kafka error code.
    #[error("{1}")]
    Producer(i16, String),
}

fn batch_meta(header: &BatchHeader, first_offset: i64, last_offset: i64) -> BatchMeta {
    BatchMeta {
        first_seq: header.base_sequence,
        last_seq: header.base_sequence.wrapping_add(header.last_offset_delta),
        first_offset,
        last_offset,
    }
}

/// Loads the producer-state snapshot and replays the batch headers written after it:
/// transactional batches start transactions, markers end them and re-add the abort's index
/// entry if it was lost.
fn rebuild_producer_states(log: &mut Log) -> ProducerStates {
    const CHUNK_BYTES: usize = 1 << 20;
    let leo = log.log_end_offset();
    let (mut states, mut offset) = ProducerStates::load(log.dir(), leo).unwrap_or_default();
    offset = offset.max(log.log_start_offset());
    while offset < leo {
        let read = match log.read(offset, CHUNK_BYTES, leo, true) {
            Ok(r) if !r.records.is_empty() => r,
            Ok(_) => break,
            Err(e) => {
                tracing::error!(dir = %log.dir().display(), error = %e, "cannot replay producer state");
                break;
            }
        };
        for (header, bytes) in BatchIter::new(&read.records) {
            let last = header.last_offset();
            if last >= offset {
                replay_batch(log, &mut states, &header, bytes, header.max_timestamp);
            }
            offset = offset.max(last + 1);
        }
    }
    states
}

/// Applies one batch already in the log to the producer state, as its leader's append did:
/// data batches record their sequences (coordinator writes only their epoch) and start a
/// transaction when transactional, markers end one. Used to rebuild the state and by
/// followers, whose producer state must be the leader's should they lead.
fn replay_batch(
    log: &mut Log,
    states: &mut ProducerStates,
    header: &BatchHeader,
    bytes: &[u8],
    seen_ms: i64,
) {
    if header.producer_id < 0 {
        return;
    }
    if header.is_control() {
        replay_marker(log, states, header, bytes);
        return;
    }
    if header.base_sequence == NO_SEQUENCE {
        states.note_epoch(header.producer_id, header.producer_epoch, seen_ms);
    } else {
        let meta = batch_meta(header, header.base_offset, header.last_offset());
        states.record(
            header.producer_id,
            header.producer_epoch,
            meta,
            header.max_timestamp,
            seen_ms,
        );
    }
    if header.is_transactional() {
        states.begin_txn(header.producer_id, header.base_offset);
    }
}

/// Replays one control batch as `write_txn_marker` applied it.
fn replay_marker(log: &mut Log, states: &mut ProducerStates, header: &BatchHeader, bytes: &[u8]) {
    let dir = log.dir().display().to_string();
    let Some(marker) = txn_marker::parse_marker(bytes, header) else {
        tracing::warn!(
            dir,
            offset = header.base_offset,
            "skipping a malformed control batch"
        );
        return;
    };
    if let Err((_, why)) = states
        .check_marker(header.producer_id, header.producer_epoch)
        .and_then(|()| states.check_coordinator_epoch(header.producer_id, marker.coordinator_epoch))
    {
        tracing::warn!(dir, offset = header.base_offset, "skipping a marker: {why}");
        return;
    }
    let first_offset = states.end_txn(
        header.producer_id,
        header.producer_epoch,
        marker.coordinator_epoch,
        header.base_offset,
        header.max_timestamp,
        header.max_timestamp,
    );
    if !marker.commit {
        let txn = AbortedTxn {
            producer_id: header.producer_id,
            first_offset,
            last_offset: header.base_offset,
            last_stable_offset: states
                .first_unstable_offset()
                .unwrap_or(header.base_offset + 1),
        };
        match log.append_aborted_txn(txn) {
            Ok(true) => tracing::debug!(
                dir,
                offset = header.base_offset,
                "indexed a replayed aborted transaction"
            ),
            Ok(false) => {}
            Err(e) => tracing::error!(dir, error = %e, "cannot index an aborted transaction"),
        }
    }
}
