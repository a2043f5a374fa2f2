//! A controller-only node (`process.roles=controller`, Kafka's isolated controllers): a voter
//! of the metadata quorum that, while it leads, is the active controller. It serves no
//! clients and hosts no partitions: brokers forward their controller operations and
//! heartbeats to it over the quorum's connections, and it fences brokers whose sessions
//! expire. Its data directory holds only `meta.properties` and the quorum's log.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::blocking::block_in_place_or_run;
use crate::broker::BrokerError;
use crate::config::BrokerConfig;
use crate::controller_seat::ControllerSeat;

/// A running controller-only node.
pub struct ControllerHandle {
    pub node_id: i32,
    pub cluster_id: String,
    /// Where it listens for the quorum (its CONTROLLER listener).
    pub controller_addr: SocketAddr,
    seat: Arc<ControllerSeat>,
    shutdown_tx: watch::Sender<bool>,
    sessions: tokio::task::JoinHandle<()>,
}

impl ControllerHandle {
    /// A sender that triggers shutdown (for signal handlers).
    pub fn shutdown_trigger(&self) -> watch::Sender<bool> {
        self.shutdown_tx.clone()
    }

    /// Waits until shutdown is triggered, then stops the session checks and the voter.
    pub async fn wait(self) -> Result<(), BrokerError> {
        let mut rx = self.shutdown_tx.subscribe();
        while !*rx.borrow() {
            if rx.changed().await.is_err() {
                break;
            }
        }
        let _ = self.sessions.await;
        let seat = self.seat.clone();
        tokio::task::spawn_blocking(move || seat.shutdown())
            .await
            .map_err(|e| BrokerError::Start(format!("stopping the controller: {e}")))
    }
}

/// Starts a controller-only node: joins the quorum as a voter, learns the cluster id and
/// checks its data directory against it, and checks broker sessions while it leads.
pub async fn start_controller(config: BrokerConfig) -> Result<ControllerHandle, BrokerError> {
    assert!(
        !config.is_broker(),
        "a node with the broker role starts as a broker"
    );
    // Checked before anything on disk changes: a misconfigured node does not half-start.
    let cluster = crate::cluster_config::cluster_config(&config)?;
    let node_id = cluster.node_id;
    let controller_addr = cluster.voters[&node_id];
    let dir = config.log_dir();
    let local_cluster_id = crate::meta_properties::read(&dir, node_id)?;
    std::fs::create_dir_all(&dir).map_err(|source| BrokerError::Io {
        context: format!("creating {}", dir.display()),
        source,
    })?;
    let session_timeout = config.session_timeout();
    let election = config.election_defaults();
    let (seat, cluster_id) = block_in_place_or_run(|| {
        // Nothing here applies metadata to partitions: the committed stream is not needed.
        let (seat, _events) = ControllerSeat::start(
            cluster,
            &dir,
            local_cluster_id.as_deref(),
            session_timeout,
            election,
            // A controller-only node serves no metrics endpoint.
            Default::default(),
        )?;
        let cluster_id = seat.claim_cluster_id(&dir, local_cluster_id)?;
        Ok::<_, BrokerError>((seat, cluster_id))
    })?;
    let seat = Arc::new(seat);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let sessions = tokio::spawn(crate::lifecycle::run_controller_duties(
        seat.clone(),
        config.heartbeat_interval(),
        config.leader_balance(),
        shutdown_rx,
    ));
    tracing::info!(%controller_addr, node_id, "controller listening");
    Ok(ControllerHandle {
        node_id,
        cluster_id,
        controller_addr,
        seat,
        shutdown_tx,
        sessions,
    })
}
