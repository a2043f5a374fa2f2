//! Voter-to-voter RPCs (Raft's vote, append-entries and install-snapshot) over TCP.
//!
//! Each message is one frame: `length u32 BE`, then that many bytes of JSON. A request is
//! a [`RaftRequest`]; the answer is the library's result for it, as JSON. Connections are
//! opened lazily, kept per peer, and dropped at the first error (the library retries). The
//! listening side treats a malformed or oversized frame like a malformed client frame: it
//! closes that connection and goes on. This port is the node's CONTROLLER listener: an
//! ordinary Kafka client that connects here by mistake is told so in the node's log (its
//! request's API key and version) and its connection closed; it serves no client API.

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use std::sync::{Arc, RwLock};

use super::{NodeId, Raft, TypeConfig};
use crate::controller_op::{ControllerOp, ForwardedOutcome, RefusalKind, WireRefusal};

/// What every quorum message carries besides its request: the sender's cluster id, when it
/// knows one. A node refuses a message of another cluster (INCONSISTENT_CLUSTER_ID), so a
/// misconfigured voter can neither vote nor take entries of a cluster it does not belong to.
#[derive(Debug, Clone, Default)]
pub struct Wire {
    pub cluster_id: Option<String>,
}

/// One quorum message as framed.
#[derive(Serialize, Deserialize)]
struct Envelope {
    #[serde(default)]
    cluster_id: Option<String>,
    request: RaftRequest,
}

/// Why a one-shot exchange failed.
enum ExchangeError {
    Timeout,
    Io(std::io::Error),
}

impl Wire {
    fn frame(&self, request: RaftRequest) -> Vec<u8> {
        let envelope = Envelope {
            cluster_id: self.cluster_id.clone(),
            request,
        };
        serde_json::to_vec(&envelope).expect("quorum requests serialize")
    }

    /// Sends one request on a connection of its own and reads the answer.
    async fn exchange(
        &self,
        target: &str,
        request: RaftRequest,
        timeout: Duration,
    ) -> Result<Vec<u8>, ExchangeError> {
        let body = self.frame(request);
        let exchange = async {
            let mut stream = TcpStream::connect(target).await?;
            stream.set_nodelay(true)?;
            write_frame(&mut stream, &body).await?;
            read_frame(&mut stream).await
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(ExchangeError::Io(e)),
            Err(_) => Err(ExchangeError::Timeout),
        }
    }

    /// Sends `op` to the controller at `addr` and returns its outcome.
    pub async fn forward(
        &self,
        addr: &str,
        op: ControllerOp,
        timeout: Duration,
    ) -> ForwardedOutcome {
        let answer = match self
            .exchange(addr, RaftRequest::Controller(op), timeout)
            .await
        {
            Ok(answer) => answer,
            Err(ExchangeError::Io(e)) => {
                return Err(WireRefusal {
                    kind: RefusalKind::NotController,
                    message: format!("the active controller at {addr} is unreachable: {e}"),
                })
            }
            Err(ExchangeError::Timeout) => {
                return Err(WireRefusal {
                    kind: RefusalKind::Timeout,
                    message: format!("the active controller at {addr} did not answer in time"),
                })
            }
        };
        serde_json::from_slice(&answer).unwrap_or_else(|e| {
            Err(WireRefusal {
                kind: RefusalKind::Internal,
                message: format!("malformed answer from the active controller: {e}"),
            })
        })
    }

    /// Sends `request` to `target` and decodes its answer, errors as text.
    async fn ask<T: DeserializeOwned>(
        &self,
        target: std::net::SocketAddr,
        request: RaftRequest,
        timeout: Duration,
    ) -> Result<T, String> {
        let answer = match self.exchange(&target.to_string(), request, timeout).await {
            Ok(answer) => answer,
            Err(ExchangeError::Timeout) => return Err(format!("{target} did not answer in time")),
            Err(ExchangeError::Io(e)) => return Err(format!("{target}: {e}")),
        };
        serde_json::from_slice(&answer).map_err(|e| format!("malformed answer from {target}: {e}"))
    }

    /// Asks the voter at `target` (it must be the leader) to add observer `node_id` at `addr`.
    pub async fn ask_to_observe(
        &self,
        target: std::net::SocketAddr,
        node_id: i32,
        addr: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let request = RaftRequest::Observe {
            node_id,
            addr: addr.to_string(),
        };
        self.ask::<Result<(), String>>(target, request, timeout)
            .await?
    }

    /// Sends a Kafka request frame to the controller at `target`; its response frame.
    pub async fn ask_kafka(
        &self,
        target: std::net::SocketAddr,
        frame: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        self.ask::<Result<Vec<u8>, String>>(target, RaftRequest::Kafka(frame), timeout)
            .await?
    }

    /// The quorum's state as the voter at `target` sees it.
    pub async fn ask_status(
        &self,
        target: std::net::SocketAddr,
        timeout: Duration,
    ) -> Result<super::QuorumStatus, String> {
        self.ask(target, RaftRequest::Status, timeout).await
    }
}

/// A frame larger than this is refused (snapshots travel in chunks far below it).
const FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// One request from a peer voter.
#[derive(Serialize, Deserialize)]
enum RaftRequest {
    Vote(VoteRequest<NodeId>),
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A controller operation forwarded to the active controller.
    Controller(ControllerOp),
    /// An observer asks the leader to add it as a learner at `addr`.
    Observe {
        node_id: i32,
        addr: String,
    },
    /// The quorum's state as this node sees it (asked of the leader).
    Status,
    /// A Kafka request frame (BrokerRegistration, BrokerHeartbeat) for the active
    /// controller; the answer is the Kafka response frame.
    Kafka(Vec<u8>),
}

/// Runs a forwarded controller operation (set by the broker once its controller exists).
pub type ControllerHandler = Arc<dyn Fn(ControllerOp) -> ForwardedOutcome + Send + Sync>;

/// Answers a Kafka request frame sent to the controller listener with the response frame
/// (errors travel inside it as Kafka error codes; `Err` only for a frame it refuses).
pub type KafkaHandler = Arc<dyn Fn(Vec<u8>) -> Result<Vec<u8>, String> + Send + Sync>;

/// What runs requests other nodes send to this one as active controller.
#[derive(Default)]
pub struct Handlers {
    pub controller: Option<ControllerHandler>,
    pub kafka: Option<KafkaHandler>,
}

/// Where the handlers are installed; empty until then.
pub type HandlerCell = Arc<RwLock<Handlers>>;

async fn write_frame(stream: &mut TcpStream, body: &[u8]) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(body);
    stream.write_all(&frame).await
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a quorum frame of {len} bytes is over the {FRAME_BYTES_MAX}-byte limit"),
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

/// The API key and version of `body` if it is a Kafka request rather than a quorum message
/// (a quorum message is a JSON object; a Kafka request starts with two 16-bit integers, an
/// API key below 256 and a version, then the correlation id).
fn kafka_request_header(body: &[u8]) -> Option<(i16, i16)> {
    if body.len() < 8 || body[0] == b'{' {
        return None;
    }
    let api_key = i16::from_be_bytes([body[0], body[1]]);
    let version = i16::from_be_bytes([body[2], body[3]]);
    (0..256).contains(&api_key).then_some((api_key, version))
}

/// Accepts peer voters' connections and answers their requests until aborted; aborting it
/// closes every connection it accepted too (a stopped voter must not keep answering).
pub async fn serve(listener: TcpListener, raft: Raft, handler: HandlerCell, wire: Wire) {
    let mut peers = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "quorum accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while peers.try_join_next().is_some() {}
        let raft = raft.clone();
        let handler = handler.clone();
        let mine = wire.cluster_id.clone();
        peers.spawn(async move {
            match serve_peer(stream, raft, handler, mine).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                    tracing::warn!(%peer, "{e}; connection closed");
                }
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    tracing::error!(%peer, "{e}; connection closed");
                }
                Err(e) => tracing::debug!(%peer, error = %e, "quorum connection closed"),
            }
        });
    }
}

async fn serve_peer(
    mut stream: TcpStream,
    raft: Raft,
    handler: HandlerCell,
    cluster_id: Option<String>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    loop {
        let body = match read_frame(&mut stream).await {
            Ok(body) => body,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        if let Some((api_key, version)) = kafka_request_header(&body) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!(
                    "a Kafka client sent a request (API key {api_key}, version {version}) to the CONTROLLER listener, which serves only the metadata quorum; clients use the broker's client listener"
                ),
            ));
        }
        let envelope: Envelope = serde_json::from_slice(&body).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("malformed quorum request: {e}"),
            )
        })?;
        if let (Some(theirs), Some(mine)) = (&envelope.cluster_id, &cluster_id) {
            if theirs != mine {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "INCONSISTENT_CLUSTER_ID: a node of cluster {theirs} sent a quorum request to this node of cluster {mine}"
                    ),
                ));
            }
        }
        let request = envelope.request;
        let answer = match request {
            RaftRequest::Vote(r) => serde_json::to_vec(&raft.vote(r).await),
            RaftRequest::AppendEntries(r) => serde_json::to_vec(&raft.append_entries(r).await),
            RaftRequest::InstallSnapshot(r) => serde_json::to_vec(&raft.install_snapshot(r).await),
            RaftRequest::Controller(op) => {
                let handler = handler
                    .read()
                    .expect("handler lock poisoned")
                    .controller
                    .clone();
                let outcome: ForwardedOutcome = match handler {
                    // The controller writes through this very quorum and waits: off the
                    // quorum's own thread.
                    Some(h) => tokio::task::spawn_blocking(move || h(op))
                        .await
                        .unwrap_or_else(|e| {
                            Err(WireRefusal {
                                kind: RefusalKind::Internal,
                                message: format!("the controller failed: {e}"),
                            })
                        }),
                    None => Err(WireRefusal {
                        kind: RefusalKind::NotController,
                        message: "this node's controller is not running yet".into(),
                    }),
                };
                serde_json::to_vec(&outcome)
            }
            RaftRequest::Observe { node_id, addr } => {
                serde_json::to_vec(&super::add_observer(&raft, node_id, addr).await)
            }
            RaftRequest::Status => {
                let metrics = raft.metrics().borrow().clone();
                serde_json::to_vec(&super::status_of(metrics.id as i32, &metrics))
            }
            RaftRequest::Kafka(frame) => {
                let handler = handler.read().expect("handler lock poisoned").kafka.clone();
                let answer: Result<Vec<u8>, String> = match handler {
                    Some(h) => tokio::task::spawn_blocking(move || h(frame))
                        .await
                        .unwrap_or_else(|e| Err(format!("the controller failed: {e}"))),
                    None => Err("this node's controller is not running yet".into()),
                };
                serde_json::to_vec(&answer)
            }
        }
        .expect("raft responses serialize");
        write_frame(&mut stream, &answer).await?;
    }
}

/// Makes one connection per peer voter.
pub struct Network {
    pub wire: Wire,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConnection {
        PeerConnection {
            target,
            addr: node.addr.clone(),
            stream: None,
            wire: self.wire.clone(),
        }
    }
}

/// The connection to one peer voter, opened on first use and after every error.
pub struct PeerConnection {
    target: NodeId,
    addr: String,
    stream: Option<TcpStream>,
    wire: Wire,
}

impl PeerConnection {
    async fn call<Resp, E>(
        &mut self,
        request: RaftRequest,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = self.wire.frame(request);
        if self.stream.is_none() {
            let connected =
                tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr)).await;
            let stream = match connected {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return Err(RPCError::Unreachable(Unreachable::new(&e))),
                Err(_) => {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("connecting to {}", self.addr),
                    );
                    return Err(RPCError::Unreachable(Unreachable::new(&e)));
                }
            };
            let _ = stream.set_nodelay(true);
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("connected above");
        let exchanged = tokio::time::timeout(option.hard_ttl(), async {
            write_frame(stream, &body).await?;
            read_frame(stream).await
        })
        .await;
        let answer = match exchanged {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                self.stream = None;
                return Err(RPCError::Network(NetworkError::new(&e)));
            }
            Err(_) => {
                self.stream = None;
                let e = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer from {}", self.addr),
                );
                return Err(RPCError::Network(NetworkError::new(&e)));
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&answer).map_err(|e| {
                self.stream = None;
                RPCError::Network(NetworkError::new(&e))
            })?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(RaftRequest::AppendEntries(rpc), &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(RaftRequest::InstallSnapshot(rpc), &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(RaftRequest::Vote(rpc), &option).await
    }
}
