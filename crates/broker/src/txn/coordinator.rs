//! The transaction coordinator: owns every transactional id, persists each change of its
//! state to `__transaction_state` before acting on it, and ends transactions by writing
//! commit/abort markers to every partition they touched.
//!
//! Architecture invariants: one mutex guards all transactional ids; a state change is
//! written to the log before it replaces the in-memory copy; a transaction is prepared
//! (persisted) before its first marker is written and completed only after the last one, so
//! a broker that stops in between finishes the markers when it replays the topic. Locks are
//! taken coordinator first, partition second, never the other way round.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard};

pub use super::config::TxnConfig;
use super::log::{decode, encode_key, encode_value};
use super::state::{code, TxnError, TxnMetadata, TxnStatus};
use crate::clock::SharedClock;
use crate::coordinator_services::{CoordinatorServices, TxnMarker};
use crate::group::coordinator::partition_for_key;
use crate::group::offsets_log::encode_kv_batch;
pub use crate::internal_topic::{OFFSETS_TOPIC, TXN_STATE_TOPIC};
use crate::partition::AppendOrigin;

/// Runs every transactional id hosted by this broker.
pub struct TxnCoordinator {
    txns: Mutex<HashMap<String, TxnMetadata>>,
    config: TxnConfig,
    /// Partitions of `__transaction_state`: the configured count until the topic exists,
    /// then the count it was created with.
    partitions: AtomicI32,
    clock: SharedClock,
}

type Txns = HashMap<String, TxnMetadata>;

impl TxnCoordinator {
    pub fn new(config: TxnConfig, clock: SharedClock) -> TxnCoordinator {
        TxnCoordinator {
            txns: Mutex::new(HashMap::new()),
            partitions: AtomicI32::new(config.state_partitions),
            config,
            clock,
        }
    }

    /// The time from the broker's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The coordinator's settings.
    pub fn config(&self) -> TxnConfig {
        self.config
    }

    fn lock(&self) -> MutexGuard<'_, Txns> {
        self.txns
            .lock()
            .expect("transaction coordinator mutex poisoned")
    }

    /// The `__transaction_state` partition holding `transactional_id`.
    pub fn partition_for(&self, transactional_id: &str) -> i32 {
        partition_for_key(transactional_id, self.partitions.load(Ordering::Acquire))
    }

    /// Replays `__transaction_state` (at start-up) and finishes transactions that were
    /// prepared but not completed when the broker stopped.
    pub fn load(&self, broker: &dyn CoordinatorServices) -> Result<(), String> {
        let mut txns = self.lock();
        let count = crate::internal_topic::key_partition_count(
            broker,
            TXN_STATE_TOPIC,
            self.config.state_partitions,
        );
        self.partitions.store(count, Ordering::Release);
        for p in 0..self.partitions.load(Ordering::Acquire) {
            let Some(partition) = broker.partition(TXN_STATE_TOPIC, p) else {
                continue;
            };
            for batch in crate::internal_topic::read_kv_batches(&partition)? {
                for (offset, key, value) in batch.records {
                    match decode(&key, value.as_deref()) {
                        Ok((id, Some(m))) => {
                            txns.insert(id, m);
                        }
                        Ok((id, None)) => {
                            txns.remove(&id);
                        }
                        // As Kafka's coordinators since KIP-915: a record this release cannot
                        // read is skipped, not a reason to refuse to start.
                        Err(e) => tracing::warn!(
                            topic = TXN_STATE_TOPIC,
                            partition = p,
                            offset,
                            error = %e,
                            "skipping a record the transaction coordinator cannot decode"
                        ),
                    }
                }
            }
        }
        let prepared: Vec<TxnMetadata> = txns
            .values()
            .filter(|m| m.status.is_prepare())
            .cloned()
            .collect();
        for m in prepared {
            tracing::info!(transactional_id = %m.transactional_id, status = m.status.name(), "completing a prepared transaction");
            if let Err(TxnError(_, e)) = self.write_markers_and_complete(broker, &mut txns, m) {
                tracing::error!(error = %e, "cannot complete a prepared transaction");
            }
        }
        tracing::info!(
            transactional_ids = txns.len(),
            "transaction coordinator loaded"
        );
        Ok(())
    }

    /// Writes `m` (or a tombstone for its id) to its `__transaction_state` partition.
    fn persist(
        &self,
        broker: &dyn CoordinatorServices,
        id: &str,
        m: Option<&TxnMetadata>,
    ) -> Result<(), TxnError> {
        let p = self.partition_for(id);
        let partition = broker.partition(TXN_STATE_TOPIC, p).ok_or_else(|| {
            TxnError(
                code::COORDINATOR_NOT_AVAILABLE,
                format!("{TXN_STATE_TOPIC}-{p} is not available"),
            )
        })?;
        let now = self.now_ms();
        let batch = encode_kv_batch(&[(encode_key(id), m.map(encode_value))], now, None);
        partition.append(&batch, AppendOrigin::Coordinator, now).map(|_| ()).map_err(|e| {
            tracing::error!(transactional_id = id, error = %e, "cannot persist transaction state");
            TxnError(
                code::KAFKA_STORAGE_ERROR,
                format!("cannot persist the transaction state: {e}"),
            )
        })
    }

    /// Persists `next` and makes it the current state of its id.
    fn store(
        &self,
        broker: &dyn CoordinatorServices,
        txns: &mut Txns,
        next: TxnMetadata,
    ) -> Result<(), TxnError> {
        self.persist(broker, &next.transactional_id, Some(&next))?;
        txns.insert(next.transactional_id.clone(), next);
        Ok(())
    }

    /// The coordinator epoch markers carry: the leader epoch of the id's state partition.
    fn coordinator_epoch(&self, broker: &dyn CoordinatorServices, id: &str) -> i32 {
        broker
            .partition(TXN_STATE_TOPIC, self.partition_for(id))
            .map_or(0, |p| p.leader_epoch())
    }

    /// Persists the prepared state `prepared`, writes its markers, then persists completion.
    fn write_markers_and_complete(
        &self,
        broker: &dyn CoordinatorServices,
        txns: &mut Txns,
        prepared: TxnMetadata,
    ) -> Result<TxnMetadata, TxnError> {
        assert!(
            prepared.status.is_prepare(),
            "markers follow a prepared state"
        );
        if txns.get(&prepared.transactional_id) != Some(&prepared) {
            self.store(broker, txns, prepared.clone())?;
        }
        let commit = prepared.committing();
        let coordinator_epoch = self.coordinator_epoch(broker, &prepared.transactional_id);
        let marker = TxnMarker {
            producer_id: prepared.producer_id,
            producer_epoch: prepared.producer_epoch,
            commit,
            coordinator_epoch,
        };
        for (topic, index) in &prepared.partitions {
            // `None`: the topic was deleted meanwhile, nothing left to mark.
            if let Err(e) = broker.write_txn_marker(topic, *index, marker, self.now_ms()) {
                tracing::error!(topic = %topic, partition = index, error = %e, "cannot write a transaction marker");
                return Err(TxnError(
                    code::KAFKA_STORAGE_ERROR,
                    format!("cannot write the transaction marker to {topic}-{index}: {e}"),
                ));
            }
        }
        let done = prepared.complete(self.now_ms());
        self.store(broker, txns, done.clone())?;
        Ok(done)
    }

    fn fresh_id(broker: &dyn CoordinatorServices) -> Result<i64, TxnError> {
        broker.next_producer_id().map_err(|e| {
            TxnError(
                code::COORDINATOR_NOT_AVAILABLE,
                format!("cannot allocate a producer id: {e}"),
            )
        })
    }

    /// InitProducerId with a transactional id: a fresh producer id for a new id, else the
    /// next epoch (aborting the previous producer's open transaction first, which fences it).
    pub fn init_producer_id(
        &self,
        broker: &dyn CoordinatorServices,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), TxnError> {
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(TxnError(
                code::INVALID_TRANSACTION_TIMEOUT,
                format!(
                    "transaction.timeout.ms {timeout_ms} must be between 1 and transaction.max.timeout.ms ({})",
                    self.config.max_timeout_ms
                ),
            ));
        }
        let mut txns = self.lock();
        let now = self.now_ms();
        let Some(current) = txns.get(transactional_id).cloned() else {
            if expected.is_some() {
                return Err(TxnError(
                    code::INVALID_PRODUCER_ID_MAPPING,
                    format!("transactional id {transactional_id} is unknown"),
                ));
            }
            let m = TxnMetadata::new(transactional_id, Self::fresh_id(broker)?, timeout_ms, now);
            let answer = (m.producer_id, m.producer_epoch);
            self.store(broker, &mut txns, m)?;
            return Ok(answer);
        };
        let current = match current.status {
            TxnStatus::Ongoing => {
                // A new producer instance takes the id over: the old one's transaction is
                // aborted under a new epoch, which fences it.
                let prepared = current.prepare_fence_abort(now, || Self::fresh_id(broker))?;
                self.write_markers_and_complete(broker, &mut txns, prepared)?
            }
            s if s.is_prepare() => self.write_markers_and_complete(broker, &mut txns, current)?,
            _ => current,
        };
        // After a fencing abort the producer's remembered epoch is stale, so KIP-360's
        // expected epoch is checked against the state before this call only.
        match current.reinit(expected, timeout_ms, now, || Self::fresh_id(broker))? {
            None => Ok((current.producer_id, current.producer_epoch)),
            Some(next) => {
                let answer = (next.producer_id, next.producer_epoch);
                self.store(broker, &mut txns, next)?;
                Ok(answer)
            }
        }
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn with the group's offsets partition).
    pub fn add_partitions(
        &self,
        broker: &dyn CoordinatorServices,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<(), TxnError> {
        let mut txns = self.lock();
        let current = Self::get(&txns, transactional_id)?;
        if let Some(next) = current.add_partitions(producer_id, epoch, partitions, self.now_ms())? {
            self.store(broker, &mut txns, next)?;
        }
        Ok(())
    }

    fn get<'a>(txns: &'a Txns, transactional_id: &str) -> Result<&'a TxnMetadata, TxnError> {
        txns.get(transactional_id).ok_or_else(|| {
            TxnError(
                code::INVALID_PRODUCER_ID_MAPPING,
                format!("transactional id {transactional_id} has no producer id: call InitProducerId first"),
            )
        })
    }

    /// Runs `append` only if (producer, epoch) may write to `partition` in its ongoing
    /// transaction, holding the coordinator lock so no EndTxn can slip in between the check
    /// and the write (KIP-890 server-side verification). With `add_if_missing` (Produce v12+,
    /// KIP-890 part 2: clients no longer send AddPartitionsToTxn) a partition not yet in the
    /// transaction is added first, starting the transaction if none is open; a late write of
    /// an ended transaction still fails there, on its old epoch.
    pub fn append_in_txn<T>(
        &self,
        broker: &dyn CoordinatorServices,
        transactional_id: &str,
        (producer_id, epoch): (i64, i16),
        partition: &(String, i32),
        add_if_missing: bool,
        append: impl FnOnce() -> T,
    ) -> Result<T, TxnError> {
        let mut txns = self.lock();
        let current = Self::get(&txns, transactional_id)?;
        match current.verify(producer_id, epoch, partition) {
            Ok(()) => {}
            Err(TxnError(code::INVALID_TXN_STATE, _)) if add_if_missing => {
                let next = current
                    .add_partitions(
                        producer_id,
                        epoch,
                        std::slice::from_ref(partition),
                        self.now_ms(),
                    )?
                    .expect("a partition not in the transaction is added");
                self.store(broker, &mut txns, next)?;
            }
            Err(e) => return Err(e),
        }
        Ok(append())
    }

    /// Whether (producer, epoch) may write to `partition` now (AddPartitionsToTxn v4+
    /// verify-only).
    pub fn verify(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partition: &(String, i32),
    ) -> Result<(), TxnError> {
        let txns = self.lock();
        Self::get(&txns, transactional_id)?.verify(producer_id, epoch, partition)
    }

    /// EndTxn: commit or abort, writing markers before answering. `bump_epoch` (EndTxn v5):
    /// the returned (id, epoch) is the one the producer must use next.
    pub fn end_txn(
        &self,
        broker: &dyn CoordinatorServices,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        bump_epoch: bool,
    ) -> Result<(i64, i16), TxnError> {
        let mut txns = self.lock();
        let current = Self::get(&txns, transactional_id)?.clone();
        let now = self.now_ms();
        let next = current.prepare_end(producer_id, epoch, commit, bump_epoch, now, || {
            Self::fresh_id(broker)
        })?;
        let done = match next {
            None => current,
            Some(n) if n.status.is_prepare() => {
                self.write_markers_and_complete(broker, &mut txns, n)?
            }
            Some(n) => {
                self.store(broker, &mut txns, n.clone())?;
                n
            }
        };
        Ok((done.producer_id, done.producer_epoch))
    }

    /// Aborts transactions open longer than their timeout (fencing their producer) and
    /// forgets ids idle for transactional.id.expiration.ms. Returns how many were aborted.
    pub fn tick(&self, broker: &dyn CoordinatorServices, now: i64, expire: bool) -> usize {
        let mut txns = self.lock();
        let timed_out: Vec<TxnMetadata> = txns
            .values()
            .filter(|m| m.status == TxnStatus::Ongoing && now - m.start_ms > m.timeout_ms as i64)
            .cloned()
            .collect();
        let mut aborted = 0;
        for m in timed_out {
            tracing::info!(transactional_id = %m.transactional_id, "aborting a transaction past its timeout");
            let result = m
                .prepare_fence_abort(now, || Self::fresh_id(broker))
                .and_then(|p| self.write_markers_and_complete(broker, &mut txns, p));
            match result {
                Ok(_) => aborted += 1,
                Err(TxnError(_, e)) => {
                    tracing::error!(error = %e, "cannot abort a timed-out transaction")
                }
            }
        }
        if expire {
            let idle: Vec<String> = txns
                .values()
                .filter(|m| {
                    matches!(
                        m.status,
                        TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort
                    ) && now - m.last_update_ms > self.config.id_expiration_ms
                })
                .map(|m| m.transactional_id.clone())
                .collect();
            for id in idle {
                if self.persist(broker, &id, None).is_ok() {
                    tracing::info!(transactional_id = %id, "forgetting an expired transactional id");
                    txns.remove(&id);
                }
            }
        }
        aborted
    }

    /// A copy of every transactional id's state (ListTransactions).
    pub fn all(&self) -> Vec<TxnMetadata> {
        self.lock().values().cloned().collect()
    }

    /// One transactional id's state (DescribeTransactions).
    pub fn describe(&self, transactional_id: &str) -> Option<TxnMetadata> {
        self.lock().get(transactional_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use gregor_metadata::ControllerOp;

    use crate::broker::Broker;
    use crate::clock::{Clock, ManualClock};
    use crate::config::BrokerConfig;
    use crate::txn::state::TxnStatus;

    /// A broker on a manual clock: time moves only when the test moves it.
    fn broker_at(dir: &std::path::Path, clock: std::sync::Arc<ManualClock>) -> Broker {
        let config = BrokerConfig::from_pairs([
            ("log.dirs".to_string(), dir.display().to_string()),
            (
                "transaction.state.log.num.partitions".to_string(),
                "1".to_string(),
            ),
        ])
        .unwrap();
        Broker::open(config, "127.0.0.1", 9092, clock).unwrap()
    }

    #[test]
    fn a_transaction_times_out_by_the_injected_clock_without_sleeping() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_700_000_000_000);
        let broker = broker_at(dir.path(), clock.clone());
        broker.ensure_txn_state_topic().unwrap();
        broker
            .commit(ControllerOp::CreateTopic {
                name: "t".into(),
                num_partitions: 1,
                replication_factor: 1,
                configs: Vec::new(),
                validate_only: false,
            })
            .unwrap();
        let (pid, epoch) = broker
            .txns
            .init_producer_id(&broker, "tx", 1_000, None)
            .unwrap();
        broker
            .txns
            .add_partitions(&broker, "tx", pid, epoch, &[("t".to_string(), 0)])
            .unwrap();

        clock.advance(1_000);
        assert_eq!(
            broker.txns.tick(&broker, clock.now_ms(), false),
            0,
            "not yet"
        );
        assert_eq!(
            broker.txns.describe("tx").unwrap().status,
            TxnStatus::Ongoing
        );

        clock.advance(1);
        assert_eq!(broker.txns.tick(&broker, clock.now_ms(), false), 1);
        let m = broker.txns.describe("tx").unwrap();
        assert_eq!(m.status, TxnStatus::CompleteAbort);
        assert!(m.producer_epoch > epoch, "the abort fenced the producer");
        assert_eq!(
            m.last_update_ms,
            clock.now_ms(),
            "stamped with the injected time"
        );
    }
}
