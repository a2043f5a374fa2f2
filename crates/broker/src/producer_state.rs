//! Idempotent-producer state of one partition: for each producer id, its epoch and the
//! metadata of its last five batches, so a retried batch is answered with its original
//! offset instead of being written twice, and a gap in sequence numbers is refused. For
//! transactional producers also the first offset of the ongoing transaction in this
//! partition (which holds back the last stable offset) and the coordinator epoch of the
//! last marker.
//!
//! Crash behaviour: the state is derived from the log. It is snapshotted to
//! `producer-state.snapshot` in the partition directory (JSON, written to a temporary file,
//! fsynced and renamed) with the log end offset it covers; on start the snapshot is loaded and
//! the batch headers after its offset are replayed. A snapshot beyond the log end (the log was
//! truncated) is ignored and the whole log is replayed.

use std::collections::{BTreeSet, HashMap, VecDeque};
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
    pub const INVALID_TXN_STATE: i16 = 48;
    pub const TRANSACTION_COORDINATOR_FENCED: i16 = 52;
    pub const UNKNOWN_PRODUCER_ID: i16 = 59;
    pub const INVALID_RECORD: i16 = 87;
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    pub last_write_ms: i64,
    /// Max timestamp of the last batch or marker written (-1: none).
    #[serde(default = "minus_one")]
    pub last_timestamp: i64,
    /// Coordinator epoch of the last transaction marker (-1: none).
    #[serde(default = "minus_one_i32")]
    pub coordinator_epoch: i32,
    /// First offset of the producer's ongoing transaction in this partition.
    #[serde(default)]
    pub txn_first_offset: Option<i64>,
}

impl Default for ProducerEntry {
    fn default() -> Self {
        ProducerEntry {
            epoch: 0,
            batches: VecDeque::new(),
            last_write_ms: 0,
            last_timestamp: -1,
            coordinator_epoch: -1,
            txn_first_offset: None,
        }
    }
}

fn minus_one() -> i64 {
    -1
}

fn minus_one_i32() -> i32 {
    -1
}

/// One producer as DescribeProducers reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerSummary {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Last sequence written in the current epoch (-1: none).
    pub last_sequence: i32,
    pub last_timestamp: i64,
    pub coordinator_epoch: i32,
    /// First offset of the ongoing transaction (-1: none).
    pub current_txn_start_offset: i64,
}

/// The verdict on an incoming idempotent batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Write it.
    Append,
    /// Already written at these offsets: answer with the first, write nothing (an acks=all
    /// answer still waits until the last is replicated, as for the original).
    Duplicate { first_offset: i64, last_offset: i64 },
    /// Refuse it with this Kafka error code.
    Reject(i16, String),
}

/// All producers of one partition.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    /// `(first offset, producer id)` of every ongoing transaction; derived from
    /// `producers[..].txn_first_offset`, rebuilt on load.
    #[serde(skip)]
    ongoing: BTreeSet<(i64, i64)>,
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
                last_offset: b.last_offset,
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

    /// Records a batch that was appended (or replayed from the log); `timestamp` is its max
    /// timestamp.
    pub fn record(
        &mut self,
        producer_id: i64,
        epoch: i16,
        batch: BatchMeta,
        timestamp: i64,
        now_ms: i64,
    ) {
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
        entry.last_timestamp = timestamp;
    }

    /// Makes `epoch` the producer's epoch (if newer) without recording a batch: a
    /// coordinator's write for it carries no sequence numbers to deduplicate.
    pub fn note_epoch(&mut self, producer_id: i64, epoch: i16, now_ms: i64) {
        let entry = self.producers.entry(producer_id).or_default();
        if epoch > entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.last_write_ms = now_ms;
    }

    /// Checks a data batch against the producer's transaction state: a producer with an
    /// ongoing transaction here may write only transactional batches (as in Kafka).
    pub fn check_txn(&self, producer_id: i64, transactional: bool) -> Result<(), (i16, String)> {
        let ongoing = self.ongoing_txn(producer_id);
        match ongoing {
            Some(first) if !transactional => Err((
                code::INVALID_TXN_STATE,
                format!(
                    "producer {producer_id} has a transaction open since offset {first} and sent a non-transactional batch"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// What is known of one producer here (for diagnostics).
    pub fn entry(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// The producer's current epoch here, if it is known.
    pub fn epoch(&self, producer_id: i64) -> Option<i16> {
        self.producers.get(&producer_id).map(|e| e.epoch)
    }

    /// First offset of the producer's ongoing transaction here.
    pub fn ongoing_txn(&self, producer_id: i64) -> Option<i64> {
        self.producers
            .get(&producer_id)
            .and_then(|e| e.txn_first_offset)
    }

    /// Starts the producer's transaction at `first_offset` unless one is ongoing (a
    /// transactional batch was written there). The producer must be known (recorded).
    pub fn begin_txn(&mut self, producer_id: i64, first_offset: i64) {
        let entry = self
            .producers
            .get_mut(&producer_id)
            .expect("a transactional batch is recorded before its transaction starts");
        if entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(first_offset);
            self.ongoing.insert((first_offset, producer_id));
        }
    }

    /// Checks a transaction marker before it is written: an epoch older than the
    /// producer's current one is refused.
    pub fn check_marker(&self, producer_id: i64, epoch: i16) -> Result<(), (i16, String)> {
        match self.producers.get(&producer_id) {
            Some(e) if epoch < e.epoch => Err((
                code::INVALID_PRODUCER_EPOCH,
                format!(
                    "transaction marker for producer {producer_id} has epoch {epoch}, older than the current epoch {}",
                    e.epoch
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Checks the coordinator epoch of a transaction marker: a coordinator whose epoch is
    /// older than that of the last marker for this producer lost its transaction state
    /// partition to the coordinator that wrote it, and is fenced (as Kafka's producer state
    /// refuses it).
    pub fn check_coordinator_epoch(
        &self,
        producer_id: i64,
        coordinator_epoch: i32,
    ) -> Result<(), (i16, String)> {
        match self.producers.get(&producer_id) {
            Some(e) if coordinator_epoch < e.coordinator_epoch => Err((
                code::TRANSACTION_COORDINATOR_FENCED,
                format!(
                    "transaction marker for producer {producer_id} comes from coordinator epoch {coordinator_epoch}, older than {} of the last marker: that coordinator was replaced",
                    e.coordinator_epoch
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Records a transaction marker written at `offset` (or replayed): a newer epoch
    /// becomes the producer's epoch (fencing older ones), and the ongoing transaction, if
    /// any, ends. Returns the first offset of the ended transaction (`offset` itself when
    /// none was ongoing, as Kafka indexes it).
    pub fn end_txn(
        &mut self,
        producer_id: i64,
        epoch: i16,
        coordinator_epoch: i32,
        offset: i64,
        timestamp: i64,
        now_ms: i64,
    ) -> i64 {
        let entry = self.producers.entry(producer_id).or_default();
        assert!(
            epoch >= entry.epoch,
            "marker epoch {epoch} of producer {producer_id} below the current epoch {} (check_marker first)",
            entry.epoch
        );
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.coordinator_epoch = coordinator_epoch;
        entry.last_write_ms = now_ms;
        entry.last_timestamp = timestamp;
        match entry.txn_first_offset.take() {
            Some(first) => {
                let removed = self.ongoing.remove(&(first, producer_id));
                assert!(removed, "ongoing transaction set out of step");
                first
            }
            None => offset,
        }
    }

    /// The smallest first offset of all ongoing transactions: the last stable offset when
    /// it is below the high watermark.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.first().map(|(first, _)| *first)
    }

    /// Every producer, for DescribeProducers.
    pub fn summaries(&self) -> Vec<ProducerSummary> {
        let mut out: Vec<ProducerSummary> = self
            .producers
            .iter()
            .map(|(id, e)| ProducerSummary {
                producer_id: *id,
                producer_epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_seq),
                last_timestamp: e.last_timestamp,
                coordinator_epoch: e.coordinator_epoch,
                current_txn_start_offset: e.txn_first_offset.unwrap_or(-1),
            })
            .collect();
        out.sort_by_key(|s| s.producer_id);
        out
    }

    /// Forgets producers idle for longer than `expiration_ms`, except those with an ongoing
    /// transaction (the coordinator ends it, or times it out, with a marker).
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) {
        self.producers.retain(|_, e| {
            e.txn_first_offset.is_some() || now_ms - e.last_write_ms < expiration_ms
        });
    }

    /// Recomputes the derived set of ongoing transactions.
    fn rebuild_ongoing(&mut self) {
        self.ongoing = self
            .producers
            .iter()
            .filter_map(|(id, e)| e.txn_first_offset.map(|first| (first, *id)))
            .collect();
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
        let mut snapshot: Snapshot = serde_json::from_slice(&text).ok()?;
        snapshot.states.rebuild_ongoing();
        (snapshot.offset <= log_end).then_some((snapshot.states, snapshot.offset))
    }

    /// Removes the snapshot in `dir`, if any.
    pub fn remove_snapshot(dir: &Path) {
        match std::fs::remove_file(dir.join(SNAPSHOT_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a producer state snapshot")
            }
        }
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
        s.record(7, 0, meta(0, 4, 100), 1_000, 0);
        assert_eq!(
            s.check(7, 0, 0, 4),
            Check::Duplicate {
                first_offset: 100,
                last_offset: 104
            }
        );
        assert!(matches!(
            s.check(7, 0, 6, 9),
            Check::Reject(code::OUT_OF_ORDER_SEQUENCE_NUMBER, _)
        ));
        assert_eq!(s.check(7, 0, 5, 9), Check::Append);
        for i in 1..=6 {
            s.record(7, 0, meta(i * 5, i * 5 + 4, 100 + i as i64 * 5), 1_000, 0);
        }
        // Only the last five batches are remembered.
        assert!(matches!(
            s.check(7, 0, 0, 4),
            Check::Reject(code::OUT_OF_ORDER_SEQUENCE_NUMBER, _)
        ));
        assert_eq!(
            s.check(7, 0, 30, 34),
            Check::Duplicate {
                first_offset: 130,
                last_offset: 134
            }
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
        s.record(9, 0, meta(i32::MAX - 1, i32::MAX, 500), 1_000, 0);
        assert_eq!(s.check(9, 0, 0, 3), Check::Append);
    }

    #[test]
    fn snapshot_round_trip_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ProducerStates::default();
        s.record(1, 2, meta(0, 9, 0), 1_000, 1_000);
        s.record(2, 0, meta(0, 0, 10), 1_000, 5_000);
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

    #[test]
    fn transactions_hold_the_first_unstable_offset_and_survive_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ProducerStates::default();
        s.record(1, 0, meta(0, 1, 10), 100, 0);
        s.begin_txn(1, 10);
        s.record(1, 0, meta(2, 2, 14), 101, 0);
        s.begin_txn(1, 14); // already ongoing: unchanged
        s.record(2, 3, meta(0, 0, 12), 102, 0);
        s.begin_txn(2, 12);
        assert_eq!(s.first_unstable_offset(), Some(10));
        assert!(s.check_txn(1, true).is_ok());
        assert!(matches!(
            s.check_txn(1, false),
            Err((code::INVALID_TXN_STATE, _))
        ));
        assert!(s.check_txn(3, false).is_ok());
        s.save(dir.path(), 15).unwrap();

        // Expiry keeps producers with an open transaction.
        s.expire(i64::MAX, 1);
        assert_eq!(s.len(), 2);
        // An old epoch is refused; the same or a newer one ends the transaction.
        assert!(matches!(
            s.check_marker(2, 2),
            Err((code::INVALID_PRODUCER_EPOCH, _))
        ));
        assert!(s.check_marker(1, 1).is_ok());
        assert!(s.check_coordinator_epoch(1, 0).is_ok(), "no marker yet");
        assert_eq!(s.end_txn(1, 1, 5, 16, 200, 0), 10);
        // A coordinator older than the one that wrote the last marker is fenced.
        assert!(matches!(
            s.check_coordinator_epoch(1, 4),
            Err((code::TRANSACTION_COORDINATOR_FENCED, _))
        ));
        assert!(s.check_coordinator_epoch(1, 5).is_ok());
        assert!(s.check_coordinator_epoch(1, 6).is_ok());
        assert_eq!(s.first_unstable_offset(), Some(12));
        // The new epoch fences epoch 0 and starts at sequence 0.
        assert!(matches!(
            s.check(1, 0, 3, 3),
            Check::Reject(code::INVALID_PRODUCER_EPOCH, _)
        ));
        assert_eq!(s.check(1, 1, 0, 0), Check::Append);
        // A marker without a transaction indexes itself.
        assert_eq!(s.end_txn(1, 1, 5, 17, 201, 0), 17);
        assert_eq!(s.end_txn(2, 3, 5, 18, 202, 0), 12);
        assert_eq!(s.first_unstable_offset(), None);
        let summaries = s.summaries();
        assert_eq!(
            summaries[0],
            ProducerSummary {
                producer_id: 1,
                producer_epoch: 1,
                last_sequence: -1,
                last_timestamp: 201,
                coordinator_epoch: 5,
                current_txn_start_offset: -1,
            }
        );

        let (loaded, offset) = ProducerStates::load(dir.path(), 15).unwrap();
        assert_eq!(offset, 15);
        assert_eq!(loaded.first_unstable_offset(), Some(10));
        assert_eq!(loaded.ongoing_txn(2), Some(12));
        assert_eq!(loaded.summaries()[1].current_txn_start_offset, 12);
        assert_eq!(loaded.summaries()[1].last_sequence, 0);
    }
}
