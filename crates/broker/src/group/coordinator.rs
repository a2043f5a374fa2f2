//! The group coordinator: runs each group's state machine, answers waiting JoinGroup and
//! SyncGroup requests when their rebalance step completes, keeps committed offsets, and
//! persists both to `__consumer_offsets` (Kafka's record schemas) before acknowledging.
//!
//! Architecture invariants: a group's state and its persisted records change under one
//! mutex, in the same order; an offset commit is acknowledged only after its records are in
//! the log; on start the whole topic is replayed, so what was acknowledged survives a
//! restart or a kill -9. Timers (session expiry, join deadlines, the initial rebalance
//! delay, offset retention) are driven by one task that sleeps until the earliest deadline
//! and is woken early when a new deadline appears.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{oneshot, Notify};

use super::offsets_log::{
    encode_records, GroupMemberRecord, GroupMetadataValue, KvBatch, OffsetCommitKey,
    OffsetCommitValue, OffsetsRecord,
};
use super::state::{
    code, Completion, Effects, Group, GroupState, JoinRequest, JoinResponse, Reply, SyncResponse,
    WaiterId,
};
use crate::clock::SharedClock;
use crate::coordinator_services::CoordinatorServices;
use crate::partition::{AppendError, AppendOrigin, Partition, ReplicationWait};

pub use super::config::CoordinatorConfig;
pub use crate::internal_topic::OFFSETS_TOPIC;

/// Kafka error codes used only here.
const OFFSET_METADATA_TOO_LARGE: i16 = 12;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const NOT_COORDINATOR: i16 = 16;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
const KAFKA_STORAGE_ERROR: i16 = 56;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const REQUEST_TIMED_OUT: i16 = 7;

/// One committed offset, as OffsetFetch reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// A group as DescribeGroups reports it.
pub struct GroupDescription {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    /// (member id, instance id, client id, client host, metadata, assignment)
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

/// One group's committed offsets by (topic, partition).
type GroupOffsets = BTreeMap<(String, i32), OffsetCommitValue>;

#[derive(Default)]
struct Inner {
    groups: HashMap<String, Group>,
    offsets: HashMap<String, GroupOffsets>,
    /// Offsets committed inside a still-open transaction, by producer id then group: they
    /// become visible only when the commit marker reaches the group's offsets partition.
    pending_txn_offsets: HashMap<i64, HashMap<String, GroupOffsets>>,
    /// Waiting JoinGroup/SyncGroup requests: the group each waits in, and where its answer
    /// goes (with the group write it must wait for).
    waiters: HashMap<WaiterId, (String, oneshot::Sender<(Completion, GroupWrite)>)>,
    next_waiter: WaiterId,
    last_retention_check_ms: i64,
    /// The `__consumer_offsets` partitions this broker leads, by index: only their groups
    /// are served (and held in memory) here.
    owned: HashMap<i32, Ownership>,
}

/// A `__consumer_offsets` partition this coordinator took on when it became its leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ownership {
    /// The leader epoch it was taken on in: a later leadership is another ownership.
    leader_epoch: i32,
    /// Replayed into memory; until then its groups are answered COORDINATOR_LOAD_IN_PROGRESS.
    loaded: bool,
}

/// An append a coordinator made that its answer must wait for: acknowledged once the HW of
/// `partition` reaches `required_hw` (every in-sync replica has it).
#[derive(Clone)]
pub struct PendingWrite {
    pub partition: Arc<Partition>,
    pub required_hw: i64,
}

/// The group metadata write a call made, if any (or the code it failed with): a SyncGroup
/// that completed a rebalance answers only once its assignment is on every in-sync replica,
/// so a new coordinator knows the generation its members were told about.
type GroupWrite = Result<Option<PendingWrite>, i16>;

/// What an offset commit did: one code per entry, and the write to wait for before
/// answering (see [`GroupCoordinator::finish_commit`]).
pub struct CommitOutcome {
    pub codes: Vec<i16>,
    pub written: Option<PendingWrite>,
}

/// Runs every classic group hosted by this broker.
pub struct GroupCoordinator {
    inner: Mutex<Inner>,
    wake: Notify,
    config: CoordinatorConfig,
    /// Partitions of `__consumer_offsets`: the configured count until the topic exists,
    /// then the count it was created with.
    partitions: AtomicI32,
    clock: SharedClock,
    /// Rebalances completed here since start (new generations).
    rebalances: std::sync::atomic::AtomicU64,
}

/// Java's `String.hashCode`, which decides a group's offsets partition in Kafka.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The partition of an internal topic with `partitions` partitions that holds the state of
/// `key` (a group or transactional id), as Kafka places it.
/// The transaction a TxnOffsetCommit writes its offsets in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOffsetWrite {
    pub producer_id: i64,
    pub epoch: i16,
    /// The guard token of a verification with a transaction coordinator on another broker
    /// (`Partition::begin_txn_verification` on the offsets partition): the write is refused
    /// (INVALID_TXN_STATE) if a marker of the producer came in between.
    pub verified: Option<u64>,
}

pub fn partition_for_key(key: &str, partitions: i32) -> i32 {
    assert!(
        partitions > 0,
        "an internal topic has at least one partition"
    );
    let h = java_string_hash(key);
    let positive = if h == i32::MIN { 0 } else { h.abs() };
    positive % partitions
}

impl GroupCoordinator {
    pub fn new(config: CoordinatorConfig, clock: SharedClock) -> GroupCoordinator {
        GroupCoordinator {
            inner: Mutex::new(Inner::default()),
            wake: Notify::new(),
            partitions: AtomicI32::new(config.offsets_partitions),
            rebalances: Default::default(),
            config,
            clock,
        }
    }

    /// The time from the broker's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Completes when a new timer deadline may be earlier than the one being slept on.
    pub async fn deadline_added(&self) {
        self.wake.notified().await
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("group coordinator mutex poisoned")
    }

    /// The `__consumer_offsets` partition that holds `group_id`'s state.
    pub fn partition_for(&self, group_id: &str) -> i32 {
        partition_for_key(group_id, self.partitions.load(Ordering::Acquire))
    }

    /// Brings the groups served here in line with the leadership of the `__consumer_offsets`
    /// partitions on this broker (at start-up and after every metadata change): a partition
    /// this broker stopped leading, or leads in a new epoch, is unloaded (its groups leave
    /// memory; their clients get NOT_COORDINATOR and look the coordinator up again), and one
    /// it leads is loaded: replayed from its log, its groups answered
    /// COORDINATOR_LOAD_IN_PROGRESS until then. So groups and committed offsets move with
    /// the partition's leadership.
    pub fn sync_ownership(&self, broker: &dyn CoordinatorServices) {
        let count = crate::internal_topic::key_partition_count(
            broker,
            OFFSETS_TOPIC,
            self.config.offsets_partitions,
        );
        self.partitions.store(count, Ordering::Release);
        let led: Vec<(i32, Arc<Partition>, i32)> = (0..count)
            .filter_map(|p| {
                let partition = broker.partition(OFFSETS_TOPIC, p)?;
                let epoch = partition.leader_epoch();
                partition.is_leader().then_some((p, partition, epoch))
            })
            .collect();
        let stale: Vec<i32> = self
            .lock()
            .owned
            .iter()
            .filter(|(p, o)| !led.iter().any(|(q, _, e)| q == *p && *e == o.leader_epoch))
            .map(|(p, _)| *p)
            .collect();
        for p in stale {
            self.unload_partition(p);
        }
        for (p, partition, epoch) in led {
            if self.lock().owned.contains_key(&p) {
                continue;
            }
            if let Err(e) = self.load_partition(p, &partition, epoch) {
                tracing::error!(partition = p, error = %e, "cannot load a __consumer_offsets partition");
                self.lock().owned.remove(&p);
            }
        }
    }

    /// Takes on partition `p`, led here in `leader_epoch`: reads its log without the lock,
    /// then, under it, what was appended meanwhile (transaction markers) and replays all of
    /// it. Nothing happens if the partition was unloaded or taken on again meanwhile.
    fn load_partition(
        &self,
        p: i32,
        partition: &Partition,
        leader_epoch: i32,
    ) -> Result<(), String> {
        let loading = Ownership {
            leader_epoch,
            loaded: false,
        };
        self.lock().owned.insert(p, loading);
        let (mut batches, next) = crate::internal_topic::read_kv_batches_from(partition, 0)?;
        let mut inner = self.lock();
        if inner.owned.get(&p) != Some(&loading) {
            return Ok(());
        }
        batches.extend(crate::internal_topic::read_kv_batches_from(partition, next)?.0);
        let groups = self.replay(&mut inner, p, batches);
        inner.owned.insert(
            p,
            Ownership {
                leader_epoch,
                loaded: true,
            },
        );
        tracing::info!(
            partition = p,
            leader_epoch,
            groups,
            "loaded a __consumer_offsets partition"
        );
        Ok(())
    }

    /// Lets go of partition `p`: its groups, offsets and pending transactional offsets leave
    /// memory, and its waiting JoinGroup/SyncGroup requests are answered
    /// COORDINATOR_NOT_AVAILABLE (their senders dropped), so their clients look again.
    fn unload_partition(&self, p: i32) {
        let mut inner = self.lock();
        inner.owned.remove(&p);
        let in_p = |g: &str| self.partition_for(g) == p;
        let before = inner.groups.len();
        inner.groups.retain(|g, _| !in_p(g));
        let groups = before - inner.groups.len();
        inner.offsets.retain(|g, _| !in_p(g));
        for by_group in inner.pending_txn_offsets.values_mut() {
            by_group.retain(|g, _| !in_p(g));
        }
        inner
            .pending_txn_offsets
            .retain(|_, by_group| !by_group.is_empty());
        inner.waiters.retain(|_, (g, _)| !in_p(g));
        tracing::info!(
            partition = p,
            groups,
            "unloaded a __consumer_offsets partition"
        );
    }

    /// The error for a request about `group_id` when its partition is not served here:
    /// NOT_COORDINATOR when another broker leads it, COORDINATOR_LOAD_IN_PROGRESS while it
    /// is being loaded.
    fn owner_error(&self, inner: &Inner, group_id: &str) -> Option<i16> {
        match inner.owned.get(&self.partition_for(group_id)) {
            Some(o) if o.loaded => None,
            Some(_) => Some(COORDINATOR_LOAD_IN_PROGRESS),
            None => Some(NOT_COORDINATOR),
        }
    }

    /// Replays the batches of partition `p` into memory; returns how many groups it holds.
    fn replay(&self, inner: &mut Inner, p: i32, batches: Vec<KvBatch>) -> usize {
        let now = self.now_ms();
        let mut groups: HashMap<String, Option<GroupMetadataValue>> = HashMap::new();
        for batch in batches {
            if let Some(commit) = batch.control {
                Self::apply_txn_marker(inner, batch.producer_id, commit, |g| {
                    self.partition_for(g) == p
                });
                continue;
            }
            for (offset, key, value) in &batch.records {
                let record = match OffsetsRecord::decode_known(key, value.as_deref()) {
                    Ok(Some(r)) => r,
                    Ok(None) => continue,
                    // As Kafka's coordinators since KIP-915: skipped, with a warning.
                    Err(e) => {
                        tracing::warn!(
                            topic = OFFSETS_TOPIC,
                            partition = p,
                            offset,
                            error = %e,
                            "skipping a record the group coordinator cannot decode"
                        );
                        continue;
                    }
                };
                match record {
                    OffsetsRecord::Offset { key, value } => {
                        let entry = if batch.transactional {
                            inner
                                .pending_txn_offsets
                                .entry(batch.producer_id)
                                .or_default()
                                .entry(key.group.clone())
                                .or_default()
                        } else {
                            inner.offsets.entry(key.group.clone()).or_default()
                        };
                        match value {
                            Some(v) => {
                                entry.insert((key.topic, key.partition), v);
                            }
                            None => {
                                entry.remove(&(key.topic, key.partition));
                            }
                        }
                    }
                    OffsetsRecord::Group { group, value } => {
                        groups.insert(group, value);
                    }
                }
            }
        }
        inner.offsets.retain(|_, o| !o.is_empty());
        let mut restored = 0;
        for (group_id, value) in groups {
            let Some(v) = value else { continue };
            let members = v
                .members
                .into_iter()
                .map(|m| {
                    Group::stored_member(
                        m.member_id,
                        m.group_instance_id,
                        m.client_id,
                        m.client_host,
                        m.rebalance_timeout_ms,
                        m.session_timeout_ms,
                        v.protocol.as_deref(),
                        m.subscription,
                        m.assignment,
                    )
                })
                .collect();
            let group = Group::restore(
                &group_id,
                v.generation,
                v.protocol_type,
                v.protocol,
                v.leader,
                members,
                now,
                self.config.limits,
            );
            inner.groups.insert(group_id, group);
            restored += 1;
        }
        restored
    }

    /// Appends `records` for `group_id` to its offsets partition; the write to wait for
    /// (none if there was nothing to write).
    fn persist(
        &self,
        broker: &dyn CoordinatorServices,
        group_id: &str,
        records: &[OffsetsRecord],
    ) -> Result<Option<PendingWrite>, i16> {
        self.persist_as(broker, group_id, records, None)
    }

    /// [`Self::persist`], as a transactional batch of `txn` when given (guarded by its
    /// verification token, if it has one). A partition this broker does not lead (any more)
    /// is NOT_COORDINATOR, as in Kafka.
    fn persist_as(
        &self,
        broker: &dyn CoordinatorServices,
        group_id: &str,
        records: &[OffsetsRecord],
        txn: Option<TxnOffsetWrite>,
    ) -> Result<Option<PendingWrite>, i16> {
        if records.is_empty() {
            return Ok(None);
        }
        let p = self.partition_for(group_id);
        let partition = broker.partition(OFFSETS_TOPIC, p).ok_or(NOT_COORDINATOR)?;
        let now = self.now_ms();
        let batch = encode_records(records, now, txn.map(|t| (t.producer_id, t.epoch)));
        let written = match txn.and_then(|t| t.verified.map(|token| (t.producer_id, token))) {
            Some((producer_id, token)) => partition.append_verified(
                &batch,
                now,
                AppendOrigin::Coordinator,
                producer_id,
                token,
            ),
            None => partition.append(&batch, AppendOrigin::Coordinator, now),
        };
        match written {
            Ok(info) => Ok(Some(PendingWrite {
                partition,
                required_hw: info.last_offset + 1,
            })),
            Err(AppendError::NotLeader) => Err(NOT_COORDINATOR),
            Err(AppendError::Producer(code, why)) => {
                tracing::info!(group = group_id, why, "transactional offsets refused");
                Err(code)
            }
            Err(e) => {
                tracing::error!(group = group_id, error = %e, "cannot persist group state");
                Err(KAFKA_STORAGE_ERROR)
            }
        }
    }

    /// Waits (up to `offsets.commit.timeout.ms`) until the records of a commit reached
    /// every in-sync replica of their partition, then answers its codes: an acknowledged
    /// commit survives the loss of its coordinator. Kafka's mapping of a write that did not
    /// get there: REQUEST_TIMED_OUT, or NOT_COORDINATOR when leadership moved meanwhile.
    pub async fn finish_commit(&self, outcome: CommitOutcome) -> Vec<i16> {
        let Some(w) = outcome.written else {
            return outcome.codes;
        };
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.config.offsets_commit_timeout_ms);
        let error = match w.partition.wait_replicated(w.required_hw, deadline).await {
            Ok(()) => return outcome.codes,
            Err(ReplicationWait::TimedOut) => REQUEST_TIMED_OUT,
            Err(ReplicationWait::NotLeader) => NOT_COORDINATOR,
        };
        outcome
            .codes
            .into_iter()
            .map(|c| if c == code::NONE { error } else { c })
            .collect()
    }

    fn group_record(group: &Group) -> OffsetsRecord {
        let members = group
            .members
            .values()
            .map(|m| GroupMemberRecord {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                subscription: group
                    .protocol
                    .as_ref()
                    .and_then(|p| m.protocols.iter().find(|(n, _)| n == p))
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default(),
                assignment: m.assignment.clone(),
            })
            .collect();
        OffsetsRecord::Group {
            group: group.group_id.clone(),
            value: Some(GroupMetadataValue {
                protocol_type: group.protocol_type.clone().unwrap_or_default(),
                generation: group.generation,
                protocol: group.protocol.clone(),
                leader: group.leader.clone(),
                current_state_timestamp_ms: group.state_since_ms,
                members,
            }),
        }
    }

    /// Persists what the state machine asked for and delivers its completions, each with
    /// the write it waits for; that write.
    fn apply(
        &self,
        broker: &dyn CoordinatorServices,
        inner: &mut Inner,
        group_id: &str,
        fx: Effects,
    ) -> GroupWrite {
        let mut write = Ok(None);
        if fx.rebalanced {
            self.rebalances
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if fx.persist_group {
            if let Some(group) = inner.groups.get(group_id) {
                let record = Self::group_record(group);
                // A failed write leaves the in-memory state ahead of the log; the waiting
                // SyncGroups are told (and rejoin), and the next change is written in full.
                write = self.persist(broker, group_id, &[record]);
            }
        }
        for c in fx.completions {
            let id = match &c {
                Completion::Join(w, _) | Completion::Sync(w, _) => *w,
            };
            if let Some((_, tx)) = inner.waiters.remove(&id) {
                let _ = tx.send((c, write.clone()));
            }
        }
        write
    }

    /// `r` once the group write it follows is on every in-sync replica (within
    /// `offsets.commit.timeout.ms`); otherwise the error Kafka answers a SyncGroup whose
    /// group could not be stored: COORDINATOR_NOT_AVAILABLE when it timed out,
    /// NOT_COORDINATOR when the partition moved or could not be written.
    async fn after_group_write(&self, r: SyncResponse, write: GroupWrite) -> SyncResponse {
        if r.error != code::NONE {
            return r;
        }
        let error = match write {
            Ok(None) => return r,
            Ok(Some(w)) => {
                let deadline = tokio::time::Instant::now()
                    + Duration::from_millis(self.config.offsets_commit_timeout_ms);
                match w.partition.wait_replicated(w.required_hw, deadline).await {
                    Ok(()) => return r,
                    Err(ReplicationWait::TimedOut) => code::COORDINATOR_NOT_AVAILABLE,
                    Err(ReplicationWait::NotLeader) => NOT_COORDINATOR,
                }
            }
            Err(_) => NOT_COORDINATOR,
        };
        SyncResponse {
            error,
            assignment: Bytes::new(),
            ..r
        }
    }

    fn group_mut<'a>(&self, inner: &'a mut Inner, group_id: &str) -> &'a mut Group {
        let limits = self.config.limits;
        inner
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, self.now_ms(), limits))
    }

    /// Runs a state-machine call that may answer later, under the lock. `Ok(Some)`: the answer
    /// now, with the group write it made; `Ok(None)`: the group does not exist (and `create`
    /// was false); `Err`: the receiver the answer will arrive on. A group not served here is
    /// answered `not_served(code)`.
    #[allow(clippy::type_complexity)]
    fn call_or_wait<T>(
        &self,
        broker: &dyn CoordinatorServices,
        group_id: &str,
        create: bool,
        not_served: impl FnOnce(i16) -> T,
        call: impl FnOnce(&mut Group, WaiterId) -> Option<(Reply<T>, Effects)>,
    ) -> Result<Option<(T, GroupWrite)>, oneshot::Receiver<(Completion, GroupWrite)>> {
        let mut inner = self.lock();
        if let Some(error) = self.owner_error(&inner, group_id) {
            return Ok(Some((not_served(error), Ok(None))));
        }
        inner.next_waiter += 1;
        let waiter = inner.next_waiter;
        let group = if create {
            Some(self.group_mut(&mut inner, group_id))
        } else {
            inner.groups.get_mut(group_id)
        };
        let Some((reply, fx)) = group.and_then(|g| call(g, waiter)) else {
            return Ok(None);
        };
        let write = self.apply(broker, &mut inner, group_id, fx);
        match reply {
            Reply::Now(r) => Ok(Some((r, write))),
            Reply::Later => {
                let (tx, rx) = oneshot::channel();
                inner.waiters.insert(waiter, (group_id.to_string(), tx));
                Err(rx)
            }
        }
    }

    /// JoinGroup: answers at once or when the join phase of the rebalance ends.
    pub async fn join(
        &self,
        broker: &dyn CoordinatorServices,
        group_id: &str,
        req: JoinRequest,
    ) -> JoinResponse {
        let member_id = req.member_id.clone();
        let failed = |error| JoinResponse {
            error,
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id: member_id.clone(),
            members: Vec::new(),
            skip_assignment: false,
        };
        let rx = match self.call_or_wait(broker, group_id, true, failed, |g, w| {
            Some(g.join(req, w, self.now_ms()))
        }) {
            // A join's answer does not wait for the group write (as in Kafka): the
            // generation is stored, and waited for, when its SyncGroup completes.
            Ok(Some((r, _))) => return r,
            Ok(None) => unreachable!("join creates the group"),
            Err(rx) => rx,
        };
        self.wake.notify_one();
        match rx.await {
            Ok((Completion::Join(_, r), _)) => r,
            _ => failed(code::COORDINATOR_NOT_AVAILABLE),
        }
    }

    /// SyncGroup: followers wait for the leader's assignment.
    #[allow(clippy::too_many_arguments)]
    pub async fn sync(
        &self,
        broker: &dyn CoordinatorServices,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncResponse {
        let unknown = SyncResponse {
            error: code::UNKNOWN_MEMBER_ID,
            protocol_type: None,
            protocol: None,
            assignment: Bytes::new(),
        };
        let call = |g: &mut Group, w| {
            Some(g.sync(
                member_id,
                instance_id,
                generation,
                protocol_type,
                protocol,
                assignments,
                w,
                self.now_ms(),
            ))
        };
        let not_served = |error| SyncResponse {
            error,
            protocol_type: None,
            protocol: None,
            assignment: Bytes::new(),
        };
        let rx = match self.call_or_wait(broker, group_id, false, not_served, call) {
            Ok(Some((r, write))) => return self.after_group_write(r, write).await,
            Ok(None) => return unknown,
            Err(rx) => rx,
        };
        self.wake.notify_one();
        match rx.await {
            Ok((Completion::Sync(_, r), write)) => self.after_group_write(r, write).await,
            _ => SyncResponse {
                error: code::COORDINATOR_NOT_AVAILABLE,
                ..unknown
            },
        }
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> i16 {
        let mut inner = self.lock();
        if let Some(error) = self.owner_error(&inner, group_id) {
            return error;
        }
        match inner.groups.get_mut(group_id) {
            Some(g) => g.heartbeat(member_id, instance_id, generation, self.now_ms()),
            None => code::UNKNOWN_MEMBER_ID,
        }
    }

    /// LeaveGroup for each (member id, instance id); returns per-member codes.
    pub fn leave(
        &self,
        broker: &dyn CoordinatorServices,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<i16>, i16> {
        let mut inner = self.lock();
        if let Some(error) = self.owner_error(&inner, group_id) {
            return Err(error);
        }
        let Some(group) = inner.groups.get_mut(group_id) else {
            return Err(code::UNKNOWN_MEMBER_ID);
        };
        let mut fx = Effects::default();
        let now = self.now_ms();
        let codes = members
            .iter()
            .map(|(m, i)| group.leave(m, i.as_deref(), now, &mut fx))
            .collect();
        fx.persist_group |= group.state == GroupState::Empty;
        let _ = self.apply(broker, &mut inner, group_id, fx);
        drop(inner);
        self.wake.notify_one();
        Ok(codes)
    }

    /// OffsetCommit, and TxnOffsetCommit when `txn` is given: then the records are written
    /// as part of that producer's transaction and stay pending until its marker. `entries`: (topic, partition, offset, leader epoch,
    /// metadata). Returns one code per entry, or a code for all of them.
    #[allow(clippy::too_many_arguments)]
    pub fn commit(
        &self,
        broker: &dyn CoordinatorServices,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        entries: Vec<(String, i32, i64, i32, String)>,
        txn: Option<TxnOffsetWrite>,
    ) -> CommitOutcome {
        let mut inner = self.lock();
        let now = self.now_ms();
        let refused = |code: i16| CommitOutcome {
            codes: vec![code; entries.len()],
            written: None,
        };
        if let Some(error) = self.owner_error(&inner, group_id) {
            return refused(error);
        }
        let group_error = match inner.groups.get_mut(group_id) {
            Some(g) => g.check_commit(member_id, instance_id, generation, now),
            None if generation < 0 => code::NONE,
            None => code::ILLEGAL_GENERATION,
        };
        if group_error != code::NONE {
            return refused(group_error);
        }
        self.group_mut(&mut inner, group_id);
        let mut codes = Vec::with_capacity(entries.len());
        let mut records = Vec::new();
        for (topic, partition, offset, leader_epoch, metadata) in &entries {
            let known = broker.partition_exists(topic, *partition);
            let code = if metadata.len() > self.config.offset_metadata_max_bytes {
                OFFSET_METADATA_TOO_LARGE
            } else if !known {
                UNKNOWN_TOPIC_OR_PARTITION
            } else {
                records.push(OffsetsRecord::Offset {
                    key: OffsetCommitKey {
                        group: group_id.to_string(),
                        topic: topic.clone(),
                        partition: *partition,
                    },
                    value: Some(OffsetCommitValue {
                        offset: *offset,
                        leader_epoch: *leader_epoch,
                        metadata: metadata.clone(),
                        commit_timestamp_ms: now,
                        expire_timestamp_ms: None,
                    }),
                });
                code::NONE
            };
            codes.push(code);
        }
        let written = match self.persist_as(broker, group_id, &records, txn) {
            Ok(written) => written,
            Err(e) => {
                let codes = codes
                    .into_iter()
                    .map(|c| if c == code::NONE { e } else { c })
                    .collect();
                return CommitOutcome {
                    codes,
                    written: None,
                };
            }
        };
        let store = match txn {
            Some(TxnOffsetWrite { producer_id, .. }) => inner
                .pending_txn_offsets
                .entry(producer_id)
                .or_default()
                .entry(group_id.to_string())
                .or_default(),
            None => inner.offsets.entry(group_id.to_string()).or_default(),
        };
        for r in records {
            if let OffsetsRecord::Offset {
                key,
                value: Some(v),
            } = r
            {
                store.insert((key.topic, key.partition), v);
            }
        }
        CommitOutcome { codes, written }
    }

    /// A transaction marker of `producer_id` reached offsets partition `partition`: its
    /// pending offsets for the groups stored there become committed (or are dropped).
    pub fn complete_txn(&self, producer_id: i64, partition: i32, commit: bool) {
        let mut inner = self.lock();
        if !inner.owned.get(&partition).is_some_and(|o| o.loaded) {
            // Not served here, or still loading: the load replays the marker from the log.
            return;
        }
        Self::apply_txn_marker(&mut inner, producer_id, commit, |g| {
            self.partition_for(g) == partition
        });
    }

    fn apply_txn_marker(
        inner: &mut Inner,
        producer_id: i64,
        commit: bool,
        in_partition: impl Fn(&str) -> bool,
    ) {
        let Some(by_group) = inner.pending_txn_offsets.get_mut(&producer_id) else {
            return;
        };
        let groups: Vec<String> = by_group
            .keys()
            .filter(|g| in_partition(g))
            .cloned()
            .collect();
        for g in groups {
            let offsets = by_group.remove(&g).expect("listed above");
            if commit {
                inner.offsets.entry(g).or_default().extend(offsets);
            }
        }
        if by_group.is_empty() {
            inner.pending_txn_offsets.remove(&producer_id);
        }
    }

    /// Whether an open transaction holds an offset of `group_id` for (topic, partition)
    /// (OffsetFetch with require_stable answers UNSTABLE_OFFSET_COMMIT then).
    pub fn has_pending_txn_offset(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        let key = (topic.to_string(), partition);
        self.lock()
            .pending_txn_offsets
            .values()
            .any(|by_group| by_group.get(group_id).is_some_and(|o| o.contains_key(&key)))
    }

    /// Committed offsets of `group_id`: of the given partitions (missing ones as offset -1),
    /// or every committed one when `partitions` is `None`.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Result<Vec<(String, i32, CommittedOffset)>, i16> {
        let inner = self.lock();
        if let Some(error) = self.owner_error(&inner, group_id) {
            return Err(error);
        }
        let store = inner.offsets.get(group_id);
        let missing = CommittedOffset {
            offset: -1,
            leader_epoch: -1,
            metadata: String::new(),
        };
        let to_committed = |v: &OffsetCommitValue| CommittedOffset {
            offset: v.offset,
            leader_epoch: v.leader_epoch,
            metadata: v.metadata.clone(),
        };
        Ok(match partitions {
            Some(list) => list
                .into_iter()
                .map(|(t, p)| {
                    let c = store
                        .and_then(|s| s.get(&(t.clone(), p)))
                        .map(to_committed)
                        .unwrap_or_else(|| missing.clone());
                    (t, p, c)
                })
                .collect(),
            None => store
                .map(|s| {
                    s.iter()
                        .map(|((t, p), v)| (t.clone(), *p, to_committed(v)))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// Rebalances completed here since start.
    pub fn rebalances(&self) -> u64 {
        self.rebalances.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `__consumer_offsets` partitions led here whose groups are still being loaded.
    pub fn loading_partitions(&self) -> usize {
        self.lock().owned.values().filter(|o| !o.loaded).count()
    }

    /// (group id, protocol type, state) of every group, optionally filtered by state names.
    pub fn list(&self, states: &[String]) -> Vec<(String, String, &'static str)> {
        let inner = self.lock();
        let mut ids: Vec<&String> = inner.groups.keys().chain(inner.offsets.keys()).collect();
        ids.sort();
        ids.dedup();
        ids.into_iter()
            .filter_map(|id| {
                let (ptype, state) = match inner.groups.get(id) {
                    Some(g) if g.state == GroupState::Dead => return None,
                    Some(g) => (g.protocol_type.clone().unwrap_or_default(), g.state.name()),
                    None => (String::new(), GroupState::Empty.name()),
                };
                let wanted =
                    states.is_empty() || states.iter().any(|s| s.eq_ignore_ascii_case(state));
                wanted.then(|| (id.clone(), ptype, state))
            })
            .collect()
    }

    /// DescribeGroups for one group; unknown groups are reported as Dead, groups not served
    /// here with their error code.
    pub fn describe(&self, group_id: &str) -> Result<GroupDescription, i16> {
        let inner = self.lock();
        if let Some(error) = self.owner_error(&inner, group_id) {
            return Err(error);
        }
        Ok(match inner.groups.get(group_id) {
            Some(g) => {
                let protocol = g.protocol.clone().unwrap_or_default();
                GroupDescription {
                    state: g.state.name(),
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    protocol: protocol.clone(),
                    members: g
                        .members
                        .values()
                        .map(|m| {
                            let metadata = m
                                .protocols
                                .iter()
                                .find(|(n, _)| *n == protocol)
                                .map(|(_, b)| b.clone())
                                .unwrap_or_default();
                            (
                                m.member_id.clone(),
                                m.group_instance_id.clone(),
                                m.client_id.clone(),
                                m.client_host.clone(),
                                metadata,
                                m.assignment.clone(),
                            )
                        })
                        .collect(),
                }
            }
            None if inner.offsets.contains_key(group_id) => GroupDescription {
                state: GroupState::Empty.name(),
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            },
            None => GroupDescription {
                state: GroupState::Dead.name(),
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            },
        })
    }

    /// DeleteGroups for one group.
    pub fn delete_group(&self, broker: &dyn CoordinatorServices, group_id: &str) -> i16 {
        let mut inner = self.lock();
        if let Some(error) = self.owner_error(&inner, group_id) {
            return error;
        }
        let exists = inner.groups.contains_key(group_id) || inner.offsets.contains_key(group_id);
        if !exists {
            return GROUP_ID_NOT_FOUND;
        }
        if inner.groups.get(group_id).is_some_and(|g| !g.is_empty()) {
            return NON_EMPTY_GROUP;
        }
        let mut records: Vec<OffsetsRecord> = inner
            .offsets
            .get(group_id)
            .map(|s| {
                s.keys()
                    .map(|(t, p)| OffsetsRecord::Offset {
                        key: OffsetCommitKey {
                            group: group_id.to_string(),
                            topic: t.clone(),
                            partition: *p,
                        },
                        value: None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        records.push(OffsetsRecord::Group {
            group: group_id.to_string(),
            value: None,
        });
        if let Err(e) = self.persist(broker, group_id, &records) {
            return e;
        }
        inner.offsets.remove(group_id);
        if let Some(mut g) = inner.groups.remove(group_id) {
            g.mark_dead(self.now_ms());
        }
        code::NONE
    }

    /// OffsetDelete: per-partition codes, or a group-level code.
    pub fn delete_offsets(
        &self,
        broker: &dyn CoordinatorServices,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<i16>, i16> {
        let mut inner = self.lock();
        if let Some(error) = self.owner_error(&inner, group_id) {
            return Err(error);
        }
        let exists = inner.groups.contains_key(group_id) || inner.offsets.contains_key(group_id);
        if !exists {
            return Err(GROUP_ID_NOT_FOUND);
        }
        let subscribed = inner
            .groups
            .get(group_id)
            .map(|g| g.subscribed_topics())
            .unwrap_or_default();
        let mut codes = Vec::with_capacity(partitions.len());
        let mut records = Vec::new();
        for (t, p) in partitions {
            if subscribed.contains(t) {
                codes.push(GROUP_SUBSCRIBED_TO_TOPIC);
                continue;
            }
            codes.push(code::NONE);
            if inner
                .offsets
                .get(group_id)
                .is_some_and(|s| s.contains_key(&(t.clone(), *p)))
            {
                records.push(OffsetsRecord::Offset {
                    key: OffsetCommitKey {
                        group: group_id.to_string(),
                        topic: t.clone(),
                        partition: *p,
                    },
                    value: None,
                });
            }
        }
        self.persist(broker, group_id, &records)?;
        if let Some(store) = inner.offsets.get_mut(group_id) {
            for r in &records {
                if let OffsetsRecord::Offset { key, .. } = r {
                    store.remove(&(key.topic.clone(), key.partition));
                }
            }
        }
        Ok(codes)
    }

    /// Advances every group's timers; returns the next deadline.
    pub fn tick(&self, broker: &dyn CoordinatorServices) -> Option<i64> {
        let mut inner = self.lock();
        let now = self.now_ms();
        let ids: Vec<String> = inner.groups.keys().cloned().collect();
        for id in &ids {
            let fx = inner.groups.get_mut(id).expect("listed").tick(now);
            let _ = self.apply(broker, &mut inner, id, fx);
        }
        if now - inner.last_retention_check_ms >= self.config.offsets_retention_check_interval_ms {
            inner.last_retention_check_ms = now;
            self.expire_offsets(broker, &mut inner, now);
        }
        let group_deadline = inner
            .groups
            .values()
            .filter_map(Group::next_deadline_ms)
            .min();
        let retention =
            inner.last_retention_check_ms + self.config.offsets_retention_check_interval_ms;
        Some(group_deadline.map_or(retention, |d| d.min(retention)))
    }

    /// Drops the offsets of groups that have had no members for offsets.retention.minutes.
    fn expire_offsets(&self, broker: &dyn CoordinatorServices, inner: &mut Inner, now: i64) {
        let retention = self.config.offsets_retention_ms;
        let expired: Vec<String> = inner
            .offsets
            .iter()
            .filter(|(id, store)| {
                let empty_since = match inner.groups.get(*id) {
                    Some(g) if g.state == GroupState::Empty => g.state_since_ms,
                    Some(_) => return false,
                    None => store
                        .values()
                        .map(|v| v.commit_timestamp_ms)
                        .max()
                        .unwrap_or(0),
                };
                let last_commit = store
                    .values()
                    .map(|v| v.commit_timestamp_ms)
                    .max()
                    .unwrap_or(0);
                now - empty_since.max(last_commit) >= retention
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            let records: Vec<OffsetsRecord> = inner.offsets[&id]
                .keys()
                .map(|(t, p)| OffsetsRecord::Offset {
                    key: OffsetCommitKey {
                        group: id.clone(),
                        topic: t.clone(),
                        partition: *p,
                    },
                    value: None,
                })
                .collect();
            if self.persist(broker, &id, &records).is_ok() {
                tracing::info!(group = %id, offsets = records.len(), "expired committed offsets");
                inner.offsets.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::java_string_hash;

    #[test]
    fn java_hash_matches_known_values() {
        // "".hashCode(), "a".hashCode(), "hello".hashCode() and a string whose hash
        // overflows to Integer.MIN_VALUE, as the JVM computes them.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99162322);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
    }
}
