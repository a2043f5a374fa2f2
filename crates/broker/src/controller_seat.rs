//! This node's seat in the metadata quorum, shared by brokers and controller-only nodes: its
//! voter (or observer) of the quorum, its `Controller`, and the one way a controller
//! operation reaches the active controller: run here when this node leads, else forwarded
//! over the quorum's connections. Also what a node does with the quorum at start-up:
//! import a first-release metadata log (once), and learn (or claim) the cluster id.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gregor_metadata::controller_op::WireRefusal;
use gregor_metadata::election::ElectionDefaults;
use gregor_metadata::quorum::{QuorumConfig, QuorumEvent, QuorumHandle, QuorumStatus};
use gregor_metadata::{Controller, ControllerError, ControllerOp, ControllerReply, MetadataImage};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::blocking;
use crate::broker::BrokerError;
use crate::cluster_config::ClusterConfig;
use crate::meta_properties;
use crate::metrics::ControllerTimes;
use crate::timed_controller::TimedController;

/// Where the metadata quorum keeps its log, vote and snapshot (Kafka's directory name).
pub const METADATA_DIR: &str = "__cluster_metadata-0";
/// How long start-up waits for the quorum to elect a leader and replay, and retries
/// operations while no controller is elected.
pub const QUORUM_START_TIMEOUT: Duration = Duration::from_secs(30);

/// This node's voter or observer and its controller.
pub struct ControllerSeat {
    node_id: i32,
    quorum: Arc<QuorumHandle>,
    controller: Arc<TimedController>,
}

impl ControllerSeat {
    /// Starts this node's part of the quorum with its data under `data_dir`, waits until it
    /// knows a leader and replayed its log, and serves operations other nodes forward to it.
    /// Returns the seat and the quorum's stream of committed metadata.
    /// `cluster_id` is the data directory's (none for a new node).
    pub fn start(
        cluster: ClusterConfig,
        data_dir: &Path,
        cluster_id: Option<&str>,
        session_timeout: Duration,
        election: ElectionDefaults,
        times: ControllerTimes,
    ) -> Result<(ControllerSeat, UnboundedReceiver<QuorumEvent>), BrokerError> {
        let node_id = cluster.node_id;
        let metadata_dir = data_dir.join(METADATA_DIR);
        let mut config = QuorumConfig::new(node_id, cluster.voters, metadata_dir.clone());
        config.observer_listen = cluster.observer_listen;
        config.cluster_id = cluster_id.map(str::to_string);
        let (quorum, events) = QuorumHandle::start(config)?;
        let quorum = Arc::new(quorum);
        if quorum.wait_until_caught_up(QUORUM_START_TIMEOUT).is_none() {
            return Err(BrokerError::Start(format!(
                "the metadata quorum elected no leader within {QUORUM_START_TIMEOUT:?}"
            )));
        }
        let controller = Arc::new(TimedController::new(
            Controller::new(Box::new(quorum.clone()), session_timeout, election),
            times,
        ));
        {
            // Operations other nodes forward while this node is the active controller.
            let controller = controller.clone();
            quorum.set_controller(Arc::new(move |op| {
                execute_locally(&controller, op).map_err(|e| WireRefusal::from(&e))
            }));
        }
        {
            // BrokerRegistration and BrokerHeartbeat from brokers, while this node leads.
            let controller = controller.clone();
            quorum.set_kafka_handler(Arc::new(move |frame| {
                crate::controller_apis::serve(&controller, frame)
            }));
        }
        let seat = ControllerSeat {
            node_id,
            quorum,
            controller,
        };
        if seat.quorum.leader() == Some(node_id) {
            seat.with_controller(|c| import_first_release_metadata(&metadata_dir, c))?;
        } else if metadata_dir.join("metadata.log").exists() {
            return Err(BrokerError::Start(format!(
                "{} holds the metadata of a single-node release: start this node alone once (without controller.quorum.voters) to import it",
                metadata_dir.display()
            )));
        }
        Ok((seat, events))
    }

    /// The quorum's image as this node has it (everything it applied).
    pub fn image(&self) -> Arc<MetadataImage> {
        self.quorum.image()
    }

    /// The metadata quorum as this node sees it (None once it stopped).
    pub fn status(&self) -> Option<QuorumStatus> {
        self.quorum.status().ok()
    }

    /// The quorum as its leader sees it, asked of the leader when that is another node.
    pub fn leader_status(&self, timeout: Duration) -> Result<QuorumStatus, String> {
        blocking::block_in_place_or_run(|| self.quorum.leader_status(timeout))
    }

    /// The active controller, if one is known.
    pub fn leader(&self) -> Option<i32> {
        self.quorum.leader()
    }

    /// Runs `op` at the active controller, here or forwarded (waiting at most `timeout` for
    /// the answer); returns the reply and the offset of the last record written so far.
    pub fn execute(
        &self,
        op: ControllerOp,
        timeout: Duration,
    ) -> Result<(ControllerReply, i64), ControllerError> {
        blocking::block_in_place_or_run(|| {
            if self.quorum.leader() == Some(self.node_id) {
                execute_locally(&self.controller, op)
            } else {
                self.quorum
                    .forward(op, timeout)
                    .map_err(ControllerError::from)
            }
        })
    }

    /// Sends a Kafka request frame (BrokerRegistration, BrokerHeartbeat) to the active
    /// controller, here or over the quorum's connections; its response frame. An
    /// unreachable or unknown controller is NOT_CONTROLLER.
    pub fn call_kafka(
        &self,
        frame: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, ControllerError> {
        blocking::block_in_place_or_run(|| {
            if self.quorum.leader() == Some(self.node_id) {
                crate::controller_apis::serve(&self.controller, frame)
                    .map_err(ControllerError::Internal)
            } else {
                self.quorum
                    .forward_kafka(frame, timeout)
                    .map_err(ControllerError::NotController)
            }
        })
    }

    /// [`Self::execute`] at start-up: retried while no controller is elected yet (or it
    /// does not answer in time), for at most `QUORUM_START_TIMEOUT`.
    pub fn execute_at_start(
        &self,
        op: ControllerOp,
        what: &str,
    ) -> Result<ControllerReply, BrokerError> {
        let deadline = Instant::now() + QUORUM_START_TIMEOUT;
        loop {
            match self.execute(op.clone(), QUORUM_START_TIMEOUT) {
                Ok((reply, _)) => return Ok(reply),
                Err(e @ (ControllerError::NotController(_) | ControllerError::Timeout(_)))
                    if Instant::now() < deadline =>
                {
                    tracing::info!(error = %e, "waiting for an active controller to {what}");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(BrokerError::Start(format!("cannot {what}: {e}"))),
            }
        }
    }

    /// Runs `f` on this node's controller (under its mutex, off the async workers).
    pub fn with_controller<T>(&self, f: impl FnOnce(&mut Controller) -> T) -> T {
        blocking::block_in_place_or_run(|| f(&mut self.controller.lock()))
    }

    /// While this node is the active controller: fences every broker whose session ran out.
    pub fn fence_expired_brokers(&self) {
        if self.quorum.leader() != Some(self.node_id) {
            return;
        }
        if let Err(e) = self.with_controller(|c| c.fence_expired_brokers(Instant::now())) {
            tracing::warn!(error = %e, "could not fence brokers whose session expired");
        }
    }

    /// While this node is the active controller: fences every live broker that missed its
    /// heartbeat by more than `after` and whose listener refuses connections (its process
    /// died: a killed process's sockets close at once), without waiting for its session to
    /// expire. A broker that is only slow or paused (SIGSTOP: the kernel still accepts for
    /// it) is left to the session timeout.
    pub fn fence_unreachable_brokers(&self, after: Duration) {
        if self.quorum.leader() != Some(self.node_id) {
            return;
        }
        let overdue = self.with_controller(|c| c.overdue_brokers(Instant::now(), after));
        for broker in overdue {
            if !refuses_connections(&broker.host, broker.port) {
                continue;
            }
            let fenced =
                self.with_controller(|c| c.fence_unreachable(&broker, Instant::now(), after));
            if let Err(e) = fenced {
                tracing::warn!(broker = broker.node_id, error = %e, "could not fence an unreachable broker");
            }
        }
    }

    /// While this node is the active controller: gives leadership back to the preferred
    /// replicas of brokers past `max_imbalance_percent` (`Controller::balance_leaders`).
    pub fn balance_leaders(&self, max_imbalance_percent: u32) {
        if self.quorum.leader() != Some(self.node_id) {
            return;
        }
        if let Err(e) = self.with_controller(|c| c.balance_leaders(max_imbalance_percent)) {
            tracing::warn!(error = %e, "could not move leadership back to preferred replicas");
        }
    }

    /// The cluster's id from the quorum (recorded by the first active controller, from its
    /// `meta.properties` or fresh). A data directory of another cluster is refused
    /// (INCONSISTENT_CLUSTER_ID); a new one gets `meta.properties` with the quorum's id.
    pub fn claim_cluster_id(
        &self,
        dir: &Path,
        local: Option<String>,
    ) -> Result<String, BrokerError> {
        let proposed = local
            .clone()
            .unwrap_or_else(|| meta_properties::base64_url(uuid::Uuid::new_v4().as_bytes()));
        let op = ControllerOp::ClaimClusterId {
            proposed: proposed.clone(),
        };
        let id = match self.execute_at_start(op, "learn the cluster id")? {
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
                meta_properties::write(dir, &id, self.node_id)?;
                Ok(id)
            }
        }
    }

    /// Stops this node's part of the quorum.
    pub fn shutdown(&self) {
        self.quorum.shutdown();
    }
}

/// How long a probe of a broker's listener may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// Whether nothing listens at `host:port`: the connection is refused (a timeout or any
/// other failure does not count, so a hung or unreachable host is not taken for dead).
fn refuses_connections(host: &str, port: u16) -> bool {
    use std::net::ToSocketAddrs;
    let Some(addr) = (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
    else {
        return false;
    };
    matches!(
        std::net::TcpStream::connect_timeout(&addr, PROBE_TIMEOUT),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// Runs `op` on this node's controller; returns its reply and the offset of the last record
/// written so far (what a caller waits to have applied).
fn execute_locally(
    controller: &TimedController,
    op: ControllerOp,
) -> Result<(ControllerReply, i64), ControllerError> {
    let mut controller = controller.lock();
    let reply = controller.execute(op)?;
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
