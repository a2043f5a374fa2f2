//! The broker's shared state: the controller, the metadata listener with the published image
//! and config, and the hosted partitions. One `Arc<Broker>` is shared by every connection.
//!
//! An admin change runs in two steps under the controller mutex: the controller validates
//! and appends it ([`Broker::commit`]), then the listener applies the committed batches and
//! publishes them. Architecture invariant: the image a handler sees is published after the
//! replica manager hosts its partitions, so a topic visible in Metadata is writable and
//! readable, unless opening its log failed, which the change's caller is told.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gregor_metadata::controller_op::WireRefusal;
use gregor_metadata::quorum::{QuorumConfig, QuorumError, QuorumHandle};
use gregor_metadata::{
    ConfigResource, Controller, ControllerError, ControllerOp, ControllerReply, MetadataImage,
};

use crate::blocking;
use crate::lifecycle::Lifecycle;
use crate::metadata_listener::{ApplyFailure, MetadataListener};

/// Where the metadata quorum keeps its log, vote and snapshot (Kafka's directory name).
const METADATA_DIR: &str = "__cluster_metadata-0";
/// How long start-up waits for the quorum to elect a leader and replay.
const QUORUM_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an admin change waits for this broker to apply what it committed.
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);
use gregor_storage::log_dir::LogDir;

use crate::clock::SharedClock;
use crate::config::BrokerConfig;
use crate::coordinator_services::{CoordinatorServices, TxnMarker};
use crate::group::coordinator::{GroupCoordinator, OFFSETS_TOPIC};
use crate::partition::Partition;
use crate::replica_manager::ReplicaManager;
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

/// State shared by all connections of one broker.
pub struct Broker {
    pub node_id: i32,
    pub cluster_id: String,
    /// The one clock every component reads time from.
    pub clock: SharedClock,
    controller: Arc<Mutex<Controller>>,
    /// This node's voter of the metadata quorum (a quorum of one today).
    quorum: Arc<QuorumHandle>,
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
        let log_dir = LogDir::open(&dir, clock.clone())?;
        let local_cluster_id = read_meta_properties(&dir, node_id)?;
        let metadata_dir = dir.join(METADATA_DIR);
        let mut quorum_config = QuorumConfig::new(node_id, cluster.voters, metadata_dir.clone());
        quorum_config.observer_listen = cluster.observer_listen;
        let (quorum, events) = QuorumHandle::start(quorum_config)?;
        let quorum = Arc::new(quorum);
        if quorum.wait_until_caught_up(QUORUM_START_TIMEOUT).is_none() {
            return Err(BrokerError::Start(format!(
                "the metadata quorum elected no leader within {QUORUM_START_TIMEOUT:?}"
            )));
        }
        let replicas = Arc::new(ReplicaManager::new(node_id, log_dir));
        let metadata = Arc::new(MetadataListener::new(node_id, config.clone()));
        let listener_thread = MetadataListener::spawn(metadata.clone(), replicas.clone(), events)
            .map_err(|source| BrokerError::Io {
            context: "starting the metadata listener".into(),
            source,
        })?;
        let controller = Arc::new(Mutex::new(Controller::new(
            Box::new(quorum.clone()),
            config.session_timeout(),
        )));
        {
            // Operations other nodes forward while this node is the active controller.
            let controller = controller.clone();
            quorum.set_controller(Arc::new(move |op| {
                execute_locally(&controller, op).map_err(|e| WireRefusal::from(&e))
            }));
        }
        if quorum.leader() == Some(node_id) {
            import_first_release_metadata(
                &metadata_dir,
                &mut controller.lock().expect("controller lock poisoned"),
            )?;
        } else if metadata_dir.join("metadata.log").exists() {
            return Err(BrokerError::Start(format!(
                "{} holds the metadata of a single-node release: start this node alone once (without controller.quorum.voters) to import it",
                metadata_dir.display()
            )));
        }
        let groups = GroupCoordinator::new(config.coordinator_config(), clock.clone());
        let txns = TxnCoordinator::new(config.txn_config(), clock.clone());
        let mut broker = Broker {
            node_id,
            // Set below, once the quorum says which cluster this is.
            cluster_id: String::new(),
            clock,
            quorum,
            metadata,
            listener_thread: Mutex::new(Some(listener_thread)),
            controller,
            replicas,
            groups,
            txns,
            producer_ids: Mutex::new((0, 0)),
            lifecycle: Lifecycle::new(host, port, config.rack()),
        };
        broker.cluster_id = broker.claim_cluster_id(&dir, local_cluster_id)?;
        // Long enough for another process's session under this node id to expire.
        broker.join_cluster(Instant::now() + QUORUM_START_TIMEOUT + config.session_timeout())?;
        let caught_up = broker.controller_image_offset();
        broker
            .metadata
            .wait_applied(-1, caught_up, QUORUM_START_TIMEOUT)?;
        broker.remove_stray_partition_dirs(&broker.image());
        broker.groups.load(&broker).map_err(|e| BrokerError::Io {
            context: format!("replaying {OFFSETS_TOPIC}"),
            source: std::io::Error::other(e),
        })?;
        broker.txns.load(&broker).map_err(|e| BrokerError::Io {
            context: format!("replaying {TXN_STATE_TOPIC}"),
            source: std::io::Error::other(e),
        })?;
        Ok(broker)
    }

    /// [`Self::commit`] at start-up, retried while no controller is elected yet (or it does
    /// not answer in time), for at most `QUORUM_START_TIMEOUT`.
    fn commit_at_start(
        &self,
        op: ControllerOp,
        what: &str,
    ) -> Result<ControllerReply, BrokerError> {
        let deadline = std::time::Instant::now() + QUORUM_START_TIMEOUT;
        loop {
            match self.commit(op.clone()) {
                Ok(reply) => return Ok(reply),
                Err(CommitError::Refused(
                    e @ (ControllerError::NotController(_) | ControllerError::Timeout(_)),
                )) if std::time::Instant::now() < deadline => {
                    tracing::info!(error = %e, "waiting for an active controller to {what}");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(BrokerError::Start(format!("cannot {what}: {e}"))),
            }
        }
    }

    /// The cluster's id from the quorum (recorded by the first active controller, from its
    /// `meta.properties` or fresh). A data directory of another cluster is refused
    /// (INCONSISTENT_CLUSTER_ID); a new one gets `meta.properties` with the quorum's id.
    fn claim_cluster_id(&self, dir: &Path, local: Option<String>) -> Result<String, BrokerError> {
        let proposed = local
            .clone()
            .unwrap_or_else(|| base64_url(uuid::Uuid::new_v4().as_bytes()));
        let op = ControllerOp::ClaimClusterId {
            proposed: proposed.clone(),
        };
        let id = match self.commit_at_start(op, "learn the cluster id")? {
            ControllerReply::ClusterId(id) => id,
            other => unreachable!("a cluster id, not {other:?}"),
        };
        match local {
            Some(mine) if mine != id => {
                tracing::error!(data_cluster_id = %mine, quorum_cluster_id = %id, "INCONSISTENT_CLUSTER_ID");
                Err(BrokerError::Start(format!(
                    "INCONSISTENT_CLUSTER_ID: the data in {} belongs to cluster {mine}, but the metadata quorum is cluster {id}",
                    dir.display()
                )))
            }
            Some(_) => Ok(id),
            None => {
                write_meta_properties(dir, &id, self.node_id)?;
                Ok(id)
            }
        }
    }

    /// The offset of the quorum's image as this node's voter has it.
    fn controller_image_offset(&self) -> i64 {
        self.quorum.image().offset
    }

    /// The offset of the last metadata record this broker applied.
    pub fn applied_metadata_offset(&self) -> i64 {
        self.metadata.applied_offset()
    }

    /// Whether the active controller last said this broker is fenced.
    pub fn is_fenced(&self) -> bool {
        self.lifecycle.is_fenced()
    }

    /// Runs `f` on this node's controller (under its mutex, off the async workers).
    pub(crate) fn with_controller<T>(&self, f: impl FnOnce(&mut Controller) -> T) -> T {
        blocking::block_in_place_or_run(|| {
            f(&mut self.controller.lock().expect("controller lock poisoned"))
        })
    }

    /// The metadata quorum as this node's voter sees it (None if it stopped).
    pub fn quorum_status(&self) -> Option<gregor_metadata::quorum::QuorumStatus> {
        self.quorum.status().ok()
    }

    /// The node clients are told is the active controller: the quorum's leader (this node
    /// while none is known).
    pub fn active_controller_id(&self) -> i32 {
        self.quorum.leader().unwrap_or(self.node_id)
    }

    /// The error for a partition this broker does not host: NOT_LEADER_OR_FOLLOWER when it
    /// exists (another broker leads it), UNKNOWN_TOPIC_OR_PARTITION when it does not.
    pub fn not_hosted_error(
        &self,
        topic: &str,
        index: i32,
    ) -> kafka_protocol::error::ResponseError {
        if self.partition_exists(topic, index) {
            kafka_protocol::error::ResponseError::NotLeaderOrFollower
        } else {
            kafka_protocol::error::ResponseError::UnknownTopicOrPartition
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
        const BLOCK: i64 = 1000;
        let mut ids = self
            .producer_ids
            .lock()
            .expect("producer id mutex poisoned");
        if ids.0 >= ids.1 {
            let start = match self.commit(ControllerOp::AllocateProducerIds { size: BLOCK })? {
                ControllerReply::ProducerIds(start) => start,
                other => unreachable!("a producer id block, not {other:?}"),
            };
            *ids = (start, start + BLOCK);
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
        self.commit_within(op, APPLY_TIMEOUT)
    }

    /// [`Self::commit`], waiting at most `timeout` for a forwarded operation's answer and
    /// again for its application here.
    pub(crate) fn commit_within(
        &self,
        op: ControllerOp,
        timeout: Duration,
    ) -> Result<ControllerReply, CommitError> {
        blocking::block_in_place_or_run(|| {
            let before = self.metadata.applied_offset();
            let outcome = if self.quorum.leader() == Some(self.node_id) {
                execute_locally(&self.controller, op)
            } else {
                self.quorum
                    .forward(op, timeout)
                    .map_err(ControllerError::from)
            };
            // Refused or not, the caller then sees what the controller saw: a topic another
            // request created a moment ago is published here before "already exists" is.
            let written = match &outcome {
                Ok((_, written)) => *written,
                Err(_) => self.quorum.image().offset,
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
        let configs = vec![
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("segment.bytes".to_string(), get("segment.bytes")),
        ];
        let result = self.commit(ControllerOp::CreateTopic {
            name: name.to_string(),
            num_partitions: get("num.partitions").parse().unwrap_or(50),
            replication_factor: rf,
            configs,
            validate_only: false,
        });
        match result {
            Ok(_) | Err(CommitError::Refused(ControllerError::TopicAlreadyExists(_))) => Ok(()),
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
        self.replicas.shutdown(
            self.clock.now_ms(),
            self.config().producer_id_expiration_ms(),
        )?;
        self.quorum.shutdown();
        let listener = self.listener_thread.lock().expect("listener lock").take();
        if let Some(thread) = listener {
            let _ = thread.join();
        }
        Ok(())
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

    fn write_txn_marker(
        &self,
        topic: &str,
        index: i32,
        marker: TxnMarker,
        now_ms: i64,
    ) -> Result<Option<i64>, String> {
        let Some(partition) = self.replicas.get(topic, index) else {
            return Ok(None);
        };
        let offset = partition
            .write_txn_marker(
                marker.producer_id,
                marker.producer_epoch,
                marker.commit,
                marker.coordinator_epoch,
                now_ms,
            )
            .map_err(|e| e.to_string())?;
        if topic == OFFSETS_TOPIC {
            // The offsets the transaction committed on this partition become visible (or
            // are dropped) with the marker.
            self.groups
                .complete_txn(marker.producer_id, index, marker.commit);
        }
        Ok(Some(offset))
    }

    fn next_producer_id(&self) -> Result<i64, String> {
        Broker::next_producer_id(self).map_err(|e| e.to_string())
    }
}

/// Runs `op` on this node's controller; returns its reply and the offset of the last record
/// written so far (what a caller waits to have applied).
fn execute_locally(
    controller: &Mutex<Controller>,
    op: ControllerOp,
) -> Result<(ControllerReply, i64), ControllerError> {
    let mut controller = controller.lock().expect("controller lock poisoned");
    let reply = controller.execute(op, Instant::now())?;
    Ok((
        reply,
        controller.last_written().max(controller.image().offset),
    ))
}

/// Imports the metadata log of the first, single-node release (`metadata.log` in the metadata
/// directory) into the quorum once, as one batch, then renames it `metadata.log.imported`.
/// A quorum that already holds metadata imported it before a crash left the file there.
fn import_first_release_metadata(
    dir: &Path,
    controller: &mut Controller,
) -> Result<(), BrokerError> {
    let legacy = dir.join("metadata.log");
    if !legacy.exists() {
        return Ok(());
    }
    if controller.image().offset < 0 {
        let image =
            gregor_metadata::log::read_legacy_log(&legacy).map_err(ControllerError::from)?;
        if image.offset >= 0 {
            controller.import(&image)?;
            tracing::info!(
                topics = image.topics.len(),
                records = image.offset + 1,
                "imported the metadata log of a single-node release into the metadata quorum"
            );
        }
    }
    let imported = dir.join("metadata.log.imported");
    std::fs::rename(&legacy, &imported).map_err(|source| BrokerError::Io {
        context: format!("renaming {} after importing it", legacy.display()),
        source,
    })
}

/// The `cluster.id` of `meta.properties`, if the data directory has one. A directory
/// formatted for another `node.id` is refused: its partitions and votes belong to that node.
fn read_meta_properties(dir: &Path, node_id: i32) -> Result<Option<String>, BrokerError> {
    let path = dir.join("meta.properties");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(BrokerError::Io {
                context: format!("meta.properties at {}", path.display()),
                source,
            })
        }
    };
    let props = crate::config::parse_properties(&text);
    let get = |key: &str| props.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    if let Some(recorded) = get("node.id") {
        if recorded.trim() != node_id.to_string() {
            return Err(BrokerError::Start(format!(
                "the data directory {} was formatted for node.id {}, but this node is node.id {node_id}: give each node its own log.dirs",
                dir.display(),
                recorded.trim()
            )));
        }
    }
    Ok(get("cluster.id"))
}

/// Writes `meta.properties` (temporary file, then rename).
fn write_meta_properties(dir: &Path, cluster_id: &str, node_id: i32) -> Result<(), BrokerError> {
    let path = dir.join("meta.properties");
    let io = |source| BrokerError::Io {
        context: format!("meta.properties at {}", path.display()),
        source,
    };
    let text = format!("version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n");
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// Kafka prints cluster ids as URL-safe base64 without padding (22 characters).
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn cluster_ids_are_22_url_safe_chars() {
        let id = super::base64_url(&[0xff; 16]);
        assert_eq!(id.len(), 22);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
}
