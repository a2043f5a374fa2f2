//! The transactional producer's state machine, free of I/O so that every transition (and
//! the classification of coordinator errors) is unit-tested: which calls are allowed in
//! which state, which partitions still need AddPartitionsToTxn, and how failures turn a
//! transaction abortable or the producer fatally failed.

use std::collections::BTreeSet;
use std::time::Instant;

use kafka_protocol::error::ResponseError;

use crate::error::Error;
use crate::record::Tp;

/// Where the transactional producer is in its life cycle.
#[derive(Debug, Clone, Default)]
pub(crate) enum TxnState {
    /// `init_transactions` not called yet.
    #[default]
    Uninitialized,
    /// `init_transactions` started (resumed if it timed out).
    Initializing,
    /// Between transactions.
    Ready,
    InTransaction,
    /// `commit_transaction` started (resumed if it timed out).
    Committing,
    /// `abort_transaction` started (resumed if it timed out).
    Aborting,
    /// A record or request failed: only `abort_transaction` is allowed. Holds the cause.
    AbortableError(Error),
    /// Fenced or otherwise unrecoverable: the producer must be closed. Holds the error
    /// returned by every later call (`ProducerFenced` or `TransactionFatal`).
    FatalError(Error),
}

/// What to do about an error from a transactional request.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// Try again after a backoff; `rediscover`: look the coordinator up again first.
    Retry { rediscover: bool },
    /// The producer is unusable (the error is `ProducerFenced` or `TransactionFatal`).
    Fatal(Error),
    /// The current transaction cannot commit; the error is the cause.
    Abortable(Error),
}

/// Classifies an error of a request to a coordinator (or of the connection to it).
pub(crate) fn classify(error: Error) -> Outcome {
    use ResponseError as E;
    let Some(code) = error.response_error() else {
        return match error {
            Error::Network { .. } | Error::RequestTimeout { .. } | Error::NoBrokerAvailable(_) => {
                Outcome::Retry { rediscover: true }
            }
            e if e.is_fatal() => Outcome::Fatal(e),
            e => Outcome::Fatal(Error::TransactionFatal(Box::new(e))),
        };
    };
    match code {
        E::ProducerFenced | E::InvalidProducerEpoch => {
            Outcome::Fatal(Error::ProducerFenced(error.to_string()))
        }
        E::NotCoordinator | E::CoordinatorNotAvailable => Outcome::Retry { rediscover: true },
        E::ConcurrentTransactions | E::CoordinatorLoadInProgress => {
            Outcome::Retry { rediscover: false }
        }
        E::TransactionalIdAuthorizationFailed
        | E::ClusterAuthorizationFailed
        | E::InvalidProducerIdMapping
        | E::InvalidTxnState
        | E::InvalidTransactionTimeout
        | E::UnsupportedVersion
        | E::UnsupportedForMessageFormat => {
            Outcome::Fatal(Error::TransactionFatal(Box::new(error)))
        }
        e if e.is_retriable() => Outcome::Retry { rediscover: false },
        _ => Outcome::Abortable(error),
    }
}

/// The transaction manager: the state plus the partitions of the current transaction.
#[derive(Debug, Default)]
pub(crate) struct TransactionManager {
    state: TxnState,
    /// Partitions the coordinator has in the current transaction.
    added: BTreeSet<Tp>,
    /// Partitions with records that still need AddPartitionsToTxn.
    pending: BTreeSet<Tp>,
    /// Partitions of the AddPartitionsToTxn request in flight.
    adding: BTreeSet<Tp>,
    /// No AddPartitionsToTxn before this instant (backoff after a retriable error).
    add_retry_at: Option<Instant>,
    /// A partition or a group's offsets were added: the coordinator has a transaction to end.
    started: bool,
}

fn invalid(message: &str) -> Error {
    Error::InvalidTransactionState(message.to_string())
}

impl TransactionManager {
    #[cfg(test)]
    pub fn state(&self) -> &TxnState {
        &self.state
    }

    /// The error every call reports once the producer failed fatally.
    fn fatal(&self) -> Option<Error> {
        match &self.state {
            TxnState::FatalError(e) => Some(e.clone()),
            _ => None,
        }
    }

    /// `init_transactions`: allowed once (and again to resume after a timeout).
    pub fn start_init(&mut self) -> Result<(), Error> {
        match &self.state {
            TxnState::Uninitialized | TxnState::Initializing => {
                self.state = TxnState::Initializing;
                Ok(())
            }
            TxnState::FatalError(e) => Err(e.clone()),
            _ => Err(invalid("init_transactions was already called")),
        }
    }

    pub fn init_done(&mut self) {
        if matches!(self.state, TxnState::Initializing) {
            self.state = TxnState::Ready;
        }
    }

    /// `begin_transaction`.
    pub fn begin(&mut self) -> Result<(), Error> {
        match &self.state {
            TxnState::Ready => {
                self.state = TxnState::InTransaction;
                Ok(())
            }
            TxnState::Uninitialized | TxnState::Initializing => {
                Err(invalid("call init_transactions before begin_transaction"))
            }
            TxnState::InTransaction => Err(invalid("a transaction is already in progress")),
            TxnState::Committing | TxnState::Aborting => Err(invalid(
                "the previous transaction is still completing: call commit_transaction or abort_transaction again",
            )),
            TxnState::AbortableError(e) => Err(Error::TransactionAbortable(Box::new(e.clone()))),
            TxnState::FatalError(e) => Err(e.clone()),
        }
    }

    /// Whether records may be sent now.
    pub fn check_send(&self) -> Result<(), Error> {
        match &self.state {
            TxnState::InTransaction => Ok(()),
            TxnState::AbortableError(e) => Err(Error::TransactionAbortable(Box::new(e.clone()))),
            TxnState::FatalError(e) => Err(e.clone()),
            TxnState::Committing | TxnState::Aborting => Err(invalid(
                "cannot send while the transaction is committing or aborting",
            )),
            _ => Err(invalid(
                "cannot send outside a transaction: call begin_transaction first",
            )),
        }
    }

    /// A record for `tp` is accepted: the partition joins the transaction before it is sent.
    pub fn record_partition(&mut self, tp: &Tp) -> Result<(), Error> {
        self.check_send()?;
        if !self.added.contains(tp) && !self.adding.contains(tp) {
            self.pending.insert(tp.clone());
        }
        Ok(())
    }

    /// Whether batches of `tp` may be sent: it is in the transaction, which is still open.
    pub fn may_send(&self, tp: &Tp) -> bool {
        matches!(self.state, TxnState::InTransaction | TxnState::Committing)
            && self.added.contains(tp)
    }

    /// The partitions for the next AddPartitionsToTxn request, now marked in flight (empty
    /// while one is in flight, during a backoff, or when the transaction is not open).
    pub fn take_partitions_to_add(&mut self, now: Instant) -> Vec<Tp> {
        let open = matches!(self.state, TxnState::InTransaction | TxnState::Committing);
        if !open || !self.adding.is_empty() || self.add_retry_at.is_some_and(|t| t > now) {
            return Vec::new();
        }
        self.add_retry_at = None;
        self.adding = std::mem::take(&mut self.pending);
        self.adding.iter().cloned().collect()
    }

    /// When the next AddPartitionsToTxn may go, if partitions are waiting for a backoff.
    pub fn add_retry_at(&self) -> Option<Instant> {
        self.add_retry_at.filter(|_| !self.pending.is_empty())
    }

    /// Whether an AddPartitionsToTxn request is in flight.
    pub fn adds_in_flight(&self) -> bool {
        !self.adding.is_empty()
    }

    /// The coordinator added `tps`.
    pub fn partitions_added(&mut self, tps: &[Tp]) {
        for tp in tps {
            self.adding.remove(tp);
            self.added.insert(tp.clone());
            self.started = true;
        }
    }

    /// `tps` were not added and must be tried again after `at` (dropped when aborting).
    pub fn retry_partitions(&mut self, tps: &[Tp], at: Instant) {
        for tp in tps {
            self.adding.remove(tp);
            if matches!(self.state, TxnState::InTransaction | TxnState::Committing) {
                self.pending.insert(tp.clone());
            }
        }
        self.add_retry_at = Some(at);
    }

    /// `tps` will not be added (their request failed; see [`TransactionManager::fail`]).
    pub fn forget_partitions(&mut self, tps: &[Tp]) {
        for tp in tps {
            self.adding.remove(tp);
        }
    }

    /// AddOffsetsToTxn succeeded: the group's offsets partition is in the transaction.
    pub fn offsets_added(&mut self) {
        self.started = true;
    }

    /// `send_offsets_to_transaction` is allowed only inside an open transaction.
    pub fn check_in_transaction(&self) -> Result<(), Error> {
        match &self.state {
            TxnState::InTransaction => Ok(()),
            _ => self.check_send(),
        }
    }

    /// Records a failure: fatal errors make the producer unusable, others make an open
    /// transaction abortable (the first cause is kept).
    pub fn fail(&mut self, error: Error) {
        if error.is_fatal() {
            if self.fatal().is_none() {
                self.state = TxnState::FatalError(error);
            }
            self.pending.clear();
            return;
        }
        if matches!(self.state, TxnState::InTransaction | TxnState::Committing) {
            self.state = TxnState::AbortableError(error);
            self.pending.clear();
        }
    }

    /// The error queued (unsent) records must fail with now, if the transaction can no
    /// longer send them: it is aborting, abortable or the producer failed fatally.
    pub fn queued_error(&self) -> Option<Error> {
        match &self.state {
            TxnState::Aborting => Some(Error::TransactionAborted),
            TxnState::AbortableError(e) => Some(Error::TransactionAbortable(Box::new(e.clone()))),
            TxnState::FatalError(e) => Some(e.clone()),
            _ => None,
        }
    }

    /// `commit_transaction` (resumed when already committing).
    pub fn start_commit(&mut self) -> Result<(), Error> {
        match &self.state {
            TxnState::InTransaction | TxnState::Committing => {
                self.state = TxnState::Committing;
                Ok(())
            }
            TxnState::AbortableError(e) => Err(Error::TransactionAbortable(Box::new(e.clone()))),
            TxnState::FatalError(e) => Err(e.clone()),
            TxnState::Aborting => Err(invalid("the transaction is being aborted")),
            _ => Err(invalid(
                "commit_transaction without begin_transaction: no transaction in progress",
            )),
        }
    }

    /// `abort_transaction` (resumed when already aborting). Partitions waiting to be added
    /// are dropped with their records.
    pub fn start_abort(&mut self) -> Result<(), Error> {
        match &self.state {
            TxnState::InTransaction | TxnState::AbortableError(_) | TxnState::Aborting => {
                self.state = TxnState::Aborting;
                self.pending.clear();
                self.add_retry_at = None;
                Ok(())
            }
            TxnState::FatalError(e) => Err(e.clone()),
            TxnState::Committing => Err(invalid(
                "the transaction is committing: call commit_transaction again",
            )),
            _ => Err(invalid(
                "abort_transaction without begin_transaction: no transaction in progress",
            )),
        }
    }

    /// Whether the coordinator must be told to end the transaction (EndTxn); an empty
    /// transaction ends without a request.
    pub fn needs_end_txn(&self) -> bool {
        self.started
    }

    /// The transaction in the given state committed or aborted: back to `Ready`.
    pub fn completed(&mut self) {
        if matches!(self.state, TxnState::Committing | TxnState::Aborting) {
            self.state = TxnState::Ready;
            self.added.clear();
            self.pending.clear();
            self.adding.clear();
            self.add_retry_at = None;
            self.started = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tp(p: i32) -> Tp {
        ("t".to_string(), p)
    }

    fn ready() -> TransactionManager {
        let mut m = TransactionManager::default();
        m.start_init().unwrap();
        m.init_done();
        m
    }

    fn broker(e: ResponseError) -> Error {
        Error::Broker {
            error: e,
            message: None,
        }
    }

    fn is_invalid(r: Result<(), Error>) -> bool {
        matches!(r, Err(Error::InvalidTransactionState(_)))
    }

    #[test]
    fn calls_out_of_order_are_invalid_state() {
        let mut m = TransactionManager::default();
        assert!(is_invalid(m.begin()), "begin before init");
        assert!(is_invalid(m.check_send()), "send before init");
        m.start_init().unwrap();
        m.start_init().unwrap(); // resumed after a timeout
        m.init_done();
        assert!(is_invalid(m.start_init()), "init twice");
        assert!(is_invalid(m.record_partition(&tp(0))), "send without begin");
        assert!(is_invalid(m.start_commit()), "commit without begin");
        assert!(is_invalid(m.start_abort()), "abort without begin");
        m.begin().unwrap();
        assert!(is_invalid(m.begin()), "nested begin");
        m.start_commit().unwrap();
        assert!(
            is_invalid(m.record_partition(&tp(0))),
            "send while committing"
        );
        assert!(is_invalid(m.start_abort()), "abort while committing");
        assert!(is_invalid(m.begin()), "begin while committing");
        m.start_commit().unwrap(); // resumed
        m.completed();
        assert!(matches!(m.state(), TxnState::Ready));
        m.begin().unwrap();
    }

    #[test]
    fn partitions_are_added_once_in_batches_before_sending() {
        let mut m = ready();
        m.begin().unwrap();
        let now = Instant::now();
        m.record_partition(&tp(0)).unwrap();
        m.record_partition(&tp(1)).unwrap();
        m.record_partition(&tp(0)).unwrap();
        assert!(!m.may_send(&tp(0)));
        assert_eq!(m.take_partitions_to_add(now), vec![tp(0), tp(1)]);
        // One request at a time; a partition seen meanwhile waits for the next.
        m.record_partition(&tp(2)).unwrap();
        assert!(m.take_partitions_to_add(now).is_empty());
        assert!(m.adds_in_flight());
        m.partitions_added(&[tp(0), tp(1)]);
        assert!(m.may_send(&tp(0)) && m.may_send(&tp(1)) && !m.may_send(&tp(2)));
        assert!(m.needs_end_txn());
        // Already added: not asked again.
        m.record_partition(&tp(0)).unwrap();
        assert_eq!(m.take_partitions_to_add(now), vec![tp(2)]);
        // CONCURRENT_TRANSACTIONS: back off, then retry the same partitions.
        let at = now + Duration::from_millis(20);
        m.retry_partitions(&[tp(2)], at);
        assert_eq!(m.add_retry_at(), Some(at));
        assert!(m.take_partitions_to_add(now).is_empty());
        assert_eq!(m.take_partitions_to_add(at), vec![tp(2)]);
        m.partitions_added(&[tp(2)]);
        m.start_commit().unwrap();
        assert!(m.may_send(&tp(2)), "commit flushes what is queued");
        m.completed();
        assert!(
            !m.may_send(&tp(0)),
            "a new transaction adds its partitions again"
        );
        assert!(!m.needs_end_txn());
    }

    #[test]
    fn an_empty_transaction_needs_no_end_txn() {
        let mut m = ready();
        m.begin().unwrap();
        m.start_abort().unwrap();
        assert!(!m.needs_end_txn());
        m.completed();
        m.begin().unwrap();
        m.offsets_added();
        assert!(m.needs_end_txn(), "offsets alone start the transaction");
    }

    #[test]
    fn a_failed_record_makes_the_transaction_abortable() {
        let mut m = ready();
        m.begin().unwrap();
        m.record_partition(&tp(0)).unwrap();
        let cause = broker(ResponseError::MessageTooLarge);
        assert!(
            m.queued_error().is_none(),
            "an open transaction sends its records"
        );
        m.fail(cause.clone());
        assert!(
            m.queued_error().unwrap().is_abortable(),
            "queued records fail too"
        );
        assert!(m.check_send().unwrap_err().is_abortable());
        assert!(m.start_commit().unwrap_err().is_abortable());
        assert!(m.begin().unwrap_err().is_abortable());
        // A second failure keeps the first cause.
        m.fail(broker(ResponseError::CorruptMessage));
        match m.state() {
            TxnState::AbortableError(e) => assert_eq!(e.to_string(), cause.to_string()),
            s => panic!("{s:?}"),
        }
        m.start_abort().unwrap();
        assert!(
            m.take_partitions_to_add(Instant::now()).is_empty(),
            "aborting adds nothing"
        );
        assert!(matches!(m.queued_error(), Some(Error::TransactionAborted)));
        m.completed();
        m.begin().unwrap();
        m.check_send().unwrap();
    }

    #[test]
    fn fencing_is_fatal_for_every_later_call() {
        let mut m = ready();
        m.begin().unwrap();
        let Outcome::Fatal(fenced) = classify(broker(ResponseError::ProducerFenced)) else {
            panic!("fenced is fatal")
        };
        assert!(matches!(fenced, Error::ProducerFenced(_)));
        m.fail(fenced);
        assert!(m.queued_error().unwrap().is_fatal());
        for r in [
            m.check_send(),
            m.begin(),
            m.start_commit(),
            m.start_abort(),
            m.start_init(),
        ] {
            assert!(matches!(r, Err(Error::ProducerFenced(_))), "{r:?}");
        }
        // A later abortable error does not hide the fatal one.
        m.fail(broker(ResponseError::MessageTooLarge));
        assert!(m.check_send().unwrap_err().is_fatal());
    }

    #[test]
    fn coordinator_errors_are_classified() {
        let retry = |e| match classify(e) {
            Outcome::Retry { rediscover } => Some(rediscover),
            _ => None,
        };
        assert_eq!(
            retry(broker(ResponseError::ConcurrentTransactions)),
            Some(false)
        );
        assert_eq!(
            retry(broker(ResponseError::CoordinatorLoadInProgress)),
            Some(false)
        );
        assert_eq!(retry(broker(ResponseError::NotCoordinator)), Some(true));
        assert_eq!(
            retry(Error::Network {
                addr: "a".into(),
                message: "reset".into()
            }),
            Some(true)
        );
        assert!(matches!(
            classify(broker(ResponseError::InvalidProducerEpoch)),
            Outcome::Fatal(Error::ProducerFenced(_))
        ));
        assert!(matches!(
            classify(broker(ResponseError::TransactionalIdAuthorizationFailed)),
            Outcome::Fatal(Error::TransactionFatal(_))
        ));
        assert!(matches!(
            classify(broker(ResponseError::IllegalGeneration)),
            Outcome::Abortable(_)
        ));
    }
}
