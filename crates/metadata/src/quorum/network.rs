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

/// Sends `op` to the controller at `addr` and returns its outcome.
pub async fn forward(addr: &str, op: ControllerOp, timeout: Duration) -> ForwardedOutcome {
    let unreachable = |e: std::io::Error| WireRefusal {
        kind: RefusalKind::NotController,
        message: format!("the active controller at {addr} is unreachable: {e}"),
    };
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let body = serde_json::to_vec(&RaftRequest::Controller(op)).expect("serializes");
        write_frame(&mut stream, &body).await?;
        read_frame(&mut stream).await
    };
    let answer = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return Err(unreachable(e)),
        Err(_) => {
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

/// Asks the voter at `target` (it must be the leader) to add observer `node_id` at `addr`.
pub async fn ask_to_observe(
    target: std::net::SocketAddr,
    node_id: i32,
    addr: &str,
    timeout: Duration,
) -> Result<(), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(target).await?;
        stream.set_nodelay(true)?;
        let request = RaftRequest::Observe {
            node_id,
            addr: addr.to_string(),
        };
        write_frame(
            &mut stream,
            &serde_json::to_vec(&request).expect("serializes"),
        )
        .await?;
        read_frame(&mut stream).await
    };
    let answer = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{target} did not answer in time"))?
        .map_err(|e| e.to_string())?;
    serde_json::from_slice::<Result<(), String>>(&answer)
        .map_err(|e| format!("malformed answer from {target}: {e}"))?
}

/// The quorum's state as the voter at `target` sees it.
pub async fn ask_status(
    target: std::net::SocketAddr,
    timeout: Duration,
) -> Result<super::QuorumStatus, String> {
    let answer = tokio::time::timeout(timeout, async {
        let mut stream = TcpStream::connect(target).await?;
        stream.set_nodelay(true)?;
        let body = serde_json::to_vec(&RaftRequest::Status).expect("serializes");
        write_frame(&mut stream, &body).await?;
        read_frame(&mut stream).await
    })
    .await
    .map_err(|_| format!("{target} did not answer in time"))?
    .map_err(|e| e.to_string())?;
    serde_json::from_slice(&answer).map_err(|e| format!("malformed answer from {target}: {e}"))
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
}

/// Runs a forwarded controller operation (set by the broker once its controller exists).
pub type ControllerHandler = Arc<dyn Fn(ControllerOp) -> ForwardedOutcome + Send + Sync>;

/// Where the handler is installed; empty until then.
pub type HandlerCell = Arc<RwLock<Option<ControllerHandler>>>;

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
pub async fn serve(listener: TcpListener, raft: Raft, handler: HandlerCell) {
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
        peers.spawn(async move {
            match serve_peer(stream, raft, handler).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                    tracing::warn!(%peer, "{e}; connection closed");
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
        let request: RaftRequest = serde_json::from_slice(&body).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("malformed quorum request: {e}"),
            )
        })?;
        let answer = match request {
            RaftRequest::Vote(r) => serde_json::to_vec(&raft.vote(r).await),
            RaftRequest::AppendEntries(r) => serde_json::to_vec(&raft.append_entries(r).await),
            RaftRequest::InstallSnapshot(r) => serde_json::to_vec(&raft.install_snapshot(r).await),
            RaftRequest::Controller(op) => {
                let handler = handler.read().expect("handler lock poisoned").clone();
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
        }
        .expect("raft responses serialize");
        write_frame(&mut stream, &answer).await?;
    }
}

/// Makes one connection per peer voter.
pub struct Network;

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConnection {
        PeerConnection {
            target,
            addr: node.addr.clone(),
            stream: None,
        }
    }
}

/// The connection to one peer voter, opened on first use and after every error.
pub struct PeerConnection {
    target: NodeId,
    addr: String,
    stream: Option<TcpStream>,
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
        let body = serde_json::to_vec(&request).expect("raft requests serialize");
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
