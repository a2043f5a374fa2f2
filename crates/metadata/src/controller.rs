//! The controller: validates admin requests against the metadata image and turns them into
//! records, which it writes through a [`MetadataWriter`] (the metadata quorum).
//!
//! It is the only writer of the metadata log. Writing and applying are two steps: the
//! controller validates a change against the image of everything written so far and writes
//! the batch; it is committed once a majority of the quorum stored it. Brokers apply
//! committed batches from the quorum's commit stream, on their own; a caller that needs its
//! change visible waits until its broker applied [`Controller::last_written`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::balance::{self, ElectionKind, ElectionResult};
use crate::config::validate_topic_config;
use crate::election::{self, ElectionDefaults};
use crate::image::{MetadataImage, PartitionImage};
use crate::log::MetadataLogError;
use crate::membership::BrokerSessions;
use crate::placement::{assign_replicas, Placeable};
use crate::reassignment;
use crate::record::{ConfigResource, MetadataRecord};

/// Longest legal topic name, as in Kafka.
pub const TOPIC_NAME_MAX_CHARS: usize = 249;

/// The most partitions one operation (a topic's creation, one CreatePartitions, and a whole
/// CreateTopics request) may create, as Kafka's controller bounds it (KAFKA-17870): more is
/// refused with POLICY_VIOLATION before anything is placed or allocated.
pub const MAX_PARTITIONS_PER_OPERATION: i32 = 10_000;

/// Why the controller refused a change. Each maps to one Kafka error code.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("{0}")]
    TopicAlreadyExists(String),
    #[error("{0}")]
    InvalidTopic(String),
    #[error("{0}")]
    InvalidPartitions(String),
    /// Refused by a bound on the work one operation may ask for (POLICY_VIOLATION).
    #[error("{0}")]
    PolicyViolation(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    UnknownTopic(String),
    /// The controller built records that do not apply to its own image: a bug, not the
    /// client's fault.
    #[error("internal controller error: {0}")]
    Internal(String),
    /// This node is not the active controller (NOT_CONTROLLER).
    #[error("{0}")]
    NotController(String),
    /// The quorum did not commit in time (REQUEST_TIMED_OUT).
    #[error("{0}")]
    Timeout(String),
    /// Another live broker process holds this node id (DUPLICATE_BROKER_REGISTRATION).
    #[error("{0}")]
    DuplicateBrokerRegistration(String),
    /// A heartbeat names a registration that is not the current one (STALE_BROKER_EPOCH).
    #[error("{0}")]
    StaleBrokerEpoch(String),
    /// No topic has this id (UNKNOWN_TOPIC_ID).
    #[error("{0}")]
    UnknownTopicId(String),
    /// The request names a leader epoch older than the partition's (FENCED_LEADER_EPOCH).
    #[error("{0}")]
    FencedLeaderEpoch(String),
    /// The request contradicts itself or the partition's assignment (INVALID_REQUEST).
    #[error("{0}")]
    InvalidRequest(String),
    /// The request names a partition epoch older than the partition's
    /// (INVALID_UPDATE_VERSION).
    #[error("{0}")]
    InvalidUpdateVersion(String),
    /// A new ISR member is not a live broker of the epoch given (INELIGIBLE_REPLICA).
    #[error("{0}")]
    IneligibleReplica(String),
    /// A cancel of a partition no reassignment moves (NO_REASSIGNMENT_IN_PROGRESS).
    #[error("{0}")]
    NoReassignmentInProgress(String),
    #[error(transparent)]
    Log(#[from] MetadataLogError),
}

/// Checks a topic name against Kafka's rules.
pub fn validate_topic_name(name: &str) -> Result<(), ControllerError> {
    let err = |why: &str| {
        Err(ControllerError::InvalidTopic(format!(
            "topic name '{name}' is illegal: {why}"
        )))
    };
    if name.is_empty() {
        return err("it is empty");
    }
    if name == "." || name == ".." {
        return err("'.' and '..' are not allowed");
    }
    if name.chars().count() > TOPIC_NAME_MAX_CHARS {
        return err("it is longer than 249 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    {
        return err("it may contain only ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// Where the controller writes: the metadata log, replicated or not.
pub trait MetadataWriter: Send {
    /// The image after everything committed so far.
    fn image(&self) -> Arc<MetadataImage>;
    /// Writes `records` as one batch and returns the offset of its last record once the
    /// batch is committed (and applied to [`Self::image`]).
    fn write(&mut self, records: Vec<MetadataRecord>) -> Result<i64, ControllerError>;
    /// The quorum's current term (leader epoch).
    fn term(&self) -> u64;
}

/// The controller and where it writes.
pub struct Controller {
    writer: Box<dyn MetadataWriter>,
    /// Offset of the last record this controller wrote; -1 before its first write.
    last_written: i64,
    /// When each broker was last heard from (meaningful while this node is the leader).
    sessions: BrokerSessions,
    /// How leaders are elected and the ELR kept.
    election: ElectionDefaults,
}

/// A broker process asking to join (Kafka's BrokerRegistration request).
#[derive(Debug, Clone)]
pub struct BrokerRegistration<'a> {
    pub node_id: i32,
    pub incarnation_id: Uuid,
    pub host: &'a str,
    pub port: u16,
    pub rack: Option<&'a str>,
    /// The broker epoch its previous process shut down cleanly with, -1 after an unclean
    /// shutdown (or none before): a mismatch takes it out of every ELR (KIP-966).
    pub previous_broker_epoch: i64,
}

/// A broker's periodic heartbeat (Kafka's BrokerHeartbeat request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerHeartbeat {
    pub node_id: i32,
    pub broker_epoch: i64,
    /// The offset of the last metadata record the broker applied.
    pub metadata_offset: i64,
    /// The broker asks to be fenced now (Kafka's WantShutDown at a controlled shutdown, or
    /// WantFence): its leaderships move to other in-sync replicas in the same batch.
    pub want_shut_down: bool,
}

/// The controller's answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeartbeatReply {
    /// The broker has applied the metadata log up to its own registration.
    pub caught_up: bool,
    pub fenced: bool,
}

/// A live broker that missed its heartbeat ([`Controller::overdue_brokers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverdueBroker {
    pub node_id: i32,
    pub broker_epoch: i64,
    /// Its advertised client endpoint.
    pub host: String,
    pub port: u16,
}

/// A partition leader's request to change the ISR of some of its partitions (Kafka's
/// AlterPartition, KIP-497), as the active controller receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartition {
    /// The leader asking.
    pub broker_id: i32,
    /// Its broker epoch: it must be the current registration.
    pub broker_epoch: i64,
    pub partitions: Vec<AlterPartitionItem>,
}

/// One partition's requested ISR, with the state the leader based it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionItem {
    pub topic_id: Uuid,
    pub partition: i32,
    /// The leader epoch the leader knows.
    pub leader_epoch: i32,
    /// The partition epoch the leader knows.
    pub partition_epoch: i32,
    /// The ISR asked for: each broker with the broker epoch the leader saw it fetch with
    /// (-1 when unknown: not checked).
    pub new_isr: Vec<(i32, i64)>,
}

/// A partition's leadership and ISR, as the controller answers an AlterPartition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderAndIsr {
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

/// The controller's answer for one partition of an AlterPartition: the partition's state
/// after the request (the new one when the ISR changed), or why it was refused.
#[derive(Debug)]
pub struct AlterPartitionResult {
    pub topic_id: Uuid,
    pub partition: i32,
    pub outcome: Result<LeaderAndIsr, ControllerError>,
}

/// A new topic as requested.
pub struct NewTopic<'a> {
    pub name: &'a str,
    pub num_partitions: i32,
    pub replication_factor: i16,
    pub configs: &'a [(String, String)],
    /// The replicas of each partition as the client assigned them (Kafka's manual
    /// assignment: the first leads); empty for the controller's placement.
    pub assignment: &'a [Vec<i32>],
}

impl Controller {
    /// A controller writing through `writer`; a broker not heard from for
    /// `session_timeout` is fenced; leaders are elected as `election` says.
    pub fn new(
        writer: Box<dyn MetadataWriter>,
        session_timeout: Duration,
        election: ElectionDefaults,
    ) -> Controller {
        Controller {
            writer,
            last_written: -1,
            sessions: BrokerSessions::new(session_timeout, Instant::now()),
            election,
        }
    }

    /// The image after everything committed so far.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.writer.image()
    }

    /// Offset of the last record this controller wrote (-1 before its first write).
    pub fn last_written(&self) -> i64 {
        self.last_written
    }

    /// Writes `records` as the next batch; returns once it is committed.
    fn commit(&mut self, records: Vec<MetadataRecord>) -> Result<(), ControllerError> {
        if records.is_empty() {
            return Ok(());
        }
        let last = self.writer.write(records)?;
        assert!(last > self.last_written, "the metadata log only grows");
        self.last_written = last;
        Ok(())
    }

    /// Writes the records of a whole image (a metadata log of an earlier release being
    /// imported) as one batch.
    pub fn import(&mut self, image: &MetadataImage) -> Result<(), ControllerError> {
        self.commit(image.to_records())
    }

    /// Registers a broker process and returns its broker epoch. A new registration starts
    /// fenced; the same process registering again gets its epoch back. Another process with
    /// the same node id is refused while the registered one is still heartbeating.
    pub fn register_broker(
        &mut self,
        reg: BrokerRegistration<'_>,
        now: Instant,
    ) -> Result<i64, ControllerError> {
        let term = self.writer.term();
        let image = self.image();
        if let Some(existing) = image.brokers.get(&reg.node_id) {
            let same_endpoint = existing.host == reg.host
                && existing.port == reg.port
                && existing.rack.as_deref() == reg.rack;
            if existing.incarnation_id == reg.incarnation_id && same_endpoint {
                self.sessions.touch(reg.node_id, term, now);
                return Ok(existing.epoch);
            }
            if existing.incarnation_id != reg.incarnation_id
                && !existing.fenced
                && self.sessions.heard_recently(reg.node_id, term, now)
            {
                return Err(ControllerError::DuplicateBrokerRegistration(format!(
                    "another broker process (incarnation {}) is registered as node {} and still heartbeating; a restarted broker is accepted once that session expires",
                    existing.incarnation_id, reg.node_id
                )));
            }
        }
        let mut records = match image.brokers.get(&reg.node_id) {
            Some(previous) if previous.epoch != reg.previous_broker_epoch => {
                let records = election::when_registered_uncleanly(&image, reg.node_id);
                if !records.is_empty() {
                    tracing::info!(broker = reg.node_id, partitions = records.len(), "broker restarted after an unclean shutdown: out of the eligible leader replicas");
                }
                records
            }
            _ => Vec::new(),
        };
        records.push(MetadataRecord::RegisterBroker {
            node_id: reg.node_id,
            host: reg.host.to_string(),
            port: reg.port,
            rack: reg.rack.map(str::to_string),
            incarnation_id: reg.incarnation_id,
            broker_epoch: None,
            fenced: true,
        });
        self.commit(records)?;
        self.sessions.touch(reg.node_id, term, now);
        // The broker epoch is the offset of the registration record, the one just written.
        Ok(self.last_written)
    }

    /// A broker's heartbeat: renews its session, and unfences it once it has caught up with
    /// its own registration (or fences it when it asks).
    pub fn broker_heartbeat(
        &mut self,
        hb: BrokerHeartbeat,
        now: Instant,
    ) -> Result<HeartbeatReply, ControllerError> {
        let term = self.writer.term();
        let image = self.image();
        let broker = image
            .brokers
            .get(&hb.node_id)
            .filter(|b| b.epoch == hb.broker_epoch)
            .ok_or_else(|| {
                ControllerError::StaleBrokerEpoch(format!(
                    "broker {} is not registered with epoch {}",
                    hb.node_id, hb.broker_epoch
                ))
            })?;
        self.sessions.touch(hb.node_id, term, now);
        let caught_up = hb.metadata_offset >= broker.epoch;
        let fenced = match (broker.fenced, hb.want_shut_down) {
            (true, false) if caught_up => {
                let mut records = election::when_unfenced(&image, &self.election, hb.node_id);
                records.push(MetadataRecord::UnfenceBroker {
                    node_id: hb.node_id,
                    broker_epoch: hb.broker_epoch,
                });
                self.commit(records)?;
                tracing::info!(broker = hb.node_id, "broker caught up: unfenced");
                false
            }
            (false, true) => {
                self.fence(hb.node_id, hb.broker_epoch)?;
                true
            }
            (fenced, _) => fenced,
        };
        Ok(HeartbeatReply { caught_up, fenced })
    }

    /// AlterPartition (KIP-497): a partition leader shrinks or expands the ISR of its
    /// partitions. Each partition is validated on its own (one refusal does not fail the
    /// others), against the image and the changes accepted before it in the same request;
    /// the accepted changes are written as `PartitionChange` records in one batch. The whole
    /// request is refused (STALE_BROKER_EPOCH) when the leader is not registered with
    /// `broker_epoch`, and when the batch cannot be written (NOT_CONTROLLER, ...).
    ///
    /// Per partition, as Kafka's KRaft controller: UNKNOWN_TOPIC_ID,
    /// UNKNOWN_TOPIC_OR_PARTITION; a leader or partition epoch newer than the controller's
    /// is NOT_CONTROLLER (this controller is behind: the leader should find the active
    /// one); an older leader epoch is FENCED_LEADER_EPOCH; a requester that is not the
    /// leader is INVALID_REQUEST; an older partition epoch is INVALID_UPDATE_VERSION; an
    /// ISR without the leader, with duplicates or with a non-replica is INVALID_REQUEST; a
    /// member that is not a live broker (of the epoch given, when given) is
    /// INELIGIBLE_REPLICA. An ISR equal to the current one is answered with the current
    /// state and writes nothing.
    pub fn alter_partition(
        &mut self,
        request: AlterPartition,
    ) -> Result<Vec<AlterPartitionResult>, ControllerError> {
        let image = self.image();
        if image
            .brokers
            .get(&request.broker_id)
            .is_none_or(|b| b.epoch != request.broker_epoch)
        {
            return Err(ControllerError::StaleBrokerEpoch(format!(
                "broker {} is not registered with epoch {}",
                request.broker_id, request.broker_epoch
            )));
        }
        // The state of each partition changed by an earlier item of this request, with its
        // ELR.
        let mut changed: BTreeMap<(Uuid, i32), (LeaderAndIsr, Vec<i32>)> = BTreeMap::new();
        let mut records = Vec::new();
        let mut outcomes = Vec::with_capacity(request.partitions.len());
        for item in &request.partitions {
            let key = (item.topic_id, item.partition);
            let current = match changed.get(&key) {
                Some(state) => Ok(state.clone()),
                None => current_leader_and_isr(&image, item),
            };
            let outcome = current.and_then(|(current, current_elr)| {
                let isr = validate_isr_change(&image, request.broker_id, item, &current)?;
                if isr == current.isr {
                    return Ok(current);
                }
                let elr = self.elr_after_isr_change(&image, item, &current, current_elr, &isr);
                records.push(MetadataRecord::PartitionChange {
                    topic_id: item.topic_id,
                    partition: item.partition,
                    leader: None,
                    isr: Some(isr.clone()),
                    replicas: None,
                    elr: Some(elr.clone()),
                    adding_replicas: None,
                    removing_replicas: None,
                });
                let mut next = LeaderAndIsr {
                    isr,
                    partition_epoch: current.partition_epoch + 1,
                    ..current
                };
                let mut next_elr = elr;
                // A reassignment whose target replicas are now all in sync completes in the
                // same batch.
                if let Some(p) = image
                    .topic_by_id(&item.topic_id)
                    .and_then(|t| t.partitions.get(&item.partition))
                    .filter(|p| p.is_reassigning())
                {
                    let after = PartitionImage {
                        isr: next.isr.clone(),
                        elr: next_elr.clone(),
                        leader: next.leader,
                        ..p.clone()
                    };
                    let live = |b: i32| image.is_live(b);
                    if let Some(done) = reassignment::completion(item.topic_id, &after, &live) {
                        if let MetadataRecord::PartitionChange {
                            leader, isr, elr, ..
                        } = &done
                        {
                            if let Some(l) = leader {
                                next.leader = *l;
                                next.leader_epoch += 1;
                            }
                            if let Some(isr) = isr {
                                next.isr = isr.clone();
                            }
                            if let Some(elr) = elr {
                                next_elr = elr.clone();
                            }
                        }
                        next.partition_epoch += 1;
                        tracing::info!(topic_id = %item.topic_id, partition = item.partition, replicas = ?after.target_replicas(), "reassignment complete");
                        records.push(done);
                    }
                }
                changed.insert(key, (next.clone(), next_elr));
                Ok(next)
            });
            outcomes.push(outcome);
        }
        self.commit(records)?;
        for (key, (state, elr)) in &changed {
            tracing::info!(topic_id = %key.0, partition = key.1, isr = ?state.isr, ?elr, partition_epoch = state.partition_epoch, "ISR changed");
        }
        Ok(request
            .partitions
            .iter()
            .zip(outcomes)
            .map(|(item, outcome)| AlterPartitionResult {
                topic_id: item.topic_id,
                partition: item.partition,
                outcome,
            })
            .collect())
    }

    /// The ELR of the partition `item` names once its ISR goes from `current` (with ELR
    /// `current_elr`) to `isr`.
    fn elr_after_isr_change(
        &self,
        image: &MetadataImage,
        item: &AlterPartitionItem,
        current: &LeaderAndIsr,
        current_elr: Vec<i32>,
        isr: &[i32],
    ) -> Vec<i32> {
        let Some(topic) = image.topic_by_id(&item.topic_id) else {
            return Vec::new();
        };
        let Some(p) = topic.partitions.get(&item.partition) else {
            return Vec::new();
        };
        let before = PartitionImage {
            isr: current.isr.clone(),
            elr: current_elr,
            ..p.clone()
        };
        let policy = self.election.for_topic(image, &topic.name);
        election::elr_after(&before, isr, &policy)
    }

    /// Fences every live broker whose session ran out; returns their ids.
    pub fn fence_expired_brokers(&mut self, now: Instant) -> Result<Vec<i32>, ControllerError> {
        let term = self.writer.term();
        let expired = self.sessions.expired(&self.image(), term, now);
        for &(id, broker_epoch) in &expired {
            self.fence(id, broker_epoch)?;
            tracing::warn!(
                broker = id,
                "broker session expired without a heartbeat: fenced"
            );
        }
        Ok(expired.into_iter().map(|(id, _)| id).collect())
    }

    /// The live brokers not heard from for longer than `after`, with their broker epoch and
    /// advertised endpoint: a caller may ask each whether its process is still there (a
    /// process that died refuses connections at once) and fence it early with
    /// [`Self::fence_unreachable`].
    pub fn overdue_brokers(&mut self, now: Instant, after: Duration) -> Vec<OverdueBroker> {
        let term = self.writer.term();
        let image = self.image();
        self.sessions
            .overdue(&image, term, now, after)
            .into_iter()
            .filter_map(|(id, epoch)| {
                let b = image.brokers.get(&id)?;
                Some(OverdueBroker {
                    node_id: id,
                    broker_epoch: epoch,
                    host: b.host.clone(),
                    port: b.port,
                })
            })
            .collect()
    }

    /// Fences `broker` (as it was when [`Self::overdue_brokers`] named it) before its
    /// session expires, because its listener refuses connections: its process is gone.
    /// Nothing happens if it was heard from since or registered anew. Returns whether it was
    /// fenced.
    pub fn fence_unreachable(
        &mut self,
        broker: &OverdueBroker,
        now: Instant,
        after: Duration,
    ) -> Result<bool, ControllerError> {
        let still = self
            .overdue_brokers(now, after)
            .iter()
            .any(|b| b.node_id == broker.node_id && b.broker_epoch == broker.broker_epoch);
        if !still {
            return Ok(false);
        }
        self.fence(broker.node_id, broker.broker_epoch)?;
        tracing::warn!(
            broker = broker.node_id,
            "broker missed its heartbeat and its listener refuses connections: fenced before its session expired"
        );
        Ok(true)
    }

    /// Fences a broker in one batch with the leader changes that takes: out of every ISR,
    /// and its partitions to the next live in-sync replica (`election::when_fenced`).
    fn fence(&mut self, node_id: i32, broker_epoch: i64) -> Result<(), ControllerError> {
        let mut records = election::when_fenced(&self.image(), &self.election, node_id);
        let moved = records.len();
        records.push(MetadataRecord::FenceBroker {
            node_id,
            broker_epoch,
        });
        self.commit(records)?;
        tracing::info!(
            broker = node_id,
            partitions_changed = moved,
            "broker fenced"
        );
        Ok(())
    }

    /// The brokers new replicas may go to: the live ones.
    fn placeable(image: &MetadataImage) -> Vec<Placeable<'_>> {
        image
            .live_brokers()
            .map(|b| Placeable {
                id: b.node_id,
                rack: b.rack.as_deref(),
            })
            .collect()
    }

    /// Creates a topic and returns its id (nil when `validate_only`). `num_partitions` and
    /// `replication_factor` must already be resolved from the broker defaults when the
    /// client sent -1.
    pub fn create_topic(
        &mut self,
        topic: NewTopic<'_>,
        validate_only: bool,
    ) -> Result<Uuid, ControllerError> {
        validate_topic_name(topic.name)?;
        if self.image().topics.contains_key(topic.name) {
            return Err(ControllerError::TopicAlreadyExists(format!(
                "topic '{}' already exists",
                topic.name
            )));
        }
        if topic.num_partitions < 1 {
            return Err(ControllerError::InvalidPartitions(format!(
                "number of partitions must be at least 1, got {}",
                topic.num_partitions
            )));
        }
        check_partition_bound(topic.num_partitions)?;
        let image = self.image();
        let brokers = Self::placeable(&image);
        if topic.replication_factor < 1 || topic.replication_factor as usize > brokers.len() {
            return Err(ControllerError::InvalidReplicationFactor(format!(
                "replication factor {} is invalid: it must be between 1 and the number of live brokers ({})",
                topic.replication_factor,
                brokers.len()
            )));
        }
        check_manual_assignment(
            &image,
            topic.assignment,
            0,
            topic.num_partitions,
            topic.replication_factor as usize,
        )?;
        let mut seen = BTreeMap::new();
        for (k, v) in topic.configs {
            validate_topic_config(k, v).map_err(ControllerError::InvalidConfig)?;
            if seen.insert(k.clone(), v.clone()).is_some() {
                return Err(ControllerError::InvalidConfig(format!(
                    "config '{k}' is given twice"
                )));
            }
        }
        if validate_only {
            return Ok(Uuid::nil());
        }
        let topic_id = Uuid::new_v4();
        let mut records = vec![MetadataRecord::Topic {
            name: topic.name.to_string(),
            topic_id,
        }];
        records.extend(partition_records(
            topic_id,
            0,
            topic.num_partitions,
            topic.assignment,
            &brokers,
            topic.replication_factor as usize,
        ));
        records.extend(
            seen.into_iter()
                .map(|(name, value)| MetadataRecord::Config {
                    resource: ConfigResource::Topic(topic.name.to_string()),
                    name,
                    value: Some(value),
                }),
        );
        self.commit(records)?;
        Ok(topic_id)
    }

    /// Deletes a topic and everything it holds.
    pub fn delete_topic(&mut self, name: &str) -> Result<(), ControllerError> {
        let image = self.image();
        let topic = image.topic(name).ok_or_else(|| {
            ControllerError::UnknownTopic(format!("topic '{name}' does not exist"))
        })?;
        let topic_id = topic.topic_id;
        self.commit(vec![MetadataRecord::RemoveTopic { topic_id }])
    }

    /// Grows a topic to `total` partitions, placed by the controller or as `assignment`
    /// gives them (one replica list per new partition, the first leads); shrinking is
    /// refused.
    pub fn create_partitions(
        &mut self,
        name: &str,
        total: i32,
        assignment: &[Vec<i32>],
        validate_only: bool,
    ) -> Result<(), ControllerError> {
        let image = self.image();
        let topic = image.topic(name).ok_or_else(|| {
            ControllerError::UnknownTopic(format!("topic '{name}' does not exist"))
        })?;
        let current = topic.partitions.len() as i32;
        if total < current {
            return Err(ControllerError::InvalidPartitions(format!(
                "topic '{name}' has {current} partitions; the count can only grow, so {total} is refused"
            )));
        }
        if total == current {
            return Err(ControllerError::InvalidPartitions(format!(
                "topic '{name}' already has {current} partitions"
            )));
        }
        check_partition_bound(total - current)?;
        let rf = topic
            .partitions
            .values()
            .next()
            .map(|p| p.replicas.len())
            .unwrap_or(1);
        let brokers = Self::placeable(&image);
        if rf > brokers.len() {
            return Err(ControllerError::InvalidReplicationFactor(format!(
                "topic '{name}' needs {rf} replicas but only {} brokers are live",
                brokers.len()
            )));
        }
        check_manual_assignment(&image, assignment, current, total - current, rf)?;
        if validate_only {
            return Ok(());
        }
        let records = partition_records(
            topic.topic_id,
            current,
            total - current,
            assignment,
            &brokers,
            rf,
        );
        self.commit(records)
    }

    /// Sets (`Some`) or removes (`None`) topic config keys after validating each one.
    pub fn alter_topic_configs(
        &mut self,
        name: &str,
        changes: &[(String, Option<String>)],
        validate_only: bool,
    ) -> Result<(), ControllerError> {
        if self.image().topic(name).is_none() {
            return Err(ControllerError::UnknownTopic(format!(
                "topic '{name}' does not exist"
            )));
        }
        for (k, v) in changes {
            match v {
                Some(v) => validate_topic_config(k, v).map_err(ControllerError::InvalidConfig)?,
                None => {
                    if crate::config::topic_config(k).is_none() {
                        return Err(ControllerError::InvalidConfig(format!(
                            "unknown topic config '{k}'"
                        )));
                    }
                }
            }
        }
        if validate_only {
            return Ok(());
        }
        let resource = ConfigResource::Topic(name.to_string());
        let image = self.image();
        let mut overrides = image.configs_of(&resource);
        for (k, v) in changes {
            match v {
                Some(v) => overrides.insert(k.clone(), v.clone()),
                None => overrides.remove(k),
            };
        }
        let mut records = config_records(resource, changes);
        if let Some(topic) = image.topic(name) {
            // In the same batch: a lower min.insync.replicas must clear the ELRs before any
            // leader lets the high watermark move on it.
            records.extend(election::when_configured(
                &image,
                &self.election,
                topic,
                &overrides,
            ));
        }
        self.commit(records)
    }

    /// The cluster's id: the one recorded, else `proposed`, recorded now.
    pub fn claim_cluster_id(&mut self, proposed: String) -> Result<String, ControllerError> {
        if let Some(id) = self.image().cluster_id.clone() {
            return Ok(id);
        }
        self.commit(vec![MetadataRecord::ClusterId {
            cluster_id: proposed.clone(),
        }])?;
        Ok(proposed)
    }

    /// Reserves the next `size` producer ids durably; returns the first of them.
    pub fn allocate_producer_ids(&mut self, size: i64) -> Result<i64, ControllerError> {
        assert!(size > 0, "a producer id block is not empty");
        let start = self.image().next_producer_id;
        self.commit(vec![MetadataRecord::ProducerIds {
            next_block_start: start + size,
        }])?;
        Ok(start)
    }

    /// Runs an election of `kind` for `partitions` (`None`: all) and writes its changes in
    /// one batch; returns each partition's outcome.
    pub fn elect_leaders(
        &mut self,
        kind: ElectionKind,
        partitions: Option<&[(String, Vec<i32>)]>,
    ) -> Result<Vec<ElectionResult>, ControllerError> {
        let (results, records) = balance::elect(&self.image(), &self.election, kind, partitions);
        self.commit(records)?;
        Ok(results)
    }

    /// Gives leadership back to the preferred replicas of every broker whose share of
    /// partitions led elsewhere exceeds `max_imbalance_percent` (when they are live and in
    /// sync); returns how many partitions moved.
    pub fn balance_leaders(
        &mut self,
        max_imbalance_percent: u32,
    ) -> Result<usize, ControllerError> {
        let image = self.image();
        let wanted = balance::imbalanced(&image, max_imbalance_percent);
        if wanted.is_empty() {
            return Ok(0);
        }
        let (_, records) = balance::elect(
            &image,
            &self.election,
            ElectionKind::Preferred,
            Some(&wanted),
        );
        let moved = records.len();
        self.commit(records)?;
        tracing::info!(
            partitions = moved,
            "leadership moved back to preferred replicas"
        );
        Ok(moved)
    }

    /// Starts, replaces or (`None`) cancels the reassignment of each `(topic, partition,
    /// target)`, all in one batch; one outcome per item, in order.
    pub fn alter_partition_reassignments(
        &mut self,
        items: &[(String, i32, Option<Vec<i32>>)],
    ) -> Result<Vec<Result<(), ControllerError>>, ControllerError> {
        let image = self.image();
        let registered = |b: i32| image.brokers.contains_key(&b);
        let live = |b: i32| image.is_live(b);
        let mut seen = std::collections::BTreeSet::new();
        let mut records = Vec::new();
        let outcomes: Vec<Result<(), ControllerError>> = items
            .iter()
            .map(|(name, partition, target)| {
                let what = format!("{name}-{partition}");
                let topic = image.topic(name);
                let Some(p) = topic.and_then(|t| t.partitions.get(partition)) else {
                    return Err(ControllerError::UnknownTopic(format!(
                        "partition {what} does not exist"
                    )));
                };
                if !seen.insert((name, *partition)) {
                    return Err(ControllerError::InvalidRequest(format!(
                        "partition {what} appears more than once in the request"
                    )));
                }
                let topic_id = topic.expect("found above").topic_id;
                let outcome = match target {
                    Some(target) => reassignment::start(topic_id, p, target, &registered, &live),
                    None => reassignment::cancel(topic_id, p, &live),
                };
                match outcome {
                    Ok(record) => {
                        records.extend(record);
                        Ok(())
                    }
                    Err(reassignment::Refusal::InvalidAssignment(m)) => Err(
                        ControllerError::InvalidReplicaAssignment(format!("{what}: {m}")),
                    ),
                    Err(reassignment::Refusal::NoneInProgress) => {
                        Err(ControllerError::NoReassignmentInProgress(format!(
                            "no reassignment of partition {what} is in progress"
                        )))
                    }
                }
            })
            .collect();
        let started = records.len();
        self.commit(records)?;
        if started > 0 {
            tracing::info!(partitions = started, "partition reassignments changed");
        }
        Ok(outcomes)
    }

    /// Records broker config changes the broker has already validated.
    pub fn alter_broker_configs(
        &mut self,
        node_id: i32,
        changes: &[(String, Option<String>)],
    ) -> Result<(), ControllerError> {
        self.commit(config_records(ConfigResource::Broker(node_id), changes))
    }
}

/// The partition `item` names, as the image has it.
fn current_leader_and_isr(
    image: &MetadataImage,
    item: &AlterPartitionItem,
) -> Result<(LeaderAndIsr, Vec<i32>), ControllerError> {
    let topic = image.topic_by_id(&item.topic_id).ok_or_else(|| {
        ControllerError::UnknownTopicId(format!("no topic has id {}", item.topic_id))
    })?;
    let p = topic.partitions.get(&item.partition).ok_or_else(|| {
        ControllerError::UnknownTopic(format!(
            "topic '{}' has no partition {}",
            topic.name, item.partition
        ))
    })?;
    Ok((
        LeaderAndIsr {
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr: p.isr.clone(),
        },
        p.elr.clone(),
    ))
}

/// Checks one AlterPartition item from `broker_id` against the partition's `current`
/// state and its replicas; returns the ISR asked for.
fn validate_isr_change(
    image: &MetadataImage,
    broker_id: i32,
    item: &AlterPartitionItem,
    current: &LeaderAndIsr,
) -> Result<Vec<i32>, ControllerError> {
    let what = format!("partition {}-{}", item.topic_id, item.partition);
    if item.leader_epoch > current.leader_epoch || item.partition_epoch > current.partition_epoch {
        return Err(ControllerError::NotController(format!(
            "{what}: the request's leader epoch {} / partition epoch {} are newer than this controller's {} / {}",
            item.leader_epoch, item.partition_epoch, current.leader_epoch, current.partition_epoch
        )));
    }
    if item.leader_epoch < current.leader_epoch {
        return Err(ControllerError::FencedLeaderEpoch(format!(
            "{what}: leader epoch {} is older than the current {}",
            item.leader_epoch, current.leader_epoch
        )));
    }
    if broker_id != current.leader {
        return Err(ControllerError::InvalidRequest(format!(
            "{what}: broker {broker_id} is not its leader ({})",
            current.leader
        )));
    }
    if item.partition_epoch < current.partition_epoch {
        return Err(ControllerError::InvalidUpdateVersion(format!(
            "{what}: partition epoch {} is older than the current {}",
            item.partition_epoch, current.partition_epoch
        )));
    }
    let replicas = image
        .topic_by_id(&item.topic_id)
        .and_then(|t| t.partitions.get(&item.partition))
        .map(|p| p.replicas.clone())
        .unwrap_or_default();
    let isr: Vec<i32> = item.new_isr.iter().map(|(id, _)| *id).collect();
    let mut seen = std::collections::BTreeSet::new();
    for id in &isr {
        if !seen.insert(*id) {
            return Err(ControllerError::InvalidRequest(format!(
                "{what}: broker {id} is twice in the new ISR {isr:?}"
            )));
        }
        if !replicas.contains(id) {
            return Err(ControllerError::InvalidRequest(format!(
                "{what}: broker {id} of the new ISR {isr:?} is not a replica ({replicas:?})"
            )));
        }
    }
    if !seen.contains(&current.leader) {
        return Err(ControllerError::InvalidRequest(format!(
            "{what}: the new ISR {isr:?} leaves out the leader {}",
            current.leader
        )));
    }
    for (id, epoch) in &item.new_isr {
        if *id == current.leader {
            continue;
        }
        let eligible = image
            .brokers
            .get(id)
            .is_some_and(|b| !b.fenced && (*epoch < 0 || b.epoch == *epoch));
        if !eligible {
            return Err(ControllerError::IneligibleReplica(format!(
                "{what}: broker {id} (epoch {epoch}) is not a live broker of that epoch"
            )));
        }
    }
    Ok(isr)
}

/// INVALID_REPLICA_ASSIGNMENT unless a manual `assignment` (empty: none) gives each of the
/// `count` new partitions numbered from `first` `replication_factor` distinct live brokers.
fn check_manual_assignment(
    image: &MetadataImage,
    assignment: &[Vec<i32>],
    first: i32,
    count: i32,
    replication_factor: usize,
) -> Result<(), ControllerError> {
    if assignment.is_empty() {
        return Ok(());
    }
    let bad = |m: String| Err(ControllerError::InvalidReplicaAssignment(m));
    if assignment.len() != count as usize {
        return bad(format!(
            "{count} new partitions but {} assignments",
            assignment.len()
        ));
    }
    for (index, replicas) in (first..).zip(assignment) {
        let distinct: std::collections::BTreeSet<i32> = replicas.iter().copied().collect();
        if replicas.len() != replication_factor || distinct.len() != replicas.len() {
            return bad(format!(
                "partition {index}: replicas {replicas:?} are not {replication_factor} distinct brokers"
            ));
        }
        if let Some(b) = replicas.iter().find(|b| !image.is_live(**b)) {
            return bad(format!(
                "partition {index}: broker {b} is not a live broker"
            ));
        }
    }
    Ok(())
}

/// POLICY_VIOLATION for an operation creating more than [`MAX_PARTITIONS_PER_OPERATION`].
pub fn check_partition_bound(new_partitions: i32) -> Result<(), ControllerError> {
    if new_partitions > MAX_PARTITIONS_PER_OPERATION {
        return Err(ControllerError::PolicyViolation(format!(
            "excessively large number of partitions per request: {new_partitions} asked, at most {MAX_PARTITIONS_PER_OPERATION}"
        )));
    }
    Ok(())
}

fn config_records(
    resource: ConfigResource,
    changes: &[(String, Option<String>)],
) -> Vec<MetadataRecord> {
    changes
        .iter()
        .map(|(name, value)| MetadataRecord::Config {
            resource: resource.clone(),
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

/// The records of partitions `first..first + count` of a topic, each led by its first
/// replica at epoch 0: as a checked manual `assignment` gives them, or (when it is empty)
/// placed over `brokers` (the topic id seeds the placement, so later partitions continue the
/// same pattern).
fn partition_records(
    topic_id: Uuid,
    first: i32,
    count: i32,
    assignment: &[Vec<i32>],
    brokers: &[Placeable<'_>],
    rf: usize,
) -> Vec<MetadataRecord> {
    let replicas = if assignment.is_empty() {
        assign_replicas(brokers, first, count, rf, topic_id.as_u64_pair().0)
    } else {
        assignment.to_vec()
    };
    replicas
        .into_iter()
        .zip(first..)
        .map(|(replicas, partition)| MetadataRecord::new_partition(topic_id, partition, replicas))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::record::MetadataBatch;

    /// A writer that commits at once, in memory.
    struct MemoryWriter {
        image: Arc<MetadataImage>,
    }

    impl MetadataWriter for MemoryWriter {
        fn image(&self) -> Arc<MetadataImage> {
            self.image.clone()
        }

        fn write(&mut self, records: Vec<MetadataRecord>) -> Result<i64, ControllerError> {
            let batch = MetadataBatch {
                base_offset: self.image.next_offset(),
                epoch: 0,
                records,
            };
            let (next, _) = self
                .image
                .apply_batch(&batch)
                .map_err(|e| ControllerError::Internal(e.to_string()))?;
            self.image = Arc::new(next);
            Ok(batch.last_offset())
        }

        fn term(&self) -> u64 {
            1
        }
    }

    const SESSION: Duration = Duration::from_secs(9);

    fn registration(node_id: i32, incarnation_id: Uuid) -> BrokerRegistration<'static> {
        BrokerRegistration {
            node_id,
            incarnation_id,
            host: "127.0.0.1",
            port: 9092,
            rack: None,
            previous_broker_epoch: -1,
        }
    }

    fn heartbeat(node_id: i32, broker_epoch: i64, metadata_offset: i64) -> BrokerHeartbeat {
        BrokerHeartbeat {
            node_id,
            broker_epoch,
            metadata_offset,
            want_shut_down: false,
        }
    }

    /// Registers broker `node_id` and heartbeats it live; returns its epoch.
    fn join(c: &mut Controller, node_id: i32, now: Instant) -> i64 {
        let epoch = c
            .register_broker(registration(node_id, Uuid::new_v4()), now)
            .unwrap();
        let reply = c
            .broker_heartbeat(heartbeat(node_id, epoch, c.image().offset), now)
            .unwrap();
        assert!(!reply.fenced && reply.caught_up);
        epoch
    }

    fn controller_with_brokers(n: i32) -> Controller {
        let mut c = Controller::new(
            Box::new(MemoryWriter {
                image: Arc::new(MetadataImage::default()),
            }),
            SESSION,
            ElectionDefaults::default(),
        );
        for id in 1..=n {
            join(&mut c, id, Instant::now());
        }
        c
    }

    fn controller() -> Controller {
        controller_with_brokers(1)
    }

    fn new_topic_rf(name: &str, num_partitions: i32, replication_factor: i16) -> NewTopic<'_> {
        NewTopic {
            name,
            num_partitions,
            replication_factor,
            configs: &[],
            assignment: &[],
        }
    }

    fn new_topic<'a>(name: &'a str, parts: i32, configs: &'a [(String, String)]) -> NewTopic<'a> {
        NewTopic {
            name,
            num_partitions: parts,
            replication_factor: 1,
            configs,
            assignment: &[],
        }
    }

    #[test]
    fn create_grow_alter_delete() {
        let mut c = controller();
        let cfg = vec![("segment.bytes".to_string(), "1024".to_string())];
        c.create_topic(new_topic("t", 2, &cfg), false).unwrap();
        c.create_partitions("t", 4, &[], false).unwrap();
        c.alter_topic_configs("t", &[("retention.ms".into(), Some("1000".into()))], false)
            .unwrap();
        c.create_topic(new_topic("gone", 1, &[]), false).unwrap();
        c.delete_topic("gone").unwrap();
        let image = c.image();
        let t = image.topic("t").unwrap();
        assert_eq!(t.partitions.len(), 4);
        assert!(image.topic("gone").is_none());
        let cfg = image.configs_of(&ConfigResource::Topic("t".into()));
        assert_eq!(cfg.get("segment.bytes").map(String::as_str), Some("1024"));
        assert_eq!(cfg.get("retention.ms").map(String::as_str), Some("1000"));
    }

    #[test]
    fn refuses_bad_requests() {
        let mut c = controller();
        c.create_topic(new_topic("t", 2, &[]), false).unwrap();
        assert!(matches!(
            c.create_topic(new_topic("huge", i32::MAX, &[]), false),
            Err(ControllerError::PolicyViolation(_))
        ));
        assert!(matches!(
            c.create_partitions("t", MAX_PARTITIONS_PER_OPERATION + 3, &[], false),
            Err(ControllerError::PolicyViolation(_))
        ));
        assert!(c.image().topic("huge").is_none());
        assert!(matches!(
            c.create_topic(new_topic("t", 1, &[]), false),
            Err(ControllerError::TopicAlreadyExists(_))
        ));
        assert!(matches!(
            c.create_topic(new_topic("bad name", 1, &[]), false),
            Err(ControllerError::InvalidTopic(_))
        ));
        assert!(matches!(
            c.create_topic(new_topic("x", 0, &[]), false),
            Err(ControllerError::InvalidPartitions(_))
        ));
        let bad = vec![("segment.bytes".to_string(), "nope".to_string())];
        assert!(matches!(
            c.create_topic(new_topic("y", 1, &bad), false),
            Err(ControllerError::InvalidConfig(_))
        ));
        let rf3 = new_topic_rf("z", 1, 3);
        assert!(matches!(
            c.create_topic(rf3, false),
            Err(ControllerError::InvalidReplicationFactor(_))
        ));
        assert!(matches!(
            c.create_partitions("t", 1, &[], false),
            Err(ControllerError::InvalidPartitions(_))
        ));
        assert!(matches!(
            c.delete_topic("nope"),
            Err(ControllerError::UnknownTopic(_))
        ));
        c.create_topic(new_topic("v", 1, &[]), true).unwrap();
        assert!(
            c.image().topic("v").is_none(),
            "validate_only creates nothing"
        );
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("ok.name_1-2").is_ok());
    }

    #[test]
    fn producer_id_blocks_never_repeat() {
        let mut c = controller();
        let a = c.allocate_producer_ids(1000).unwrap();
        let b = c.allocate_producer_ids(1000).unwrap();
        assert_eq!(b, a + 1000);
        assert_eq!(c.image().next_producer_id, b + 1000);
    }

    #[test]
    fn last_written_follows_each_committed_batch() {
        let mut c = controller();
        assert_eq!(c.last_written(), 1, "the registration and the unfencing");
        let id = c.create_topic(new_topic("t", 3, &[]), false).unwrap();
        assert_eq!(c.last_written(), 5, "topic and three partitions");
        assert!(c
            .create_topic(new_topic("u", 1, &[]), true)
            .unwrap()
            .is_nil());
        assert_eq!(c.last_written(), 5, "validate-only writes nothing");
        c.create_partitions("t", 4, &[], false).unwrap();
        assert_eq!(c.last_written(), 6);
        assert_eq!(c.image().topic("t").unwrap().topic_id, id);
    }

    #[test]
    fn the_cluster_id_is_claimed_once() {
        let mut c = controller();
        assert_eq!(c.claim_cluster_id("first".into()).unwrap(), "first");
        assert_eq!(c.claim_cluster_id("second".into()).unwrap(), "first");
        assert_eq!(c.image().cluster_id.as_deref(), Some("first"));
    }

    #[test]
    fn a_broker_is_fenced_until_caught_up_and_after_its_session_expires() {
        let t0 = Instant::now();
        let mut c = controller_with_brokers(0);
        let epoch = c
            .register_broker(registration(1, Uuid::new_v4()), t0)
            .unwrap();
        assert!(c.image().brokers[&1].fenced, "a new registration is fenced");
        // Not caught up with its own registration yet: stays fenced.
        let reply = c
            .broker_heartbeat(heartbeat(1, epoch, epoch - 1), t0)
            .unwrap();
        assert_eq!(
            reply,
            HeartbeatReply {
                caught_up: false,
                fenced: true
            }
        );
        let reply = c.broker_heartbeat(heartbeat(1, epoch, epoch), t0).unwrap();
        assert_eq!(
            reply,
            HeartbeatReply {
                caught_up: true,
                fenced: false
            }
        );
        assert!(c.image().is_live(1));
        assert!(c.fence_expired_brokers(t0 + SESSION).unwrap().is_empty());
        let later = t0 + SESSION + Duration::from_millis(1);
        assert_eq!(c.fence_expired_brokers(later).unwrap(), vec![1]);
        assert!(!c.image().is_live(1));
        // Heartbeating again unfences it.
        let reply = c
            .broker_heartbeat(heartbeat(1, epoch, c.image().offset), later)
            .unwrap();
        assert!(!reply.fenced);
        assert!(matches!(
            c.broker_heartbeat(heartbeat(1, epoch + 100, 0), later),
            Err(ControllerError::StaleBrokerEpoch(_))
        ));
    }

    #[test]
    fn a_broker_that_missed_its_heartbeat_may_be_fenced_early_unless_heard_since() {
        let t0 = Instant::now();
        let mut c = controller_with_brokers(0);
        let mut epochs = Vec::new();
        for id in 1..=2 {
            let epoch = c
                .register_broker(registration(id, Uuid::new_v4()), t0)
                .unwrap();
            c.broker_heartbeat(heartbeat(id, epoch, c.image().offset), t0)
                .unwrap();
            epochs.push(epoch);
        }
        let after = Duration::from_secs(1);
        assert!(c.overdue_brokers(t0 + after, after).is_empty());
        let late = t0 + after + Duration::from_millis(1);
        let overdue = c.overdue_brokers(late, after);
        assert_eq!(
            overdue.iter().map(|b| b.node_id).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(
            (overdue[0].host.as_str(), overdue[0].port),
            ("127.0.0.1", 9092)
        );
        // Broker 1 is heard from before the probe's answer came back: it stays.
        c.broker_heartbeat(heartbeat(1, epochs[0], c.image().offset), late)
            .unwrap();
        assert!(!c.fence_unreachable(&overdue[0], late, after).unwrap());
        assert!(c.image().is_live(1));
        assert!(c.fence_unreachable(&overdue[1], late, after).unwrap());
        assert!(!c.image().is_live(2));
        assert!(
            !c.fence_unreachable(&overdue[1], late, after).unwrap(),
            "already fenced"
        );
    }

    #[test]
    fn a_second_process_with_a_live_node_id_is_refused() {
        let t0 = Instant::now();
        let mut c = controller_with_brokers(0);
        let first = Uuid::new_v4();
        let epoch = c.register_broker(registration(1, first), t0).unwrap();
        assert_eq!(
            c.register_broker(registration(1, first), t0).unwrap(),
            epoch,
            "the same process registering again keeps its epoch"
        );
        c.broker_heartbeat(heartbeat(1, epoch, epoch), t0).unwrap();
        assert!(matches!(
            c.register_broker(registration(1, Uuid::new_v4()), t0 + Duration::from_secs(1)),
            Err(ControllerError::DuplicateBrokerRegistration(_))
        ));
        // Once the old session expired, a restarted process takes over (fenced at first).
        let later = t0 + SESSION + Duration::from_secs(1);
        let second = c
            .register_broker(registration(1, Uuid::new_v4()), later)
            .unwrap();
        assert!(second > epoch);
        assert!(c.image().brokers[&1].fenced);
    }

    #[test]
    fn a_manual_assignment_is_kept_and_checked() {
        let mut c = controller_with_brokers(3);
        let assigned = [vec![3, 1], vec![2, 3]];
        let topic = NewTopic {
            assignment: &assigned,
            ..new_topic_rf("manual", 2, 2)
        };
        let id = c.create_topic(topic, false).unwrap();
        let image = c.image();
        let t = image.topic_by_id(&id).unwrap();
        assert_eq!(t.partitions[&0].replicas, vec![3, 1]);
        assert_eq!(
            t.partitions[&0].leader, 3,
            "the first assigned replica leads"
        );
        assert_eq!(t.partitions[&1].replicas, vec![2, 3]);
        for bad in [
            vec![vec![1, 1]],
            vec![vec![1, 9]],
            vec![vec![1]],
            vec![vec![1, 2], vec![2, 3]],
        ] {
            let topic = NewTopic {
                assignment: &bad,
                ..new_topic_rf("bad", 1, 2)
            };
            assert!(
                matches!(
                    c.create_topic(topic, false),
                    Err(ControllerError::InvalidReplicaAssignment(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn new_partitions_keep_their_manual_assignment() {
        let mut c = controller_with_brokers(3);
        let id = c.create_topic(new_topic_rf("grown", 1, 2), false).unwrap();
        for bad in [
            vec![vec![1, 1]],
            vec![vec![1, 9]],
            vec![vec![1]],
            vec![vec![1, 2]; 3],
        ] {
            assert!(
                matches!(
                    c.create_partitions("grown", 3, &bad, false),
                    Err(ControllerError::InvalidReplicaAssignment(_))
                ),
                "{bad:?}"
            );
        }
        c.create_partitions("grown", 3, &[vec![3, 1], vec![2, 3]], false)
            .unwrap();
        let image = c.image();
        let t = image.topic_by_id(&id).unwrap();
        assert_eq!(t.partitions[&1].replicas, vec![3, 1]);
        assert_eq!(
            t.partitions[&1].leader, 3,
            "the first assigned replica leads"
        );
        assert_eq!(t.partitions[&2].replicas, vec![2, 3]);
    }

    #[test]
    fn an_unclean_restart_is_told_by_the_previous_broker_epoch() {
        let now = Instant::now();
        let mut c = controller_with_brokers(3);
        let topic = NewTopic {
            configs: &[("min.insync.replicas".to_string(), "3".to_string())],
            ..new_topic_rf("t", 1, 3)
        };
        let id = c.create_topic(topic, false).unwrap();
        let epoch = |c: &Controller, b: i32| c.image().brokers[&b].epoch;
        // 3 and then 2 shut down: out of the ISR {1} below the minimum, both eligible.
        for b in [3, 2] {
            let mut hb = heartbeat(b, epoch(&c, b), c.image().offset);
            hb.want_shut_down = true;
            c.broker_heartbeat(hb, now).unwrap();
        }
        let elr = |c: &Controller| {
            let mut elr = c.image().topic_by_id(&id).unwrap().partitions[&0]
                .elr
                .clone();
            elr.sort();
            elr
        };
        assert_eq!(elr(&c), vec![2, 3]);
        // 2 comes back from a clean shutdown (naming its epoch), 3 from a crash.
        let clean = BrokerRegistration {
            previous_broker_epoch: epoch(&c, 2),
            ..registration(2, Uuid::new_v4())
        };
        c.register_broker(clean, now).unwrap();
        assert_eq!(elr(&c), vec![2, 3]);
        c.register_broker(registration(3, Uuid::new_v4()), now)
            .unwrap();
        assert_eq!(elr(&c), vec![2], "3 may have lost unflushed records");
    }

    #[test]
    fn replicas_go_to_live_brokers_only() {
        let t0 = Instant::now();
        let mut c = controller_with_brokers(3);
        let three = new_topic_rf("three", 6, 3);
        c.create_topic(three, false).unwrap();
        let image = c.image();
        let leaders: BTreeMap<i32, usize> =
            image
                .topic("three")
                .unwrap()
                .partitions
                .values()
                .fold(BTreeMap::new(), |mut m, p| {
                    *m.entry(p.leader).or_default() += 1;
                    m
                });
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        // Broker 2 and 3 keep heartbeating; broker 1 goes silent and is fenced.
        let later = t0 + SESSION + Duration::from_secs(1);
        for id in [2, 3] {
            let epoch = image.brokers[&id].epoch;
            c.broker_heartbeat(heartbeat(id, epoch, image.offset), later)
                .unwrap();
        }
        assert_eq!(c.fence_expired_brokers(later).unwrap(), vec![1]);
        let rf3 = new_topic_rf("again", 1, 3);
        assert!(matches!(
            c.create_topic(rf3, false),
            Err(ControllerError::InvalidReplicationFactor(_))
        ));
        let rf2 = new_topic_rf("two", 4, 2);
        c.create_topic(rf2, false).unwrap();
        for p in c.image().topic("two").unwrap().partitions.values() {
            assert!(!p.replicas.contains(&1), "{:?}", p.replicas);
        }
    }

    /// A topic of one partition over brokers 1..=n (n live brokers, replication factor
    /// `rf`), and its leader, replicas and id.
    fn one_partition(n: i32, rf: i16) -> (Controller, Uuid, PartitionImage) {
        let mut c = controller_with_brokers(n);
        let id = c.create_topic(new_topic_rf("t", 1, rf), false).unwrap();
        let p = c.image().topic("t").unwrap().partitions[&0].clone();
        (c, id, p)
    }

    fn epoch_of(c: &Controller, broker: i32) -> i64 {
        c.image().brokers[&broker].epoch
    }

    /// An AlterPartition from `from` for partition 0 of `topic_id` at the given epochs.
    fn alter(
        c: &Controller,
        from: i32,
        topic_id: Uuid,
        epochs: (i32, i32),
        isr: &[i32],
    ) -> AlterPartition {
        AlterPartition {
            broker_id: from,
            broker_epoch: epoch_of(c, from),
            partitions: vec![AlterPartitionItem {
                topic_id,
                partition: 0,
                leader_epoch: epochs.0,
                partition_epoch: epochs.1,
                new_isr: isr.iter().map(|id| (*id, epoch_of(c, *id))).collect(),
            }],
        }
    }

    fn only(mut results: Vec<AlterPartitionResult>) -> Result<LeaderAndIsr, ControllerError> {
        assert_eq!(results.len(), 1);
        results.remove(0).outcome
    }

    #[test]
    fn a_reassignment_completes_when_its_new_replica_joins_the_isr() {
        let (mut c, id, p) = one_partition(4, 2);
        let old_leader = p.leader;
        let stays = p.replicas[1];
        let new = (1..=4).find(|b| !p.replicas.contains(b)).unwrap();
        let item = |target: Option<Vec<i32>>| ("t".to_string(), 0, target);
        let outcomes = c
            .alter_partition_reassignments(&[
                item(Some(vec![stays, new])),
                ("t".into(), 5, Some(vec![1])),
                ("nope".into(), 0, Some(vec![1])),
            ])
            .unwrap();
        assert!(outcomes[0].is_ok());
        assert!(matches!(outcomes[1], Err(ControllerError::UnknownTopic(_))));
        assert!(matches!(outcomes[2], Err(ControllerError::UnknownTopic(_))));
        let moving = c.image().topic("t").unwrap().partitions[&0].clone();
        assert_eq!(moving.adding_replicas, vec![new]);
        assert_eq!(moving.removing_replicas, vec![old_leader]);
        // Refused: to an unknown broker, duplicated, empty.
        for target in [vec![9], vec![new, new], vec![]] {
            let r = c
                .alter_partition_reassignments(&[item(Some(target))])
                .unwrap();
            assert!(matches!(
                r[0],
                Err(ControllerError::InvalidReplicaAssignment(_))
            ));
        }
        // The new replica joins the ISR: the reassignment completes in the same batch and
        // the removed leader hands over.
        let reply = only(
            c.alter_partition(alter(
                &c,
                old_leader,
                id,
                (moving.leader_epoch, moving.partition_epoch),
                &[old_leader, stays, new],
            ))
            .unwrap(),
        )
        .unwrap();
        let done = c.image().topic("t").unwrap().partitions[&0].clone();
        assert_eq!(done.replicas, vec![stays, new]);
        assert_eq!(done.isr, vec![stays, new]);
        assert_eq!(done.leader, stays);
        assert!(!done.is_reassigning());
        assert_eq!(
            (
                reply.leader,
                reply.leader_epoch,
                reply.partition_epoch,
                reply.isr
            ),
            (
                stays,
                done.leader_epoch,
                done.partition_epoch,
                done.isr.clone()
            )
        );
        let r = c.alter_partition_reassignments(&[item(None)]).unwrap();
        assert!(matches!(
            r[0],
            Err(ControllerError::NoReassignmentInProgress(_))
        ));
    }

    #[test]
    fn a_leader_shrinks_the_isr_and_the_partition_epoch_is_bumped() {
        let (mut c, id, p) = one_partition(3, 3);
        let follower = p.replicas[1];
        let before = c.last_written();
        let reply = only(
            c.alter_partition(alter(&c, p.leader, id, (0, 0), &[p.leader, follower]))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            reply,
            LeaderAndIsr {
                leader: p.leader,
                leader_epoch: 0,
                partition_epoch: 1,
                isr: vec![p.leader, follower],
            }
        );
        assert_eq!(c.last_written(), before + 1, "one PartitionChange record");
        let now = c.image().topic("t").unwrap().partitions[&0].clone();
        assert_eq!(
            (now.isr, now.partition_epoch),
            (vec![p.leader, follower], 1)
        );
        assert_eq!(now.replicas, p.replicas, "replicas unchanged");
        // And expands it back, from the new partition epoch.
        let reply = only(
            c.alter_partition(alter(&c, p.leader, id, (0, 1), &p.replicas))
                .unwrap(),
        )
        .unwrap();
        assert_eq!((reply.isr, reply.partition_epoch), (p.replicas.clone(), 2));
    }

    #[test]
    fn stale_or_newer_epochs_are_refused() {
        let (mut c, id, p) = one_partition(3, 3);
        let shrunk = [p.leader, p.replicas[1]];
        only(
            c.alter_partition(alter(&c, p.leader, id, (0, 0), &shrunk))
                .unwrap(),
        )
        .unwrap();
        let written = c.last_written();
        let refused = |c: &mut Controller, epochs| {
            only(
                c.alter_partition(alter(c, p.leader, id, epochs, &[p.leader]))
                    .unwrap(),
            )
            .unwrap_err()
        };
        assert!(matches!(
            refused(&mut c, (0, 0)),
            ControllerError::InvalidUpdateVersion(_)
        ));
        assert!(matches!(
            refused(&mut c, (-1, 1)),
            ControllerError::FencedLeaderEpoch(_)
        ));
        assert!(matches!(
            refused(&mut c, (1, 1)),
            ControllerError::NotController(_)
        ));
        assert!(matches!(
            refused(&mut c, (0, 2)),
            ControllerError::NotController(_)
        ));
        assert_eq!(c.last_written(), written, "refusals write nothing");
        // A leader registered with another epoch is refused as a whole.
        let mut stale = alter(&c, p.leader, id, (0, 1), &[p.leader]);
        stale.broker_epoch += 100;
        assert!(matches!(
            c.alter_partition(stale),
            Err(ControllerError::StaleBrokerEpoch(_))
        ));
    }

    #[test]
    fn only_the_leader_may_change_the_isr_and_only_to_its_replicas() {
        let (mut c, id, p) = one_partition(4, 2);
        let follower = p.replicas[1];
        let outsider = (1..=4).find(|b| !p.replicas.contains(b)).unwrap();
        let err = only(
            c.alter_partition(alter(&c, follower, id, (0, 0), &[follower]))
                .unwrap(),
        )
        .unwrap_err();
        assert!(matches!(err, ControllerError::InvalidRequest(_)), "{err}");
        for isr in [
            vec![p.leader, follower, outsider],
            vec![p.leader, p.leader],
            vec![follower],
            vec![],
        ] {
            let err = only(
                c.alter_partition(alter(&c, p.leader, id, (0, 0), &isr))
                    .unwrap(),
            )
            .unwrap_err();
            assert!(
                matches!(err, ControllerError::InvalidRequest(_)),
                "{isr:?}: {err}"
            );
        }
        assert_eq!(
            c.image().topic("t").unwrap().partitions[&0].partition_epoch,
            0
        );
    }

    #[test]
    fn a_fenced_or_restarted_broker_cannot_join_the_isr() {
        let (mut c, id, p) = one_partition(3, 3);
        let (a, b) = (p.replicas[1], p.replicas[2]);
        only(
            c.alter_partition(alter(&c, p.leader, id, (0, 0), &[p.leader]))
                .unwrap(),
        )
        .unwrap();
        // Broker a asks to be fenced; broker b is named with an epoch it no longer has.
        c.broker_heartbeat(
            BrokerHeartbeat {
                want_shut_down: true,
                ..heartbeat(a, epoch_of(&c, a), c.image().offset)
            },
            Instant::now(),
        )
        .unwrap();
        let err = only(
            c.alter_partition(alter(&c, p.leader, id, (0, 1), &[p.leader, a]))
                .unwrap(),
        )
        .unwrap_err();
        assert!(
            matches!(err, ControllerError::IneligibleReplica(_)),
            "{err}"
        );
        let mut stale_b = alter(&c, p.leader, id, (0, 1), &[p.leader, b]);
        stale_b.partitions[0].new_isr[1].1 += 1000;
        let err = only(c.alter_partition(stale_b).unwrap()).unwrap_err();
        assert!(
            matches!(err, ControllerError::IneligibleReplica(_)),
            "{err}"
        );
        // Without an epoch (-1), a live broker is accepted.
        let mut any_b = alter(&c, p.leader, id, (0, 1), &[p.leader, b]);
        any_b.partitions[0].new_isr[1].1 = -1;
        let reply = only(c.alter_partition(any_b).unwrap()).unwrap();
        assert_eq!((reply.isr, reply.partition_epoch), (vec![p.leader, b], 2));
    }

    #[test]
    fn an_unchanged_isr_writes_nothing_and_each_partition_is_answered_on_its_own() {
        let (mut c, id, p) = one_partition(3, 3);
        let written = c.last_written();
        let reply = only(
            c.alter_partition(alter(&c, p.leader, id, (0, 0), &p.replicas))
                .unwrap(),
        )
        .unwrap();
        assert_eq!((reply.isr, reply.partition_epoch), (p.replicas.clone(), 0));
        assert_eq!(c.last_written(), written, "nothing written");
        // One request: an unknown topic id, an unknown partition, a good shrink.
        let mut request = alter(&c, p.leader, id, (0, 0), &[p.leader]);
        let good = request.partitions[0].clone();
        request.partitions = vec![
            AlterPartitionItem {
                topic_id: Uuid::new_v4(),
                ..good.clone()
            },
            AlterPartitionItem {
                partition: 7,
                ..good.clone()
            },
            good,
        ];
        let results = c.alter_partition(request).unwrap();
        assert!(matches!(
            results[0].outcome,
            Err(ControllerError::UnknownTopicId(_))
        ));
        assert!(matches!(
            (&results[1].partition, &results[1].outcome),
            (7, Err(ControllerError::UnknownTopic(_)))
        ));
        assert_eq!(results[2].outcome.as_ref().unwrap().isr, vec![p.leader]);
        assert_eq!(c.last_written(), written + 1);
    }
}
