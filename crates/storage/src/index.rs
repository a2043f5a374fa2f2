//! Sparse offset index of one log segment (`<base offset>.index`).
//!
//! Exists so that a read for offset X does not have to scan the segment from
//! byte 0: the index maps some offsets to file positions, and a lookup gives
//! the greatest indexed offset <= X, from where a short forward scan finds
//! the batch holding X.
//!
//! File format: a flat array of 8-byte entries, no header. Each entry is
//! `relative offset: u32 BE` (offset minus the segment's base offset) and
//! `position: u32 BE` (byte position of a batch in the `.log` file). The
//! offset is the *last* offset of the batch starting at that position, as
//! in Kafka. Both columns are strictly increasing. An entry is added before
//! appending a batch whenever at least `index.interval.bytes` bytes were
//! appended since the previous entry.
//!
//! In memory: all entries live in a `Vec`; new entries are written to the
//! file lazily (on flush, roll, close), so the append path makes no extra
//! syscalls. No descriptor is held between those writes (each opens the file
//! for its own duration): a broker's descriptors go to segment `.log` files
//! only, under the budget of [`crate::open_files`].
//!
//! Crash behaviour: the file may lag behind the log or end in a partial
//! entry after a crash. That is harmless: segments past the recovery point
//! get their indexes rebuilt from the log, and on a clean start a file that
//! fails the sanity check (partial entry, non-increasing entries, position
//! beyond the end of the log) is rebuilt as well.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Fixed-size entry encoding shared by the offset and time indexes.
pub(crate) trait Entry: Copy {
    const SIZE: usize;
    fn encode(&self, out: &mut [u8]);
    fn decode(b: &[u8]) -> Self;
}

/// An index file mirrored in memory, with lazy appends; the file is open only while written.
pub(crate) struct IndexFile<E: Entry> {
    path: PathBuf,
    pub(crate) entries: Vec<E>,
    /// How many leading entries are already in the file.
    persisted: usize,
    /// The file ended in a partial entry when loaded.
    pub(crate) torn: bool,
    /// The file was written (or shortened) since its last fsync.
    unsynced: bool,
}

impl<E: Entry> IndexFile<E> {
    /// Loads the file, creating it (empty) if missing.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Self::open_file(path)?;
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        let torn = bytes.len() % E::SIZE != 0;
        let entries: Vec<E> = bytes.chunks_exact(E::SIZE).map(E::decode).collect();
        Ok(IndexFile {
            path: path.to_path_buf(),
            persisted: entries.len(),
            entries,
            torn,
            unsynced: false,
        })
    }

    /// The file, opened for one write (created if missing).
    fn open_file(path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
    }

    pub(crate) fn push(&mut self, e: E) {
        self.entries.push(e);
    }

    /// Keeps only the first `n` entries (in memory and in the file).
    pub(crate) fn truncate(&mut self, n: usize) -> io::Result<()> {
        if n >= self.entries.len() && !self.torn {
            return Ok(());
        }
        self.entries.truncate(n);
        if self.persisted > n || self.torn {
            self.persisted = self.persisted.min(n);
            Self::open_file(&self.path)?.set_len((self.persisted * E::SIZE) as u64)?;
            self.torn = false;
            self.unsynced = true;
        }
        Ok(())
    }

    /// Writes entries not yet in the file (no fsync).
    pub(crate) fn write_pending(&mut self) -> io::Result<()> {
        if !self.torn && self.persisted == self.entries.len() {
            return Ok(());
        }
        let file = Self::open_file(&self.path)?;
        self.unsynced = true;
        if self.torn {
            file.set_len((self.persisted * E::SIZE) as u64)?;
            self.torn = false;
        }
        let pending = &self.entries[self.persisted..];
        let mut buf = vec![0u8; pending.len() * E::SIZE];
        for (e, out) in pending.iter().zip(buf.chunks_exact_mut(E::SIZE)) {
            e.encode(out);
        }
        file.write_all_at(&buf, (self.persisted * E::SIZE) as u64)?;
        self.persisted = self.entries.len();
        Ok(())
    }

    /// Writes pending entries and fsyncs the file if it changed since its last fsync.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.write_pending()?;
        if self.unsynced {
            Self::open_file(&self.path)?.sync_data()?;
            self.unsynced = false;
        }
        Ok(())
    }

    pub(crate) fn delete(self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// One offset-index entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

impl Entry for OffsetEntry {
    const SIZE: usize = 8;
    fn encode(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.relative_offset.to_be_bytes());
        out[4..8].copy_from_slice(&self.position.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: u32::from_be_bytes(b[..4].try_into().expect("4 bytes")),
            position: u32::from_be_bytes(b[4..8].try_into().expect("4 bytes")),
        }
    }
}

/// Sparse offset -> file position index for one segment.
pub struct OffsetIndex {
    base_offset: i64,
    inner: IndexFile<OffsetEntry>,
}

impl OffsetIndex {
    /// Opens (or creates) the index file and loads its entries.
    pub fn open(path: &Path, base_offset: i64) -> io::Result<OffsetIndex> {
        Ok(OffsetIndex {
            base_offset,
            inner: IndexFile::open(path)?,
        })
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub fn len(&self) -> usize {
        self.inner.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.entries.is_empty()
    }

    fn absolute(&self, e: &OffsetEntry) -> (i64, u32) {
        (self.base_offset + e.relative_offset as i64, e.position)
    }

    /// The last entry as `(absolute offset, position)`.
    pub fn last(&self) -> Option<(i64, u32)> {
        self.inner.entries.last().map(|e| self.absolute(e))
    }

    /// Adds an entry; offsets and positions must be strictly increasing.
    pub fn append(&mut self, offset: i64, position: u32) {
        let rel = offset - self.base_offset;
        assert!(
            (0..=u32::MAX as i64).contains(&rel),
            "offset {offset} does not fit segment base {}",
            self.base_offset
        );
        if let Some(last) = self.inner.entries.last() {
            assert!(
                rel as u32 > last.relative_offset && position > last.position,
                "offset index entries must increase: ({rel}, {position}) after {last:?}"
            );
        }
        self.inner.push(OffsetEntry {
            relative_offset: rel as u32,
            position,
        });
    }

    /// Greatest entry with offset <= `offset`, or `(base_offset, 0)`.
    pub fn lookup(&self, offset: i64) -> (i64, u32) {
        let rel = offset - self.base_offset;
        if rel < 0 {
            return (self.base_offset, 0);
        }
        let rel = rel.min(u32::MAX as i64) as u32;
        let n = self
            .inner
            .entries
            .partition_point(|e| e.relative_offset <= rel);
        if n == 0 {
            (self.base_offset, 0)
        } else {
            self.absolute(&self.inner.entries[n - 1])
        }
    }

    /// Removes every entry whose offset is >= `offset`.
    pub fn truncate_to_offset(&mut self, offset: i64) -> io::Result<()> {
        let rel = offset - self.base_offset;
        let keep = if rel <= 0 {
            0
        } else {
            let rel = rel.min(u32::MAX as i64 + 1);
            self.inner
                .entries
                .partition_point(|e| (e.relative_offset as i64) < rel)
        };
        self.inner.truncate(keep)
    }

    /// Removes all entries.
    pub fn clear(&mut self) -> io::Result<()> {
        self.inner.truncate(0)
    }

    /// Checks the loaded file against the size of its log file.
    pub fn sanity_check(&self, log_size: u64) -> Result<(), String> {
        if self.inner.torn {
            return Err("index file ends with a partial entry".into());
        }
        for w in self.inner.entries.windows(2) {
            if w[1].relative_offset <= w[0].relative_offset || w[1].position <= w[0].position {
                return Err(format!(
                    "index entries not increasing: {:?} then {:?}",
                    w[0], w[1]
                ));
            }
        }
        if let Some(last) = self.inner.entries.last() {
            if last.position as u64 >= log_size {
                return Err(format!(
                    "index entry position {} beyond log size {log_size}",
                    last.position
                ));
            }
        }
        Ok(())
    }

    pub fn entries(&self) -> impl Iterator<Item = (i64, u32)> + '_ {
        self.inner.entries.iter().map(|e| self.absolute(e))
    }

    /// Writes pending entries to the file (no fsync).
    pub fn write_pending(&mut self) -> io::Result<()> {
        self.inner.write_pending()
    }

    /// Writes pending entries and fsyncs.
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
    fn lookup_truncate_and_persist() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("00000000000000000100.index");
        let mut idx = OffsetIndex::open(&p, 100).unwrap();
        assert_eq!(idx.lookup(150), (100, 0));
        idx.append(110, 1000);
        idx.append(120, 2000);
        idx.append(130, 3000);
        assert_eq!(idx.lookup(99), (100, 0));
        assert_eq!(idx.lookup(109), (100, 0));
        assert_eq!(idx.lookup(110), (110, 1000));
        assert_eq!(idx.lookup(125), (120, 2000));
        assert_eq!(idx.lookup(1_000_000), (130, 3000));
        idx.flush().unwrap();
        assert_eq!(fs::metadata(&p).unwrap().len(), 24);
        let bytes = fs::read(&p).unwrap();
        assert_eq!(&bytes[..8], &[0, 0, 0, 10, 0, 0, 3, 232]);

        idx.truncate_to_offset(120).unwrap();
        assert_eq!(idx.len(), 1);
        assert_eq!(fs::metadata(&p).unwrap().len(), 8);
        idx.append(121, 2500);
        idx.write_pending().unwrap();
        drop(idx);

        let idx = OffsetIndex::open(&p, 100).unwrap();
        assert_eq!(
            idx.entries().collect::<Vec<_>>(),
            vec![(110, 1000), (121, 2500)]
        );
        assert!(idx.sanity_check(4000).is_ok());
        assert!(idx.sanity_check(2500).is_err());
    }

    #[test]
    fn torn_file_fails_sanity_check() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("0.index");
        fs::write(&p, [0, 0, 0, 1, 0, 0, 0, 9, 0, 0]).unwrap();
        let mut idx = OffsetIndex::open(&p, 0).unwrap();
        assert_eq!(idx.len(), 1);
        assert!(idx.sanity_check(100).is_err());
        idx.clear().unwrap();
        assert_eq!(fs::metadata(&p).unwrap().len(), 0);
    }

    #[test]
    #[should_panic]
    fn non_increasing_append_panics() {
        let d = tempfile::tempdir().unwrap();
        let mut idx = OffsetIndex::open(&d.path().join("0.index"), 0).unwrap();
        idx.append(5, 100);
        idx.append(5, 200);
    }
}
