//! The broker's shared state: the controller, the metadata listener with the published image
//! and config, and the hosted partitions. One `Arc<Broker>` is shared by every connection.
//!
//! An admin change runs in two steps under the controller mutex: the controller validates
//! and appends it ([`Broker::commit`]), then the listener applies the committed batches and
//! publishes them. Architecture invariant: the image a handler sees is published after the
//! replica manager hosts its partitions, so a topic visible in Metadata is writable and
//! readable, unless opening its log failed, which the change's caller is told.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gregor_metadata::quorum::QuorumError;
use gregor_metadata::{
    ConfigResource, ControllerError, ControllerOp, ControllerReply, MetadataImage,
};

use crate::blocking;
use crate::controller_seat::{ControllerSeat, QUORUM_START_TIMEOUT};
use crate::inter_broker::InterBrokerClient;
use crate::isr_manager::IsrManager;
use crate::lifecycle::Lifecycle;
use crate::metadata_listener::{ApplyFailure, MetadataListener};

/// How long an admin change waits for this broker to apply what it committed.
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);
use gregor_storage::log_dir::LogDir;

use crate::clock::SharedClock;
use crate::config::BrokerConfig;
use crate::coordinator_services::{CoordinatorServices, TxnMarker};
use crate::group::coordinator::{GroupCoordinator, OFFSETS_TOPIC};
use crate::handlers::write_txn_markers::NotWritten;
use crate::partition::{AppendError, Partition};
use crate::replica_manager::ReplicaManager;
use crate::replication_throttle::ReplicationThrottle;
use crate::txn::coordinator::{TxnCoordinator, TXN_STATE_TOPIC};

/// Errors that stop the broker from starting or shutting down cleanly.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("storage: {0}")]
    Storage(#[from] gregor_storage::error::StorageError),
    #[error("metadata: {0}")]
    Metadata(#[from] ControllerError),
    #[error("metadata: {0}")]
    Apply(#[from] ApplyFailure),
    #[error("metadata quorum: {0}")]
    Quorum(#[from] QuorumError),
    #[error("{0}")]
    Start(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// Why an admin change failed: refused by the controller, or committed but not applied here.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Refused(#[from] ControllerError),
    #[error("the change was committed but not applied on this broker: {0}")]
    NotApplied(#[from] ApplyFailure),
}

/// How long a transaction marker is retried (its partition's leader down, moving or not
/// answering) before the coordinator gives up for now (and retries the transaction later).
const MARKER_TIMEOUT: Duration = Duration::from_secs(15);
/// The pause between two attempts of a marker.
const MARKER_RETRY: Duration = Duration::from_millis(100);

/// Where a transactional id's coordinator is: the leader of its `__transaction_state`
/// partition.
pub enum TxnCoordinatorAt {
    /// This broker (or the topic does not exist yet: the local coordinator answers).
    Here,
    There(gregor_metadata::image::BrokerImage),
    /// The partition has no live leader now.
    Unavailable,
}

/// State shared by all connections of one broker.
pub struct Broker {
    pub node_id: i32,
    pub cluster_id: String,
    /// The one clock every component reads time from.
    pub clock: SharedClock,
    /// This node's voter (or observer) of the metadata quorum and its controller.
    seat: Arc<ControllerSeat>,
    /// The published image and effective config.
    metadata: Arc<MetadataListener>,
    /// Applies the quorum's committed batches; ends when the quorum stops.
    listener_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub replicas: Arc<ReplicaManager>,
    pub groups: GroupCoordinator,
    pub txns: TxnCoordinator,
    /// The current block of producer ids: (next to hand out, end of block).
    producer_ids: Mutex<(i64, i64)>,
    /// This process's registration with the active controller.
    pub(crate) lifecycle: Lifecycle,
    /// The ISR changes this broker's led partitions ask the controller for.
    pub isr_manager: IsrManager,
    /// Connections to other brokers for markers and transaction verification.
    pub(crate) inter_broker: InterBrokerClient,
    /// The quotas of replication throttled by `*.replication.throttled.*` (one for what
    /// this broker sends as leader, one for what it copies as follower).
    pub leader_throttle: ReplicationThrottle,
    pub follower_throttle: ReplicationThrottle,
    /// The Prometheus series (`metrics.listener`).
    pub metrics: crate::metrics::BrokerMetrics,
}

impl Broker {
    /// Opens the data directory, replays metadata, recovers logs and registers this broker
    /// with the advertised endpoint `host:port`.
    pub fn open(
        config: BrokerConfig,
        host: &str,
        port: u16,
        clock: SharedClock,
    ) -> Result<Broker, BrokerError> {
        let node_id = config.node_id();
        // Checked before anything on disk changes: a misconfigured node does not half-start.
        let cluster = crate::cluster_config::cluster_config(&config)?;
        let dir = config.log_dir();
        let nofile = crate::fd_limit::raise_to_hard_limit();
        let open_files = gregor_storage::OpenFiles::new(config.open_files_max(nofile));
        tracing::info!(
            open_file_limit = nofile,
            segment_files_open_max = open_files.max(),
            "open-file budget"
        );
        let log_dir = LogDir::open(&dir, clock.clone())?.with_open_files(open_files);
        let local_cluster_id = crate::meta_properties::read(&dir, node_id)?;
        let metrics = crate::metrics::BrokerMetrics::default();
        let (seat, events) = ControllerSeat::start(
            cluster,
            &dir,
            local_cluster_id.as_deref(),
            config.session_timeout(),
            config.election_defaults(),
            metrics.controller_times(),
        )?;
        let replicas = Arc::new(ReplicaManager::new(node_id, log_dir));
        let metadata = Arc::new(MetadataListener::new(node_id, config.clone()));
        let listener_thread = MetadataListener::spawn(metadata.clone(), replicas.clone(), events)
            .map_err(|source| BrokerError::Io {
            context: "starting the metadata listener".into(),
            source,
        })?;
        let previous_epoch = replicas.log_dir().previous_broker_epoch();
        let groups = GroupCoordinator::new(config.coordinator_config(), clock.clone());
        let txns = TxnCoordinator::new(config.txn_config(), clock.clone());
        let mut broker = Broker {
            node_id,
            // Set below, once the quorum says which cluster this is.
            cluster_id: String::new(),
            clock,
            seat: Arc::new(seat),
            metadata,
            listener_thread: Mutex::new(Some(listener_thread)),
            replicas,
            groups,
            txns,
            producer_ids: Mutex::new((0, 0)),
            lifecycle: Lifecycle::new(host, port, config.rack(), previous_epoch),
            isr_manager: IsrManager::default(),
            inter_broker: InterBrokerClient::default(),
            leader_throttle: ReplicationThrottle::new(std::time::Instant::now()),
            follower_throttle: ReplicationThrottle::new(std::time::Instant::now()),
            metrics,
        };
        broker.cluster_id = broker.seat.claim_cluster_id(&dir, local_cluster_id)?;
        // Long enough for another process's session under this node id to expire.
        broker.join_cluster(Instant::now() + QUORUM_START_TIMEOUT + config.session_timeout())?;
        let caught_up = broker.controller_image_offset();
        match broker
            .metadata
            .wait_applied(-1, caught_up, QUORUM_START_TIMEOUT)
        {
            // A replica that cannot be opened is offline alone (and retried): the broker
            // serves every other one.
            Err(ApplyFailure::Storage(e)) => tracing::error!(
                error = %e,
                offline = broker.replicas.offline().len(),
                "started with replicas that could not be opened"
            ),
            other => other?,
        }
        broker.remove_stray_partition_dirs(&broker.image());
        broker.groups.sync_ownership(&broker);
        broker.txns.sync_ownership(&broker);
        Ok(broker)
    }

    /// The offset of the quorum's image as this node's voter has it.
    fn controller_image_offset(&self) -> i64 {
        self.seat.image().offset
    }

    /// The offset of the last metadata record this broker applied.
    pub fn applied_metadata_offset(&self) -> i64 {
        self.metadata.applied_offset()
    }

    /// Whether the active controller last said this broker is fenced.
    pub fn is_fenced(&self) -> bool {
        self.lifecycle.is_fenced()
    }

    /// This node's seat in the metadata quorum.
    pub(crate) fn seat(&self) -> &Arc<ControllerSeat> {
        &self.seat
    }

    /// The metadata quorum as this node's voter sees it (None if it stopped).
    pub fn quorum_status(&self) -> Option<gregor_metadata::quorum::QuorumStatus> {
        self.seat.status()
    }

    /// The metadata quorum as its leader sees it (DescribeQuorum is answered with this by
    /// any broker, as KRaft brokers forward it to the controller).
    pub fn leader_quorum_status(&self) -> Result<gregor_metadata::quorum::QuorumStatus, String> {
        self.seat.leader_status(Duration::from_secs(5))
    }

    /// The node clients are told is the controller, where admin requests go: the quorum's
    /// leader when it is a live broker, else this broker (which forwards them), as KRaft
    /// brokers name a live broker.
    pub fn active_controller_id(&self) -> i32 {
        match self.seat.leader() {
            Some(leader) if self.image().is_live(leader) => leader,
            _ => self.node_id,
        }
    }

    /// The error for a partition this broker does not host: NOT_LEADER_OR_FOLLOWER when it
    /// exists (another broker leads it), UNKNOWN_TOPIC_OR_PARTITION when it does not.
    pub fn not_hosted_error(
        &self,
        topic: &str,
        index: i32,
    ) -> kafka_protocol::error::ResponseError {
        if self.replicas.is_offline(topic, index) {
            kafka_protocol::error::ResponseError::KafkaStorageError
        } else if self.partition_exists(topic, index) {
            kafka_protocol::error::ResponseError::NotLeaderOrFollower
        } else {
            kafka_protocol::error::ResponseError::UnknownTopicOrPartition
        }
    }

    /// A receiver that sees every later publication of the metadata image.
    pub fn subscribe_metadata(&self) -> tokio::sync::watch::Receiver<i64> {
        self.metadata.subscribe()
    }

    /// The partition `topic`/`index` if this broker leads it; else the error a client
    /// gets: [`Self::not_hosted_error`], or NOT_LEADER_OR_FOLLOWER at a follower.
    pub fn led_partition(
        &self,
        topic: &str,
        index: i32,
    ) -> Result<Arc<Partition>, kafka_protocol::error::ResponseError> {
        let partition = self
            .replicas
            .get(topic, index)
            .ok_or_else(|| self.not_hosted_error(topic, index))?;
        if !partition.is_leader() {
            return Err(kafka_protocol::error::ResponseError::NotLeaderOrFollower);
        }
        Ok(partition)
    }

    /// Where the coordinator of `transactional_id` is, from the published metadata.
    pub fn txn_coordinator_at(&self, transactional_id: &str) -> TxnCoordinatorAt {
        let image = self.image();
        let Some(topic) = image.topic(TXN_STATE_TOPIC) else {
            return TxnCoordinatorAt::Here;
        };
        let index = self.txns.partition_for(transactional_id);
        match topic.partitions.get(&index).map(|p| p.leader) {
            Some(leader) if leader == self.node_id => TxnCoordinatorAt::Here,
            Some(leader) => match image.brokers.get(&leader).filter(|b| !b.fenced) {
                Some(b) => TxnCoordinatorAt::There(b.clone()),
                None => TxnCoordinatorAt::Unavailable,
            },
            None => TxnCoordinatorAt::Unavailable,
        }
    }

    /// The published metadata image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.metadata.image()
    }

    /// The effective broker configuration.
    pub fn config(&self) -> Arc<BrokerConfig> {
        self.metadata.config()
    }

    /// The effective value of topic config `key` for `topic`: the topic's own setting, else
    /// the broker's default for it, else Kafka's default.
    pub fn topic_config_value(&self, topic: &str, key: &str) -> String {
        self.image()
            .configs_of(&ConfigResource::Topic(topic.to_string()))
            .get(key)
            .cloned()
            .or_else(|| self.config().topic_default(key))
            .or_else(|| gregor_metadata::config::topic_config(key).map(|d| d.default.to_string()))
            .unwrap_or_default()
    }

    /// A producer id never handed out before, reserving a new block in the metadata log
    /// when the current one is used up.
    pub fn next_producer_id(&self) -> Result<i64, CommitError> {
        let mut ids = self
            .producer_ids
            .lock()
            .expect("producer id mutex poisoned");
        if ids.0 >= ids.1 {
            // Kafka's AllocateProducerIds to the active controller.
            let frame = crate::controller_apis::allocate_producer_ids_frame(
                self.node_id,
                self.lifecycle.epoch(),
            );
            let (start, len) = blocking::block_in_place_or_run(|| {
                self.seat
                    .call_kafka(frame, APPLY_TIMEOUT)
                    .and_then(|answer| crate::controller_apis::allocate_producer_ids_reply(&answer))
            })
            .map_err(CommitError::Refused)?;
            *ids = (start, start + i64::from(len));
        }
        ids.0 += 1;
        Ok(ids.0 - 1)
    }

    /// The configuration from file and overrides only.
    pub fn static_config(&self) -> &BrokerConfig {
        self.metadata.static_config()
    }

    /// Runs one controller operation at the active controller (here, or forwarded to it),
    /// then waits until this broker applied what it wrote before returning. A failure to
    /// apply is logged and returned: the change is in the metadata log, but this broker
    /// could not act on all of it.
    pub fn commit(&self, op: ControllerOp) -> Result<ControllerReply, CommitError> {
        let timeout = APPLY_TIMEOUT;
        blocking::block_in_place_or_run(|| {
            let before = self.metadata.applied_offset();
            let outcome = self.seat.execute(op, timeout);
            // Refused or not, the caller then sees what the controller saw: a topic another
            // request created a moment ago is published here before "already exists" is.
            let written = match &outcome {
                Ok((_, written)) => *written,
                Err(_) => self.seat.image().offset,
            };
            if written > before {
                self.metadata.wait_applied(before, written, timeout)?;
            }
            Ok(outcome?.0)
        })
    }

    /// Creates `__consumer_offsets` (compacted, offsets.topic.* settings) if it is missing.
    pub fn ensure_offsets_topic(&self) -> Result<(), CommitError> {
        self.ensure_internal_topic(OFFSETS_TOPIC, "offsets.topic")
    }

    /// Creates `__transaction_state` (compacted, transaction.state.log.* settings) if it is
    /// missing.
    pub fn ensure_txn_state_topic(&self) -> Result<(), CommitError> {
        self.ensure_internal_topic(TXN_STATE_TOPIC, "transaction.state.log")
    }

    /// Creates the compacted internal topic `name` from the broker settings
    /// `{prefix}.num.partitions`, `.replication.factor` and `.segment.bytes`.
    fn ensure_internal_topic(&self, name: &str, prefix: &str) -> Result<(), CommitError> {
        if self.image().topic(name).is_some() {
            return Ok(());
        }
        let config = self.config();
        let get = |k: &str| {
            config
                .get(&format!("{prefix}.{k}"))
                .unwrap_or_default()
                .to_string()
        };
        let mut rf = get("replication.factor").parse::<i16>().unwrap_or(3);
        let single_node = self
            .static_config()
            .get("controller.quorum.voters")
            .unwrap_or_default()
            .trim()
            .is_empty();
        if single_node {
            // A single node (the default) cannot hold Kafka's default of 3 replicas: it gets
            // one, as Kafka's single-node quickstart configures. In a cluster, the
            // coordinator is not available until enough brokers are live (Kafka's way).
            rf = rf.min(1);
        }
        let mut configs = vec![
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("segment.bytes".to_string(), get("segment.bytes")),
        ];
        if name == TXN_STATE_TOPIC {
            // Kafka's transaction.state.log.min.isr, capped by the replicas there are.
            let min_isr = get("min.isr").parse::<i16>().unwrap_or(2).min(rf).max(1);
            configs.push(("min.insync.replicas".to_string(), min_isr.to_string()));
        }
        let result = self.commit(ControllerOp::CreateTopic {
            name: name.to_string(),
            num_partitions: get("num.partitions").parse().unwrap_or(50),
            replication_factor: rf,
            configs,
            validate_only: false,
            assignment: Vec::new(),
        });
        match result {
            Ok(_) | Err(CommitError::Refused(ControllerError::TopicAlreadyExists(_))) => {
                // The first group's requests follow at once: its partitions led here are
                // taken on now rather than by the next ownership sync.
                if name == OFFSETS_TOPIC {
                    self.groups.sync_ownership(self);
                } else {
                    self.txns.sync_ownership(self);
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Creates `name` with broker defaults if auto-creation is on; returns whether it exists.
    pub fn auto_create_topic(&self, name: &str) -> Result<bool, CommitError> {
        if self.image().topic(name).is_some() {
            return Ok(true);
        }
        if name == OFFSETS_TOPIC {
            return self.ensure_offsets_topic().map(|_| true);
        }
        if name == TXN_STATE_TOPIC {
            return self.ensure_txn_state_topic().map(|_| true);
        }
        let config = self.config();
        if !config.auto_create_topics() {
            return Ok(false);
        }
        let result = self.commit(ControllerOp::CreateTopic {
            name: name.to_string(),
            num_partitions: config.num_partitions(),
            replication_factor: config.default_replication_factor(),
            configs: Vec::new(),
            validate_only: false,
            assignment: Vec::new(),
        });
        match result {
            Ok(_) | Err(CommitError::Refused(ControllerError::TopicAlreadyExists(_))) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Partition directories left by topics deleted while the broker was down.
    fn remove_stray_partition_dirs(&self, image: &MetadataImage) {
        for (topic, index) in self.replicas.log_dir().partition_dirs() {
            if topic == "__cluster_metadata" {
                continue;
            }
            let known = image
                .topic(&topic)
                .is_some_and(|t| t.partitions.contains_key(&index));
            if !known {
                let path = self
                    .replicas
                    .log_dir()
                    .path()
                    .join(format!("{topic}-{index}"));
                tracing::warn!(path = %path.display(), "removing data of a partition unknown to metadata");
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    tracing::error!(path = %path.display(), error = %e, "could not remove stray partition");
                }
            }
        }
    }

    /// Flushes all partitions, writes checkpoints and the clean-shutdown marker.
    pub fn shutdown(&self) -> Result<(), BrokerError> {
        let epoch = self.lifecycle.epoch();
        self.replicas.shutdown(
            self.clock.now_ms(),
            self.config().producer_id_expiration_ms(),
            (epoch >= 0).then_some(epoch),
        )?;
        self.seat.shutdown();
        let listener = self.listener_thread.lock().expect("listener lock").take();
        if let Some(thread) = listener {
            let _ = thread.join();
        }
        Ok(())
    }
}

impl Broker {
    /// Writes `marker` to `topic`-`index`, which this broker must lead, and lets the
    /// partition's own coordinator (of committed offsets, on `__consumer_offsets`) act on
    /// it; its offset. `Ok(None)`: the partition is not hosted here.
    pub(crate) fn write_local_txn_marker(
        &self,
        topic: &str,
        index: i32,
        marker: TxnMarker,
        now_ms: i64,
    ) -> Result<Option<i64>, AppendError> {
        let Some(partition) = self.replicas.get(topic, index) else {
            return Ok(None);
        };
        let offset = partition.write_txn_marker(
            marker.producer_id,
            marker.producer_epoch,
            marker.commit,
            marker.coordinator_epoch,
            now_ms,
        )?;
        if topic == OFFSETS_TOPIC {
            // The offsets the transaction committed on this partition become visible (or
            // are dropped) with the marker.
            self.groups
                .complete_txn(marker.producer_id, index, marker.commit);
        }
        Ok(Some(offset))
    }
}

impl CoordinatorServices for Broker {
    fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.replicas.get(topic, index)
    }

    fn partition_count(&self, topic: &str) -> Option<i32> {
        self.image().topic(topic).map(|t| t.partitions.len() as i32)
    }

    fn partition_exists(&self, topic: &str, index: i32) -> bool {
        self.image()
            .topic(topic)
            .is_some_and(|t| t.partitions.contains_key(&index))
    }

    /// Writes `marker` where `topic`-`index` is led: here, or on its leader with
    /// WriteTxnMarkers, retried (following leadership as it moves) until written or
    /// [`MARKER_TIMEOUT`] passes. `Ok(None)`: the partition no longer exists.
    fn write_txn_marker(
        &self,
        topic: &str,
        index: i32,
        marker: TxnMarker,
        now_ms: i64,
    ) -> Result<Option<i64>, String> {
        let deadline = Instant::now() + MARKER_TIMEOUT;
        loop {
            let image = self.image();
            let Some(p) = image.topic(topic).and_then(|t| t.partitions.get(&index)) else {
                return Ok(None);
            };
            let outcome = if p.leader == self.node_id {
                match self.write_local_txn_marker(topic, index, marker, now_ms) {
                    Err(AppendError::NotLeader) => Err("leadership is moving".to_string()),
                    done => return done.map_err(|e| e.to_string()),
                }
            } else if let Some(endpoint) = image.brokers.get(&p.leader).filter(|b| !b.fenced) {
                match crate::handlers::write_txn_markers::send(self, endpoint, topic, index, marker)
                {
                    Err(NotWritten::Refused(why)) => return Err(why),
                    sent => sent.map_err(|e| e.to_string()),
                }
            } else {
                Err(format!("{topic}-{index} has no live leader"))
            };
            match outcome {
                Ok(()) => return Ok(Some(-1)),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!(
                        "the marker for {topic}-{index} was not written in time: {e}"
                    ))
                }
                Err(e) => {
                    tracing::debug!(topic, partition = index, error = %e, "transaction marker not written yet: retrying");
                    std::thread::sleep(MARKER_RETRY);
                }
            }
        }
    }

    fn min_insync_replicas(&self, topic: &str) -> usize {
        self.topic_config_value(topic, "min.insync.replicas")
            .parse()
            .unwrap_or(1)
    }

    fn next_producer_id(&self) -> Result<i64, String> {
        Broker::next_producer_id(self).map_err(|e| e.to_string())
    }
}
