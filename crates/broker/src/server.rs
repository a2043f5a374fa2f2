//! The network server: accepts connections and serves each one's requests in order.
//!
//! Shutdown is an explicit protocol: `BrokerHandle::shutdown` flips a watch channel; first
//! comes the controlled shutdown (`lifecycle::controlled_shutdown`: leadership moves to
//! other brokers while this one still serves, so its clients are told where to go), then a
//! second channel stops everything: the accept loop stops accepting, each connection
//! finishes the request it is serving and closes; every background task (periodic flush/checkpoint/retention, the cleaner, the
//! coordinators' timers) finishes the step it is in and ends; only once all of them are
//! joined are the partitions flushed and the clean-shutdown marker written, so no cleaner
//! swap or marker write can overlap it. A semaphore bounds the number of open connections
//! (max.connections).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use gregor_protocol::frame::{split_frame, FrameError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::blocking::block_in_place_or_run;
use crate::broker::{Broker, BrokerError};
use crate::config::BrokerConfig;
use crate::dispatch::{dispatch_staged, Outcome, Served, Staged};
use crate::zero_copy::write_pieces;

/// How long shutdown waits for connections to finish their in-flight request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Initial read buffer per connection; it grows to the largest frame seen.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// A running broker.
pub struct BrokerHandle {
    pub local_addr: SocketAddr,
    pub broker: Arc<Broker>,
    /// Asks for the stop (controlled shutdown first).
    stop_tx: watch::Sender<bool>,
    server: tokio::task::JoinHandle<Result<(), BrokerError>>,
}

impl BrokerHandle {
    /// Stops the broker gracefully and waits until its data is flushed.
    pub async fn shutdown(self) -> Result<(), BrokerError> {
        let _ = self.stop_tx.send(true);
        self.wait().await
    }

    /// Waits for the broker to stop (after `shutdown` from elsewhere).
    pub async fn wait(self) -> Result<(), BrokerError> {
        match self.server.await {
            Ok(result) => result,
            Err(e) => Err(BrokerError::Io {
                context: "broker task".into(),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }

    /// A sender that triggers shutdown (for signal handlers).
    pub fn shutdown_trigger(&self) -> watch::Sender<bool> {
        self.stop_tx.clone()
    }
}

/// Binds the listener, opens the broker state and starts serving.
pub async fn start(config: BrokerConfig) -> Result<BrokerHandle, BrokerError> {
    let bind = config.listener()?;
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|source| BrokerError::Io {
            context: format!("cannot listen on {bind}"),
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| BrokerError::Io {
        context: "listener address".into(),
        source,
    })?;
    let (mut host, mut port) = config.advertised_listener()?;
    if port == 0 {
        port = local_addr.port();
    }
    if host == "0.0.0.0" || host == "::" {
        host = "127.0.0.1".into();
    }
    let metrics_addr = config.metrics_listener().map_err(BrokerError::Start)?;
    let max_connections = config.max_connections();
    let broker = Arc::new(block_in_place_or_run(|| {
        Broker::open(config, &host, port, crate::clock::system())
    })?);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Every task the broker runs besides connections, joined before the final flush.
    let mut background = JoinSet::new();
    background.spawn(crate::background::run(broker.clone(), shutdown_rx.clone()));
    background.spawn(crate::lifecycle::run_heartbeats(
        broker.clone(),
        shutdown_rx.clone(),
    ));
    background.spawn(crate::lifecycle::run_controller_duties(
        broker.seat().clone(),
        broker.config().heartbeat_interval(),
        broker.config().leader_balance(),
        shutdown_rx.clone(),
    ));
    background.spawn(crate::background::run_cleaner(
        broker.clone(),
        shutdown_rx.clone(),
    ));
    background.spawn(crate::background::run_group_timers(
        broker.clone(),
        shutdown_rx.clone(),
    ));
    background.spawn(crate::background::run_txn_timers(
        broker.clone(),
        shutdown_rx.clone(),
    ));
    background.spawn(crate::replica_fetcher::run(
        broker.clone(),
        shutdown_rx.clone(),
    ));
    background.spawn(crate::isr_manager::run(broker.clone(), shutdown_rx.clone()));
    broker.metrics.set_per_partition(
        broker
            .config()
            .get("metrics.partition.series.enable")
            .is_none_or(|v| v.eq_ignore_ascii_case("true")),
    );
    broker.metrics.set_counting(metrics_addr.is_some());
    if let Some(addr) = metrics_addr {
        // A port in use costs the endpoint, not the broker.
        match TcpListener::bind(addr).await {
            Ok(l) => {
                tracing::info!(%addr, "metrics and health on http://{addr}");
                background.spawn(crate::metrics_server::serve(
                    l,
                    broker.clone(),
                    shutdown_rx.clone(),
                ));
            }
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot listen for metrics: /metrics and the health checks are off")
            }
        }
    }
    background.spawn(crate::coordinator_ownership::run(
        broker.clone(),
        shutdown_rx.clone(),
    ));
    let server = tokio::spawn(serve(
        listener,
        broker.clone(),
        Stop {
            requested: stop_rx,
            now: shutdown_tx,
            observed: shutdown_rx,
        },
        max_connections,
        background,
    ));
    tracing::info!(%local_addr, advertised = %format!("{host}:{port}"), "broker listening");
    Ok(BrokerHandle {
        local_addr,
        broker,
        stop_tx,
        server,
    })
}

/// The two steps of stopping: `requested` (the handle or a signal asks), then `now` (sent by
/// `serve` once the controlled shutdown is over), which connections and background tasks
/// watch through `observed`.
struct Stop {
    requested: watch::Receiver<bool>,
    now: watch::Sender<bool>,
    observed: watch::Receiver<bool>,
}

async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut stop: Stop,
    max_connections: usize,
    mut background: JoinSet<()>,
) -> Result<(), BrokerError> {
    let permits = Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS)));
    let mut connections = JoinSet::new();
    let requested = async {
        // A dropped handle stops the broker too.
        while !*stop.requested.borrow_and_update() {
            if stop.requested.changed().await.is_err() {
                return;
            }
        }
    };
    let serving = (&listener, &broker, &permits, &stop.observed);
    accept_until(serving, &mut connections, Box::pin(requested)).await;
    tracing::info!("stopping: controlled shutdown first");
    let controlled = crate::lifecycle::controlled_shutdown(broker.clone());
    accept_until(serving, &mut connections, Box::pin(controlled)).await;
    let _ = stop.now.send(true);
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still open after the shutdown grace period; closing them");
        connections.abort_all();
    }
    // Background tasks end at their next check of the shutdown signal, after the step they
    // are in (a cleaner pass, a marker write); none is aborted halfway.
    while let Some(joined) = background.join_next().await {
        if let Err(e) = joined {
            tracing::error!(error = %e, "a background task failed");
        }
    }
    let result = tokio::task::spawn_blocking(move || broker.shutdown())
        .await
        .unwrap_or_else(|e| {
            Err(BrokerError::Io {
                context: "shutdown".into(),
                source: std::io::Error::other(e.to_string()),
            })
        });
    tracing::info!(clean = result.is_ok(), "broker stopped");
    result
}

/// What accepting needs: the listener, the broker, the connection permits and the signal
/// that ends each connection.
type Serving<'a> = (
    &'a TcpListener,
    &'a Arc<Broker>,
    &'a Arc<Semaphore>,
    &'a watch::Receiver<bool>,
);

/// Accepts connections (each served until `shutdown`) until `until` completes.
async fn accept_until(
    (listener, broker, permits, shutdown): Serving<'_>,
    connections: &mut JoinSet<()>,
    mut until: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>,
) {
    loop {
        let permit = tokio::select! {
            _ = &mut until => return,
            permit = permits.clone().acquire_owned() => permit.expect("semaphore never closed"),
        };
        let accepted = tokio::select! {
            _ = &mut until => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let broker = broker.clone();
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    broker.metrics.connection(true);
                    if let Err(e) = serve_connection(stream, broker.clone(), shutdown).await {
                        tracing::info!(%peer, error = %e, "connection closed");
                    }
                    broker.metrics.connection(false);
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        while connections.try_join_next().is_some() {}
    }
}

/// Why a connection ended other than by the peer closing it.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(String),
}

/// Produce requests of one connection that may wait for replication at once; the next
/// frame is not read until the oldest is answered. (Clients keep at most 5 in flight.)
const MAX_REPLICATING_PER_CONNECTION: usize = 16;

/// A request served or being served, in the connection's answer queue.
type Answer = std::pin::Pin<Box<dyn std::future::Future<Output = Served> + Send>>;

/// Serves one connection: requests are taken in the order they arrive and answered in that
/// order. A Produce waiting for replication (acks=all) does not hold up the next Produce:
/// its records are written, and the connection takes the next one while followers fetch
/// (so a client's in-flight requests replicate together); any other request waits until
/// every earlier one is answered, so it sees their effects as in Kafka.
async fn serve_connection(
    mut stream: TcpStream,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnectionError> {
    stream.set_nodelay(true)?;
    let max_frame = broker.config().socket_request_max_bytes();
    let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
    // When the bytes now in `buf` arrived: the frames of one read share it.
    let mut received = Instant::now();
    // Answers still to write, oldest first: the first may be waiting for replication.
    let mut answers: std::collections::VecDeque<Answer> = std::collections::VecDeque::new();
    // A frame taken from `buf` that must wait until the answers before it are written.
    let mut held: Option<(bytes::Bytes, Instant)> = None;
    loop {
        loop {
            if held.is_none() {
                held = split_frame(&mut buf, max_frame)?.map(|f| (f, received));
            }
            let Some((frame, at)) = held.take() else {
                break;
            };
            let must_wait = !answers.is_empty()
                && (answers.len() >= MAX_REPLICATING_PER_CONNECTION
                    || !crate::dispatch::is_produce(&frame));
            if must_wait {
                held = Some((frame, at));
                break;
            }
            match dispatch_staged(&broker, frame, at).await {
                Staged::Served(served) if answers.is_empty() => {
                    write_answer(&mut stream, &broker, served).await?;
                }
                Staged::Served(served) => answers.push_back(Box::pin(std::future::ready(served))),
                Staged::Replicating(rest) => answers.push_back(rest),
            }
            if *shutdown.borrow() {
                return finish_answers(&mut stream, &broker, answers).await;
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(READ_BUFFER_BYTES);
        }
        // Read more only while nothing taken waits: a held frame bounds what is buffered.
        let reading = held.is_none();
        tokio::select! {
            served = next_answer(&mut answers) => {
                write_answer(&mut stream, &broker, served).await?;
            }
            _ = shutdown.changed() => return finish_answers(&mut stream, &broker, answers).await,
            read = stream.read_buf(&mut buf), if reading => {
                // The peer is gone: answers still due have nobody to read them.
                if read? == 0 {
                    return Ok(());
                }
                received = Instant::now();
            }
        }
    }
}

/// The oldest answer once it is ready (taken off the queue); never, while there is none.
/// Cancel safe: an answer not yet ready stays first in the queue.
async fn next_answer(answers: &mut std::collections::VecDeque<Answer>) -> Served {
    let Some(first) = answers.front_mut() else {
        return std::future::pending().await;
    };
    let served = first.await;
    answers.pop_front();
    served
}

/// Writes the answers still due, in order, before the connection closes.
async fn finish_answers(
    stream: &mut TcpStream,
    broker: &Broker,
    answers: std::collections::VecDeque<Answer>,
) -> Result<(), ConnectionError> {
    for answer in answers {
        write_answer(stream, broker, answer.await).await?;
    }
    Ok(())
}

/// Writes one request's answer (or closes the connection, as it says) and counts its time.
async fn write_answer(
    stream: &mut TcpStream,
    broker: &Broker,
    Served { outcome, timed }: Served,
) -> Result<(), ConnectionError> {
    let sending = Instant::now();
    match outcome {
        Outcome::Respond(bytes) => stream.write_all(&bytes).await?,
        Outcome::RespondFromFiles(pieces) => write_pieces(stream, &pieces).await?,
        Outcome::NoResponse => {}
        Outcome::Close(reason) => return Err(ConnectionError::Protocol(reason)),
    }
    if let Some((api, mut times)) = timed {
        times.send = sending.elapsed();
        broker.metrics.request(api, &times);
    }
    Ok(())
}
