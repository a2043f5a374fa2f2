//! One partition hosted by this broker: its log and the offsets that gate readers.
//!
//! Architecture invariant: appends, the log end offset (LEO) and the high watermark (HW)
//! change only here, under the log mutex. Waiters (acks=all produce, long-poll fetch) never
//! poll: they subscribe to `hw_watch`, which is published after every change of the HW.

use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use gregor_storage::batch::{BatchHeader, BatchIter};
use gregor_storage::config::LogConfig;
use gregor_storage::error::StorageError;
use gregor_storage::log::{AppendInfo, Log, ReadResult};
use tokio::sync::watch;
use uuid::Uuid;

use crate::producer_state::{BatchMeta, Check, ProducerStates};

/// A partition led by this broker.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub topic_id: Uuid,
    log: Mutex<Log>,
    /// Idempotent producers' recent batches; locked only while `log` is held.
    producers: Mutex<ProducerStates>,
    leader_epoch: AtomicI32,
    /// Replicas in sync; with one replica only the leader itself.
    isr_size: AtomicI32,
    log_start_offset: AtomicI64,
    log_end_offset: AtomicI64,
    /// The high watermark; every change is published to subscribers.
    hw_watch: watch::Sender<i64>,
}

/// What a read returned, with the offsets a fetch response reports.
pub struct PartitionRead {
    pub records: Bytes,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub last_stable_offset: i64,
}

impl Partition {
    pub fn new(
        topic: String,
        index: i32,
        topic_id: Uuid,
        log: Log,
        leader_epoch: i32,
        isr_size: usize,
    ) -> Partition {
        let leo = log.log_end_offset();
        let start = log.log_start_offset();
        let partition = Partition {
            topic,
            index,
            topic_id,
            log_start_offset: AtomicI64::new(start),
            log_end_offset: AtomicI64::new(leo),
            leader_epoch: AtomicI32::new(leader_epoch),
            isr_size: AtomicI32::new(isr_size as i32),
            // With a single in-sync replica everything in the recovered log is committed.
            hw_watch: watch::Sender::new(leo),
            producers: Mutex::new(rebuild_producer_states(&log)),
            log: Mutex::new(log),
        };
        partition.become_leader(leader_epoch);
        partition
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        // A panic while holding the lock would leave the log in an unknown state; refuse to
        // continue serving it rather than hide that.
        self.log.lock().expect("partition log mutex poisoned")
    }

    /// Records that this broker leads the partition from `epoch` on.
    pub fn become_leader(&self, epoch: i32) {
        self.leader_epoch.store(epoch, Ordering::Release);
        let mut log = self.lock();
        if log.latest_epoch().is_none_or(|e| e < epoch) {
            let leo = log.log_end_offset();
            if let Err(e) = log.assign_epoch(epoch, leo) {
                tracing::error!(topic = %self.topic, partition = self.index, error = %e, "cannot record leader epoch");
            }
        }
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }
    pub fn high_watermark(&self) -> i64 {
        *self.hw_watch.borrow()
    }
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset.load(Ordering::Acquire)
    }
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.load(Ordering::Acquire)
    }
    pub fn isr_size(&self) -> usize {
        self.isr_size.load(Ordering::Acquire) as usize
    }

    /// A receiver that sees every later change of the high watermark.
    pub fn subscribe_hw(&self) -> watch::Receiver<i64> {
        self.hw_watch.subscribe()
    }

    /// Appends a producer's record set as leader and advances LEO (and HW: the ISR is this
    /// broker alone, so a write is committed as soon as it is in the log).
    pub fn append(&self, records: &[u8], now_ms: i64) -> Result<AppendInfo, AppendError> {
        let mut log = self.lock();
        let mut producers = self
            .producers
            .lock()
            .expect("producer state mutex poisoned");
        // Idempotent batches are checked against the producer's recent batches first.
        for (header, _) in BatchIter::new(records) {
            if header.producer_id < 0 || header.is_control() {
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
                Check::Duplicate { first_offset } => {
                    return Err(AppendError::Duplicate { first_offset })
                }
                Check::Reject(code, message) => return Err(AppendError::Producer(code, message)),
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
            if header.producer_id >= 0 && !header.is_control() {
                producers.record(
                    header.producer_id,
                    header.producer_epoch,
                    batch_meta(&header, first_offset, last_offset),
                    now_ms,
                );
            }
            first_offset = last_offset + 1;
        }
        self.log_end_offset.store(leo, Ordering::Release);
        self.hw_watch.send_replace(leo);
        Ok(info)
    }

    /// Writes the producer-state snapshot (forgetting producers idle for `expiration_ms`).
    pub fn snapshot_producers(&self, now_ms: i64, expiration_ms: i64) -> std::io::Result<()> {
        let log = self.lock();
        let mut producers = self
            .producers
            .lock()
            .expect("producer state mutex poisoned");
        producers.expire(now_ms, expiration_ms);
        producers.save(log.dir(), log.log_end_offset())
    }

    /// Reads whole batches from `offset`, never past the HW.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<PartitionRead, StorageError> {
        let log = self.lock();
        let hw = self.high_watermark();
        let ReadResult { records, .. } = log.read(offset, max_bytes, hw, min_one_batch)?;
        Ok(PartitionRead {
            records,
            high_watermark: hw,
            log_start_offset: log.log_start_offset(),
            last_stable_offset: hw,
        })
    }

    /// Runs `f` with the log locked (for lookups that need more than one call).
    pub fn with_log<T>(&self, f: impl FnOnce(&mut Log) -> T) -> T {
        f(&mut self.lock())
    }

    /// DeleteRecords: moves the log start offset to `offset` (-1: the high watermark).
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, StorageError> {
        let mut log = self.lock();
        let start = log.delete_records_before(offset, self.high_watermark())?;
        self.log_start_offset.store(start, Ordering::Release);
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

    /// (recovery point, log start offset) for the checkpoint files.
    pub fn checkpoint_offsets(&self) -> (i64, i64) {
        let log = self.lock();
        (log.recovery_point(), log.log_start_offset())
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

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A retried idempotent batch that is already in the log.
    #[error("duplicate batch, first written at offset {first_offset}")]
    Duplicate { first_offset: i64 },
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

/// Loads the producer-state snapshot and replays the batch headers written after it.
fn rebuild_producer_states(log: &Log) -> ProducerStates {
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
        for (header, _) in BatchIter::new(&read.records) {
            let last = header.last_offset();
            if last >= offset && header.producer_id >= 0 && !header.is_control() {
                let meta = batch_meta(&header, header.base_offset, last);
                states.record(
                    header.producer_id,
                    header.producer_epoch,
                    meta,
                    header.max_timestamp,
                );
            }
            offset = offset.max(last + 1);
        }
    }
    states
}
