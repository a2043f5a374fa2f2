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
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use super::config::TxnConfig;
use super::log::{decode, encode_key, encode_value};
use super::state::{code, TxnError, TxnMetadata, TxnStatus};
use crate::clock::SharedClock;
use crate::coordinator_services::{CoordinatorServices, TxnMarker};
use crate::group::coordinator::partition_for_key;
use crate::group::offsets_log::encode_kv_batch;
pub use crate::internal_topic::{OFFSETS_TOPIC, TXN_STATE_TOPIC};
use crate::partition::{AppendError, AppendOrigin, Partition, ReplicationWait};

/// How long a state change waits for the in-sync replicas of its partition.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Kafka's error codes used only here.
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;

/// A `__transaction_state` partition this coordinator took on when it became its leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ownership {
    leader_epoch: i32,
    /// Replayed; until then its ids are answered COORDINATOR_LOAD_IN_PROGRESS.
    loaded: bool,
}

/// Runs the transactional ids of the `__transaction_state` partitions this broker leads.
pub struct TxnCoordinator {
    txns: Mutex<HashMap<String, TxnMetadata>>,
    /// The partitions served here, by index; locked after `txns` when both are held.
    owned: Mutex<HashMap<i32, Ownership>>,
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
            owned: Mutex::new(HashMap::new()),
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

    fn owned(&self) -> MutexGuard<'_, HashMap<i32, Ownership>> {
        self.owned.lock().expect("transaction ownership poisoned")
    }

    /// `__transaction_state` partitions led here whose transactions are still being loaded.
    pub fn loading_partitions(&self) -> usize {
        self.owned().values().filter(|o| !o.loaded).count()
    }

    /// Brings the ids served here in line with the leadership of the `__transaction_state`
    /// partitions on this broker (at start-up and after every metadata change), as the
    /// group coordinator does with its partitions: partitions lost (or led in a new epoch)
    /// are unloaded, partitions led are loaded, and transactions found prepared are
    /// finished (their markers written) by the new coordinator.
    pub fn sync_ownership(&self, broker: &dyn CoordinatorServices) {
        let count = crate::internal_topic::key_partition_count(
            broker,
            TXN_STATE_TOPIC,
            self.config.state_partitions,
        );
        self.partitions.store(count, Ordering::Release);
        let led: Vec<(i32, Arc<Partition>, i32)> = (0..count)
            .filter_map(|p| {
                let partition = broker.partition(TXN_STATE_TOPIC, p)?;
                let epoch = partition.leader_epoch();
                partition.is_leader().then_some((p, partition, epoch))
            })
            .collect();
        let stale: Vec<i32> = self
            .owned()
            .iter()
            .filter(|(p, o)| !led.iter().any(|(q, _, e)| q == *p && *e == o.leader_epoch))
            .map(|(p, _)| *p)
            .collect();
        for p in stale {
            self.unload_partition(p);
        }
        for (p, partition, epoch) in led {
            if self.owned().contains_key(&p) {
                continue;
            }
            if let Err(e) = self.load_partition(broker, p, &partition, epoch) {
                tracing::error!(partition = p, error = %e, "cannot load a __transaction_state partition");
                self.owned().remove(&p);
            }
        }
    }

    /// Takes on partition `p` (led here in `leader_epoch`): replays its log, then finishes
    /// the transactions it holds prepared but not completed.
    fn load_partition(
        &self,
        broker: &dyn CoordinatorServices,
        p: i32,
        partition: &Partition,
        leader_epoch: i32,
    ) -> Result<(), String> {
        let loading = Ownership {
            leader_epoch,
            loaded: false,
        };
        self.owned().insert(p, loading);
        let (mut batches, next) = crate::internal_topic::read_kv_batches_from(partition, 0)?;
        let mut txns = self.lock();
        if self.owned().get(&p) != Some(&loading) {
            return Ok(());
        }
        batches.extend(crate::internal_topic::read_kv_batches_from(partition, next)?.0);
        let mut ids = 0;
        for batch in batches {
            for (offset, key, value) in batch.records {
                match decode(&key, value.as_deref()) {
                    Ok((id, Some(m))) => {
                        ids += usize::from(txns.insert(id, m).is_none());
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
        self.owned().insert(
            p,
            Ownership {
                leader_epoch,
                loaded: true,
            },
        );
        let prepared: Vec<TxnMetadata> = txns
            .values()
            .filter(|m| m.status.is_prepare() && self.partition_for(&m.transactional_id) == p)
            .cloned()
            .collect();
        for m in prepared {
            tracing::info!(transactional_id = %m.transactional_id, status = m.status.name(), "completing a prepared transaction");
            if let Err(TxnError(_, e)) = self.write_markers_and_complete(broker, &mut txns, m) {
                tracing::error!(error = %e, "cannot complete a prepared transaction");
            }
        }
        tracing::info!(
            partition = p,
            leader_epoch,
            transactional_ids = ids,
            "loaded a __transaction_state partition"
        );
        Ok(())
    }

    /// Lets go of partition `p`: its ids leave memory; their producers get NOT_COORDINATOR
    /// and find the new coordinator.
    fn unload_partition(&self, p: i32) {
        let mut txns = self.lock();
        self.owned().remove(&p);
        let before = txns.len();
        txns.retain(|id, _| self.partition_for(id) != p);
        tracing::info!(
            partition = p,
            transactional_ids = before - txns.len(),
            "unloaded a __transaction_state partition"
        );
    }

    /// Refuses a request about `transactional_id` when its partition is not served here:
    /// NOT_COORDINATOR, or COORDINATOR_LOAD_IN_PROGRESS while it is loading.
    fn check_owner(&self, transactional_id: &str) -> Result<(), TxnError> {
        let p = self.partition_for(transactional_id);
        match self.owned().get(&p) {
            Some(o) if o.loaded => Ok(()),
            Some(_) => Err(TxnError(
                COORDINATOR_LOAD_IN_PROGRESS,
                format!("{TXN_STATE_TOPIC}-{p} is being loaded"),
            )),
            None => Err(TxnError(
                code::NOT_COORDINATOR,
                format!("this broker does not coordinate {transactional_id} ({TXN_STATE_TOPIC}-{p} is led elsewhere)"),
            )),
        }
    }

    /// Writes `m` (or a tombstone for its id) to its `__transaction_state` partition and
    /// waits until every in-sync replica has it: a state the coordinator acts on (a prepared
    /// commit before its markers) survives the loss of this broker. Refused while the ISR is
    /// below the topic's `min.insync.replicas` (`transaction.state.log.min.isr`).
    fn persist(
        &self,
        broker: &dyn CoordinatorServices,
        id: &str,
        m: Option<&TxnMetadata>,
    ) -> Result<(), TxnError> {
        let p = self.partition_for(id);
        let unavailable = |why: String| TxnError(code::COORDINATOR_NOT_AVAILABLE, why);
        let partition = broker
            .partition(TXN_STATE_TOPIC, p)
            .ok_or_else(|| unavailable(format!("{TXN_STATE_TOPIC}-{p} is not available")))?;
        let min_isr = broker.min_insync_replicas(TXN_STATE_TOPIC);
        if partition.isr_size() < min_isr {
            return Err(unavailable(format!(
                "{TXN_STATE_TOPIC}-{p} has {} in-sync replicas, transaction.state.log.min.isr is {min_isr}",
                partition.isr_size()
            )));
        }
        let now = self.now_ms();
        let batch = encode_kv_batch(&[(encode_key(id), m.map(encode_value))], now, None);
        let info = match partition.append(&batch, AppendOrigin::Coordinator, now) {
            Ok(info) => info,
            Err(AppendError::NotLeader) => {
                return Err(TxnError(
                    code::NOT_COORDINATOR,
                    format!("{TXN_STATE_TOPIC}-{p} moved to another leader"),
                ))
            }
            Err(e) => {
                tracing::error!(transactional_id = id, error = %e, "cannot persist transaction state");
                return Err(TxnError(
                    code::KAFKA_STORAGE_ERROR,
                    format!("cannot persist the transaction state: {e}"),
                ));
            }
        };
        match partition.wait_replicated_blocking(info.last_offset + 1, REPLICATION_TIMEOUT) {
            Ok(()) => Ok(()),
            Err(ReplicationWait::NotLeader) => Err(TxnError(
                code::NOT_COORDINATOR,
                format!("{TXN_STATE_TOPIC}-{p} moved to another leader"),
            )),
            Err(ReplicationWait::TimedOut) => Err(unavailable(format!(
                "the transaction state was not replicated in time on {TXN_STATE_TOPIC}-{p}"
            ))),
        }
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
                // One that lost the id's partition meanwhile (a newer coordinator fenced its
                // markers) sends the client to the new coordinator, which finishes the
                // prepared transaction.
                self.check_owner(&prepared.transactional_id)?;
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
        self.check_owner(transactional_id)?;
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
        self.check_owner(transactional_id)?;
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
        self.check_owner(transactional_id)?;
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
        self.check_owner(transactional_id)?;
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
        self.check_owner(transactional_id)?;
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

    /// One transactional id's state (DescribeTransactions); `Err` when it is not served here.
    pub fn describe(&self, transactional_id: &str) -> Result<Option<TxnMetadata>, TxnError> {
        let txns = self.lock();
        self.check_owner(transactional_id)?;
        Ok(txns.get(transactional_id).cloned())
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
                assignment: Vec::new(),
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
            broker.txns.describe("tx").unwrap().unwrap().status,
            TxnStatus::Ongoing
        );

        clock.advance(1);
        assert_eq!(broker.txns.tick(&broker, clock.now_ms(), false), 1);
        let m = broker.txns.describe("tx").unwrap().unwrap();
        assert_eq!(m.status, TxnStatus::CompleteAbort);
        assert!(m.producer_epoch > epoch, "the abort fenced the producer");
        assert_eq!(
            m.last_update_ms,
            clock.now_ms(),
            "stamped with the injected time"
        );
    }
}
