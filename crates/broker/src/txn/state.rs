//! The state of one transactional id and its legal transitions, kept pure (no I/O, no clock)
//! so every rule of the transaction protocol can be tested on its own.
//!
//! Each transition takes the current metadata and returns the metadata to persist; the
//! coordinator writes it to `__transaction_state` and only then replaces the in-memory copy,
//! so memory never runs ahead of the log.

use std::collections::BTreeSet;

/// Kafka error codes of the transaction APIs.
pub mod code {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const INVALID_REQUEST: i16 = 42;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const INVALID_TXN_STATE: i16 = 48;
    pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
    pub const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
    pub const CONCURRENT_TRANSACTIONS: i16 = 51;
    pub const OPERATION_NOT_ATTEMPTED: i16 = 55;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
    pub const PRODUCER_FENCED: i16 = 90;
}

/// Kafka's transaction states, with their `__transaction_state` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnStatus {
    Empty = 0,
    Ongoing = 1,
    PrepareCommit = 2,
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
    Dead = 6,
    PrepareEpochFence = 7,
}

impl TxnStatus {
    /// Every state, in the order of their codes.
    pub const ALL: [TxnStatus; 8] = [
        TxnStatus::Empty,
        TxnStatus::Ongoing,
        TxnStatus::PrepareCommit,
        TxnStatus::PrepareAbort,
        TxnStatus::CompleteCommit,
        TxnStatus::CompleteAbort,
        TxnStatus::Dead,
        TxnStatus::PrepareEpochFence,
    ];

    pub fn from_code(c: i8) -> Option<TxnStatus> {
        usize::try_from(c)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }

    /// The name ListTransactions and DescribeTransactions report.
    pub fn name(self) -> &'static str {
        use TxnStatus::*;
        match self {
            Empty => "Empty",
            Ongoing => "Ongoing",
            PrepareCommit => "PrepareCommit",
            PrepareAbort => "PrepareAbort",
            CompleteCommit => "CompleteCommit",
            CompleteAbort => "CompleteAbort",
            Dead => "Dead",
            PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// Markers still have to be written (the coordinator stopped between prepare and
    /// complete).
    pub fn is_prepare(self) -> bool {
        matches!(self, TxnStatus::PrepareCommit | TxnStatus::PrepareAbort)
    }
}

/// Everything the coordinator knows about one transactional id.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump (-1 if none): lets a retried InitProducerId or EndTxn
    /// be recognised. In memory only, as in Kafka's v0 records.
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub status: TxnStatus,
    /// Partitions written in the current (or just ended) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    pub start_ms: i64,
    pub last_update_ms: i64,
}

/// `c` as a client of `version` understands it: PRODUCER_FENCED exists for an API from
/// version `fenced_since` on; older clients know it as INVALID_PRODUCER_EPOCH.
pub fn code_for_version(c: i16, version: i16, fenced_since: i16) -> i16 {
    if c == code::PRODUCER_FENCED && version < fenced_since {
        code::INVALID_PRODUCER_EPOCH
    } else {
        c
    }
}

/// A refused request: Kafka error code and a readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnError(pub i16, pub String);

fn err<T>(c: i16, msg: impl Into<String>) -> Result<T, TxnError> {
    Err(TxnError(c, msg.into()))
}

/// The next (id, epoch) after a bump: the epoch grows until it would reach `i16::MAX`,
/// then a new producer id (from `fresh_id`) starts at epoch 0.
pub fn bumped(
    id: i64,
    epoch: i16,
    fresh_id: impl FnOnce() -> Result<i64, TxnError>,
) -> Result<(i64, i16), TxnError> {
    if epoch < i16::MAX - 1 {
        Ok((id, epoch + 1))
    } else {
        Ok((fresh_id()?, 0))
    }
}

impl TxnMetadata {
    /// A new transactional id with a fresh producer id.
    pub fn new(
        transactional_id: &str,
        producer_id: i64,
        timeout_ms: i32,
        now_ms: i64,
    ) -> TxnMetadata {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch: 0,
            last_producer_epoch: -1,
            timeout_ms,
            status: TxnStatus::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now_ms,
        }
    }

    /// Checks that a request comes from the current producer of this id.
    pub fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), TxnError> {
        if producer_id != self.producer_id {
            return err(
                code::INVALID_PRODUCER_ID_MAPPING,
                format!(
                    "transactional id {} belongs to producer {}, not {producer_id}",
                    self.transactional_id, self.producer_id
                ),
            );
        }
        if epoch != self.producer_epoch {
            return err(
                code::PRODUCER_FENCED,
                format!(
                    "producer {producer_id} epoch {epoch} is fenced: the current epoch of {} is {}",
                    self.transactional_id, self.producer_epoch
                ),
            );
        }
        Ok(())
    }

    /// InitProducerId on an existing id whose transaction (if any) is already finished:
    /// bumps the epoch (KIP-360: `expected` = the (id, epoch) the producer last had).
    /// Returns the metadata to persist, or `Ok(None)` for a retry that needs no change.
    pub fn reinit(
        &self,
        expected: Option<(i64, i16)>,
        timeout_ms: i32,
        now_ms: i64,
        fresh_id: impl FnOnce() -> Result<i64, TxnError>,
    ) -> Result<Option<TxnMetadata>, TxnError> {
        assert!(
            !matches!(self.status, TxnStatus::Ongoing) && !self.status.is_prepare(),
            "reinit of {} in state {:?}: the transaction must be ended first",
            self.transactional_id,
            self.status
        );
        if let Some((id, epoch)) = expected {
            let retry = id == self.producer_id
                && epoch == self.last_producer_epoch
                && self.last_producer_epoch >= 0;
            if retry {
                return Ok(None);
            }
            if id != self.producer_id || epoch != self.producer_epoch {
                return err(
                    code::PRODUCER_FENCED,
                    format!(
                        "producer {id} epoch {epoch} does not match {} (producer {} epoch {})",
                        self.transactional_id, self.producer_id, self.producer_epoch
                    ),
                );
            }
        }
        let (id, epoch) = bumped(self.producer_id, self.producer_epoch, fresh_id)?;
        let mut next = self.clone();
        next.last_producer_epoch = if id == self.producer_id {
            self.producer_epoch
        } else {
            -1
        };
        next.producer_id = id;
        next.producer_epoch = epoch;
        next.timeout_ms = timeout_ms;
        next.status = TxnStatus::Empty;
        next.partitions.clear();
        next.start_ms = -1;
        next.last_update_ms = now_ms;
        Ok(Some(next))
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: the transaction becomes (or stays) ongoing with
    /// `partitions` added. `Ok(None)`: all were already in it.
    pub fn add_partitions(
        &self,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        now_ms: i64,
    ) -> Result<Option<TxnMetadata>, TxnError> {
        self.check_producer(producer_id, epoch)?;
        match self.status {
            TxnStatus::PrepareCommit | TxnStatus::PrepareAbort | TxnStatus::PrepareEpochFence => {
                return err(
                    code::CONCURRENT_TRANSACTIONS,
                    format!(
                        "the previous transaction of {} is still ending",
                        self.transactional_id
                    ),
                )
            }
            TxnStatus::Dead => {
                return err(
                    code::INVALID_TXN_STATE,
                    format!("{} is expired", self.transactional_id),
                )
            }
            TxnStatus::Ongoing if partitions.iter().all(|p| self.partitions.contains(p)) => {
                return Ok(None)
            }
            _ => {}
        }
        let mut next = self.clone();
        if self.status != TxnStatus::Ongoing {
            next.partitions.clear();
            next.start_ms = now_ms;
            next.status = TxnStatus::Ongoing;
        }
        next.partitions.extend(partitions.iter().cloned());
        next.last_update_ms = now_ms;
        Ok(Some(next))
    }

    /// Whether a transactional write of (producer, epoch) to `partition` belongs to the
    /// ongoing transaction (KIP-890 verification).
    pub fn verify(
        &self,
        producer_id: i64,
        epoch: i16,
        partition: &(String, i32),
    ) -> Result<(), TxnError> {
        self.check_producer(producer_id, epoch)?;
        if self.status != TxnStatus::Ongoing || !self.partitions.contains(partition) {
            return err(
                code::INVALID_TXN_STATE,
                format!(
                    "{}-{} was not added to an ongoing transaction of {}",
                    partition.0, partition.1, self.transactional_id
                ),
            );
        }
        Ok(())
    }

    /// EndTxn: the prepared state to persist before markers are written. `bump_epoch` (EndTxn
    /// v5, KIP-890): the transaction ends with a new epoch so nothing late from it can land in
    /// the next one. `Ok(None)`: a retry of an end that already completed.
    pub fn prepare_end(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        bump_epoch: bool,
        now_ms: i64,
        fresh_id: impl FnOnce() -> Result<i64, TxnError>,
    ) -> Result<Option<TxnMetadata>, TxnError> {
        let completed = if commit {
            TxnStatus::CompleteCommit
        } else {
            TxnStatus::CompleteAbort
        };
        // A retried v5 EndTxn carries the epoch the transaction had before its bump.
        let retried_bumped = bump_epoch
            && producer_id == self.producer_id
            && epoch == self.last_producer_epoch
            && self.status == completed;
        if retried_bumped {
            return Ok(None);
        }
        self.check_producer(producer_id, epoch)?;
        match self.status {
            TxnStatus::Ongoing => {}
            s if s == completed && !bump_epoch => return Ok(None),
            TxnStatus::PrepareCommit | TxnStatus::PrepareAbort | TxnStatus::PrepareEpochFence => {
                return err(
                    code::CONCURRENT_TRANSACTIONS,
                    format!(
                        "the transaction of {} is already ending",
                        self.transactional_id
                    ),
                )
            }
            TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort if !commit => {
                // Aborting when nothing was written: nothing to do but bump if asked.
                if !bump_epoch {
                    return Ok(None);
                }
            }
            s => {
                return err(
                    code::INVALID_TXN_STATE,
                    format!(
                        "cannot {} the transaction of {}: it is {}",
                        if commit { "commit" } else { "abort" },
                        self.transactional_id,
                        s.name()
                    ),
                )
            }
        }
        let mut next = self.clone();
        if bump_epoch {
            let (id, e) = bumped(self.producer_id, self.producer_epoch, fresh_id)?;
            next.last_producer_epoch = if id == self.producer_id {
                self.producer_epoch
            } else {
                -1
            };
            next.producer_id = id;
            next.producer_epoch = e;
        }
        next.status = if self.status == TxnStatus::Ongoing {
            if commit {
                TxnStatus::PrepareCommit
            } else {
                TxnStatus::PrepareAbort
            }
        } else {
            completed
        };
        next.last_update_ms = now_ms;
        Ok(Some(next))
    }

    /// The coordinator aborts a transaction itself (timeout, or a new producer taking the
    /// id over): the epoch is bumped so the old producer is fenced.
    pub fn prepare_fence_abort(
        &self,
        now_ms: i64,
        fresh_id: impl FnOnce() -> Result<i64, TxnError>,
    ) -> Result<TxnMetadata, TxnError> {
        assert_eq!(
            self.status,
            TxnStatus::Ongoing,
            "only an ongoing transaction is aborted"
        );
        let mut next = self.clone();
        let (id, e) = bumped(self.producer_id, self.producer_epoch, fresh_id)?;
        next.last_producer_epoch = -1;
        next.producer_id = id;
        next.producer_epoch = e;
        next.status = TxnStatus::PrepareAbort;
        next.last_update_ms = now_ms;
        Ok(next)
    }

    /// After every marker is written: the completed state (its partitions are done with, as
    /// in Kafka, so they are no longer reported).
    pub fn complete(&self, now_ms: i64) -> TxnMetadata {
        let mut next = self.clone();
        next.partitions.clear();
        next.status = match self.status {
            TxnStatus::PrepareCommit => TxnStatus::CompleteCommit,
            TxnStatus::PrepareAbort => TxnStatus::CompleteAbort,
            s => panic!("complete() of {} in state {s:?}", self.transactional_id),
        };
        next.last_update_ms = now_ms;
        next
    }

    /// Whether a prepared commit (else abort).
    pub fn committing(&self) -> bool {
        self.status == TxnStatus::PrepareCommit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_id() -> Result<i64, TxnError> {
        panic!("no new id expected")
    }
    fn tp(t: &str, p: i32) -> (String, i32) {
        (t.to_string(), p)
    }

    #[test]
    fn a_commit_goes_through_ongoing_prepare_and_complete() {
        let m = TxnMetadata::new("t", 7, 60_000, 0);
        let m = m.add_partitions(7, 0, &[tp("a", 0)], 10).unwrap().unwrap();
        assert_eq!((m.status, m.start_ms), (TxnStatus::Ongoing, 10));
        assert!(m.add_partitions(7, 0, &[tp("a", 0)], 11).unwrap().is_none());
        assert!(m.verify(7, 0, &tp("a", 0)).is_ok());
        assert_eq!(
            m.verify(7, 0, &tp("a", 1)).unwrap_err().0,
            code::INVALID_TXN_STATE
        );
        let p = m
            .prepare_end(7, 0, true, false, 20, no_id)
            .unwrap()
            .unwrap();
        assert_eq!(p.status, TxnStatus::PrepareCommit);
        assert_eq!(
            p.add_partitions(7, 0, &[tp("b", 0)], 21).unwrap_err().0,
            code::CONCURRENT_TRANSACTIONS
        );
        let c = p.complete(30);
        assert_eq!(c.status, TxnStatus::CompleteCommit);
        assert!(
            c.partitions.is_empty(),
            "a completed transaction lists no partitions"
        );
        assert!(
            c.prepare_end(7, 0, true, false, 31, no_id)
                .unwrap()
                .is_none(),
            "retry"
        );
        assert_eq!(c.prepare_end(7, 0, false, false, 31, no_id).unwrap(), None);
        assert_eq!(
            c.verify(7, 0, &tp("a", 0)).unwrap_err().0,
            code::INVALID_TXN_STATE
        );
        // The next transaction starts afresh.
        let n = c.add_partitions(7, 0, &[tp("b", 0)], 40).unwrap().unwrap();
        assert_eq!(n.partitions.len(), 1);
    }

    #[test]
    fn fencing_and_kip_360_reinit() {
        let m = TxnMetadata::new("t", 7, 60_000, 0);
        let r = m.reinit(None, 1000, 5, no_id).unwrap().unwrap();
        assert_eq!(
            (r.producer_id, r.producer_epoch, r.last_producer_epoch),
            (7, 1, 0)
        );
        assert_eq!(
            r.add_partitions(7, 0, &[tp("a", 0)], 6).unwrap_err().0,
            code::PRODUCER_FENCED
        );
        assert_eq!(
            r.add_partitions(8, 1, &[tp("a", 0)], 6).unwrap_err().0,
            code::INVALID_PRODUCER_ID_MAPPING
        );
        // KIP-360: the producer names its current id/epoch; a retry of the same call is idempotent.
        let r2 = r.reinit(Some((7, 1)), 1000, 7, no_id).unwrap().unwrap();
        assert_eq!(r2.producer_epoch, 2);
        assert!(r2.reinit(Some((7, 1)), 1000, 8, no_id).unwrap().is_none());
        assert_eq!(
            r2.reinit(Some((7, 0)), 1000, 8, no_id).unwrap_err().0,
            code::PRODUCER_FENCED
        );
        // An exhausted epoch moves to a new producer id.
        let mut old = r2.clone();
        old.producer_epoch = i16::MAX - 1;
        let fresh = old.reinit(None, 1000, 9, || Ok(99)).unwrap().unwrap();
        assert_eq!((fresh.producer_id, fresh.producer_epoch), (99, 0));
    }

    #[test]
    fn kip_890_end_bumps_the_epoch_and_recognises_retries() {
        let m = TxnMetadata::new("t", 7, 60_000, 0)
            .add_partitions(7, 0, &[tp("a", 0)], 1)
            .unwrap()
            .unwrap();
        let p = m.prepare_end(7, 0, false, true, 2, no_id).unwrap().unwrap();
        assert_eq!(
            (p.status, p.producer_epoch, p.last_producer_epoch),
            (TxnStatus::PrepareAbort, 1, 0)
        );
        let c = p.complete(3);
        assert!(
            c.prepare_end(7, 0, false, true, 4, no_id)
                .unwrap()
                .is_none(),
            "retried end"
        );
        assert_eq!(
            c.verify(7, 0, &tp("a", 0)).unwrap_err().0,
            code::PRODUCER_FENCED
        );
    }

    #[test]
    fn a_timed_out_transaction_is_aborted_with_a_new_epoch() {
        let m = TxnMetadata::new("t", 7, 100, 0)
            .add_partitions(7, 0, &[tp("a", 0)], 1)
            .unwrap()
            .unwrap();
        let p = m.prepare_fence_abort(500, no_id).unwrap();
        assert_eq!((p.status, p.producer_epoch), (TxnStatus::PrepareAbort, 1));
        assert!(!p.committing());
        let c = p.complete(501);
        assert_eq!(c.status, TxnStatus::CompleteAbort);
        assert_eq!(
            c.prepare_end(7, 0, true, false, 600, no_id).unwrap_err().0,
            code::PRODUCER_FENCED
        );
    }

    #[test]
    fn status_codes_round_trip() {
        for c in 0..8 {
            assert_eq!(TxnStatus::from_code(c).unwrap() as i8, c);
        }
        assert!(TxnStatus::from_code(8).is_none());
    }
}
