//! Leader-epoch cache of one partition (`leader-epoch-checkpoint`).
//!
//! Exists so that followers and the broker can answer
//! OffsetForLeaderEpoch: for each leader epoch we remember the first offset
//! written in that epoch, which tells where a replica's log diverges.
//!
//! File format (Kafka's text checkpoint): line `0` (version), a line with
//! the entry count, then one `epoch startOffset` line per entry, ordered by
//! epoch and start offset (both strictly increasing).
//!
//! Crash behaviour: every change rewrites the whole file via tmp file +
//! fsync + rename + directory fsync, so the file is always a complete old
//! or new version. Entries that point beyond the log end after recovery or
//! truncation are dropped by the owning log. The one exception is an epoch
//! recorded at the log end when a leadership starts ([`LeaderEpochCache::assign_at_end`]):
//! it is written with the first batch of that epoch (or the next flush), so
//! moving thousands of leaderships costs no fsync each; a crash before then
//! loses only an entry no record needs (the broker records it again when it
//! leads again).

use std::path::{Path, PathBuf};

use crate::checkpoint;
use crate::error::StorageError;

/// File name of the checkpoint inside the partition directory.
pub const LEADER_EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";

/// `(epoch, first offset written in that epoch)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// In-memory list of epoch entries mirrored to a checkpoint file.
#[derive(Debug)]
pub struct LeaderEpochCache {
    path: PathBuf,
    entries: Vec<EpochEntry>,
    /// The entries changed since the file was last written (only by `assign_at_end`).
    unwritten: bool,
}

impl LeaderEpochCache {
    /// Loads the checkpoint at `path` (missing file = empty cache).
    pub fn load(path: &Path) -> Result<LeaderEpochCache, StorageError> {
        let mut entries = Vec::new();
        for line in checkpoint::read(path)? {
            let parsed = match line.as_slice() {
                [e, o] => e.parse::<i32>().ok().zip(o.parse::<i64>().ok()),
                _ => None,
            };
            let (epoch, start_offset) = parsed.ok_or_else(|| {
                StorageError::CorruptMessage(format!(
                    "malformed leader epoch entry {line:?} in {}",
                    path.display()
                ))
            })?;
            entries.push(EpochEntry {
                epoch,
                start_offset,
            });
        }
        let sorted = entries
            .windows(2)
            .all(|w| w[0].epoch < w[1].epoch && w[0].start_offset <= w[1].start_offset);
        if !sorted {
            return Err(StorageError::CorruptMessage(format!(
                "leader epoch entries out of order in {}",
                path.display()
            )));
        }
        Ok(LeaderEpochCache {
            path: path.to_path_buf(),
            entries,
            unwritten: false,
        })
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset`. A repeat of the latest
    /// epoch (at the same or a later offset) is a no-op; otherwise entries
    /// that conflict (epoch >= `epoch` or start >= `start_offset`) are
    /// removed first.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<(), StorageError> {
        if self.insert(epoch, start_offset) {
            self.persist()?;
        }
        Ok(())
    }

    /// Like [`LeaderEpochCache::assign`] for an epoch starting at the log end
    /// (`log_end_offset`, a new leadership): in memory at once, in the file with
    /// [`LeaderEpochCache::write_pending`] (before the first batch at or after it).
    pub fn assign_at_end(&mut self, epoch: i32, log_end_offset: i64) {
        if self.insert(epoch, log_end_offset) {
            self.unwritten = true;
        }
    }

    /// Writes the file if `assign_at_end` changed the entries since it was written.
    pub fn write_pending(&mut self) -> Result<(), StorageError> {
        if self.unwritten {
            self.persist()?;
        }
        Ok(())
    }

    /// The in-memory part of `assign`; whether the entries changed.
    fn insert(&mut self, epoch: i32, start_offset: i64) -> bool {
        if let Some(last) = self.entries.last() {
            if last.epoch == epoch && last.start_offset <= start_offset {
                return false;
            }
        }
        self.entries
            .retain(|e| e.epoch < epoch && e.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        if let [.., before, last] = self.entries.as_slice() {
            assert!(
                before.epoch < last.epoch && before.start_offset < last.start_offset,
                "leader epochs and their start offsets only grow"
            );
        }
        true
    }

    /// Kafka's OffsetForLeaderEpoch semantics: `(largest epoch <= requested,
    /// start offset of the next epoch)` or `(requested, log_end_offset)` for
    /// the latest epoch. A requested epoch below the first known epoch gives
    /// `(requested, first start offset)`. `None` (UNDEFINED) when the
    /// requested epoch is above the latest one or the cache is empty.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        let latest = self.entries.last()?;
        if epoch < 0 || epoch > latest.epoch {
            return None;
        }
        if epoch == latest.epoch {
            return Some((epoch, log_end_offset));
        }
        // First entry with epoch > requested exists since requested < latest.
        let higher = self.entries.partition_point(|e| e.epoch <= epoch);
        let next_start = self.entries[higher].start_offset;
        if higher == 0 {
            Some((epoch, next_start))
        } else {
            Some((self.entries[higher - 1].epoch, next_start))
        }
    }

    /// Drops entries starting at or after `end_offset` (log truncation).
    pub fn truncate_from_end(&mut self, end_offset: i64) -> Result<(), StorageError> {
        let keep = self
            .entries
            .partition_point(|e| e.start_offset < end_offset);
        if keep < self.entries.len() {
            self.entries.truncate(keep);
            self.persist()?;
        }
        Ok(())
    }

    /// Removes all entries.
    pub fn clear(&mut self) -> Result<(), StorageError> {
        if !self.entries.is_empty() {
            self.entries.clear();
            self.persist()?;
        }
        Ok(())
    }

    fn persist(&mut self) -> Result<(), StorageError> {
        let lines: Vec<String> = self
            .entries
            .iter()
            .map(|e| format!("{} {}", e.epoch, e.start_offset))
            .collect();
        checkpoint::write(&self.path, &lines)?;
        self.unwritten = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_begun_at_the_end_is_written_with_the_next_write() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(LEADER_EPOCH_CHECKPOINT);
        let mut c = LeaderEpochCache::load(&p).unwrap();
        c.assign(1, 0).unwrap();
        c.assign_at_end(2, 10);
        assert_eq!(c.latest_epoch(), Some(2), "in memory at once");
        assert_eq!(c.end_offset_for(1, 10), Some((1, 10)));
        assert_eq!(
            LeaderEpochCache::load(&p).unwrap().latest_epoch(),
            Some(1),
            "not yet in the file"
        );
        c.write_pending().unwrap();
        assert_eq!(LeaderEpochCache::load(&p).unwrap().entries(), c.entries());
    }

    #[test]
    fn assign_lookup_truncate_and_reload() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(LEADER_EPOCH_CHECKPOINT);
        let mut c = LeaderEpochCache::load(&p).unwrap();
        assert_eq!(c.latest_epoch(), None);
        assert_eq!(c.end_offset_for(0, 10), None);
        c.assign(1, 0).unwrap();
        c.assign(1, 5).unwrap(); // same epoch: no-op
        c.assign(3, 10).unwrap();
        c.assign(4, 25).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "0\n3\n1 0\n3 10\n4 25\n"
        );
        assert_eq!(c.end_offset_for(4, 40), Some((4, 40)));
        assert_eq!(c.end_offset_for(3, 40), Some((3, 25)));
        assert_eq!(c.end_offset_for(2, 40), Some((1, 10)));
        assert_eq!(c.end_offset_for(1, 40), Some((1, 10)));
        assert_eq!(c.end_offset_for(0, 40), Some((0, 0)));
        assert_eq!(c.end_offset_for(5, 40), None);

        let reloaded = LeaderEpochCache::load(&p).unwrap();
        assert_eq!(reloaded.entries(), c.entries());

        c.truncate_from_end(10).unwrap();
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 1,
                start_offset: 0
            }]
        );
        assert_eq!(LeaderEpochCache::load(&p).unwrap().entries().len(), 1);

        // Conflicting assignment removes later entries.
        c.assign(2, 8).unwrap();
        c.assign(5, 20).unwrap();
        c.assign(3, 15).unwrap();
        assert_eq!(
            c.entries()
                .iter()
                .map(|e| (e.epoch, e.start_offset))
                .collect::<Vec<_>>(),
            vec![(1, 0), (2, 8), (3, 15)]
        );
    }

    #[test]
    fn malformed_file_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(LEADER_EPOCH_CHECKPOINT);
        std::fs::write(&p, "0\n1\nx y\n").unwrap();
        assert!(LeaderEpochCache::load(&p).is_err());
    }
}
