//! The broker's membership of the cluster (what Kafka's `BrokerLifecycleManager` does):
//! register this process with the active controller (BrokerRegistration: node id, a fresh
//! incarnation id, the advertised endpoint and rack; the reply is the broker epoch), then
//! heartbeat every `broker.heartbeat.interval.ms` with the offset of the metadata applied
//! here (BrokerHeartbeat). A new registration is fenced; the controller unfences it once a
//! heartbeat shows this broker applied the log up to its registration, and the broker starts
//! serving only then. A broker that misses heartbeats for `broker.session.timeout.ms` is
//! fenced by the active controller ([`ControllerSeat::fence_expired_brokers`], run on every
//! node, acting only on the leader) and unfenced by its next heartbeat.
//!
//! Both are Kafka's own requests (API keys 62 and 63, `controller_apis.rs`), answered here
//! when this node is the active controller, else sent to it over the quorum's connections
//! (the CONTROLLER listener).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gregor_metadata::controller::{BrokerHeartbeat, HeartbeatReply};
use gregor_metadata::ControllerError;
use tokio::sync::watch;
use uuid::Uuid;

use crate::broker::{Broker, BrokerError};
use crate::controller_apis::{self, Registration};
use crate::controller_seat::ControllerSeat;

/// How often a broker waiting to be unfenced at start-up heartbeats.
const STARTUP_HEARTBEAT: Duration = Duration::from_millis(20);
/// How often every node checks for expired sessions (acting only while it leads).
const SESSION_CHECK: Duration = Duration::from_millis(250);

/// This process's registration.
#[derive(Debug)]
pub struct Lifecycle {
    /// Random per process: tells a restarted broker from the one it replaces.
    pub incarnation_id: Uuid,
    host: String,
    port: u16,
    rack: Option<String>,
    /// The broker epoch the controller gave the registration; -1 before it.
    epoch: AtomicI64,
    /// Whether the controller's last answer said this broker is fenced.
    fenced: AtomicBool,
}

impl Lifecycle {
    pub fn new(host: &str, port: u16, rack: Option<&str>) -> Lifecycle {
        Lifecycle {
            incarnation_id: Uuid::new_v4(),
            host: host.to_string(),
            port,
            rack: rack.map(str::to_string),
            epoch: AtomicI64::new(-1),
            fenced: AtomicBool::new(true),
        }
    }

    /// The broker epoch of this process's registration (-1 before it registered).
    pub fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Whether the active controller last said this broker is fenced.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }
}

impl Broker {
    /// Registers this process and heartbeats until the controller unfences it, retrying
    /// while no controller is elected or another process's session under this node id has
    /// not expired yet. The broker serves only after this returns.
    pub(crate) fn join_cluster(&self, deadline: Instant) -> Result<(), BrokerError> {
        let mut last_logged: Option<Instant> = None;
        loop {
            match self.heartbeat_once() {
                Ok(reply) if !reply.fenced => return Ok(()),
                Ok(_) => {}
                Err(
                    e @ (ControllerError::NotController(_)
                    | ControllerError::Timeout(_)
                    | ControllerError::DuplicateBrokerRegistration(_)
                    | ControllerError::StaleBrokerEpoch(_)),
                ) => {
                    if last_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        tracing::info!(error = %e, "waiting to join the cluster");
                        last_logged = Some(Instant::now());
                    }
                }
                Err(e) => {
                    return Err(BrokerError::Start(format!(
                        "cannot register this broker: {e}"
                    )))
                }
            }
            if Instant::now() >= deadline {
                return Err(BrokerError::Start(
                    "this broker was not registered and unfenced by the active controller in time"
                        .into(),
                ));
            }
            std::thread::sleep(STARTUP_HEARTBEAT);
        }
    }

    /// How long one registration or heartbeat waits for the controller's answer.
    fn controller_call_timeout(&self) -> Duration {
        self.config()
            .heartbeat_interval()
            .max(Duration::from_secs(1))
    }

    /// Registers this process unless it already holds a broker epoch.
    fn register(&self) -> Result<(), ControllerError> {
        let l = &self.lifecycle;
        if l.epoch() >= 0 {
            return Ok(());
        }
        let frame = controller_apis::registration_frame(&Registration {
            node_id: self.node_id,
            cluster_id: &self.cluster_id,
            incarnation_id: l.incarnation_id,
            host: &l.host,
            port: l.port,
            rack: l.rack.as_deref(),
        });
        let answer = self
            .seat()
            .call_kafka(frame, self.controller_call_timeout())?;
        let epoch = controller_apis::registration_reply(&answer)?;
        l.epoch.store(epoch, Ordering::Release);
        tracing::info!(
            broker_epoch = epoch,
            incarnation = %l.incarnation_id,
            "registered with the active controller"
        );
        Ok(())
    }

    /// Sends one heartbeat with the offset of the metadata applied here. A stale epoch (the
    /// controller no longer knows this registration) makes the next call register again.
    pub(crate) fn heartbeat_once(&self) -> Result<HeartbeatReply, ControllerError> {
        self.heartbeat(false)
    }

    /// At a clean shutdown: asks the controller to fence this broker now (so clients stop
    /// being sent here, and the next process of this node registers at once instead of
    /// waiting for this session to expire). Best effort: a controller that does not answer
    /// fences it after the session timeout anyway. Part of Kafka's controlled shutdown,
    /// which also moves leadership away first (not built yet).
    pub(crate) fn leave_cluster(&self) {
        if self.lifecycle.epoch() < 0 {
            return;
        }
        match self.heartbeat(true) {
            Ok(reply) if reply.fenced => tracing::info!("fenced at shutdown"),
            Ok(_) => tracing::warn!("the active controller did not fence this broker at shutdown"),
            Err(e) => tracing::warn!(error = %e, "could not ask to be fenced at shutdown"),
        }
    }

    fn heartbeat(&self, want_fence: bool) -> Result<HeartbeatReply, ControllerError> {
        self.register()?;
        let frame = controller_apis::heartbeat_frame(&BrokerHeartbeat {
            node_id: self.node_id,
            broker_epoch: self.lifecycle.epoch(),
            metadata_offset: self.applied_metadata_offset(),
            want_fence,
        });
        let outcome = self
            .seat()
            .call_kafka(frame, self.controller_call_timeout())
            .and_then(|answer| controller_apis::heartbeat_reply(&answer));
        match outcome {
            Ok(reply) => {
                let was = self.lifecycle.fenced.swap(reply.fenced, Ordering::AcqRel);
                if was && !reply.fenced {
                    tracing::info!("the active controller unfenced this broker");
                } else if !was && reply.fenced {
                    tracing::warn!("the active controller fenced this broker");
                }
                Ok(reply)
            }
            Err(e @ ControllerError::StaleBrokerEpoch(_)) => {
                tracing::warn!(error = %e, "registration no longer current: registering again");
                self.lifecycle.epoch.store(-1, Ordering::Release);
                self.lifecycle.fenced.store(true, Ordering::Release);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}

/// Heartbeats every `broker.heartbeat.interval.ms` until shutdown.
pub async fn run_heartbeats(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let interval = broker.config().heartbeat_interval();
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let b = broker.clone();
        match tokio::task::spawn_blocking(move || b.heartbeat_once()).await {
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "heartbeat not answered"),
        }
    }
}

/// Checks broker sessions every quarter second until shutdown (acting only while this node
/// is the active controller).
pub async fn run_session_checks(seat: Arc<ControllerSeat>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(SESSION_CHECK) => {}
        }
        let s = seat.clone();
        let _ = tokio::task::spawn_blocking(move || s.fence_expired_brokers()).await;
    }
}
