//! The parts of log compaction that run under the partition's lock:
//! planning, swapping cleaned segments in, and finishing an interrupted
//! swap on open. See [`crate::cleaner`] for the whole protocol.

use super::*;
use crate::cleaner::{
    self, remove_cleaned_files, suffixed, CleanPlan, CleanStats, CleanedSegments, CleanerState,
    CLEANED_SUFFIX, DELETED_SUFFIX, SWAP_SUFFIX,
};

/// Finishes or rolls back a swap interrupted by a crash, and removes
/// `.deleted` leftovers. Returns whether the directory changed.
pub(super) fn finish_interrupted_swap(dir: &Path) -> Result<bool, StorageError> {
    let mut cleaned = Vec::new();
    let mut swaps = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(CLEANED_SUFFIX) {
            cleaned.push(entry.path());
        } else if let Some(target) = name.strip_suffix(SWAP_SUFFIX) {
            swaps.push((entry.path(), dir.join(target)));
        }
    }
    let mut changed = false;
    // The swap committed once no `.cleaned` file is left. If some are left
    // but an original is already gone, committing is the only way forward.
    let committed = cleaned.is_empty() || swaps.iter().any(|(_, target)| !target.exists());
    for path in &cleaned {
        fs::remove_file(path)?;
        changed = true;
    }
    for (swap, target) in &swaps {
        if committed {
            match fs::remove_file(target) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
            fs::rename(swap, target)?;
            tracing::info!(file = %target.display(), "completed interrupted cleaner swap");
        } else {
            fs::remove_file(swap)?;
        }
        changed = true;
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(DELETED_SUFFIX))
        {
            fs::remove_file(entry.path())?;
            changed = true;
        }
    }
    if changed {
        checkpoint::sync_dir(dir)?;
    }
    Ok(changed)
}

pub(super) fn read_cleaner_checkpoint(dir: &Path) -> Result<CleanerState, StorageError> {
    cleaner::read_state(dir)
}

/// Where a swap stops early (tests simulate a crash by stopping after a
/// step and dropping the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum SwapStep {
    /// The raised gaps-below bound was persisted.
    GapsPersisted = 1,
    /// The first segment's `.cleaned` files were renamed to `.swap`.
    FirstSwapRenamed,
    /// All `.cleaned` files are `.swap` files (commit point).
    Committed,
    /// The first original segment's files were renamed to `.deleted`.
    FirstOriginalDeleted,
    /// All originals are `.deleted`.
    OriginalsDeleted,
    /// The first `.swap` files got their final names.
    FirstInstalled,
    /// All `.swap` files got their final names.
    Installed,
}

impl Log {
    /// Everything below this offset has been compacted.
    pub fn cleaned_through_offset(&self) -> i64 {
        self.cleaned_through
    }

    pub(super) fn write_cleaner_checkpoint(&self) -> Result<(), StorageError> {
        cleaner::write_state(
            &self.dir,
            CleanerState {
                cleaned_through: self.cleaned_through,
                gaps_below: self.gaps_below,
            },
        )
    }

    /// Phase 1 of a clean (cheap, under the lock). With compaction enabled,
    /// takes the longest prefix of non-active segments whose newest batch is
    /// at least `min.compaction.lag.ms` old and returns a plan when the
    /// dirty part (segments not entirely below the cleaned-through offset)
    /// is at least `min.cleanable.dirty.ratio` of its bytes, or when the
    /// oldest dirty segment's first batch is older than
    /// `max.compaction.lag.ms`.
    pub fn plan_cleaning(&self, now_ms: i64) -> Option<CleanPlan> {
        if !self.config.cleanup_compact {
            return None;
        }
        let lag = clamp_u64(self.config.min_compaction_lag_ms);
        let lag_limit = now_ms.saturating_sub(lag);
        let non_active = &self.segments[..self.segments.len() - 1];
        let count = non_active
            .iter()
            .take_while(|s| lag == 0 || s.max_timestamp().is_none_or(|(ts, _)| ts <= lag_limit))
            .count();
        if count == 0 {
            return None;
        }
        let planned = &self.segments[..count];
        let end_of = |i: usize| self.segments[i + 1].base_offset();
        let total: u64 = planned.iter().map(LogSegment::size).sum();
        let mut dirty = 0u64;
        let mut first_dirty = None;
        for (i, s) in planned.iter().enumerate() {
            if end_of(i) > self.cleaned_through {
                dirty += s.size();
                first_dirty.get_or_insert(i);
            }
        }
        let first_dirty = first_dirty?;
        if dirty == 0 {
            return None;
        }
        let ratio = dirty as f64 / total.max(1) as f64;
        let mut due = ratio >= self.config.min_cleanable_dirty_ratio;
        if !due && self.config.max_compaction_lag_ms != u64::MAX {
            let max_lag = clamp_u64(self.config.max_compaction_lag_ms);
            let first_ts = planned[first_dirty..]
                .iter()
                .find_map(|s| s.first_batch_timestamp().ok().flatten());
            due = first_ts.is_some_and(|ts| now_ms.saturating_sub(ts) > max_lag);
        }
        if !due {
            return None;
        }
        Some(CleanPlan {
            dir: self.dir.clone(),
            segments: planned
                .iter()
                .map(|s| (s.base_offset(), s.file_path(".log"), s.size()))
                .collect(),
            dirty_start: self.cleaned_through.max(planned[0].base_offset()),
            dirty_end: end_of(count - 1),
            now_ms,
            delete_retention_ms: self.config.delete_retention_ms,
            index_interval_bytes: self.config.index_interval_bytes,
            log_version: self.version,
        })
    }

    /// Phase 3 of a clean (cheap, under the lock): if the log's segments
    /// were not removed, truncated or replaced since planning, atomically
    /// replaces the planned segments by their cleaned versions (see
    /// [`crate::cleaner`] for the crash-safe protocol) and advances the
    /// cleaned-through offset. Otherwise discards the cleaned files and
    /// returns `swapped: false`.
    pub fn swap_cleaned(&mut self, cleaned: CleanedSegments) -> Result<CleanStats, StorageError> {
        self.swap_cleaned_until(cleaned, None)
    }

    pub(super) fn swap_cleaned_until(
        &mut self,
        cleaned: CleanedSegments,
        stop_after: Option<SwapStep>,
    ) -> Result<CleanStats, StorageError> {
        let stop = |step: SwapStep| stop_after == Some(step);
        let not_swapped = CleanStats {
            cleaned_through: self.cleaned_through,
            ..CleanStats::default()
        };
        // Positions of the cleaned segments in `self.segments`.
        let mut positions = Vec::with_capacity(cleaned.segments.len());
        let mut valid = cleaned.dir == self.dir && cleaned.log_version == self.version;
        for c in &cleaned.segments {
            if !valid {
                break;
            }
            let i = self
                .segments
                .partition_point(|s| s.base_offset() < c.base_offset);
            let ok = i + 1 < self.segments.len()
                && self.segments[i].base_offset() == c.base_offset
                && self.segments[i].size() == c.original_size
                && crate::segment::SEGMENT_SUFFIXES
                    .iter()
                    .all(|sfx| suffixed(&self.dir, c.base_offset, sfx, CLEANED_SUFFIX).exists());
            valid = ok;
            positions.push(i);
        }
        if !valid {
            for c in &cleaned.segments {
                remove_cleaned_files(&cleaned.dir, c.base_offset)?;
            }
            tracing::debug!(dir = %self.dir.display(), "discarded a stale clean");
            return Ok(not_swapped);
        }
        // Stray `.cleaned` files of an abandoned clean would make a crash
        // after the commit point look uncommitted: remove them first.
        let ours: Vec<i64> = cleaned.segments.iter().map(|c| c.base_offset).collect();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(CLEANED_SUFFIX)
                && !name
                    .get(..20)
                    .and_then(segment::parse_base_offset)
                    .is_some_and(|b| ours.contains(&b))
            {
                fs::remove_file(entry.path())?;
            }
        }

        // (a) Recovery must accept offset gaps in the new segments.
        if let Some(&last) = positions.last() {
            let bound = self.segments[last + 1].base_offset();
            if bound > self.gaps_below {
                self.gaps_below = bound;
                self.write_cleaner_checkpoint()?;
            }
        }
        if stop(SwapStep::GapsPersisted) {
            return Ok(not_swapped);
        }
        // (b) Commit: every `.cleaned` becomes `.swap`.
        for (n, c) in cleaned.segments.iter().enumerate() {
            segment::rename_files(&self.dir, c.base_offset, CLEANED_SUFFIX, SWAP_SUFFIX)?;
            if n == 0 && stop(SwapStep::FirstSwapRenamed) {
                return Ok(not_swapped);
            }
        }
        checkpoint::sync_dir(&self.dir)?;
        if stop(SwapStep::Committed) {
            return Ok(not_swapped);
        }
        // (c) Originals become `.deleted`.
        let now = self.clock.now_ms();
        for (n, c) in cleaned.segments.iter().enumerate() {
            let renamed = segment::rename_files(&self.dir, c.base_offset, "", DELETED_SUFFIX)?;
            self.pending_deletes
                .extend(renamed.into_iter().map(|p| (p, now)));
            if n == 0 && stop(SwapStep::FirstOriginalDeleted) {
                return Ok(not_swapped);
            }
        }
        if stop(SwapStep::OriginalsDeleted) {
            return Ok(not_swapped);
        }
        // (d) `.swap` files get the final names.
        for (n, c) in cleaned.segments.iter().enumerate() {
            segment::rename_files(&self.dir, c.base_offset, SWAP_SUFFIX, "")?;
            if n == 0 && stop(SwapStep::FirstInstalled) {
                return Ok(not_swapped);
            }
        }
        checkpoint::sync_dir(&self.dir)?;
        if stop(SwapStep::Installed) {
            return Ok(not_swapped);
        }

        // In memory: reopen the replaced segments from their new files.
        let interval = self.config.index_interval_bytes;
        let mut stats = CleanStats {
            swapped: true,
            segments_replaced: cleaned.segments.len(),
            records_removed: cleaned.records_removed,
            ..CleanStats::default()
        };
        for (c, &i) in cleaned.segments.iter().zip(&positions) {
            let mut seg = LogSegment::open(&self.dir, c.base_offset, &self.files)?;
            seg.set_allow_gaps(true);
            seg.load_clean(interval)?;
            stats.bytes_before += c.original_size;
            stats.bytes_after += seg.size();
            self.segments[i] = seg;
        }
        self.version += 1;
        if cleaned.cleaned_through > self.cleaned_through {
            self.cleaned_through = cleaned.cleaned_through.min(self.log_end_offset());
        }
        self.write_cleaner_checkpoint()?;
        stats.cleaned_through = self.cleaned_through;
        self.check_invariants();
        tracing::info!(
            dir = %self.dir.display(),
            segments = stats.segments_replaced,
            bytes_before = stats.bytes_before,
            bytes_after = stats.bytes_after,
            "swapped in cleaned segments"
        );
        Ok(stats)
    }
}
