//! Retention (`cleanup.policy=delete`), DeleteRecords and the delayed
//! removal of deleted segment files.
//!
//! Exists so that old data leaves the log a whole segment at a time: by age
//! (`retention.ms`), by total size (`retention.bytes`) or because the log
//! start offset moved past it (DeleteRecords, a checkpointed start offset).
//!
//! Deleting a segment removes it from the log, moves the log start offset
//! to the next segment's base offset and renames its files (data and
//! indexes, the transaction index included) to
//! `<name>.deleted`; [`Log::remove_deleted_files`] unlinks them once
//! `file.delete.delay.ms` has passed (a fetch that already holds an open
//! handle keeps working meanwhile). [`Log::open`] removes leftover
//! `.deleted` files at once. The new log start offset becomes durable when
//! the broker next writes the log-start-offset checkpoint; until then a
//! restart derives it from the first remaining segment, which is also
//! correct because the deleted segments are gone.

use super::*;

/// What [`Log::apply_retention`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    /// The log start offset afterwards.
    pub log_start_offset: i64,
}

impl Log {
    /// Rolls a non-empty active segment that is at least `segment.ms` old,
    /// so that time-based retention can eventually delete it even when no
    /// further append arrives. Returns whether it rolled.
    pub fn roll_if_due(&mut self, now_ms: i64) -> Result<bool, StorageError> {
        let a = self.active();
        if a.is_empty() || now_ms.saturating_sub(a.created_ms()) < clamp_u64(self.config.segment_ms)
        {
            return Ok(false);
        }
        self.roll(now_ms)?;
        Ok(true)
    }

    /// Deletes whole non-active segments from the start of the log while
    /// the oldest one is entirely below the log start offset, or (with
    /// `cleanup.policy` containing `delete`) its newest batch is older than
    /// `now - retention.ms`, or the log would still hold at least
    /// `retention.bytes` without it. Stops at the first segment that
    /// matches none of these, at the active segment, and at the first
    /// segment that holds offsets at or above `high_watermark`.
    pub fn apply_retention(
        &mut self,
        now_ms: i64,
        high_watermark: i64,
    ) -> Result<RetentionOutcome, StorageError> {
        let delete = self.config.cleanup_delete;
        let time_limit = (delete && self.config.retention_ms >= 0)
            .then(|| now_ms.saturating_sub(self.config.retention_ms));
        let size_limit = (delete && self.config.retention_bytes >= 0)
            .then_some(self.config.retention_bytes as u64);
        let mut out = RetentionOutcome::default();
        let mut remaining = self.size_bytes();
        while self.segments.len() > 1 {
            let seg = &self.segments[0];
            let next_base = self.segments[1].base_offset();
            if next_base > high_watermark {
                break;
            }
            let below_start = next_base <= self.log_start_offset;
            // An empty non-active segment (possible after compaction) has
            // no timestamp and nothing worth keeping.
            let expired = time_limit
                .is_some_and(|limit| seg.max_timestamp().is_none_or(|(ts, _)| ts < limit));
            let oversized = size_limit.is_some_and(|limit| remaining - seg.size() >= limit);
            if !(below_start || expired || oversized) {
                break;
            }
            let size = seg.size();
            self.delete_first_segment(now_ms)?;
            remaining -= size;
            out.segments_deleted += 1;
            out.bytes_deleted += size;
        }
        if out.segments_deleted > 0 {
            tracing::info!(
                dir = %self.dir.display(),
                segments = out.segments_deleted,
                bytes = out.bytes_deleted,
                log_start_offset = self.log_start_offset,
                "deleted segments by retention"
            );
        }
        out.log_start_offset = self.log_start_offset;
        self.check_invariants();
        Ok(out)
    }

    /// DeleteRecords: moves the log start offset up to `offset` (`-1` means
    /// `high_watermark`) and deletes the segments entirely below it.
    /// Offsets below 0 (other than -1) or above the high watermark are
    /// rejected with `OffsetOutOfRange`. Returns the new log start offset.
    pub fn delete_records_before(
        &mut self,
        offset: i64,
        high_watermark: i64,
    ) -> Result<i64, StorageError> {
        let target = if offset == -1 { high_watermark } else { offset };
        if target < 0 || target > high_watermark || target > self.log_end_offset() {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end: self.log_end_offset(),
            });
        }
        self.advance_log_start_offset(target);
        let now_ms = self.clock.now_ms();
        while self.segments.len() > 1 && self.segments[1].base_offset() <= self.log_start_offset {
            self.delete_first_segment(now_ms)?;
        }
        self.check_invariants();
        Ok(self.log_start_offset)
    }

    /// Unlinks the `.deleted` files renamed at least `file.delete.delay.ms`
    /// before `now_ms`. Returns how many files were removed.
    pub fn remove_deleted_files(&mut self, now_ms: i64) -> Result<usize, StorageError> {
        let delay = clamp_u64(self.config.file_delete_delay_ms);
        let mut removed = 0;
        let mut first_err = None;
        self.pending_deletes.retain(|(path, at)| {
            if now_ms.saturating_sub(*at) < delay || first_err.is_some() {
                return true;
            }
            match fs::remove_file(path) {
                Ok(()) => {
                    removed += 1;
                    false
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => {
                    first_err = Some(e);
                    true
                }
            }
        });
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(removed),
        }
    }

    /// `.deleted` files still waiting for removal.
    pub fn pending_deleted_files(&self) -> Vec<PathBuf> {
        self.pending_deletes
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Removes the oldest (non-active) segment: renames its files to
    /// `.deleted` and advances the log start offset to the next segment.
    pub(super) fn delete_first_segment(&mut self, now_ms: i64) -> Result<(), StorageError> {
        assert!(self.segments.len() > 1, "never delete the active segment");
        let base = self.segments[0].base_offset();
        // Rename first: if it fails the log is unchanged.
        let renamed = segment::rename_files(&self.dir, base, "", ".deleted")?;
        let seg = self.segments.remove(0);
        drop(seg);
        self.pending_deletes
            .extend(renamed.into_iter().map(|p| (p, now_ms)));
        let next_base = self.segments[0].base_offset();
        self.log_start_offset = self.log_start_offset.max(next_base);
        self.recovery_point = self.recovery_point.max(self.log_start_offset);
        self.version += 1;
        self.dir_dirty = true;
        tracing::debug!(dir = %self.dir.display(), base, "deleted segment");
        Ok(())
    }
}
