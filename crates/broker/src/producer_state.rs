//! Idempotent-producer state of one partition: for each producer id, its epoch and the
//! metadata of its last five batches, so a retried batch is answered with its original
//! offset instead of being written twice, and a gap in sequence numbers is refused.
//!
//! Crash behaviour: the state is derived from the log. It is snapshotted to
//! `producer-state.snapshot` in the partition directory (JSON, written to a temporary file,
//! fsynced and renamed) with the log end offset it covers; on start the snapshot is loaded and
//! the batch headers after its offset are replayed. A snapshot beyond the log end (the log was
//! truncated) is ignored and the whole log is replayed.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// How many recent batches are remembered per producer (Kafka's in-flight limit).
pub const BATCHES_KEPT: usize = 5;
const SNAPSHOT_FILE: &str = "producer-state.snapshot";

/// Kafka error codes of the sequence checks.
pub mod code {
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const UNKNOWN_PRODUCER_ID: i16 = 59;
}

/// One written batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// What one producer has written to this partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    pub last_write_ms: i64,
}

/// The verdict on an incoming idempotent batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Write it.
    Append,
    /// Already written: answer with this first offset, write nothing.
    Duplicate { first_offset: i64 },
    /// Refuse it with this Kafka error code.
    Reject(i16, String),
}

/// All producers of one partition.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    /// The log end offset the state covers.
    offset: i64,
    states: ProducerStates,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

impl ProducerStates {
    /// Checks a batch of `producer_id` (>= 0) before it is appended.
    pub fn check(&self, producer_id: i64, epoch: i16, first_seq: i32, last_seq: i32) -> Check {
        let Some(entry) = self.producers.get(&producer_id) else {
            return if first_seq == 0 {
                Check::Append
            } else {
                Check::Reject(
                    code::UNKNOWN_PRODUCER_ID,
                    format!("producer {producer_id} is unknown here and its first sequence is {first_seq}, not 0"),
                )
            };
        };
        if epoch < entry.epoch {
            return Check::Reject(
                code::INVALID_PRODUCER_EPOCH,
                format!(
                    "producer {producer_id} epoch {epoch} is older than the current epoch {}",
                    entry.epoch
                ),
            );
        }
        if epoch > entry.epoch {
            return if first_seq == 0 {
                Check::Append
            } else {
                Check::Reject(
                    code::OUT_OF_ORDER_SEQUENCE_NUMBER,
                    format!("producer {producer_id} starts epoch {epoch} at sequence {first_seq}, not 0"),
                )
            };
        }
        if let Some(b) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return Check::Duplicate {
                first_offset: b.first_offset,
            };
        }
        let expected = entry.batches.back().map_or(0, |b| next_seq(b.last_seq));
        if first_seq != expected {
            return Check::Reject(
                code::OUT_OF_ORDER_SEQUENCE_NUMBER,
                format!("producer {producer_id} sent sequence {first_seq}, expected {expected}"),
            );
        }
        Check::Append
    }

    /// Records a batch that was appended (or replayed from the log).
    pub fn record(&mut self, producer_id: i64, epoch: i16, batch: BatchMeta, now_ms: i64) {
        let entry = self.producers.entry(producer_id).or_default();
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(batch);
        while entry.batches.len() > BATCHES_KEPT {
            entry.batches.pop_front();
        }
        entry.last_write_ms = now_ms;
    }

    /// Forgets producers idle for longer than `expiration_ms`.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) {
        self.producers
            .retain(|_, e| now_ms - e.last_write_ms < expiration_ms);
    }

    /// Number of producers known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Loads the snapshot in `dir` if it covers at most `log_end`: (states, offset covered).
    pub fn load(dir: &Path, log_end: i64) -> Option<(ProducerStates, i64)> {
        let text = std::fs::read(dir.join(SNAPSHOT_FILE)).ok()?;
        let snapshot: Snapshot = serde_json::from_slice(&text).ok()?;
        (snapshot.offset <= log_end).then_some((snapshot.states, snapshot.offset))
    }

    /// Writes the snapshot covering the log up to `offset` (exclusive) into `dir`.
    pub fn save(&self, dir: &Path, offset: i64) -> std::io::Result<()> {
        let body = serde_json::to_vec(&SnapshotRef {
            offset,
            states: self,
        })
        .expect("producer state serializes");
        let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))
    }
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    offset: i64,
    states: &'a ProducerStates,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(first_seq: i32, last_seq: i32, first_offset: i64) -> BatchMeta {
        BatchMeta {
            first_seq,
            last_seq,
            first_offset,
            last_offset: first_offset + (last_seq - first_seq) as i64,
        }
    }

    #[test]
    fn sequences_duplicates_and_epochs() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(7, 0, 0, 4), Check::Append);
        s.record(7, 0, meta(0, 4, 100), 0);
        assert_eq!(s.check(7, 0, 0, 4), Check::Duplicate { first_offset: 100 });
        assert!(matches!(
            s.check(7, 0, 6, 9),
            Check::Reject(code::OUT_OF_ORDER_SEQUENCE_NUMBER, _)
        ));
        assert_eq!(s.check(7, 0, 5, 9), Check::Append);
        for i in 1..=6 {
            s.record(7, 0, meta(i * 5, i * 5 + 4, 100 + i as i64 * 5), 0);
        }
        // Only the last five batches are remembered.
        assert!(matches!(
            s.check(7, 0, 0, 4),
            Check::Reject(code::OUT_OF_ORDER_SEQUENCE_NUMBER, _)
        ));
        assert_eq!(
            s.check(7, 0, 30, 34),
            Check::Duplicate { first_offset: 130 }
        );
        assert!(matches!(
            s.check(7, -1, 35, 35),
            Check::Reject(code::INVALID_PRODUCER_EPOCH, _)
        ));
        assert!(matches!(
            s.check(7, 1, 3, 3),
            Check::Reject(code::OUT_OF_ORDER_SEQUENCE_NUMBER, _)
        ));
        assert_eq!(s.check(7, 1, 0, 0), Check::Append);
        assert!(matches!(
            s.check(8, 0, 3, 3),
            Check::Reject(code::UNKNOWN_PRODUCER_ID, _)
        ));
        // Sequence numbers wrap at i32::MAX.
        s.record(9, 0, meta(i32::MAX - 1, i32::MAX, 500), 0);
        assert_eq!(s.check(9, 0, 0, 3), Check::Append);
    }

    #[test]
    fn snapshot_round_trip_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ProducerStates::default();
        s.record(1, 2, meta(0, 9, 0), 1_000);
        s.record(2, 0, meta(0, 0, 10), 5_000);
        s.save(dir.path(), 11).unwrap();
        let (loaded, offset) = ProducerStates::load(dir.path(), 20).unwrap();
        assert_eq!((loaded, offset), (s, 11));
        assert!(
            ProducerStates::load(dir.path(), 5).is_none(),
            "a snapshot beyond the log end is ignored"
        );
        let (mut loaded, _) = ProducerStates::load(dir.path(), 11).unwrap();
        loaded.expire(6_000, 2_000);
        assert_eq!(loaded.len(), 1);
    }
}
