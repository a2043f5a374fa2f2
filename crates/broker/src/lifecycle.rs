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
/// How long a broker that handed its leadership over keeps answering its clients (with the
/// new leaders) before it closes their connections.
pub const HANDOVER_GRACE: Duration = Duration::from_millis(500);
/// How soon a controlled shutdown the controller did not answer is asked again.
const CONTROLLED_SHUTDOWN_RETRY: Duration = Duration::from_millis(100);
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
    /// The epoch a registration names as the previous one: that of the previous process if
    /// it shut down cleanly, then this process's own when it registers again (it lost
    /// nothing); -1 after an unclean shutdown (KIP-966 takes it out of the ELRs).
    previous_epoch: AtomicI64,
    /// Whether the controller's last answer said this broker is fenced.
    fenced: AtomicBool,
    /// Set when a controlled shutdown begins; never cleared.
    shutting_down: AtomicBool,
}

impl Lifecycle {
    pub fn new(
        host: &str,
        port: u16,
        rack: Option<&str>,
        previous_epoch: Option<i64>,
    ) -> Lifecycle {
        Lifecycle {
            incarnation_id: Uuid::new_v4(),
            host: host.to_string(),
            port,
            rack: rack.map(str::to_string),
            epoch: AtomicI64::new(-1),
            previous_epoch: AtomicI64::new(previous_epoch.unwrap_or(-1)),
            fenced: AtomicBool::new(true),
            shutting_down: AtomicBool::new(false),
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

    /// Whether a controlled shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
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
            previous_broker_epoch: l.previous_epoch.load(Ordering::Acquire),
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

    /// One heartbeat; from the start of a controlled shutdown on, every heartbeat asks to
    /// shut down, so a periodic one cannot unfence this broker again.
    fn heartbeat(&self, want_shut_down: bool) -> Result<HeartbeatReply, ControllerError> {
        self.register()?;
        let frame = controller_apis::heartbeat_frame(&BrokerHeartbeat {
            node_id: self.node_id,
            broker_epoch: self.lifecycle.epoch(),
            metadata_offset: self.applied_metadata_offset(),
            want_shut_down: want_shut_down || self.lifecycle.is_shutting_down(),
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
                let old = self.lifecycle.epoch.swap(-1, Ordering::AcqRel);
                self.lifecycle.previous_epoch.store(old, Ordering::Release);
                self.lifecycle.fenced.store(true, Ordering::Release);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}

/// Kafka's controlled shutdown, the first step of stopping while connections are still
/// served: asks the active controller to shut this broker down (BrokerHeartbeat with
/// WantShutDown), which fences it and moves every partition it leads to the next live
/// in-sync replica in one batch, then waits until this broker has applied that batch, so
/// from here on it answers its old partitions' clients NOT_LEADER_OR_FOLLOWER with the new
/// leader. Bounded by `broker.session.timeout.ms` (after which the controller fences a
/// silent broker anyway); a broker that never registered or sees no other live broker
/// skips it, and a controller that does not answer in time ends it early with a warning:
/// the broker simply stops.
///
/// Then, when other brokers are live, it keeps serving for [`HANDOVER_GRACE`]: the other
/// brokers apply the change a moment later than this one, so a client that lost its
/// connection here at once could read the old leader from them and wait a whole metadata
/// refresh; one that is still connected gets NOT_LEADER_OR_FOLLOWER naming the new leader
/// (KIP-951) and goes there.
pub async fn controlled_shutdown(broker: Arc<Broker>) {
    let me = broker.node_id;
    let others_live = broker.image().live_brokers().any(|b| b.node_id != me);
    if broker.lifecycle.epoch() < 0 || !others_live {
        // Nobody could take over (a single node, or the last one of a cluster going down).
        return;
    }
    broker
        .lifecycle
        .shutting_down
        .store(true, Ordering::Release);
    let started = Instant::now();
    let deadline = started + broker.config().session_timeout();
    loop {
        let b = broker.clone();
        match tokio::task::spawn_blocking(move || b.heartbeat(true)).await {
            Ok(Ok(reply)) if reply.fenced => break,
            Ok(Ok(_)) => tracing::warn!("the active controller did not fence this broker yet"),
            Ok(Err(e)) => tracing::info!(error = %e, "controlled shutdown not answered yet"),
            Err(_) => return,
        }
        if Instant::now() >= deadline {
            tracing::warn!("controlled shutdown not granted in time: stopping anyway");
            return;
        }
        tokio::time::sleep(CONTROLLED_SHUTDOWN_RETRY).await;
    }
    let mut published = broker.subscribe_metadata();
    let applied = tokio::time::timeout_at(deadline.into(), async {
        while broker.image().is_live(broker.node_id) {
            if published.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    match applied {
        Ok(()) => tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "controlled shutdown: leadership moved away"
        ),
        Err(_) => {
            tracing::warn!("controlled shutdown: the fence was not applied here in time");
            return;
        }
    }
    if broker.image().live_brokers().next().is_some() {
        tokio::time::sleep(HANDOVER_GRACE).await;
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

/// The active controller's timed duties, until shutdown (each acts only while this node is
/// the active controller): every quarter second it fences brokers whose session expired, and
/// those silent for half a heartbeat interval whose process is gone
/// ([`ControllerSeat::fence_unreachable_brokers`]); with `balance` (interval, percentage:
/// `auto.leader.rebalance.enable`) it gives leadership back to preferred replicas
/// ([`ControllerSeat::balance_leaders`]).
pub async fn run_controller_duties(
    seat: Arc<ControllerSeat>,
    heartbeat_interval: Duration,
    balance: Option<(Duration, u32)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next_balance = balance.map(|(every, _)| Instant::now() + every);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(SESSION_CHECK) => {}
        }
        let balance_now = match (next_balance, balance) {
            (Some(at), Some((every, percent))) if Instant::now() >= at => {
                next_balance = Some(Instant::now() + every);
                Some(percent)
            }
            _ => None,
        };
        let s = seat.clone();
        let _ = tokio::task::spawn_blocking(move || {
            s.fence_expired_brokers();
            s.fence_unreachable_brokers(heartbeat_interval / 2);
            if let Some(percent) = balance_now {
                s.balance_leaders(percent);
            }
        })
        .await;
    }
}
