//! Sparse time index of one log segment (`<base offset>.timeindex`).
//!
//! Exists so that ListOffsets-by-timestamp can skip most of a segment: an
//! entry `(T, O)` promises that every batch in the segment whose last offset
//! is <= O has a max timestamp <= T. To find the first batch with
//! maxTimestamp >= t, take the greatest entry with T < t and scan forward
//! from offset O + 1.
//!
//! File format: a flat array of 12-byte entries, no header: `timestamp: i64
//! BE`, `relative offset: u32 BE` (offset minus the segment base offset).
//! Timestamps are non-decreasing and offsets strictly increasing. An entry
//! is added together with an offset-index entry, and only when the max
//! timestamp seen in the segment grew since the previous time-index entry.
//!
//! In memory: all entries live in a `Vec`; new entries are written lazily
//! (flush, roll, close).
//!
//! Crash behaviour: same as the offset index. The file may lag or be torn;
//! it is rebuilt from the log for recovered segments, and on a clean start
//! when it fails the sanity check.

use std::io;
use std::path::Path;

use crate::index::{Entry, IndexFile};

/// One time-index entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

impl Entry for TimeEntry {
    const SIZE: usize = 12;
    fn encode(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.relative_offset.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        TimeEntry {
            timestamp: i64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
            relative_offset: u32::from_be_bytes(b[8..12].try_into().expect("4 bytes")),
        }
    }
}

/// Sparse timestamp -> offset index for one segment.
pub struct TimeIndex {
    base_offset: i64,
    inner: IndexFile<TimeEntry>,
}

impl TimeIndex {
    pub fn open(path: &Path, base_offset: i64) -> io::Result<TimeIndex> {
        Ok(TimeIndex {
            base_offset,
            inner: IndexFile::open(path)?,
        })
    }

    pub fn len(&self) -> usize {
        self.inner.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.entries.is_empty()
    }

    /// The last entry as `(timestamp, absolute offset)`.
    pub fn last(&self) -> Option<(i64, i64)> {
        self.inner
            .entries
            .last()
            .map(|e| (e.timestamp, self.base_offset + e.relative_offset as i64))
    }

    /// Adds an entry; timestamps must not decrease, offsets must increase.
    pub fn append(&mut self, timestamp: i64, offset: i64) {
        let rel = offset - self.base_offset;
        assert!((0..=u32::MAX as i64).contains(&rel));
        if let Some(last) = self.inner.entries.last() {
            assert!(
                timestamp >= last.timestamp && rel as u32 > last.relative_offset,
                "time index entries must increase: ({timestamp}, {rel}) after {last:?}"
            );
        }
        self.inner.push(TimeEntry {
            timestamp,
            relative_offset: rel as u32,
        });
    }

    /// Greatest entry with timestamp strictly below `timestamp`, as
    /// `(timestamp, absolute offset)`. All batches up to that offset have
    /// smaller max timestamps.
    pub fn last_below(&self, timestamp: i64) -> Option<(i64, i64)> {
        let n = self
            .inner
            .entries
            .partition_point(|e| e.timestamp < timestamp);
        (n > 0).then(|| {
            let e = &self.inner.entries[n - 1];
            (e.timestamp, self.base_offset + e.relative_offset as i64)
        })
    }

    /// Removes every entry whose offset is >= `offset`.
    pub fn truncate_to_offset(&mut self, offset: i64) -> io::Result<()> {
        let rel = offset - self.base_offset;
        let keep = if rel <= 0 {
            0
        } else {
            self.inner
                .entries
                .partition_point(|e| (e.relative_offset as i64) < rel)
        };
        self.inner.truncate(keep)
    }

    pub fn clear(&mut self) -> io::Result<()> {
        self.inner.truncate(0)
    }

    /// Checks structure; `next_offset` is the segment's end offset if known.
    pub fn sanity_check(&self, next_offset: Option<i64>) -> Result<(), String> {
        if self.inner.torn {
            return Err("time index file ends with a partial entry".into());
        }
        for w in self.inner.entries.windows(2) {
            if w[1].timestamp < w[0].timestamp || w[1].relative_offset <= w[0].relative_offset {
                return Err(format!(
                    "time index not increasing: {:?} then {:?}",
                    w[0], w[1]
                ));
            }
        }
        if let (Some((_, off)), Some(next)) = (self.last(), next_offset) {
            if off >= next {
                return Err(format!("time index offset {off} beyond segment end {next}"));
            }
        }
        Ok(())
    }

    pub fn write_pending(&mut self) -> io::Result<()> {
        self.inner.write_pending()
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    pub fn delete(self) -> io::Result<()> {
        self.inner.delete()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_below_and_reload() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("00000000000000000010.timeindex");
        let mut t = TimeIndex::open(&p, 10).unwrap();
        assert_eq!(t.last_below(5), None);
        t.append(100, 12);
        t.append(200, 15);
        t.append(200, 18);
        t.append(300, 20);
        assert_eq!(t.last_below(100), None);
        assert_eq!(t.last_below(101), Some((100, 12)));
        assert_eq!(t.last_below(200), Some((100, 12)));
        assert_eq!(t.last_below(250), Some((200, 18)));
        assert_eq!(t.last_below(i64::MAX), Some((300, 20)));
        t.flush().unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 48);
        t.truncate_to_offset(18).unwrap();
        assert_eq!(t.last(), Some((200, 15)));
        drop(t);
        let t = TimeIndex::open(&p, 10).unwrap();
        assert_eq!(t.len(), 2);
        assert!(t.sanity_check(Some(16)).is_ok());
        assert!(t.sanity_check(Some(15)).is_err());
    }
}
