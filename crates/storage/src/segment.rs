//! One log segment: `<base>.log` plus `<base>.index`, `<base>.timeindex` and
//! `<base>.txnindex`.
//!
//! Exists because a partition log is split into segments so that old data
//! can be deleted a file at a time and indexes stay small (offsets in the
//! indexes are 32-bit, relative to the segment's base offset).
//!
//! File format: file names are the base offset (first offset the segment
//! may hold) zero-padded to 20 digits. The `.log` file is a plain
//! concatenation of Kafka v2 record batches, exactly as they were appended
//! (the producer's bytes with base offset and leader epoch rewritten). There
//! is no header or footer. The index formats are described in
//! [`crate::index`], [`crate::time_index`] and [`crate::txn_index`].
//!
//! Crash behaviour: an append is a single positional write at the end of the
//! file, so after a crash the file holds a prefix of the appended bytes:
//! possibly a torn last batch, or garbage if the OS lost pages. `recover`
//! scans from byte 0, validates every batch (length, magic, CRC, and offsets
//! contiguous from the base offset: a gap means a damaged baseOffset field,
//! which the CRC does not cover; only segments rewritten by the log cleaner,
//! see [`LogSegment::set_allow_gaps`], may have gaps between batches),
//! truncates the file at the first invalid batch, and rebuilds both indexes
//! from scratch. A segment known to be cleanly closed is instead loaded from
//! its index files (`load_clean`), checking them and scanning only the tail
//! after the last index entry; any inconsistency falls back to `recover`.
//! The transaction index cannot be rebuilt from the segment alone (it needs
//! the producer state): both paths only drop its entries beyond the
//! segment's end (the broker re-adds lost ones when it replays markers).

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::batch::{self, BatchHeader, HEADER_SIZE};
use crate::error::StorageError;
use crate::file_records::FileRecords;
use crate::index::OffsetIndex;
use crate::open_files::{OpenFiles, SegmentFile};
use crate::time_index::TimeIndex;
use crate::txn_index::{AbortedTxn, TxnIndex};

/// Read granularity used when scanning a log file during recovery.
const RECOVERY_CHUNK: usize = 1 << 20;
/// Read granularity used for header walks when nothing better is known.
const SCAN_CHUNK: usize = 64 << 10;
/// Upper bound for one speculative read on the fetch path.
const MAX_READ_CHUNK: usize = 16 << 20;
/// Read granularity of a header walk that leaves the records in the file.
const HEADER_WALK_CHUNK: usize = 16 << 10;

/// File positions `[start, end)` of a read's whole batches.
struct Span {
    start: u64,
    end: u64,
    /// Base offset of the first batch.
    first_offset: i64,
    /// One past the last offset of the last batch (the first's base offset when empty).
    next_offset: i64,
}

/// `<dir>/<base offset, 20 digits><suffix>`.
pub fn segment_file(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}{suffix}"))
}

/// Parses a 20-digit segment file stem.
pub fn parse_base_offset(stem: &str) -> Option<i64> {
    if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
        stem.parse().ok()
    } else {
        None
    }
}

/// Removes the files of a segment (missing files are fine).
pub fn delete_files(dir: &Path, base_offset: i64) -> io::Result<()> {
    for suffix in SEGMENT_SUFFIXES {
        match fs::remove_file(segment_file(dir, base_offset, suffix)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// The files of a segment, by suffix.
pub const SEGMENT_SUFFIXES: [&str; 4] = [".log", ".index", ".timeindex", ".txnindex"];

/// Renames `<base><suffix><from>` to `<base><suffix><to>` for the
/// segment suffixes (missing files are skipped). Returns the new paths of
/// the files that were renamed.
pub fn rename_files(
    dir: &Path,
    base_offset: i64,
    from: &str,
    to: &str,
) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::with_capacity(SEGMENT_SUFFIXES.len());
    for suffix in SEGMENT_SUFFIXES {
        let src = segment_file(dir, base_offset, &format!("{suffix}{from}"));
        let dst = segment_file(dir, base_offset, &format!("{suffix}{to}"));
        match fs::rename(&src, &dst) {
            Ok(()) => out.push(dst),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Buffered positional reader that walks batch headers of a log file with
/// few syscalls: it reads chunks and serves headers from memory.
struct Scanner<'a> {
    file: &'a File,
    end: u64,
    buf: Vec<u8>,
    buf_pos: u64,
    chunk: usize,
}

impl<'a> Scanner<'a> {
    fn new(file: &'a File, end: u64, chunk: usize) -> Scanner<'a> {
        Scanner {
            file,
            end,
            buf: Vec::new(),
            buf_pos: 0,
            chunk: chunk.max(HEADER_SIZE),
        }
    }

    fn contains(&self, pos: u64, len: usize) -> bool {
        pos >= self.buf_pos && pos + len as u64 <= self.buf_pos + self.buf.len() as u64
    }

    /// `[pos, pos + len)`, reading a new chunk starting at `pos` if needed.
    /// Caller guarantees `pos + len <= end`.
    fn slice(&mut self, pos: u64, len: usize) -> io::Result<&[u8]> {
        debug_assert!(pos + len as u64 <= self.end);
        if !self.contains(pos, len) {
            let want = (len.max(self.chunk) as u64).min(self.end - pos) as usize;
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, pos)?;
            self.buf_pos = pos;
        }
        let start = (pos - self.buf_pos) as usize;
        Ok(&self.buf[start..start + len])
    }

    /// Header of a structurally sane batch fully contained before `end`.
    fn header(&mut self, pos: u64) -> io::Result<Option<BatchHeader>> {
        if self.end.saturating_sub(pos) < HEADER_SIZE as u64 {
            return Ok(None);
        }
        let h = match BatchHeader::parse(self.slice(pos, HEADER_SIZE)?) {
            Ok(h) if h.check_structure().is_ok() => h,
            _ => return Ok(None),
        };
        if pos + h.total_size() as u64 > self.end {
            return Ok(None);
        }
        Ok(Some(h))
    }

    /// Bytes `[start, end)` as `Bytes`, reusing the buffer when possible.
    fn into_bytes(mut self, start: u64, end: u64) -> io::Result<Bytes> {
        let len = (end - start) as usize;
        if len == 0 {
            return Ok(Bytes::new());
        }
        if self.contains(start, len) {
            let off = (start - self.buf_pos) as usize;
            let all = Bytes::from(std::mem::take(&mut self.buf));
            return Ok(all.slice(off..off + len));
        }
        let mut v = vec![0u8; len];
        self.file.read_exact_at(&mut v, start)?;
        Ok(Bytes::from(v))
    }
}

/// One segment of a partition log.
pub struct LogSegment {
    base_offset: i64,
    dir: PathBuf,
    /// The `.log` file, open while the shared budget allows.
    log: SegmentFile,
    /// Bytes of valid batches in the `.log` file.
    size: u64,
    index: OffsetIndex,
    time_index: TimeIndex,
    /// Aborted transactions whose abort marker is in this segment.
    txn_index: TxnIndex,
    /// One past the last offset stored (base offset when empty).
    next_offset: i64,
    /// Largest batch maxTimestamp, `i64::MIN` when empty.
    max_ts: i64,
    /// Base offset of the first batch carrying `max_ts`.
    offset_of_max_ts: i64,
    /// Timestamp of the last time-index entry (-1 = none yet).
    last_indexed_ts: i64,
    bytes_since_last_index: u64,
    created_ms: i64,
    /// Data or index entries not yet fsynced.
    dirty: bool,
    /// The segment may have been compacted: offsets between batches may be
    /// missing (they still increase).
    allow_gaps: bool,
}

impl LogSegment {
    /// Creates a new, empty segment (truncating any leftover files).
    pub fn create(
        dir: &Path,
        base_offset: i64,
        now_ms: i64,
        files: &OpenFiles,
    ) -> Result<LogSegment, StorageError> {
        assert!(
            base_offset >= 0,
            "negative segment base offset {base_offset}"
        );
        let log = files.open(&segment_file(dir, base_offset, ".log"), true)?;
        let mut seg = Self::with_files(dir, base_offset, log, now_ms)?;
        seg.index.clear()?;
        seg.time_index.clear()?;
        seg.txn_index.clear()?;
        seg.dirty = true;
        Ok(seg)
    }

    /// Opens an existing segment's files without loading its state; call
    /// [`LogSegment::load_clean`] or [`LogSegment::recover`] next.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        files: &OpenFiles,
    ) -> Result<LogSegment, StorageError> {
        let log = files.open(&segment_file(dir, base_offset, ".log"), false)?;
        let meta = log.get()?.metadata()?;
        let created = meta
            .created()
            .or_else(|_| meta.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        let mut seg = Self::with_files(dir, base_offset, log, created)?;
        seg.size = meta.len();
        Ok(seg)
    }

    fn with_files(
        dir: &Path,
        base_offset: i64,
        log: SegmentFile,
        created_ms: i64,
    ) -> Result<LogSegment, StorageError> {
        Ok(LogSegment {
            base_offset,
            dir: dir.to_path_buf(),
            log,
            size: 0,
            index: OffsetIndex::open(&segment_file(dir, base_offset, ".index"), base_offset)?,
            time_index: TimeIndex::open(
                &segment_file(dir, base_offset, ".timeindex"),
                base_offset,
            )?,
            txn_index: TxnIndex::open(&segment_file(dir, base_offset, ".txnindex"))?,
            next_offset: base_offset,
            max_ts: i64::MIN,
            offset_of_max_ts: -1,
            last_indexed_ts: -1,
            bytes_since_last_index: 0,
            created_ms,
            dirty: false,
            allow_gaps: false,
        })
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// Declares that the segment may have been compacted, so validation
    /// accepts increasing but non-contiguous offsets (and a first batch
    /// above the base offset). Set before `load_clean` / `recover`.
    pub fn set_allow_gaps(&mut self, allow: bool) {
        self.allow_gaps = allow;
    }

    pub fn allows_gaps(&self) -> bool {
        self.allow_gaps
    }

    /// `baseTimestamp` of the first batch, if the segment is non-empty.
    pub fn first_batch_timestamp(&self) -> Result<Option<i64>, StorageError> {
        let file = self.log.get()?;
        let mut sc = Scanner::new(&file, self.size, HEADER_SIZE);
        Ok(sc.header(0)?.map(|h| h.base_timestamp))
    }

    /// Path of one of this segment's files (see [`SEGMENT_SUFFIXES`]).
    pub fn file_path(&self, suffix: &str) -> PathBuf {
        segment_file(&self.dir, self.base_offset, suffix)
    }

    /// Bytes in the `.log` file.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// One past the last offset in this segment (base offset when empty).
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// `(max timestamp, base offset of the first batch carrying it)`.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        (self.offset_of_max_ts >= 0).then_some((self.max_ts, self.offset_of_max_ts))
    }

    /// Creation time (ms) used for `segment.ms` rolling.
    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }

    pub fn offset_index(&self) -> &OffsetIndex {
        &self.index
    }

    pub fn time_index(&self) -> &TimeIndex {
        &self.time_index
    }

    pub fn txn_index(&self) -> &TxnIndex {
        &self.txn_index
    }

    /// Indexes an aborted transaction whose abort marker is in this segment
    /// (written at once, fsynced with the segment). Returns false when it
    /// was already indexed.
    pub fn append_aborted_txn(&mut self, txn: AbortedTxn) -> Result<bool, StorageError> {
        assert!(
            txn.last_offset >= self.base_offset && txn.last_offset < self.next_offset,
            "abort marker {} outside segment [{}, {})",
            txn.last_offset,
            self.base_offset,
            self.next_offset
        );
        let added = self.txn_index.append(txn)?;
        self.dirty |= added;
        Ok(added)
    }

    /// fsyncs the transaction index if it has unsynced entries.
    pub fn sync_txn_index(&mut self) -> Result<(), StorageError> {
        Ok(self.txn_index.flush()?)
    }

    /// Drops transaction-index entries the segment's data does not cover.
    fn repair_txn_index(&mut self) -> Result<(), StorageError> {
        if let Some(why) = self.txn_index.repair(self.base_offset, self.next_offset)? {
            tracing::warn!(segment = %self.describe(), "dropped transaction index entries: {why}");
            self.dirty = true;
        }
        Ok(())
    }

    /// Updates in-memory state and indexes for a batch stored at `pos`.
    fn track_batch(&mut self, pos: u64, h: &BatchHeader, index_interval_bytes: u64) {
        debug_assert!(h.base_offset >= self.next_offset, "offsets must increase");
        if h.max_timestamp > self.max_ts {
            self.max_ts = h.max_timestamp;
            self.offset_of_max_ts = h.base_offset;
        }
        if self.bytes_since_last_index >= index_interval_bytes {
            let pos32 = u32::try_from(pos).expect("segment positions fit in u32");
            self.index.append(h.last_offset(), pos32);
            if self.max_ts > self.last_indexed_ts {
                self.time_index.append(self.max_ts, h.last_offset());
                self.last_indexed_ts = self.max_ts;
            }
            self.bytes_since_last_index = 0;
        }
        self.bytes_since_last_index += h.total_size() as u64;
        self.next_offset = h.last_offset() + 1;
    }

    /// Appends already validated and offset-assigned batches with a single
    /// write. `batches` lists `(position in data, header)` for each batch.
    pub fn append(
        &mut self,
        data: &[u8],
        batches: &[(usize, BatchHeader)],
        index_interval_bytes: u64,
    ) -> Result<(), StorageError> {
        debug_assert!(!batches.is_empty());
        debug_assert_eq!(
            batches.iter().map(|(_, h)| h.total_size()).sum::<usize>(),
            data.len()
        );
        assert!(
            self.size + data.len() as u64 <= u32::MAX as u64,
            "segment would exceed 4 GiB"
        );
        let start = self.size;
        let log = self.log.get()?;
        if let Err(e) = log.write_all_at(data, start) {
            // Do not leave a partial batch behind.
            let _ = log.set_len(start);
            return Err(e.into());
        }
        self.size += data.len() as u64;
        self.dirty = true;
        for (pos, h) in batches {
            self.track_batch(start + *pos as u64, h, index_interval_bytes);
        }
        Ok(())
    }

    /// Reads whole batches starting with the one containing `start_offset`:
    /// only batches with `last_offset < max_offset`, at most `max_bytes`
    /// bytes unless `min_one_batch` and the first batch alone is larger.
    /// Returns `None` when `start_offset` is at or beyond the segment end,
    /// else `(records, base offset of the first batch)` (records may be
    /// empty when the limits exclude the first batch).
    pub fn read(
        &self,
        start_offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
        index_interval_bytes: u64,
    ) -> Result<Option<(Bytes, i64)>, StorageError> {
        if start_offset >= self.next_offset {
            return Ok(None);
        }
        // Read ahead as far as the read may reach: the records come out of the same buffer.
        let chunk = max_bytes
            .saturating_add(index_interval_bytes.min(MAX_READ_CHUNK as u64) as usize)
            .saturating_add(HEADER_SIZE)
            .clamp(SCAN_CHUNK.min(4096), MAX_READ_CHUNK);
        let file = self.log.get()?;
        let mut sc = Scanner::new(&file, self.size, chunk);
        let Some(span) = self.span(&mut sc, start_offset, max_bytes, max_offset, min_one_batch)?
        else {
            return Ok(None);
        };
        Ok(Some((
            sc.into_bytes(span.start, span.end)?,
            span.first_offset,
        )))
    }

    /// [`LogSegment::read`] leaving the batches in the file: the slice (`None` when the
    /// limits exclude the first batch too) and whether `start_offset` is in this segment
    /// at all (false: read on in the next one). Only batch headers are read.
    pub fn read_file(
        &self,
        start_offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
    ) -> Result<(Option<FileRecords>, bool), StorageError> {
        if start_offset >= self.next_offset {
            return Ok((None, false));
        }
        let file = self.log.get()?;
        let mut sc = Scanner::new(&file, self.size, HEADER_WALK_CHUNK);
        let Some(span) = self.span(&mut sc, start_offset, max_bytes, max_offset, min_one_batch)?
        else {
            return Ok((None, false));
        };
        let len = (span.end - span.start) as usize;
        let slice =
            (len > 0).then(|| FileRecords::new(file.clone(), span.start, len, span.next_offset));
        Ok((slice, true))
    }

    /// Where the batches of a read lie (see [`LogSegment::read`]); `None` when
    /// `start_offset` is past the last batch.
    fn span(
        &self,
        sc: &mut Scanner<'_>,
        start_offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
    ) -> io::Result<Option<Span>> {
        let (_, index_pos) = self.index.lookup(start_offset);
        let mut pos = index_pos as u64;
        let first = loop {
            match sc.header(pos)? {
                None => return Ok(None),
                Some(h) if h.last_offset() >= start_offset => break h,
                Some(h) => pos += h.total_size() as u64,
            }
        };
        let first_pos = pos;
        let mut end = pos;
        let mut next_offset = first.base_offset;
        let mut next = Some(first);
        while let Some(h) = next {
            if h.last_offset() >= max_offset {
                break;
            }
            let size = h.total_size() as u64;
            if end - first_pos + size > max_bytes as u64 {
                if end == first_pos && min_one_batch {
                    end += size;
                    next_offset = h.last_offset() + 1;
                }
                break;
            }
            end += size;
            next_offset = h.last_offset() + 1;
            next = sc.header(end)?;
        }
        Ok(Some(Span {
            start: first_pos,
            end,
            first_offset: first.base_offset,
            next_offset,
        }))
    }

    /// Base offset of the first batch with `maxTimestamp >= ts` and
    /// `last_offset >= min_offset`.
    pub fn find_batch_for_timestamp(
        &self,
        ts: i64,
        min_offset: i64,
    ) -> Result<Option<i64>, StorageError> {
        match self.max_timestamp() {
            Some((max, _)) if max >= ts => {}
            _ => return Ok(None),
        }
        let from_ts = self
            .time_index
            .last_below(ts)
            .map_or(self.base_offset, |(_, off)| off + 1);
        let (_, start) = self.index.lookup(from_ts.max(min_offset));
        let file = self.log.get()?;
        let mut sc = Scanner::new(&file, self.size, SCAN_CHUNK);
        let mut pos = start as u64;
        while let Some(h) = sc.header(pos)? {
            if h.max_timestamp >= ts && h.last_offset() >= min_offset {
                return Ok(Some(h.base_offset));
            }
            pos += h.total_size() as u64;
        }
        Ok(None)
    }

    /// Loads a cleanly closed segment: sanity-checks the indexes and scans
    /// only the batches after the last index entry. Falls back to a full
    /// [`LogSegment::recover`] if anything is inconsistent. Returns true if
    /// recovery was needed.
    pub fn load_clean(&mut self, index_interval_bytes: u64) -> Result<bool, StorageError> {
        let checked = self
            .index
            .sanity_check(self.size)
            .and_then(|_| self.time_index.sanity_check(None));
        if let Err(why) = checked {
            tracing::warn!(segment = %self.describe(), "rebuilding indexes: {why}");
            self.recover(index_interval_bytes)?;
            return Ok(true);
        }
        match self.load_tail()? {
            Ok(()) => {
                self.repair_txn_index()?;
                Ok(false)
            }
            Err(why) => {
                tracing::warn!(segment = %self.describe(), "recovering segment: {why}");
                self.recover(index_interval_bytes)?;
                Ok(true)
            }
        }
    }

    /// Recomputes in-memory state from the indexes plus a scan of the
    /// batches after the last offset-index entry. The inner `Err` explains
    /// an inconsistency (the caller then recovers).
    fn load_tail(&mut self) -> Result<Result<(), String>, StorageError> {
        let (entry_offset, entry_pos) = match self.index.last() {
            Some(e) => e,
            None => (self.base_offset - 1, 0),
        };
        self.max_ts = i64::MIN;
        self.offset_of_max_ts = -1;
        self.last_indexed_ts = -1;
        if let Some((ts, _)) = self.time_index.last() {
            self.max_ts = ts;
            self.last_indexed_ts = ts;
        }
        let from_index_max = self.max_ts;
        self.next_offset = self.base_offset;
        self.bytes_since_last_index = self.size - entry_pos as u64;
        let file = self.log.get()?;
        let mut sc = Scanner::new(&file, self.size, SCAN_CHUNK);
        let mut pos = entry_pos as u64;
        let mut first = true;
        while let Some(h) = sc.header(pos)? {
            if first && self.index.last().is_some() && h.last_offset() != entry_offset {
                return Ok(Err(format!(
                    "index entry offset {entry_offset} does not match batch last offset {}",
                    h.last_offset()
                )));
            }
            let gap_ok = self.allow_gaps && h.base_offset > self.next_offset;
            if !first && h.base_offset != self.next_offset && !gap_ok {
                return Ok(Err(format!(
                    "batch at offset {} does not follow offset {}",
                    h.base_offset,
                    self.next_offset - 1
                )));
            }
            if first
                && self.index.is_empty()
                && h.base_offset != self.base_offset
                && !(self.allow_gaps && h.base_offset > self.base_offset)
            {
                return Ok(Err(format!(
                    "first batch offset {} differs from segment base offset",
                    h.base_offset
                )));
            }
            first = false;
            if h.max_timestamp > self.max_ts {
                self.max_ts = h.max_timestamp;
                self.offset_of_max_ts = h.base_offset;
            }
            self.next_offset = h.last_offset() + 1;
            pos += h.total_size() as u64;
        }
        if pos != self.size {
            return Ok(Err(format!(
                "invalid batch at position {pos} of {}",
                self.size
            )));
        }
        if let Some((_, off)) = self.time_index.last() {
            if off >= self.next_offset {
                return Ok(Err(format!(
                    "time index offset {off} beyond end {}",
                    self.next_offset
                )));
            }
        }
        if self.offset_of_max_ts < 0 && self.max_ts == from_index_max && self.max_ts != i64::MIN {
            // The maximum predates the tail; locate the batch holding it.
            match self.find_batch_for_timestamp(self.max_ts, self.base_offset)? {
                Some(off) => self.offset_of_max_ts = off,
                None => return Ok(Err("time index maximum not found in log".into())),
            }
        }
        Ok(Ok(()))
    }

    /// Scans the whole `.log` file, validating each batch (structure,
    /// increasing offsets, CRC), truncates it at the first invalid batch and
    /// rebuilds both indexes. Everything is fsynced. Returns the number of
    /// bytes truncated.
    pub fn recover(&mut self, index_interval_bytes: u64) -> Result<u64, StorageError> {
        self.index.clear()?;
        self.time_index.clear()?;
        self.next_offset = self.base_offset;
        self.max_ts = i64::MIN;
        self.offset_of_max_ts = -1;
        self.last_indexed_ts = -1;
        self.bytes_since_last_index = 0;
        let file_len = self.log.get()?.metadata()?.len().min(u32::MAX as u64);
        let mut pos = 0u64;
        // Scanner borrows the file; collect headers chunk by chunk.
        let mut valid: Vec<(u64, BatchHeader)> = Vec::new();
        {
            let file = self.log.get()?;
            let mut sc = Scanner::new(&file, file_len, RECOVERY_CHUNK);
            let mut expected = self.base_offset;
            while let Some(h) = sc.header(pos)? {
                let size = h.total_size();
                // Offsets within a segment are contiguous from its base
                // offset unless the cleaner rewrote it, so any other gap is
                // corruption.
                let offset_ok =
                    h.base_offset == expected || (self.allow_gaps && h.base_offset > expected);
                if !offset_ok || h.last_offset() - self.base_offset > u32::MAX as i64 {
                    break;
                }
                if !batch::verify_crc(sc.slice(pos, size)?) {
                    break;
                }
                expected = h.last_offset() + 1;
                valid.push((pos, h));
                pos += size as u64;
            }
        }
        for (p, h) in &valid {
            self.track_batch(*p, h, index_interval_bytes);
        }
        let truncated = file_len - pos;
        if self.log.get()?.metadata()?.len() != pos {
            tracing::warn!(
                segment = %self.describe(),
                "truncating {} bytes of invalid data at position {pos}",
                self.log.get()?.metadata()?.len() - pos
            );
            self.log.get()?.set_len(pos)?;
        }
        self.size = pos;
        self.dirty = true;
        self.repair_txn_index()?;
        self.flush()?;
        Ok(truncated)
    }

    /// Removes every batch containing an offset >= `offset` (a batch
    /// straddling `offset` is removed whole). Returns bytes removed.
    pub fn truncate_to(&mut self, offset: i64) -> Result<u64, StorageError> {
        if offset >= self.next_offset {
            return Ok(0);
        }
        let (_, start) = self.index.lookup(offset);
        let mut pos = start as u64;
        {
            let file = self.log.get()?;
            let mut sc = Scanner::new(&file, self.size, SCAN_CHUNK);
            while let Some(h) = sc.header(pos)? {
                if h.last_offset() >= offset {
                    break;
                }
                pos += h.total_size() as u64;
            }
        }
        let removed = self.size - pos;
        self.log.get()?.set_len(pos)?;
        self.size = pos;
        self.index.truncate_to_offset(offset)?;
        self.time_index.truncate_to_offset(offset)?;
        self.dirty = true;
        if let Err(why) = self.load_tail()? {
            // Cannot happen for a consistent segment; rebuild to be safe.
            tracing::warn!(segment = %self.describe(), "rebuilding after truncation: {why}");
            self.recover(0)?;
        }
        self.txn_index.truncate_to_offset(self.next_offset)?;
        debug_assert!(self.next_offset <= offset.max(self.base_offset));
        Ok(removed)
    }

    /// Writes pending index entries to their files (no fsync).
    pub fn write_pending_indexes(&mut self) -> Result<(), StorageError> {
        self.index.write_pending()?;
        self.time_index.write_pending()?;
        Ok(())
    }

    /// True when there is data or index state not yet fsynced.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// fsyncs the log file and writes + fsyncs the indexes.
    pub fn flush(&mut self) -> Result<(), StorageError> {
        if self.dirty {
            let started = std::time::Instant::now();
            self.log.get()?.sync_data()?;
            self.index.flush()?;
            self.time_index.flush()?;
            self.txn_index.flush()?;
            self.dirty = false;
            crate::flush_stats::flushed(started.elapsed());
        }
        Ok(())
    }

    /// Deletes the segment's files.
    pub fn delete(self) -> Result<(), StorageError> {
        let LogSegment {
            base_offset,
            dir,
            log,
            index,
            time_index,
            txn_index,
            ..
        } = self;
        drop(log);
        index.delete()?;
        time_index.delete()?;
        txn_index.delete()?;
        delete_files(&dir, base_offset)?;
        Ok(())
    }

    /// Renames the segment's files to `<name>.deleted` (an open handle, e.g.
    /// of a reader in flight, stays valid) and closes them. Returns the new
    /// paths.
    pub fn rename_to_deleted(mut self) -> Result<Vec<PathBuf>, StorageError> {
        // Pending index entries are irrelevant for a deleted segment.
        let dir = std::mem::take(&mut self.dir);
        let base = self.base_offset;
        drop(self);
        Ok(rename_files(&dir, base, "", ".deleted")?)
    }

    fn describe(&self) -> String {
        segment_file(&self.dir, self.base_offset, ".log")
            .display()
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::test_util::simple;

    fn files() -> OpenFiles {
        OpenFiles::new(crate::open_files::MIN_OPEN_FILES)
    }

    /// Appends `n` single-batch appends of `size` bytes, 2 records each.
    fn fill(seg: &mut LogSegment, n: usize, size: usize, interval: u64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for i in 0..n {
            let mut b = simple(2, 1000 + i as i64, size);
            batch::set_base_offset(&mut b, seg.next_offset());
            let h = BatchHeader::parse(&b).unwrap();
            seg.append(&b, &[(0, h)], interval).unwrap();
            out.push(b);
        }
        out
    }

    #[test]
    fn append_read_and_index() {
        let d = tempfile::tempdir().unwrap();
        let mut seg = LogSegment::create(d.path(), 100, 0, &files()).unwrap();
        let batches = fill(&mut seg, 10, 100, 250);
        assert_eq!(seg.next_offset(), 120);
        assert_eq!(seg.size(), 1000);
        // Entries every >= 250 bytes: before batches 3, 6, 9.
        let entries: Vec<_> = seg.offset_index().entries().collect();
        assert_eq!(entries, vec![(107, 300), (113, 600), (119, 900)]);
        assert_eq!(seg.time_index().len(), 3);
        assert_eq!(seg.max_timestamp(), Some((1009, 118)));

        // Read from the middle of batch 4 (offsets 108,109).
        let (bytes, first) = seg.read(109, 250, i64::MAX, false, 250).unwrap().unwrap();
        assert_eq!(first, 108);
        assert_eq!(
            &bytes[..],
            &[batches[4].clone(), batches[5].clone()].concat()[..]
        );
        // max_offset excludes batches reaching it.
        let (bytes, _) = seg.read(100, 10_000, 104, false, 250).unwrap().unwrap();
        assert_eq!(bytes.len(), 200);
        // Too small, without and with min_one_batch.
        let (bytes, first) = seg.read(100, 50, i64::MAX, false, 250).unwrap().unwrap();
        assert!(bytes.is_empty());
        assert_eq!(first, 100);
        let (bytes, _) = seg.read(100, 50, i64::MAX, true, 250).unwrap().unwrap();
        assert_eq!(&bytes[..], &batches[0][..]);
        assert!(seg.read(120, 1000, i64::MAX, true, 250).unwrap().is_none());
        // Timestamp search.
        assert_eq!(seg.find_batch_for_timestamp(1005, 0).unwrap(), Some(110));
        assert_eq!(seg.find_batch_for_timestamp(0, 0).unwrap(), Some(100));
        assert_eq!(seg.find_batch_for_timestamp(0, 105).unwrap(), Some(104));
        assert_eq!(seg.find_batch_for_timestamp(2000, 0).unwrap(), None);
    }

    #[test]
    fn clean_reload_matches_and_recover_rebuilds() {
        let d = tempfile::tempdir().unwrap();
        let mut seg = LogSegment::create(d.path(), 0, 0, &files()).unwrap();
        fill(&mut seg, 50, 90, 300);
        let entries: Vec<_> = seg.offset_index().entries().collect();
        let max = seg.max_timestamp();
        seg.flush().unwrap();
        drop(seg);

        let mut seg = LogSegment::open(d.path(), 0, &files()).unwrap();
        assert!(!seg.load_clean(300).unwrap());
        assert_eq!(seg.next_offset(), 100);
        assert_eq!(seg.max_timestamp(), max);
        assert_eq!(seg.offset_index().entries().collect::<Vec<_>>(), entries);
        drop(seg);

        // Corrupt the index file: clean load must notice and rebuild.
        let idx = segment_file(d.path(), 0, ".index");
        fs::write(&idx, [0u8; 12]).unwrap();
        let mut seg = LogSegment::open(d.path(), 0, &files()).unwrap();
        assert!(seg.load_clean(300).unwrap());
        assert_eq!(seg.offset_index().entries().collect::<Vec<_>>(), entries);
        assert_eq!(seg.next_offset(), 100);
        drop(seg);

        // Torn tail: recovery truncates to the last whole batch.
        let log = segment_file(d.path(), 0, ".log");
        let f = fs::OpenOptions::new().write(true).open(&log).unwrap();
        f.set_len(4500 - 30).unwrap();
        let mut seg = LogSegment::open(d.path(), 0, &files()).unwrap();
        assert_eq!(seg.recover(300).unwrap(), 60);
        assert_eq!(seg.size(), 4410);
        assert_eq!(seg.next_offset(), 98);
        assert_eq!(fs::metadata(&log).unwrap().len(), 4410);
    }

    #[test]
    fn truncate_to_drops_whole_batches() {
        let d = tempfile::tempdir().unwrap();
        let mut seg = LogSegment::create(d.path(), 0, 0, &files()).unwrap();
        fill(&mut seg, 20, 100, 200);
        assert_eq!(seg.truncate_to(15).unwrap(), 1300);
        assert_eq!(seg.next_offset(), 14);
        assert_eq!(seg.size(), 700);
        assert!(seg.offset_index().entries().all(|(o, p)| o < 14 && p < 700));
        assert_eq!(seg.max_timestamp(), Some((1006, 12)));
        fill(&mut seg, 1, 100, 200);
        assert_eq!(seg.next_offset(), 16);
        assert_eq!(seg.truncate_to(0).unwrap(), 800);
        assert!(seg.is_empty());
        assert_eq!(seg.max_timestamp(), None);
        assert_eq!(seg.next_offset(), 0);
    }
}
