//! Replication on a [`Partition`]: the follower's side (append the leader's batches as they
//! are, take the leader's HW and log start offset, truncate where the logs diverge) and the
//! leader's (record each follower fetch, move the HW, decide ISR changes).
//!
//! Everything runs under the partition's log mutex, so an append, a fetch's offsets and a
//! role change are never interleaved. A follower append names the leader epoch it fetched
//! under and is refused once the partition moved on: a response from an old leader never
//! lands in the log.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use gregor_storage::batch::BatchIter;
use gregor_storage::error::StorageError;
use gregor_storage::log::{AppendInfo, Log};
use uuid::Uuid;

use super::{replay_batch, AppendError, Partition};
use crate::producer_state::ProducerStates;

/// An ISR the leader asks the controller for (AlterPartition), based on the partition
/// epoch it last saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub topic_id: Uuid,
    pub topic: String,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

/// Why the leader did not take a follower's fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FollowerFetchError {
    #[error("this broker is not the leader of the partition")]
    NotLeader,
    #[error("the fetching broker is not a replica of the partition")]
    NotReplica,
}

impl Partition {
    /// On a follower: appends batches fetched from the leader at `leader_epoch`, unchanged,
    /// and replays them into the producer state. Refused with NotFollower if this broker
    /// leads, or the partition's leader epoch is no longer `leader_epoch`.
    pub fn append_as_follower(
        &self,
        records: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        let mut log = self.lock();
        if self.is_leader() || self.leader_epoch() != leader_epoch {
            return Err(AppendError::NotFollower);
        }
        let mut producers = self.producers();
        let segments_before = log.segment_count();
        let info = log.append_as_follower(records, now_ms)?;
        for (header, bytes) in BatchIter::new(records) {
            replay_batch(&mut log, &mut producers, &header, bytes, now_ms);
        }
        self.snapshot_if_rolled(&mut log, &producers, segments_before);
        self.leo_watch.send_replace(log.log_end_offset());
        self.check_offsets(&log);
        Ok(info)
    }

    /// On a follower: takes the leader's HW (capped by this log's end; it only moves
    /// forward) and log start offset (deleting below it, never above the HW).
    pub fn update_from_leader(
        &self,
        leader_hw: i64,
        leader_log_start: i64,
    ) -> Result<(), StorageError> {
        let mut log = self.lock();
        if self.is_leader() {
            return Ok(());
        }
        self.set_follower_lag(leader_hw - log.log_end_offset());
        let hw = leader_hw.min(log.log_end_offset());
        if hw > self.high_watermark() {
            self.advance_hw(hw);
        }
        let start = leader_log_start.min(self.high_watermark());
        if start > log.log_start_offset() {
            let hw = self.high_watermark();
            log.delete_records_before(start, hw)?;
            self.log_start_offset
                .store(log.log_start_offset(), Ordering::Release);
        }
        self.check_offsets(&log);
        Ok(())
    }

    /// The epoch of the last batch here (what a follower's fetch names as its last fetched
    /// epoch), -1 for a log without epochs.
    pub fn last_fetched_epoch(&self) -> i32 {
        self.lock().latest_epoch().unwrap_or(-1)
    }

    /// On a follower the leader told its log diverges (KIP-595's diverging epoch in Fetch,
    /// KIP-279's rule): the leader's `epoch` ends at `end_offset`; cuts this log at the
    /// smaller of that and where its own records of that epoch (or the largest older one it
    /// has) end. Returns the new LEO.
    pub fn truncate_to_divergence(&self, epoch: i32, end_offset: i64) -> Result<i64, AppendError> {
        let mut log = self.lock();
        if self.is_leader() {
            return Err(AppendError::NotFollower);
        }
        let local_end = log
            .end_offset_for_epoch(epoch)
            .map_or(log.log_end_offset(), |(_, end)| end);
        let target = end_offset.min(local_end).max(0);
        if target < self.high_watermark() {
            tracing::warn!(topic = %self.topic, partition = self.index, target, hw = self.high_watermark(), "truncating below the high watermark: the new leader lacks committed records (unclean election?)");
        }
        let cuts_records = target < log.log_end_offset();
        if cuts_records {
            tracing::info!(topic = %self.topic, partition = self.index, from = log.log_end_offset(), to = target, epoch, "truncating a divergent log tail");
        }
        // Also when no record goes: the divergence may be only an epoch entry at the log end.
        log.truncate_to(target)?;
        if cuts_records {
            self.after_truncation(&mut log);
        }
        Ok(log.log_end_offset())
    }

    /// On a follower whose fetch offset the leader no longer has (below its log start):
    /// empties the log and restarts it at `offset`.
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> Result<(), AppendError> {
        let mut log = self.lock();
        if self.is_leader() {
            return Err(AppendError::NotFollower);
        }
        tracing::info!(topic = %self.topic, partition = self.index, from = log.log_end_offset(), offset, "the leader's log starts after this replica's end: starting over there");
        log.truncate_fully_and_start_at(offset)?;
        // Nothing of the old log is left to derive producer state from.
        ProducerStates::remove_snapshot(log.dir());
        self.forget_snapshot();
        // LEO = log start = `offset`, so the HW becomes `offset` too.
        self.after_truncation(&mut log);
        Ok(())
    }

    /// On the leader: whether a follower fetching at `fetch_offset` after a batch of
    /// `last_fetched_epoch` has a log that diverges from this one, and if so the epoch and
    /// end offset it must truncate to (KIP-595's diverging epoch).
    pub fn divergence(&self, last_fetched_epoch: i32, fetch_offset: i64) -> Option<(i32, i64)> {
        if last_fetched_epoch < 0 {
            return None;
        }
        let log = self.lock();
        match log.end_offset_for_epoch(last_fetched_epoch) {
            Some((epoch, end)) if epoch < last_fetched_epoch || end < fetch_offset => {
                Some((epoch, end))
            }
            _ => None,
        }
    }

    /// On the leader: records a fetch of follower `replica` at `fetch_offset` (its LEO),
    /// moves the HW if that allows, and returns the ISR to ask for if the follower may now
    /// join it (it is `eligible`, a live broker, and no other change is pending).
    pub fn record_follower_fetch(
        &self,
        replica: i32,
        fetch_offset: i64,
        now_ms: i64,
        eligible: bool,
    ) -> Result<Option<IsrChange>, FollowerFetchError> {
        let log = self.lock();
        let state = self.state();
        if state.leader != self.node_id {
            return Err(FollowerFetchError::NotLeader);
        }
        if !self
            .replication()
            .tracker
            .on_fetch(replica, fetch_offset, log.log_end_offset(), now_ms)
        {
            return Err(FollowerFetchError::NotReplica);
        }
        self.maybe_advance_hw(&log);
        if !eligible || state.isr.contains(&replica) {
            return Ok(None);
        }
        let epoch_start = epoch_start_offset(&log, state.leader_epoch);
        let mut replication = self.replication();
        if replication.pending_isr.is_some()
            || !replication
                .tracker
                .may_join(replica, self.high_watermark(), epoch_start)
        {
            return Ok(None);
        }
        let mut isr = state.isr.clone();
        isr.insert(replica);
        replication.pending_isr = Some((isr.clone(), state.partition_epoch));
        Ok(Some(self.isr_change(&state, isr)))
    }

    /// On the leader: the ISR without the followers not caught up for `max_lag_ms`, if any
    /// are (and no other change is pending).
    pub fn isr_shrink(&self, now_ms: i64, max_lag_ms: i64) -> Option<IsrChange> {
        let _log = self.lock();
        let state = self.state();
        if state.leader != self.node_id {
            return None;
        }
        let mut replication = self.replication();
        if replication.pending_isr.is_some() {
            return None;
        }
        let lagging = replication.tracker.lagging(&state.isr, now_ms, max_lag_ms);
        if lagging.is_empty() {
            return None;
        }
        let isr: BTreeSet<i32> = state
            .isr
            .iter()
            .copied()
            .filter(|r| !lagging.contains(r))
            .collect();
        debug_assert!(isr.contains(&self.node_id), "the leader stays in its ISR");
        tracing::info!(topic = %self.topic, partition = self.index, ?lagging, "followers fell behind: shrinking the ISR");
        // Until the shrink commits the HW still waits for them: the pending set is the
        // committed ISR's subset, so the union is the committed ISR.
        replication.pending_isr = Some((isr.clone(), state.partition_epoch));
        Some(self.isr_change(&state, isr))
    }

    /// The controller refused (or never answered) the ISR change based on
    /// `partition_epoch`: another may be asked for.
    pub fn isr_change_failed(&self, partition_epoch: i32) {
        let _log = self.lock();
        let mut replication = self.replication();
        if replication
            .pending_isr
            .as_ref()
            .is_some_and(|(_, based_on)| *based_on == partition_epoch)
        {
            replication.pending_isr = None;
        }
    }

    /// The followers' LEOs as this leader last heard them (-1: not fetched), for tests and
    /// operators.
    pub fn follower_leos(&self) -> Vec<(i32, i64)> {
        let _log = self.lock();
        let state = self.state();
        let replication = self.replication();
        state
            .replicas
            .iter()
            .filter(|&&r| r != self.node_id)
            .map(|&r| (r, replication.tracker.follower_leo(r)))
            .collect()
    }

    fn isr_change(&self, state: &super::PartitionState, isr: BTreeSet<i32>) -> IsrChange {
        IsrChange {
            topic_id: self.topic_id,
            topic: self.topic.clone(),
            partition: self.index,
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            isr: isr.into_iter().collect(),
        }
    }
}

/// Where `epoch` starts in `log` (0 if the cache does not know it).
fn epoch_start_offset(log: &Log, epoch: i32) -> i64 {
    log.leader_epoch_cache()
        .entries()
        .iter()
        .find(|e| e.epoch == epoch)
        .map_or(0, |e| e.start_offset)
}
