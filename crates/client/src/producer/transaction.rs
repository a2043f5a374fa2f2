//! The transactional producer API (`init_transactions`, `begin_transaction`,
//! `send_offsets_to_transaction`, `commit_transaction`, `abort_transaction`): each call
//! checks the state machine (`txn_state`), waits for the sender where records are involved
//! and makes the coordinator round trips (`txn_requests`) within its timeout.

use std::future::Future;
use std::time::{Duration, Instant};

use super::shared::Inner;
use super::txn_state::TransactionManager;
use super::Producer;
use crate::accumulator::{ProducerIdentity, State};
use crate::consumer::ConsumerGroupMetadata;
use crate::error::{Error, Result};

impl Inner {
    /// Runs `f` on the transaction manager (an invalid-state error if not transactional).
    pub(crate) fn with_txn<T>(
        &self,
        f: impl FnOnce(&mut TransactionManager) -> Result<T>,
    ) -> Result<T> {
        let mut st = self.state.lock().unwrap();
        match st.txn.as_mut() {
            Some(txn) => f(txn),
            None => Err(Error::InvalidTransactionState(
                "transactional.id is not configured".into(),
            )),
        }
    }

    /// Fails the queued (unsent) batches of a transaction that can no longer send them
    /// (aborting, abortable, or fatally failed). Called by the sender and by abort.
    pub(crate) fn fail_queued_batches(&self) {
        let (error, batches) = {
            let mut st = self.state.lock().unwrap();
            let Some(error) = st.txn.as_ref().and_then(TransactionManager::queued_error) else {
                return;
            };
            (error, st.take_queued())
        };
        if batches.is_empty() {
            return;
        }
        self.metrics.lock().unwrap().record_errors +=
            batches.iter().map(|b| b.records.len() as u64).sum::<u64>();
        for b in batches {
            b.complete(Err(error.clone()));
        }
        self.completed.notify_waiters();
    }

    /// Installs the identity for the next transaction; sequence numbers restart.
    fn install_identity(st: &mut State, identity: ProducerIdentity) {
        st.idempotence.install(identity);
        st.clear_sequences();
    }

    fn identity(&self) -> Result<ProducerIdentity> {
        self.state
            .lock()
            .unwrap()
            .idempotence
            .identity
            .ok_or_else(|| {
                Error::InvalidTransactionState("init_transactions was not called".into())
            })
    }

    /// Records a failed transactional request: fatal errors fence the producer, others make
    /// the transaction abortable (when `abortable`). Returns the error for the caller.
    fn transaction_failed(&self, error: Error, abortable: bool) -> Error {
        if !error.is_fatal() && !abortable {
            return error;
        }
        let _ = self.with_txn(|t| {
            t.fail(error.clone());
            Ok(())
        });
        self.fail_queued_batches();
        if error.is_fatal() {
            error
        } else {
            Error::TransactionAbortable(Box::new(error))
        }
    }
}

/// `fut` bounded by `deadline`; a [`Error::TransactionTimeout`] naming `op` if it passes.
async fn within<T>(
    op: &'static str,
    timeout: Duration,
    deadline: Instant,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout_at(deadline.into(), fut)
        .await
        .unwrap_or(Err(Error::TransactionTimeout {
            op,
            timeout_ms: timeout.as_millis() as u64,
        }))
}

impl<K, V> Producer<K, V> {
    /// Registers the `transactional.id` with its coordinator: fences any earlier producer
    /// with the same id and completes its open transaction. Call once, before the first
    /// transaction; after a [`Error::TransactionTimeout`] call it again to resume.
    pub async fn init_transactions(&self, timeout: Duration) -> Result<()> {
        let inner = &self.inner;
        inner.with_txn(|t| t.start_init())?;
        let deadline = Instant::now() + timeout;
        match within(
            "init_transactions",
            timeout,
            deadline,
            inner.init_transactional(None),
        )
        .await
        {
            Ok(identity) => {
                let mut st = inner.state.lock().unwrap();
                Inner::install_identity(&mut st, identity);
                st.txn.as_mut().expect("transactional").init_done();
                Ok(())
            }
            Err(e) => Err(inner.transaction_failed(e, false)),
        }
    }

    /// Starts a transaction: records may be sent until it is committed or aborted.
    pub fn begin_transaction(&self) -> Result<()> {
        self.inner.with_txn(|t| t.begin())
    }

    /// Adds consumed `offsets` (`(topic, partition, next offset to read)`) of the consumer
    /// group described by `group` to the transaction: they are committed with it, and
    /// discarded if it aborts.
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: &[(String, i32, i64)],
        group: &ConsumerGroupMetadata,
        timeout: Duration,
    ) -> Result<()> {
        let inner = &self.inner;
        inner.with_txn(|t| t.check_in_transaction())?;
        let identity = inner.identity()?;
        let deadline = Instant::now() + timeout;
        let work = async {
            inner.add_offsets(identity, &group.group_id).await?;
            inner.with_txn(|t| {
                t.offsets_added();
                Ok(())
            })?;
            inner.txn_offset_commit(identity, offsets, group).await
        };
        within("send_offsets_to_transaction", timeout, deadline, work)
            .await
            .map_err(|e| match e {
                Error::TransactionTimeout { .. } => e,
                e => inner.transaction_failed(e, true),
            })
    }

    /// Sends every record of the transaction, then commits it. Fails with
    /// [`Error::TransactionAbortable`] if a record or request failed (abort it then), with
    /// [`Error::ProducerFenced`] if another producer took over, with
    /// [`Error::TransactionTimeout`] if `timeout` passes (call it again to resume).
    pub async fn commit_transaction(&self, timeout: Duration) -> Result<()> {
        let inner = &self.inner;
        inner.with_txn(|t| t.start_commit())?;
        let deadline = Instant::now() + timeout;
        self.flush(timeout)
            .await
            .map_err(|_| Error::TransactionTimeout {
                op: "commit_transaction",
                timeout_ms: timeout.as_millis() as u64,
            })?;
        // A record that failed while flushing made the transaction abortable.
        let needs_end = inner.with_txn(|t| t.start_commit().map(|()| t.needs_end_txn()))?;
        self.end_transaction("commit_transaction", true, needs_end, timeout, deadline)
            .await
    }

    /// Aborts the transaction: records not sent yet fail with
    /// [`Error::TransactionAborted`], records in flight are awaited, and the coordinator
    /// discards everything written (and the offsets sent) in the transaction.
    pub async fn abort_transaction(&self, timeout: Duration) -> Result<()> {
        let inner = &self.inner;
        inner.with_txn(|t| t.start_abort())?;
        let deadline = Instant::now() + timeout;
        inner.fail_queued_batches();
        inner.wake_sender.notify_one();
        let settled = inner
            .wait_for(deadline, |st| {
                st.unacked == 0 && !st.txn.as_ref().is_some_and(|t| t.adds_in_flight())
            })
            .await;
        if !settled {
            return Err(Error::TransactionTimeout {
                op: "abort_transaction",
                timeout_ms: timeout.as_millis() as u64,
            });
        }
        let needs_end = inner.with_txn(|t| Ok(t.needs_end_txn()))?;
        self.end_transaction("abort_transaction", false, needs_end, timeout, deadline)
            .await
    }

    /// EndTxn (when the coordinator has a transaction), then the identity for the next one:
    /// the bumped one of EndTxn v5, or a KIP-360 epoch bump when an abort left a sequence gap.
    async fn end_transaction(
        &self,
        op: &'static str,
        commit: bool,
        needs_end: bool,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<()> {
        let inner = &self.inner;
        let identity = inner.identity()?;
        let work = async {
            let mut next = if needs_end {
                inner.end_txn(identity, commit).await?
            } else {
                None
            };
            let gap = inner.state.lock().unwrap().idempotence.needs_reset;
            if next.is_none() && gap {
                next = Some(inner.init_transactional(Some(identity)).await?);
            }
            Ok(next)
        };
        match within(op, timeout, deadline, work).await {
            Ok(next) => {
                let mut st = inner.state.lock().unwrap();
                if let Some(identity) = next {
                    Inner::install_identity(&mut st, identity);
                }
                st.txn.as_mut().expect("transactional").completed();
                Ok(())
            }
            Err(e @ Error::TransactionTimeout { .. }) => Err(e),
            // A failed commit must be aborted; a failed abort can be retried.
            Err(e) => Err(inner.transaction_failed(e, commit)),
        }
    }
}
