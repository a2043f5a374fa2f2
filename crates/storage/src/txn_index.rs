//! Aborted-transaction index of one log segment (`<base offset>.txnindex`).
//!
//! Exists so that a read_committed fetch can tell the consumer which
//! producers' records in the returned range belong to aborted transactions,
//! without the broker scanning the data: each abort marker adds one entry to
//! the index of the segment that holds the marker.
//!
//! File format (Kafka's): a flat array of 34-byte entries, no header:
//! `version: i16 BE` (0), `producer id: i64 BE`, `first offset: i64 BE`
//! (first offset of the aborted transaction in this partition), `last
//! offset: i64 BE` (offset of the abort marker), `last stable offset: i64
//! BE` (the partition's LSO right after the abort). Entries are ordered by
//! strictly increasing last offset, since markers are appended in order.
//!
//! In memory: all entries live in a `Vec`. Unlike the sparse indexes an
//! entry is written to the file at once (aborts are rare, and a process
//! killed right after an abort must not lose it); it is fsynced with the
//! segment.
//!
//! Crash behaviour: the file may end in a partial entry or hold entries for
//! markers that did not survive. Loading drops everything from the first
//! malformed entry and every entry at or beyond the segment's end offset.
//! Entries whose marker survived but whose own write was lost are re-added
//! by the broker, which replays the markers after its producer-state
//! snapshot (see [`TxnIndex::append`], which ignores duplicates).

use std::io;
use std::path::Path;

use crate::index::{Entry, IndexFile};

/// The only entry version.
const VERSION: i16 = 0;

/// One aborted transaction, as stored in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    /// First offset of the transaction's data in this partition.
    pub first_offset: i64,
    /// Offset of the abort marker.
    pub last_offset: i64,
    /// The partition's last stable offset once this transaction ended.
    pub last_stable_offset: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TxnEntry {
    version: i16,
    txn: AbortedTxn,
}

impl Entry for TxnEntry {
    const SIZE: usize = 34;
    fn encode(&self, out: &mut [u8]) {
        out[..2].copy_from_slice(&self.version.to_be_bytes());
        out[2..10].copy_from_slice(&self.txn.producer_id.to_be_bytes());
        out[10..18].copy_from_slice(&self.txn.first_offset.to_be_bytes());
        out[18..26].copy_from_slice(&self.txn.last_offset.to_be_bytes());
        out[26..34].copy_from_slice(&self.txn.last_stable_offset.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        let i64_at = |at: usize| i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        TxnEntry {
            version: i16::from_be_bytes(b[..2].try_into().expect("2 bytes")),
            txn: AbortedTxn {
                producer_id: i64_at(2),
                first_offset: i64_at(10),
                last_offset: i64_at(18),
                last_stable_offset: i64_at(26),
            },
        }
    }
}

/// The aborted transactions whose abort marker lies in one segment.
pub struct TxnIndex {
    inner: IndexFile<TxnEntry>,
}

impl TxnIndex {
    /// Opens (creating if missing) and loads the file, unchecked; see
    /// [`TxnIndex::repair`].
    pub fn open(path: &Path) -> io::Result<TxnIndex> {
        Ok(TxnIndex {
            inner: IndexFile::open(path)?,
        })
    }

    pub fn len(&self) -> usize {
        self.inner.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.entries.is_empty()
    }

    /// All entries, by increasing last offset.
    pub fn entries(&self) -> impl Iterator<Item = AbortedTxn> + '_ {
        self.inner.entries.iter().map(|e| e.txn)
    }

    /// Adds an entry at its place by last offset and writes the file (no
    /// fsync). Returns false, changing nothing, when the same marker (same
    /// producer and last offset) is already indexed.
    pub fn append(&mut self, txn: AbortedTxn) -> io::Result<bool> {
        assert!(
            0 <= txn.first_offset && txn.first_offset <= txn.last_offset,
            "malformed aborted transaction {txn:?}"
        );
        let entries = &self.inner.entries;
        let at = entries.partition_point(|e| e.txn.last_offset < txn.last_offset);
        if let Some(e) = entries
            .get(at)
            .filter(|e| e.txn.last_offset == txn.last_offset)
        {
            assert_eq!(
                e.txn.producer_id, txn.producer_id,
                "two abort markers at offset {}",
                txn.last_offset
            );
            return Ok(false);
        }
        // Entries after the insertion point are rewritten behind it (only a
        // replay after a crash inserts anywhere but at the end).
        let tail: Vec<TxnEntry> = entries[at..].to_vec();
        self.inner.truncate(at)?;
        self.inner.push(TxnEntry {
            version: VERSION,
            txn,
        });
        for e in tail {
            self.inner.push(e);
        }
        self.inner.write_pending()?;
        Ok(true)
    }

    /// Adds to `out` the transactions with `last_offset >= fetch_offset` and
    /// `first_offset < upper_bound`. Returns true when no later entry (in
    /// this index or a later segment's) can qualify: an entry's LSO at or
    /// beyond `upper_bound` means every transaction starting below it had
    /// ended by then.
    pub fn collect(&self, fetch_offset: i64, upper_bound: i64, out: &mut Vec<AbortedTxn>) -> bool {
        let start = self
            .inner
            .entries
            .partition_point(|e| e.txn.last_offset < fetch_offset);
        for e in &self.inner.entries[start..] {
            if e.txn.first_offset < upper_bound {
                out.push(e.txn);
            }
            if e.txn.last_stable_offset >= upper_bound {
                return true;
            }
        }
        false
    }

    /// Removes every entry whose marker is at or beyond `offset`.
    pub fn truncate_to_offset(&mut self, offset: i64) -> io::Result<()> {
        let keep = self
            .inner
            .entries
            .partition_point(|e| e.txn.last_offset < offset);
        self.inner.truncate(keep)
    }

    pub fn clear(&mut self) -> io::Result<()> {
        self.inner.truncate(0)
    }

    /// Drops a partial last entry, everything from the first malformed or
    /// out-of-order entry, and entries at or beyond `next_offset` (the
    /// segment's end). Returns what was wrong, if anything.
    pub fn repair(&mut self, base_offset: i64, next_offset: i64) -> io::Result<Option<String>> {
        let mut why = self
            .inner
            .torn
            .then(|| "transaction index ends with a partial entry".to_string());
        let mut keep = self.inner.entries.len();
        let mut prev: Option<i64> = None;
        for (i, e) in self.inner.entries.iter().enumerate() {
            let t = e.txn;
            let bad = if e.version != VERSION {
                Some(format!(
                    "unknown transaction index entry version {}",
                    e.version
                ))
            } else if t.first_offset < 0
                || t.first_offset > t.last_offset
                || t.last_offset < base_offset
                || prev.is_some_and(|p| t.last_offset <= p)
            {
                Some(format!("malformed transaction index entry {t:?}"))
            } else if t.last_offset >= next_offset {
                Some(format!(
                    "transaction index entry at offset {} beyond segment end {next_offset}",
                    t.last_offset
                ))
            } else {
                None
            };
            if bad.is_some() {
                why = why.or(bad);
                keep = i;
                break;
            }
            prev = Some(t.last_offset);
        }
        self.inner.truncate(keep)?;
        Ok(why)
    }

    /// fsyncs the file if entries were written since the last fsync.
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

    fn txn(producer_id: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id,
            first_offset: first,
            last_offset: last,
            last_stable_offset: lso,
        }
    }

    #[test]
    fn append_collect_truncate_and_reload() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("00000000000000000000.txnindex");
        let mut idx = TxnIndex::open(&p).unwrap();
        // Producer 1 aborts [0, 5] while producer 2's txn from 3 is open;
        // producer 2 aborts [3, 8]; producer 3 aborts [10, 12].
        assert!(idx.append(txn(1, 0, 5, 3)).unwrap());
        assert!(idx.append(txn(2, 3, 8, 9)).unwrap());
        assert!(idx.append(txn(3, 10, 12, 13)).unwrap());
        assert!(
            !idx.append(txn(2, 3, 8, 9)).unwrap(),
            "duplicates are ignored"
        );
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 3 * 34);

        let mut out = Vec::new();
        // Range [0, 2): txn 1 overlaps; its LSO 3 >= 2 ends the search.
        assert!(idx.collect(0, 2, &mut out));
        assert_eq!(out, vec![txn(1, 0, 5, 3)]);
        out.clear();
        // Range [6, 11): txn 1 ended before 6; 2 and 3 overlap.
        assert!(idx.collect(6, 11, &mut out));
        assert_eq!(out, vec![txn(2, 3, 8, 9), txn(3, 10, 12, 13)]);
        out.clear();
        // Range [4, 100): nothing says the search is complete.
        assert!(!idx.collect(4, 100, &mut out));
        assert_eq!(out.len(), 3);
        out.clear();
        assert!(!idx.collect(13, 100, &mut out));
        assert!(out.is_empty());

        idx.truncate_to_offset(12).unwrap();
        assert_eq!(idx.len(), 2);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 2 * 34);
        // A replayed marker goes to its place; the file follows.
        assert!(idx.append(txn(4, 6, 7, 8)).unwrap());
        idx.flush().unwrap();
        drop(idx);

        let mut idx = TxnIndex::open(&p).unwrap();
        assert_eq!(idx.repair(0, 20).unwrap(), None);
        assert_eq!(
            idx.entries().collect::<Vec<_>>(),
            vec![txn(1, 0, 5, 3), txn(4, 6, 7, 8), txn(2, 3, 8, 9)]
        );
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..2], &[0, 0]);
        assert_eq!(&bytes[2..10], &1i64.to_be_bytes());
        assert_eq!(&bytes[26..34], &3i64.to_be_bytes());
    }

    #[test]
    fn repair_drops_torn_and_out_of_range_entries() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("00000000000000000010.txnindex");
        let mut idx = TxnIndex::open(&p).unwrap();
        idx.append(txn(1, 10, 11, 12)).unwrap();
        idx.append(txn(2, 12, 15, 16)).unwrap();
        drop(idx);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.extend_from_slice(&[0; 7]);
        std::fs::write(&p, &bytes).unwrap();

        let mut idx = TxnIndex::open(&p).unwrap();
        assert!(idx.repair(10, 20).unwrap().is_some());
        assert_eq!(idx.len(), 2);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 68);
        // The segment now ends at 14: the marker at 15 is gone.
        assert!(idx.repair(10, 14).unwrap().is_some());
        assert_eq!(idx.entries().collect::<Vec<_>>(), vec![txn(1, 10, 11, 12)]);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 34);
        assert_eq!(idx.repair(10, 14).unwrap(), None);
    }

    #[test]
    #[should_panic(expected = "two abort markers")]
    fn two_producers_at_one_offset_panics() {
        let d = tempfile::tempdir().unwrap();
        let mut idx = TxnIndex::open(&d.path().join("0.txnindex")).unwrap();
        idx.append(txn(1, 0, 5, 6)).unwrap();
        idx.append(txn(2, 0, 5, 6)).unwrap();
    }
}
