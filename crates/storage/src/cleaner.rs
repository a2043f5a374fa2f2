//! Log compaction (`cleanup.policy=compact`): the heavy part, which runs
//! without the partition's lock.
//!
//! Exists so that a compacted topic keeps, per key, only the latest value
//! (and, for `delete.retention.ms`, the latest tombstone), while offsets
//! stay exactly as they were assigned.
//!
//! A clean has three phases:
//! 1. [`crate::Log::plan_cleaning`] (under the lock, cheap) picks the
//!    cleanable segments, a prefix of the non-active segments, and returns
//!    an owned [`CleanPlan`].
//! 2. [`build_cleaned`] (no lock) reads the dirty range (offsets from the
//!    cleaner checkpoint to the end of the plan) into a map key -> latest
//!    offset, bounded by a memory budget, then rewrites every planned
//!    segment starting below the end of that map into
//!    `<base>.log.cleaned` / `.index.cleaned` / `.timeindex.cleaned` /
//!    `.txnindex.cleaned` (a copy: control and transactional batches are
//!    kept whole, so the aborted-transaction entries stay valid).
//! 3. [`crate::Log::swap_cleaned`] (under the lock, cheap) installs them if
//!    the planned segments are unchanged.
//!
//! What is kept: a record of an uncompressed, non-transactional data batch
//! is dropped when a later record with the same key exists in the map, when
//! it has no key, or when it is a tombstone (null value) whose batch's max
//! timestamp is older than `now - delete.retention.ms`. Everything else is
//! kept byte for byte. A batch that loses some records keeps its base
//! offset, lastOffsetDelta, timestamps and producer fields; its length,
//! record count and CRC are recomputed. A batch that loses all records is
//! dropped. Control batches, transactional batches and compressed batches
//! are always kept whole and do not feed the map (this crate has no
//! compression codecs, and transactional data may belong to an aborted
//! transaction that must not shadow committed values).
//!
//! Swap protocol and crash behaviour: the cleaned files are written and
//! fsynced first. The swap then (a) persists the cleaner checkpoint with a
//! raised "gaps below" bound (so recovery accepts the offset gaps of
//! compacted segments), (b) renames every `*.cleaned` file to `*.swap` and
//! fsyncs the directory: this is the commit point, (c) renames the original
//! files to `*.deleted`, (d) renames `*.swap` to the final names and fsyncs
//! the directory, (e) records the new cleaned-through offset. On open, if
//! any `*.cleaned` file is left and every original still exists, the swap
//! never committed: all `*.cleaned` and `*.swap` files are removed.
//! Otherwise every `*.swap` file replaces its original. `*.deleted` files
//! are then removed. A crash at any point therefore leaves either all the
//! original segments or all the cleaned ones, each a complete log with the
//! same offsets for every record that survives.
//!
//! `cleaner-offset-checkpoint` (text, checkpoint format): version line `0`,
//! entry count `2`, then `cleaned-through <offset>` and
//! `gaps-below <offset>`.
//!
//! Only one clean may be in progress per log at a time.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::batch::{self, BatchHeader, HEADER_SIZE, LOG_OVERHEAD};
use crate::checkpoint;
use crate::error::StorageError;
use crate::index::OffsetIndex;
use crate::records;
use crate::segment::segment_file;
use crate::time_index::TimeIndex;

/// Name of the per-partition cleaner checkpoint file.
pub const CLEANER_OFFSET_CHECKPOINT: &str = "cleaner-offset-checkpoint";
/// Suffix of a cleaned file not yet swapped in.
pub const CLEANED_SUFFIX: &str = ".cleaned";
/// Suffix of a cleaned file whose swap has committed.
pub const SWAP_SUFFIX: &str = ".swap";
/// Suffix of a file removed from the log, unlinked later.
pub const DELETED_SUFFIX: &str = ".deleted";

/// Approximate memory of one offset-map entry beyond its key bytes (the
/// key's `Vec` header, the offset and the hash table slot).
pub const MAP_ENTRY_OVERHEAD: usize = 48;

/// A compaction to perform: a plain owned value produced under the lock.
#[derive(Clone, Debug)]
pub struct CleanPlan {
    /// The partition directory.
    pub dir: PathBuf,
    /// `(base offset, .log path, size in bytes)` of each planned segment,
    /// oldest first; a contiguous prefix of the log's segments.
    pub segments: Vec<(i64, PathBuf, u64)>,
    /// First offset not yet cleaned (start of the dirty range).
    pub dirty_start: i64,
    /// End (exclusive) of the planned range: the base offset of the first
    /// segment after the plan.
    pub dirty_end: i64,
    pub now_ms: i64,
    pub delete_retention_ms: u64,
    pub index_interval_bytes: u64,
    /// The log's structure version when planned.
    pub log_version: u64,
}

/// One rewritten segment waiting to be swapped in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CleanedSegment {
    pub base_offset: i64,
    pub original_size: u64,
    pub cleaned_size: u64,
}

/// The result of [`build_cleaned`]: `*.cleaned` files on disk.
#[derive(Clone, Debug)]
pub struct CleanedSegments {
    pub dir: PathBuf,
    pub log_version: u64,
    /// Only segments that actually changed are listed (and have files).
    pub segments: Vec<CleanedSegment>,
    /// Offsets below this have now been cleaned (the end of the offset
    /// map; below `dirty_end` when the dedupe buffer filled up).
    pub cleaned_through: i64,
    pub records_removed: u64,
    /// Offset-map entries and their estimated memory.
    pub map_entries: usize,
    pub map_bytes: usize,
}

/// What [`crate::Log::swap_cleaned`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// False when the log changed since planning and nothing was replaced.
    pub swapped: bool,
    pub segments_replaced: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    /// The log's cleaned-through offset afterwards.
    pub cleaned_through: i64,
}

/// Path of a segment file with an extra suffix, e.g. `.log` + `.cleaned`.
pub(crate) fn suffixed(dir: &Path, base: i64, suffix: &str, extra: &str) -> PathBuf {
    segment_file(dir, base, &format!("{suffix}{extra}"))
}

/// Persisted cleaner state of one partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CleanerState {
    pub cleaned_through: i64,
    pub gaps_below: i64,
}

pub(crate) fn read_state(dir: &Path) -> Result<CleanerState, StorageError> {
    let path = dir.join(CLEANER_OFFSET_CHECKPOINT);
    let mut state = CleanerState::default();
    for entry in checkpoint::read(&path)? {
        let parsed = match entry.as_slice() {
            [k, v] => v.parse::<i64>().ok().map(|v| (k.as_str(), v)),
            _ => None,
        };
        match parsed {
            Some(("cleaned-through", v)) => state.cleaned_through = v.max(0),
            Some(("gaps-below", v)) => state.gaps_below = v.max(0),
            _ => {
                return Err(StorageError::CorruptMessage(format!(
                    "malformed entry {entry:?} in {}",
                    path.display()
                )))
            }
        }
    }
    Ok(state)
}

pub(crate) fn write_state(dir: &Path, state: CleanerState) -> Result<(), StorageError> {
    checkpoint::write(
        &dir.join(CLEANER_OFFSET_CHECKPOINT),
        &[
            format!("cleaned-through {}", state.cleaned_through),
            format!("gaps-below {}", state.gaps_below),
        ],
    )
}

/// Streams whole batches from the first `end` bytes of a log file.
struct BatchReader {
    r: BufReader<File>,
    pos: u64,
    end: u64,
}

impl BatchReader {
    fn open(path: &Path, end: u64) -> Result<BatchReader, StorageError> {
        Ok(BatchReader {
            r: BufReader::with_capacity(256 << 10, File::open(path)?),
            pos: 0,
            end,
        })
    }

    /// Reads the next batch into `buf` (header included).
    fn next(&mut self, buf: &mut Vec<u8>) -> Result<Option<BatchHeader>, StorageError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        if self.end - self.pos < HEADER_SIZE as u64 {
            return Err(StorageError::CorruptMessage(format!(
                "partial batch header at position {}",
                self.pos
            )));
        }
        buf.resize(HEADER_SIZE, 0);
        self.r.read_exact(buf)?;
        let h = BatchHeader::parse(buf)?;
        h.check_structure()?;
        let size = h.total_size();
        if self.pos + size as u64 > self.end {
            return Err(StorageError::CorruptMessage(format!(
                "batch at position {} runs past the planned segment size",
                self.pos
            )));
        }
        buf.resize(size, 0);
        self.r.read_exact(&mut buf[HEADER_SIZE..])?;
        self.pos += size as u64;
        Ok(Some(h))
    }
}

/// Whether the records of a batch are looked at by the cleaner.
fn dedupable(h: &BatchHeader) -> bool {
    !h.is_control() && !h.is_transactional() && h.compression() == 0
}

/// Key bytes -> offset of the latest record with that key.
type OffsetMap = HashMap<Vec<u8>, i64>;

/// Builds the offset map over the dirty range. Returns it with the end
/// offset (exclusive) it covers and its estimated memory.
fn build_offset_map(
    plan: &CleanPlan,
    budget: usize,
) -> Result<(OffsetMap, i64, usize), StorageError> {
    let mut map = OffsetMap::new();
    let mut used = 0usize;
    let mut buf = Vec::new();
    for (i, (_, path, size)) in plan.segments.iter().enumerate() {
        let seg_end = plan
            .segments
            .get(i + 1)
            .map_or(plan.dirty_end, |(b, _, _)| *b);
        if seg_end <= plan.dirty_start {
            continue;
        }
        let mut rd = BatchReader::open(path, *size)?;
        while let Some(h) = rd.next(&mut buf)? {
            if h.last_offset() < plan.dirty_start || !dedupable(&h) {
                continue;
            }
            let recs = records::parse_records(&buf, &h)?;
            let cost: usize = recs
                .iter()
                .filter_map(|r| r.key)
                .filter(|k| !map.contains_key(*k))
                .map(|k| k.len() + MAP_ENTRY_OVERHEAD)
                .sum();
            if used + cost > budget && !map.is_empty() {
                // Clean only up to here; the rest stays dirty.
                return Ok((map, h.base_offset, used));
            }
            used += cost;
            for r in recs {
                let offset = h.base_offset + r.offset_delta as i64;
                if let (Some(k), true) = (r.key, offset >= plan.dirty_start) {
                    match map.get_mut(k) {
                        Some(o) => *o = (*o).max(offset),
                        None => {
                            map.insert(k.to_vec(), offset);
                        }
                    }
                }
            }
        }
    }
    Ok((map, plan.dirty_end, used))
}

/// Maintains the sparse indexes of a segment being written, like
/// [`crate::LogSegment`] does on append.
struct IndexBuilder {
    index: OffsetIndex,
    time_index: TimeIndex,
    interval: u64,
    bytes_since_last: u64,
    max_ts: i64,
    last_indexed_ts: i64,
}

impl IndexBuilder {
    fn add(&mut self, pos: u64, h: &BatchHeader) {
        self.max_ts = self.max_ts.max(h.max_timestamp);
        if self.bytes_since_last >= self.interval {
            let pos32 = u32::try_from(pos).expect("segment positions fit in u32");
            self.index.append(h.last_offset(), pos32);
            if self.max_ts > self.last_indexed_ts {
                self.time_index.append(self.max_ts, h.last_offset());
                self.last_indexed_ts = self.max_ts;
            }
            self.bytes_since_last = 0;
        }
        self.bytes_since_last += h.total_size() as u64;
    }
}

/// Removes the `.cleaned` files of one segment (missing files are fine).
pub(crate) fn remove_cleaned_files(dir: &Path, base: i64) -> io::Result<()> {
    for suffix in crate::segment::SEGMENT_SUFFIXES {
        match fs::remove_file(suffixed(dir, base, suffix, CLEANED_SUFFIX)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Rewrites one segment. Returns `(cleaned size, records removed)`.
fn clean_segment(
    plan: &CleanPlan,
    base: i64,
    path: &Path,
    size: u64,
    map: &OffsetMap,
    map_end: i64,
) -> Result<(u64, u64), StorageError> {
    let dir = &plan.dir;
    let tombstone_horizon = plan
        .now_ms
        .saturating_sub(plan.delete_retention_ms.min(i64::MAX as u64) as i64);
    let out_file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(suffixed(dir, base, ".log", CLEANED_SUFFIX))?;
    let mut out = BufWriter::with_capacity(256 << 10, out_file);
    let mut idx = IndexBuilder {
        index: OffsetIndex::open(&suffixed(dir, base, ".index", CLEANED_SUFFIX), base)?,
        time_index: TimeIndex::open(&suffixed(dir, base, ".timeindex", CLEANED_SUFFIX), base)?,
        interval: plan.index_interval_bytes,
        bytes_since_last: 0,
        max_ts: i64::MIN,
        last_indexed_ts: -1,
    };
    // Fresh files (a leftover from an abandoned clean may exist).
    idx.index.clear()?;
    idx.time_index.clear()?;

    let mut rd = BatchReader::open(path, size)?;
    let mut buf = Vec::new();
    let mut rebuilt = Vec::new();
    let mut pos = 0u64;
    let mut removed = 0u64;
    while let Some(h) = rd.next(&mut buf)? {
        if h.base_offset >= map_end || !dedupable(&h) {
            idx.add(pos, &h);
            out.write_all(&buf)?;
            pos += buf.len() as u64;
            continue;
        }
        let recs = records::parse_records(&buf, &h)?;
        let keep = |r: &records::RecordView<'_>| -> bool {
            let Some(key) = r.key else { return false };
            let offset = h.base_offset + r.offset_delta as i64;
            if map.get(key).is_some_and(|&latest| latest > offset) {
                return false;
            }
            !(r.value.is_none() && h.max_timestamp < tombstone_horizon)
        };
        let kept: Vec<&[u8]> = recs.iter().filter(|r| keep(r)).map(|r| r.raw).collect();
        removed += (recs.len() - kept.len()) as u64;
        if kept.is_empty() {
            continue;
        }
        let bytes: &[u8] = if kept.len() == recs.len() {
            &buf
        } else {
            rebuilt.clear();
            rebuilt.extend_from_slice(&buf[..HEADER_SIZE]);
            for r in &kept {
                rebuilt.extend_from_slice(r);
            }
            let batch_length = (rebuilt.len() - LOG_OVERHEAD) as i32;
            batch::set_batch_length(&mut rebuilt, batch_length);
            batch::set_records_count(&mut rebuilt, kept.len() as i32);
            batch::write_crc(&mut rebuilt);
            &rebuilt
        };
        let nh = BatchHeader::parse(bytes)?;
        idx.add(pos, &nh);
        out.write_all(bytes)?;
        pos += bytes.len() as u64;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    idx.index.flush()?;
    idx.time_index.flush()?;
    copy_txn_index(dir, base)?;
    Ok((pos, removed))
}

/// Copies a segment's transaction index to its `.cleaned` name (an empty
/// file when the original has none). Entries are written when the abort
/// marker is appended, to the segment holding it, and a planned segment is
/// never the active one, so the file is complete.
fn copy_txn_index(dir: &Path, base: i64) -> Result<(), StorageError> {
    let dst = suffixed(dir, base, ".txnindex", CLEANED_SUFFIX);
    match fs::copy(segment_file(dir, base, ".txnindex"), &dst) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            File::create(&dst)?;
        }
        Err(e) => return Err(e.into()),
    }
    File::open(&dst)?.sync_all()?;
    Ok(())
}

/// Phase 2 of a clean (no lock needed): builds the offset map over the
/// dirty range, using at most about `dedupe_buffer_bytes` of memory (at
/// least one batch is always mapped), and writes the `*.cleaned` files of
/// every planned segment that starts below the end of the map and changes.
pub fn build_cleaned(
    plan: &CleanPlan,
    dedupe_buffer_bytes: usize,
) -> Result<CleanedSegments, StorageError> {
    let (map, map_end, map_bytes) = build_offset_map(plan, dedupe_buffer_bytes)?;
    let mut out = CleanedSegments {
        dir: plan.dir.clone(),
        log_version: plan.log_version,
        segments: Vec::new(),
        cleaned_through: map_end,
        records_removed: 0,
        map_entries: map.len(),
        map_bytes,
    };
    let result = (|| {
        for (base, path, size) in &plan.segments {
            if *base >= map_end {
                break;
            }
            let (cleaned_size, removed) = clean_segment(plan, *base, path, *size, &map, map_end)?;
            if removed == 0 {
                remove_cleaned_files(&plan.dir, *base)?;
                continue;
            }
            out.records_removed += removed;
            out.segments.push(CleanedSegment {
                base_offset: *base,
                original_size: *size,
                cleaned_size,
            });
        }
        checkpoint::sync_dir(&plan.dir)?;
        Ok(())
    })();
    if let Err(e) = result {
        for (base, _, _) in &plan.segments {
            let _ = remove_cleaned_files(&plan.dir, *base);
        }
        return Err(e);
    }
    tracing::debug!(
        dir = %plan.dir.display(),
        segments = out.segments.len(),
        removed = out.records_removed,
        cleaned_through = out.cleaned_through,
        "built cleaned segments"
    );
    Ok(out)
}
