//! The metadata quorum: the metadata log replicated by Raft (the `openraft` crate, 0.9 line)
//! among the controller voters, as in KRaft.
//!
//! This module is the only place Raft types appear. Its face to the rest of Gregor:
//! [`Quorum::start`] runs one voter (its Raft node, its durable log and vote, and the
//! listener other voters connect to) or one observer (a Raft learner: a broker that is not a
//! controller follows the log without voting; it asks the leader to add it, with the address
//! its listener got, and asks again after every restart); [`Quorum::propose`] appends a batch of
//! [`MetadataRecord`]s through the leader (the active controller) and returns once a
//! majority has it; every committed batch, in log order, comes out of the
//! [`QuorumEvent`] receiver as a [`MetadataBatch`] (or, after a snapshot was installed, as
//! a whole image). Elections, terms, log matching and snapshot transfer are the library's;
//! this module only stores, applies and carries what it is given.
//!
//! - `log_store`: the Raft log and vote on disk, fsynced before the library is told they are
//!   stored (so a voter never answers on something it could forget).
//! - `state_machine`: applies committed entries to a [`MetadataImage`], builds and installs
//!   snapshots (the image as records), and forwards what it applied.
//! - `network`: voter-to-voter RPCs over TCP, one length-prefixed JSON frame per message.

mod handle;
mod log_store;
mod network;
mod state_machine;

pub use handle::QuorumHandle;
pub use network::{ControllerHandler, KafkaHandler};

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, Config, SnapshotPolicy};
use tokio::sync::mpsc;

use crate::controller_op::{ControllerOp, ForwardedOutcome, RefusalKind, WireRefusal};
use crate::image::MetadataImage;
use crate::record::{MetadataBatch, MetadataRecord, StoredRecord};

/// A batch of records proposed for the metadata log: one Raft entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Proposal {
    pub records: Vec<StoredRecord>,
}

/// What applying one proposal did: the offsets its records took, or why it did not apply
/// (every voter refuses it the same way: the outcome is part of the replicated state).
pub type Applied = Result<(i64, i64), String>;

openraft::declare_raft_types!(
    /// Gregor's Raft types: entries carry metadata proposals.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
);

type NodeId = u64;
type Raft = openraft::Raft<TypeConfig>;

/// One voter's (or observer's) settings.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    /// This node's id: one of `voters`, or for an observer none of them.
    pub node_id: i32,
    /// Every voter's id and its quorum (CONTROLLER listener) address.
    pub voters: BTreeMap<i32, SocketAddr>,
    /// For an observer: where it listens for the leader's replication (port 0: any).
    pub observer_listen: Option<SocketAddr>,
    /// The cluster this node belongs to, when it knows (its `meta.properties`): quorum
    /// messages of another cluster are refused both ways.
    pub cluster_id: Option<String>,
    /// Where the Raft log, vote and snapshot live.
    pub dir: PathBuf,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Snapshot after this many entries since the last snapshot; older entries go.
    pub snapshot_every_entries: u64,
}

impl QuorumConfig {
    /// Defaults tuned for fast failover on one machine: 50 ms heartbeats, elections after
    /// 300-600 ms without a leader.
    pub fn new(node_id: i32, voters: BTreeMap<i32, SocketAddr>, dir: PathBuf) -> QuorumConfig {
        QuorumConfig {
            node_id,
            voters,
            observer_listen: None,
            cluster_id: None,
            dir,
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot_every_entries: 1000,
        }
    }
}

/// What the quorum hands to the broker, in log order.
#[derive(Debug, Clone)]
pub enum QuorumEvent {
    /// A committed batch; its base offset follows the previous event.
    Batch(MetadataBatch),
    /// The whole image, replacing everything before it (start-up, or an installed snapshot).
    Image(Arc<MetadataImage>),
}

/// Why the quorum did not start.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("invalid quorum configuration: {0}")]
    Config(String),
    #[error("quorum storage at {path}: {source}")]
    Storage {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen for quorum traffic on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("raft: {0}")]
    Raft(String),
}

/// Why a proposal was not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This voter is not the leader; the leader's id when known.
    #[error("not the active controller (leader: {leader:?})")]
    NotLeader { leader: Option<i32> },
    /// Committed, but the records did not apply to the image (a controller bug).
    #[error("the batch was committed but does not apply: {0}")]
    Rejected(String),
    /// No majority answered in time.
    #[error("the metadata quorum did not commit in time")]
    Timeout,
    /// The Raft node stopped.
    #[error("the metadata quorum stopped: {0}")]
    Stopped(String),
}

/// The quorum's state as this voter sees it (DescribeQuorum, `gregor cluster quorum`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuorumStatus {
    pub node_id: i32,
    pub leader: Option<i32>,
    /// The Raft term: the metadata log's epoch.
    pub epoch: u64,
    /// Index of this voter's last Raft entry.
    pub last_index: Option<u64>,
    /// Index of the last entry applied here.
    pub applied_index: Option<u64>,
    pub voters: BTreeSet<i32>,
    /// Nodes that follow the log without voting (learners).
    pub observers: BTreeSet<i32>,
    /// On the leader: each voter's and observer's last replicated index.
    pub replication: BTreeMap<i32, Option<u64>>,
}

/// One running voter.
pub struct Quorum {
    node_id: i32,
    raft: Raft,
    /// The state machine's image, shared with it.
    image: Arc<RwLock<Arc<MetadataImage>>>,
    /// Every voter's quorum address.
    voters: BTreeMap<i32, SocketAddr>,
    /// Runs operations other voters forward to this one as active controller.
    handler: network::HandlerCell,
    server: tokio::task::JoinHandle<()>,
    /// An observer's task asking the leader to add it (ends once it is a member).
    join: Option<tokio::task::JoinHandle<()>>,
    /// How this node's quorum messages are framed.
    wire: network::Wire,
}

impl Quorum {
    /// Opens the voter's storage under `config.dir`, listens for the other voters, and joins
    /// the quorum (initializing it with the configured voters on first start). Returns the
    /// voter and the stream of committed metadata; its first event is the image recovered
    /// from disk.
    pub async fn start(
        config: QuorumConfig,
    ) -> Result<(Quorum, mpsc::UnboundedReceiver<QuorumEvent>), QuorumError> {
        let voter_listen = config.voters.get(&config.node_id).copied();
        let listen = match (voter_listen, config.observer_listen) {
            (Some(listen), None) => listen,
            (None, Some(listen)) => listen,
            (Some(_), Some(_)) => {
                return Err(QuorumError::Config(format!(
                    "node {} is a voter; it cannot also be an observer",
                    config.node_id
                )))
            }
            (None, None) => {
                return Err(QuorumError::Config(format!(
                    "node {} is not one of the voters {:?}",
                    config.node_id,
                    config.voters.keys().collect::<Vec<_>>()
                )))
            }
        };
        if config.voters.is_empty() {
            return Err(QuorumError::Config("the quorum has no voters".into()));
        }
        if config.node_id < 0 {
            return Err(QuorumError::Config("node ids are not negative".into()));
        }
        let raft_config = Config {
            cluster_name: "gregor-metadata".into(),
            heartbeat_interval: config.heartbeat_interval_ms,
            election_timeout_min: config.election_timeout_min_ms,
            election_timeout_max: config.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries),
            max_in_snapshot_log_to_keep: 0,
            ..Config::default()
        };
        let raft_config = Arc::new(
            raft_config
                .validate()
                .map_err(|e| QuorumError::Config(e.to_string()))?,
        );
        let storage = |source| QuorumError::Storage {
            path: config.dir.clone(),
            source,
        };
        std::fs::create_dir_all(&config.dir).map_err(storage)?;
        let log_store = log_store::FileLogStore::open(&config.dir).map_err(storage)?;
        let (events, events_rx) = mpsc::unbounded_channel();
        let state_machine =
            state_machine::MetadataStateMachine::open(&config.dir, events).map_err(storage)?;
        let image = state_machine.image_cell();
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| QuorumError::Listen {
                addr: listen,
                source,
            })?;
        let wire = network::Wire {
            cluster_id: config.cluster_id.clone(),
        };
        let raft = Raft::new(
            config.node_id as NodeId,
            raft_config,
            network::Network { wire: wire.clone() },
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let bound = listener
            .local_addr()
            .map_err(|source| QuorumError::Listen {
                addr: listen,
                source,
            })?;
        let handler: network::HandlerCell = Arc::default();
        let server = tokio::spawn(network::serve(
            listener,
            raft.clone(),
            handler.clone(),
            wire.clone(),
        ));
        let join = if voter_listen.is_none() {
            Some(tokio::spawn(join_as_observer(
                raft.clone(),
                wire.clone(),
                config.node_id,
                bound,
                config.voters.clone(),
            )))
        } else {
            initialize(&raft, &config.voters).await?;
            None
        };
        Ok((
            Quorum {
                node_id: config.node_id,
                raft,
                image,
                voters: config.voters.clone(),
                handler,
                server,
                join,
                wire,
            },
            events_rx,
        ))
    }

    /// This voter's id.
    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// The image after every entry this voter applied.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image
            .read()
            .expect("quorum image lock poisoned")
            .clone()
    }

    fn image_cell(&self) -> Arc<RwLock<Arc<MetadataImage>>> {
        self.image.clone()
    }

    /// The leader (active controller), if one is known.
    pub fn leader(&self) -> Option<i32> {
        self.raft
            .metrics()
            .borrow()
            .current_leader
            .map(|id| id as i32)
    }

    /// Appends `records` as one batch through this voter, which must be the leader, and
    /// returns the offsets they took once a majority stored them and they were applied here.
    pub async fn propose(
        &self,
        records: Vec<MetadataRecord>,
        timeout: Duration,
    ) -> Result<(i64, i64), ProposeError> {
        assert!(!records.is_empty(), "a proposal is never empty");
        let proposal = Proposal {
            records: records.into_iter().map(StoredRecord::current).collect(),
        };
        let written = tokio::time::timeout(timeout, self.raft.client_write(proposal)).await;
        match written {
            Err(_) => Err(ProposeError::Timeout),
            Ok(Ok(response)) => response.data.map_err(ProposeError::Rejected),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(ProposeError::NotLeader {
                    leader: f.leader_id.map(|id| id as i32),
                })
            }
            Ok(Err(e)) => Err(ProposeError::Stopped(e.to_string())),
        }
    }

    /// Installs what runs controller operations forwarded to this voter.
    pub fn set_controller(&self, handler: ControllerHandler) {
        self.handler
            .write()
            .expect("handler lock poisoned")
            .controller = Some(handler);
    }

    /// Installs what answers Kafka requests (BrokerRegistration, BrokerHeartbeat) other
    /// nodes send to this one as active controller.
    pub fn set_kafka_handler(&self, handler: KafkaHandler) {
        self.handler.write().expect("handler lock poisoned").kafka = Some(handler);
    }

    /// Sends a Kafka request frame to the active controller (another node); its response
    /// frame.
    pub async fn forward_kafka(
        &self,
        frame: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let leader = self
            .leader()
            .ok_or_else(|| "no active controller is elected".to_string())?;
        let addr = self
            .voters
            .get(&leader)
            .ok_or_else(|| format!("the active controller {leader} is not a known voter"))?;
        self.wire.ask_kafka(*addr, frame, timeout).await
    }

    /// Sends `op` to the active controller (another voter) and returns its outcome.
    pub async fn forward(&self, op: ControllerOp, timeout: Duration) -> ForwardedOutcome {
        let not_controller = |message: String| {
            Err(WireRefusal {
                kind: RefusalKind::NotController,
                message,
            })
        };
        let Some(leader) = self.leader() else {
            return not_controller("no active controller is elected".into());
        };
        if leader == self.node_id {
            return not_controller("this node is the active controller".into());
        }
        let Some(addr) = self.voters.get(&leader) else {
            return not_controller(format!(
                "the active controller {leader} is not a known voter"
            ));
        };
        self.wire.forward(&addr.to_string(), op, timeout).await
    }

    /// The quorum's state as the leader sees it (with each member's replication progress):
    /// this node's own when it leads, else asked of the leader.
    pub async fn leader_status(&self, timeout: Duration) -> Result<QuorumStatus, String> {
        let leader = self
            .leader()
            .ok_or_else(|| "no active controller is elected".to_string())?;
        if leader == self.node_id {
            return Ok(self.status());
        }
        let addr = self
            .voters
            .get(&leader)
            .ok_or_else(|| format!("the active controller {leader} is not a known voter"))?;
        self.wire.ask_status(*addr, timeout).await
    }

    /// The quorum's state as this voter sees it.
    pub fn status(&self) -> QuorumStatus {
        status_of(self.node_id, &self.raft.metrics().borrow())
    }

    /// Stops this voter: the Raft node, then its listener.
    pub async fn shutdown(self) {
        if let Some(join) = self.join {
            join.abort();
            let _ = join.await;
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "metadata quorum did not stop cleanly");
        }
        self.server.abort();
        let _ = self.server.await;
    }
}

/// The quorum's state in the library's metrics as voter `node_id` sees it.
fn status_of(node_id: i32, m: &openraft::RaftMetrics<NodeId, BasicNode>) -> QuorumStatus {
    QuorumStatus {
        node_id,
        leader: m.current_leader.map(|id| id as i32),
        epoch: m.current_term,
        last_index: m.last_log_index,
        applied_index: m.last_applied.map(|l| l.index),
        voters: m
            .membership_config
            .membership()
            .voter_ids()
            .map(|id| id as i32)
            .collect(),
        observers: m
            .membership_config
            .membership()
            .learner_ids()
            .map(|id| id as i32)
            .collect(),
        replication: m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(id, log_id)| (*id as i32, log_id.map(|l| l.index)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Initializes a fresh voter's membership with the configured voters (a no-op once any
/// voter's initialization reached it).
async fn initialize(raft: &Raft, voters: &BTreeMap<i32, SocketAddr>) -> Result<(), QuorumError> {
    let members: BTreeMap<NodeId, BasicNode> = voters
        .iter()
        .map(|(id, addr)| (*id as NodeId, BasicNode::new(addr.to_string())))
        .collect();
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| QuorumError::Raft(e.to_string()))?;
    if initialized {
        return Ok(());
    }
    match raft.initialize(members).await {
        Ok(()) => Ok(()),
        // Another voter's initialization reached this one first.
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(QuorumError::Raft(e.to_string())),
    }
}

/// How often an observer not yet in the membership (with its current address) asks again.
const JOIN_RETRY: Duration = Duration::from_millis(200);

/// Asks the voters, the leader first when known, to add observer `node_id` at `addr` as a
/// learner, until this node's own view of the membership has it at that address.
async fn join_as_observer(
    raft: Raft,
    wire: network::Wire,
    node_id: i32,
    addr: SocketAddr,
    voters: BTreeMap<i32, SocketAddr>,
) {
    let me = node_id as NodeId;
    let addr_text = addr.to_string();
    loop {
        let (member, leader) = {
            let m = raft.metrics();
            let m = m.borrow();
            let member = m
                .membership_config
                .membership()
                .get_node(&me)
                .is_some_and(|n| n.addr == addr_text);
            (member, m.current_leader.map(|l| l as i32))
        };
        if member {
            tracing::info!(%addr, "following the metadata log as an observer");
            return;
        }
        let targets: Vec<SocketAddr> = match leader.and_then(|l| voters.get(&l)) {
            Some(a) => vec![*a],
            None => voters.values().copied().collect(),
        };
        for target in targets {
            match wire
                .ask_to_observe(target, node_id, &addr_text, JOIN_RETRY * 5)
                .await
            {
                Ok(()) => break,
                Err(e) => tracing::debug!(%target, error = %e, "not added as observer yet"),
            }
        }
        tokio::time::sleep(JOIN_RETRY).await;
    }
}

/// On the leader: adds (or re-addresses) observer `node_id` at `addr` as a learner. A voter's
/// id is refused: a voter's address is not changed this way.
async fn add_observer(raft: &Raft, node_id: i32, addr: String) -> Result<(), String> {
    let id = node_id as NodeId;
    let is_voter = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == id);
    if is_voter {
        return Err(format!("node {node_id} is a voter, not an observer"));
    }
    let nodes = BTreeMap::from([(id, BasicNode::new(addr))]);
    raft.change_membership(openraft::ChangeMembers::SetNodes(nodes), false)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
