//! A partition log: a directory of segments plus the leader-epoch cache.
//!
//! Exists to give the broker one object per partition that assigns offsets,
//! appends producer batches, serves fetches, rolls and truncates segments,
//! and recovers after a crash. It is not internally synchronized; the broker
//! wraps it in a mutex.
//!
//! Directory layout: `<log.dir>/<topic>-<partition>/` holding segment files
//! (`<20-digit base offset>.log|.index|.timeindex|.txnindex`, see
//! [`crate::segment`])
//! and `leader-epoch-checkpoint` (see [`crate::epoch`]), plus, for
//! compacted logs, `cleaner-offset-checkpoint` (see [`crate::cleaner`]).
//! Removed segments are first renamed to `<name>.deleted` and unlinked
//! `file.delete.delay.ms` later; the cleaner's swap uses `<name>.cleaned`
//! and `<name>.swap` files (see [`crate::cleaner`] for the protocol).
//!
//! Crash behaviour: data below the recovery point (the last offset known to
//! be fsynced, checkpointed by [`crate::log_dir::LogDir`]) is trusted.
//! After an unclean shutdown every segment containing or following the
//! recovery point is rescanned and CRC-checked; the first torn or corrupt
//! batch and everything after it (including later segments) is discarded.
//! After a clean shutdown the index files are trusted after a sanity check
//! and only the tail of each segment is scanned. In both cases leader-epoch
//! entries beyond the resulting log end offset are dropped. Before any of
//! this, an interrupted cleaner swap is finished or rolled back and
//! leftover `.deleted` files are removed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::batch::{self, BatchHeader};
use crate::checkpoint;
use crate::clock::SharedClock;
use crate::config::{LogConfig, TimestampType};
use crate::epoch::{LeaderEpochCache, LEADER_EPOCH_CHECKPOINT};
use crate::error::StorageError;
use crate::file_records::FileRecords;
use crate::open_files::{OpenFiles, DEFAULT_OPEN_FILES};
use crate::segment::{self, LogSegment};
use crate::txn_index::AbortedTxn;

#[path = "log_cleaning.rs"]
mod cleaning;
#[path = "log_retention.rs"]
mod retention;

pub use retention::RetentionOutcome;

/// How to open a log: what is known about the previous shutdown.
#[derive(Clone, Debug)]
pub struct Recovery {
    /// The broker shut down cleanly (all files were flushed and closed).
    pub clean_shutdown: bool,
    /// Offset below which data is known to be fsynced.
    pub recovery_point: i64,
    /// Checkpointed log start offset, if any.
    pub log_start_offset: Option<i64>,
    /// The clock the log reads time from from now on (segment creation, deletion delays).
    pub clock: SharedClock,
    /// The budget of open segment files the log's segments share with the broker's others.
    pub files: OpenFiles,
}

impl Default for Recovery {
    /// A brand-new log / unknown state: recover everything; the system clock.
    fn default() -> Self {
        Recovery {
            clean_shutdown: false,
            recovery_point: 0,
            log_start_offset: None,
            clock: crate::clock::system(),
            files: OpenFiles::new(DEFAULT_OPEN_FILES),
        }
    }
}

/// Result of a successful append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub first_offset: i64,
    pub last_offset: i64,
    /// Largest batch maxTimestamp appended (the append time for LogAppendTime).
    pub max_timestamp: i64,
    /// The append time when LogAppendTime is configured, else -1.
    pub log_append_time: i64,
    pub log_start_offset: i64,
    /// Sum of the batches' recordsCount.
    pub records_count: i64,
    pub size_bytes: usize,
}

/// Result of a read: whole record batches.
#[derive(Clone, Debug)]
pub struct ReadResult {
    pub records: Bytes,
    /// Base offset of the first returned batch, or the requested offset if
    /// nothing is returned.
    pub first_offset: i64,
}

/// One partition's log.
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    /// Sorted by base offset; never empty; the last one is active.
    segments: Vec<LogSegment>,
    log_start_offset: i64,
    recovery_point: i64,
    last_flush_ms: Option<i64>,
    epochs: LeaderEpochCache,
    /// Reused scratch space for batch headers on the append path.
    scratch: Vec<(usize, BatchHeader)>,
    /// A segment file was created since the directory was last fsynced.
    dir_dirty: bool,
    /// Renamed `.deleted` files awaiting removal, with the time of renaming.
    pending_deletes: Vec<(PathBuf, i64)>,
    /// Everything below this offset has been through the cleaner.
    cleaned_through: i64,
    /// Segments with a base offset below this may have offset gaps.
    gaps_below: i64,
    /// Bumped whenever segments are removed, truncated or replaced (not on
    /// append or roll); a cleaning plan is only applied to the same version.
    version: u64,
    /// Where the log reads the time it stamps on segments and pending deletions.
    clock: SharedClock,
    /// The budget its segments' files are open under.
    files: OpenFiles,
}

fn clamp_u64(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

impl Log {
    /// Opens (creating if missing) the log in `dir`, recovering as needed.
    pub fn open(dir: PathBuf, config: LogConfig, recovery: Recovery) -> Result<Log, StorageError> {
        fs::create_dir_all(&dir)?;
        let mut dir_dirty = cleaning::finish_interrupted_swap(&dir)?;
        let cleaner_state = cleaning::read_cleaner_checkpoint(&dir)?;
        let mut bases = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(stem) = name.strip_suffix(".log") {
                if let Some(base) = segment::parse_base_offset(stem) {
                    bases.push(base);
                }
            } else if name.ends_with(".tmp") {
                fs::remove_file(entry.path())?;
            }
        }
        // Index files without a log file are leftovers of a deletion.
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let stem = name
                .strip_suffix(".index")
                .or_else(|| name.strip_suffix(".timeindex"))
                .or_else(|| name.strip_suffix(".txnindex"));
            if let Some(base) = stem.and_then(segment::parse_base_offset) {
                if !bases.contains(&base) {
                    fs::remove_file(entry.path())?;
                }
            }
        }
        bases.sort_unstable();

        let interval = config.index_interval_bytes;
        let mut segments: Vec<LogSegment> = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            let mut seg = LogSegment::open(&dir, base, &recovery.files)?;
            seg.set_allow_gaps(base < cleaner_state.gaps_below);
            let is_last = i + 1 == bases.len();
            let needs_recovery =
                !recovery.clean_shutdown && (is_last || bases[i + 1] > recovery.recovery_point);
            if needs_recovery {
                let truncated = seg.recover(interval)?;
                segments.push(seg);
                if truncated > 0 {
                    for &later in &bases[i + 1..] {
                        tracing::warn!(dir = %dir.display(), "deleting segment {later} after corruption");
                        segment::delete_files(&dir, later)?;
                    }
                    dir_dirty = true;
                    break;
                }
            } else {
                seg.load_clean(interval)?;
                segments.push(seg);
            }
        }
        for w in segments.windows(2) {
            if w[0].next_offset() > w[1].base_offset() {
                return Err(StorageError::CorruptMessage(format!(
                    "segment {} of {} ends at offset {}, overlapping the next segment {}",
                    w[0].base_offset(),
                    dir.display(),
                    w[0].next_offset(),
                    w[1].base_offset()
                )));
            }
        }
        if segments.is_empty() {
            let base = recovery.log_start_offset.unwrap_or(0).max(0);
            segments.push(LogSegment::create(
                &dir,
                base,
                recovery.clock.now_ms(),
                &recovery.files,
            )?);
            dir_dirty = true;
        }
        let log_end = segments.last().expect("non-empty").next_offset();
        let first_base = segments[0].base_offset();
        let log_start_offset = recovery
            .log_start_offset
            .unwrap_or(first_base)
            .max(first_base)
            .min(log_end);
        let mut epochs = LeaderEpochCache::load(&dir.join(LEADER_EPOCH_CHECKPOINT))?;
        epochs.truncate_from_end(log_end)?;

        let mut log = Log {
            dir,
            config,
            segments,
            log_start_offset,
            recovery_point: 0,
            last_flush_ms: None,
            epochs,
            scratch: Vec::new(),
            dir_dirty,
            pending_deletes: Vec::new(),
            cleaned_through: cleaner_state.cleaned_through.min(log_end),
            gaps_below: cleaner_state.gaps_below,
            version: 0,
            clock: recovery.clock.clone(),
            files: recovery.files.clone(),
        };
        // Everything that was recovered has been fsynced; clean segments
        // were fsynced at shutdown.
        log.flush()?;
        log.check_invariants();
        Ok(log)
    }

    /// The log's offset invariants. The cheap ones hold in release builds too (they run on
    /// every append): segments exist, log start ≤ LEO, recovery point ≤ LEO, and the active
    /// segment starts after its predecessor's last offset. The walk over every segment runs
    /// in debug builds only.
    fn check_invariants(&self) {
        assert!(!self.segments.is_empty(), "a log always has a segment");
        let leo = self.log_end_offset();
        assert!(
            self.log_start_offset <= leo && self.recovery_point <= leo,
            "{}: log start {} and recovery point {} must not pass the LEO {leo}",
            self.dir.display(),
            self.log_start_offset,
            self.recovery_point
        );
        if let [.., before, active] = self.segments.as_slice() {
            assert!(
                before.next_offset() <= active.base_offset(),
                "{}: the active segment at {} overlaps its predecessor (ends at {})",
                self.dir.display(),
                active.base_offset(),
                before.next_offset()
            );
        }
        debug_assert!(self
            .segments
            .windows(2)
            .all(|w| w[0].base_offset() < w[1].base_offset()
                && w[0].next_offset() <= w[1].base_offset()));
    }

    fn active(&self) -> &LogSegment {
        self.segments.last().expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut LogSegment {
        self.segments
            .last_mut()
            .expect("a log always has a segment")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// Offset the next appended record will get (LEO).
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    /// Offset below which everything is fsynced.
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(LogSegment::size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn segments(&self) -> &[LogSegment] {
        &self.segments
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// Validates the whole record set before anything is written, filling
    /// `self.scratch` with `(position, header)` per batch.
    fn validate(&mut self, records: &[u8]) -> Result<i64, StorageError> {
        self.scratch.clear();
        if records.is_empty() {
            return Err(StorageError::InvalidRecord("empty record set".into()));
        }
        if records.len() as u64 > self.config.segment_bytes || records.len() > u32::MAX as usize / 2
        {
            return Err(StorageError::MessageTooLarge(format!(
                "record set of {} bytes is larger than the segment size {}",
                records.len(),
                self.config.segment_bytes
            )));
        }
        let mut pos = 0usize;
        let mut offsets = 0i64;
        while pos < records.len() {
            let rest = &records[pos..];
            let h = BatchHeader::parse(rest)?;
            h.check_structure()?;
            let size = h.total_size();
            if size > rest.len() {
                return Err(StorageError::CorruptMessage(format!(
                    "record batch at position {pos} claims {size} bytes but only {} remain",
                    rest.len()
                )));
            }
            if size as u64 > self.config.max_message_bytes {
                return Err(StorageError::MessageTooLarge(format!(
                    "record batch of {size} bytes exceeds max.message.bytes {}",
                    self.config.max_message_bytes
                )));
            }
            if !batch::verify_crc(&rest[..size]) {
                return Err(StorageError::CorruptMessage(format!(
                    "record batch at position {pos} failed its CRC check"
                )));
            }
            if h.records_count < 0 {
                return Err(StorageError::InvalidRecord(format!(
                    "negative record count {}",
                    h.records_count
                )));
            }
            offsets += h.offset_count();
            self.scratch.push((pos, h));
            pos += size;
        }
        Ok(offsets)
    }

    /// Appends a producer record set (one or more v2 batches) as leader:
    /// validates everything first (all-or-nothing), assigns consecutive
    /// offsets from the log end, stamps `leader_epoch`, applies
    /// LogAppendTime if configured, and writes it with a single write.
    pub fn append_as_leader(
        &mut self,
        records: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let offsets = match self.validate(records) {
            Ok(n) => n,
            Err(e) => {
                self.scratch.clear();
                return Err(e);
            }
        };
        let first_offset = self.log_end_offset();
        let last_offset = first_offset
            .checked_add(offsets - 1)
            .ok_or_else(|| StorageError::InvalidRecord("offset overflow".into()))?;

        let mut headers = std::mem::take(&mut self.scratch);
        let mut buf = records.to_vec();
        let log_append = self.config.timestamp_type == TimestampType::LogAppendTime;
        let mut next = first_offset;
        let mut max_timestamp = i64::MIN;
        let mut records_count = 0i64;
        for (pos, h) in headers.iter_mut() {
            let b = &mut buf[*pos..*pos + h.total_size()];
            batch::set_base_offset(b, next);
            batch::set_partition_leader_epoch(b, leader_epoch);
            h.base_offset = next;
            h.partition_leader_epoch = leader_epoch;
            if log_append {
                batch::set_log_append_time(b, now_ms);
                h.max_timestamp = now_ms;
                h.attributes |= 0x08;
            }
            max_timestamp = max_timestamp.max(h.max_timestamp);
            records_count += h.records_count as i64;
            next += h.offset_count();
        }
        debug_assert_eq!(next - 1, last_offset);

        let result = self.write_batches(
            &buf,
            &headers,
            leader_epoch,
            first_offset,
            last_offset,
            now_ms,
        );
        headers.clear();
        self.scratch = headers;
        result?;
        self.after_append()?;
        Ok(AppendInfo {
            first_offset,
            last_offset,
            max_timestamp,
            log_append_time: if log_append { now_ms } else { -1 },
            log_start_offset: self.log_start_offset,
            records_count,
            size_bytes: buf.len(),
        })
    }

    /// Appends batches copied from the partition's leader as they are: offsets, leader
    /// epochs, timestamps and CRCs unchanged, so the replica's log is byte-identical to the
    /// leader's. The record set is validated first (all-or-nothing); offsets must increase
    /// from the log end offset (gaps are allowed: the leader's log may be compacted), and
    /// each new leader epoch in it is recorded in the epoch cache at its first batch.
    pub fn append_as_follower(
        &mut self,
        records: &[u8],
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        if let Err(e) = self.validate(records) {
            self.scratch.clear();
            return Err(e);
        }
        let mut headers = std::mem::take(&mut self.scratch);
        let result = self.append_validated_as_follower(records, &headers, now_ms);
        headers.clear();
        self.scratch = headers;
        result
    }

    fn append_validated_as_follower(
        &mut self,
        records: &[u8],
        headers: &[(usize, BatchHeader)],
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let leo = self.log_end_offset();
        let mut next = leo;
        let mut gaps = false;
        let mut max_timestamp = i64::MIN;
        let mut records_count = 0i64;
        for (pos, h) in headers {
            if h.base_offset < next {
                return Err(StorageError::InvalidRecord(format!(
                    "replicated batch at position {pos} starts at offset {} below the next offset {next}",
                    h.base_offset
                )));
            }
            gaps |= h.base_offset != next;
            next = h.last_offset() + 1;
            max_timestamp = max_timestamp.max(h.max_timestamp);
            records_count += h.records_count as i64;
        }
        let (first_offset, last_offset) = (headers[0].1.base_offset, next - 1);
        self.maybe_roll(records.len() as u64, last_offset, now_ms)?;
        self.epochs.write_pending()?;
        for (_, h) in headers {
            let epoch = h.partition_leader_epoch;
            if epoch >= 0 && self.epochs.latest_epoch().is_none_or(|e| epoch > e) {
                self.epochs.assign(epoch, h.base_offset)?;
            }
        }
        if gaps {
            // Recovery must accept the gaps in this segment (as in a cleaned one).
            self.active_mut().set_allow_gaps(true);
            if self.gaps_below <= last_offset {
                self.gaps_below = last_offset + 1;
                self.write_cleaner_checkpoint()?;
            }
        }
        let interval = self.config.index_interval_bytes;
        self.active_mut().append(records, headers, interval)?;
        debug_assert_eq!(self.log_end_offset(), last_offset + 1);
        self.after_append()?;
        Ok(AppendInfo {
            first_offset,
            last_offset,
            max_timestamp,
            log_append_time: -1,
            log_start_offset: self.log_start_offset,
            records_count,
            size_bytes: records.len(),
        })
    }

    /// After every append: the `flush.messages` policy, then the invariants.
    fn after_append(&mut self) -> Result<(), StorageError> {
        if clamp_u64(self.config.flush_interval_messages)
            <= self.log_end_offset() - self.recovery_point
        {
            self.flush()?;
        }
        self.check_invariants();
        Ok(())
    }

    fn write_batches(
        &mut self,
        buf: &[u8],
        headers: &[(usize, BatchHeader)],
        leader_epoch: i32,
        first_offset: i64,
        last_offset: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        self.maybe_roll(buf.len() as u64, last_offset, now_ms)?;
        self.epochs.write_pending()?;
        if leader_epoch >= 0 && self.epochs.latest_epoch().is_none_or(|e| leader_epoch > e) {
            self.epochs.assign(leader_epoch, first_offset)?;
        }
        let interval = self.config.index_interval_bytes;
        self.active_mut().append(buf, headers, interval)?;
        debug_assert_eq!(self.log_end_offset(), last_offset + 1);
        Ok(())
    }

    fn maybe_roll(&mut self, size: u64, last_offset: i64, now_ms: i64) -> Result<(), StorageError> {
        let a = self.active();
        if a.is_empty() {
            return Ok(());
        }
        let full = a.size() + size > self.config.segment_bytes || a.size() + size > u32::MAX as u64;
        let old = now_ms.saturating_sub(a.created_ms()) >= clamp_u64(self.config.segment_ms);
        let offsets_overflow = last_offset - a.base_offset() > i32::MAX as i64;
        if full || old || offsets_overflow {
            self.roll(now_ms)?;
        }
        Ok(())
    }

    /// Starts a new active segment at the log end offset (no-op if the
    /// active segment is empty).
    pub fn roll(&mut self, now_ms: i64) -> Result<(), StorageError> {
        if self.active().is_empty() {
            return Ok(());
        }
        self.active_mut().write_pending_indexes()?;
        let base = self.log_end_offset();
        let seg = LogSegment::create(&self.dir, base, now_ms, &self.files)?;
        self.segments.push(seg);
        self.dir_dirty = true;
        tracing::debug!(dir = %self.dir.display(), base, "rolled new segment");
        Ok(())
    }

    /// Reads whole batches starting with the one containing `start_offset`.
    /// Only batches with `last_offset < max_offset` are returned, at most
    /// `max_bytes` bytes, except that with `min_one_batch` a first batch
    /// larger than `max_bytes` is returned whole.
    pub fn read(
        &self,
        start_offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
    ) -> Result<ReadResult, StorageError> {
        let from = self.segments_from(start_offset)?;
        let empty = ReadResult {
            records: Bytes::new(),
            first_offset: start_offset,
        };
        if start_offset == self.log_end_offset() {
            return Ok(empty);
        }
        let interval = self.config.index_interval_bytes;
        for seg in from {
            if let Some((records, first_offset)) =
                seg.read(start_offset, max_bytes, max_offset, min_one_batch, interval)?
            {
                return Ok(ReadResult {
                    records,
                    first_offset,
                });
            }
        }
        Ok(empty)
    }

    /// The segments a read at `start_offset` walks: the one holding it and those after;
    /// OFFSET_OUT_OF_RANGE outside `[log start, log end]`.
    fn segments_from(&self, start_offset: i64) -> Result<&[LogSegment], StorageError> {
        let log_end = self.log_end_offset();
        if start_offset < self.log_start_offset || start_offset > log_end {
            return Err(StorageError::OffsetOutOfRange {
                offset: start_offset,
                log_start: self.log_start_offset,
                log_end,
            });
        }
        let idx = self
            .segments
            .partition_point(|s| s.base_offset() <= start_offset)
            .saturating_sub(1);
        Ok(&self.segments[idx..])
    }

    /// [`Log::read`] leaving the batches in their segment file: `None` when nothing is
    /// returned (at the log end, or the limits exclude the first batch).
    pub fn read_file(
        &self,
        start_offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
    ) -> Result<Option<FileRecords>, StorageError> {
        for seg in self.segments_from(start_offset)? {
            let (slice, here) =
                seg.read_file(start_offset, max_bytes, max_offset, min_one_batch)?;
            if here {
                return Ok(slice);
            }
        }
        Ok(None)
    }

    /// Indexes an aborted transaction in the segment holding its abort
    /// marker (`txn.last_offset`, which must be below the log end offset).
    /// Returns false when it was already indexed or its segment is gone.
    pub fn append_aborted_txn(&mut self, txn: AbortedTxn) -> Result<bool, StorageError> {
        assert!(
            txn.last_offset < self.log_end_offset(),
            "abort marker {} beyond the log end {}",
            txn.last_offset,
            self.log_end_offset()
        );
        if txn.last_offset < self.segments[0].base_offset() {
            return Ok(false);
        }
        let idx = self
            .segments
            .partition_point(|s| s.base_offset() <= txn.last_offset)
            - 1;
        self.segments[idx].append_aborted_txn(txn)
    }

    /// The aborted transactions overlapping `[fetch_offset, upper_bound)`:
    /// marker at or after `fetch_offset`, first offset below `upper_bound`.
    /// Scans the transaction indexes from the segment holding `fetch_offset`
    /// until an entry shows no later one can qualify.
    pub fn collect_aborted_txns(&self, fetch_offset: i64, upper_bound: i64) -> Vec<AbortedTxn> {
        let mut out = Vec::new();
        let idx = self
            .segments
            .partition_point(|s| s.base_offset() <= fetch_offset)
            .saturating_sub(1);
        for seg in &self.segments[idx..] {
            if seg.txn_index().collect(fetch_offset, upper_bound, &mut out) {
                break;
            }
        }
        out
    }

    /// fsyncs the transaction indexes that have unsynced entries (without
    /// the data), so state derived from them can be persisted safely.
    pub fn sync_txn_indexes(&mut self) -> Result<(), StorageError> {
        for seg in &mut self.segments {
            seg.sync_txn_index()?;
        }
        Ok(())
    }

    /// fsyncs every segment with unflushed data and advances the recovery
    /// point to the log end offset.
    pub fn flush(&mut self) -> Result<(), StorageError> {
        self.epochs.write_pending()?;
        for seg in self.segments.iter_mut().filter(|s| s.is_dirty()) {
            seg.flush()?;
        }
        if self.dir_dirty {
            checkpoint::sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        self.recovery_point = self.log_end_offset();
        Ok(())
    }

    /// Flushes if `flush_interval_ms` elapsed since the last timed flush.
    pub fn flush_if_due(&mut self, now_ms: i64) -> Result<(), StorageError> {
        let last = *self.last_flush_ms.get_or_insert(now_ms);
        if now_ms.saturating_sub(last) >= clamp_u64(self.config.flush_interval_ms) {
            self.last_flush_ms = Some(now_ms);
            if self.recovery_point < self.log_end_offset() {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Removes every batch containing an offset >= `offset` (batch
    /// boundaries are kept, so the new log end offset may be below `offset`
    /// if it falls inside a batch) and the matching leader-epoch entries.
    /// Truncating below the log start offset empties the log and restarts
    /// it at `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), StorageError> {
        if offset >= self.log_end_offset() {
            // No record to cut, but an epoch this replica recorded at its log end when it
            // led without writing a batch is not the partition's history (as Kafka's
            // UnifiedLog.truncateTo): the new leader never had it, and a follower naming it
            // as its last fetched epoch would be told it diverges on every fetch.
            return self.epochs.truncate_from_end(self.log_end_offset());
        }
        self.version += 1;
        if offset < self.log_start_offset || offset <= self.segments[0].base_offset() {
            self.restart_empty_at(offset.max(0))?;
        } else {
            while self.active().base_offset() >= offset {
                let seg = self.segments.pop().expect("more than one segment");
                seg.delete()?;
            }
            self.active_mut().truncate_to(offset)?;
        }
        let log_end = self.log_end_offset();
        self.log_start_offset = self.log_start_offset.min(log_end);
        self.recovery_point = self.recovery_point.min(log_end);
        self.epochs.truncate_from_end(log_end)?;
        if self.cleaned_through > log_end {
            // Data above the new end will be new, uncleaned data.
            self.cleaned_through = log_end;
            self.write_cleaner_checkpoint()?;
        }
        self.check_invariants();
        Ok(())
    }

    /// Deletes every segment and starts an empty one at `base`, where the log now starts.
    fn restart_empty_at(&mut self, base: i64) -> Result<(), StorageError> {
        for seg in self.segments.drain(..) {
            seg.delete()?;
        }
        self.segments.push(LogSegment::create(
            &self.dir,
            base,
            self.clock.now_ms(),
            &self.files,
        )?);
        self.log_start_offset = base;
        self.dir_dirty = true;
        Ok(())
    }

    /// Empties the log and restarts it at `offset` (a follower whose fetch offset the leader
    /// no longer has, below the leader's log start offset: KIP-107's truncate-fully).
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), StorageError> {
        assert!(offset >= 0, "a log cannot start at {offset}");
        self.version += 1;
        self.restart_empty_at(offset)?;
        self.recovery_point = offset;
        self.epochs.clear()?;
        if self.cleaned_through != offset {
            self.cleaned_through = offset;
            self.write_cleaner_checkpoint()?;
        }
        self.check_invariants();
        Ok(())
    }

    /// Moves the log start offset forward (DeleteRecords / retention);
    /// never beyond the log end offset.
    pub fn advance_log_start_offset(&mut self, offset: i64) {
        if offset > self.log_start_offset {
            self.log_start_offset = offset.min(self.log_end_offset());
        }
    }

    /// Flushes and closes the log (a clean close).
    pub fn close(mut self) -> Result<(), StorageError> {
        self.flush()
    }

    /// Deletes the whole partition directory.
    pub fn delete(self) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        drop(self);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Base offset of the first batch (at or after the log start offset)
    /// whose maxTimestamp is >= `ts`.
    pub fn batch_for_timestamp(&self, ts: i64) -> Result<Option<i64>, StorageError> {
        for seg in &self.segments {
            if seg.next_offset() <= self.log_start_offset {
                continue;
            }
            if let Some(off) = seg.find_batch_for_timestamp(ts, self.log_start_offset)? {
                return Ok(Some(off));
            }
        }
        Ok(None)
    }

    /// `(max timestamp, base offset of the first batch holding it)` over the
    /// whole log, `None` when the log is empty.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.segments
            .iter()
            .filter(|s| s.next_offset() > self.log_start_offset)
            .filter_map(LogSegment::max_timestamp)
            .fold(None, |best: Option<(i64, i64)>, cur| match best {
                Some(b) if b.0 >= cur.0 => Some(b),
                _ => Some(cur),
            })
    }

    pub fn leader_epoch_cache(&self) -> &LeaderEpochCache {
        &self.epochs
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// See [`LeaderEpochCache::end_offset_for`].
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// Records a new leadership's `epoch` at the log end (written to the checkpoint with the
    /// first batch after it, or the next flush: see [`LeaderEpochCache::assign_at_end`]).
    pub fn begin_epoch(&mut self, epoch: i32) {
        let end = self.log_end_offset();
        self.epochs.assign_at_end(epoch, end);
    }
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "cleanup_tests.rs"]
mod cleanup_tests;

#[cfg(test)]
#[path = "txn_index_tests.rs"]
mod txn_index_tests;
