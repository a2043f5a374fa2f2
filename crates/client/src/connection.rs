//! One TCP connection to a broker: 4-byte length framing, correlation ids, request and
//! response header versions, ApiVersions negotiation and pipelining (requests are written
//! in call order and responses are matched in that order).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// The API versions this client can speak (inclusive ranges). Negotiation picks, per API,
/// the highest version inside both this range and the broker's.
pub const CLIENT_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 4, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::JoinGroup, 1, 7),
    (ApiKey::SyncGroup, 0, 4),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 2),
    // Transactions (AddPartitionsToTxn v4+ is the brokers' batched verify-only form).
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::TxnOffsetCommit, 0, 5),
    (ApiKey::EndTxn, 0, 5),
    // Admin.
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::DescribeProducers, 0, 0),
    // v1 adds the election type (v0 is preferred only).
    (ApiKey::ElectLeaders, 1, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::DescribeTopicPartitions, 0, 0),
];

/// Largest response frame accepted.
const MAX_FRAME: usize = 256 * 1024 * 1024;

type Reply = oneshot::Sender<Result<ResponseKind>>;

struct Pending {
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    reply: Reply,
}

struct Outgoing {
    frame: Bytes,
    pending: Option<Pending>,
    /// Told once the frame is written (used when no response is expected).
    written: Option<oneshot::Sender<Result<()>>>,
}

struct Shared {
    addr: String,
    queue: Mutex<VecDeque<Pending>>,
    closed: AtomicBool,
    /// Buffers of frames already written, reused for the next frames (large Produce
    /// requests then need no fresh allocation and page faults each).
    frames: Mutex<Vec<BytesMut>>,
}

/// Most frame buffers a connection keeps, and the largest it keeps.
const FRAME_POOL_MAX: usize = 4;
const FRAME_POOL_MAX_BYTES: usize = 16 << 20;

impl Shared {
    fn fail_all(&self, message: &str) {
        self.closed.store(true, Ordering::SeqCst);
        let drained: Vec<Pending> = self.queue.lock().unwrap().drain(..).collect();
        for p in drained {
            let _ = p.reply.send(Err(self.network(message)));
        }
    }

    fn network(&self, message: impl Into<String>) -> Error {
        Error::Network {
            addr: self.addr.clone(),
            message: message.into(),
        }
    }
}

/// A connected, version-negotiated broker connection. Cheap to share behind an `Arc`.
pub struct Connection {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Outgoing>,
    versions: HashMap<i16, i16>,
    next_correlation: AtomicI32,
    client_id: String,
    request_timeout: Duration,
    reader: tokio::task::AbortHandle,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.shared.addr)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Connection {
    /// Connects to `addr` (`host:port`) within `timeout` and negotiates API versions.
    pub async fn connect(addr: &str, client_id: &str, timeout: Duration) -> Result<Connection> {
        let network = |message: String| Error::Network {
            addr: addr.to_string(),
            message,
        };
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| network(format!("connect timed out after {timeout:?}")))?
            .map_err(|e| network(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (mut read, mut write) = stream.into_split();
        let shared = Arc::new(Shared {
            addr: addr.to_string(),
            queue: Mutex::new(VecDeque::new()),
            closed: AtomicBool::new(false),
            frames: Mutex::new(Vec::new()),
        });

        let reader_shared = shared.clone();
        let reader = tokio::spawn(async move {
            let shared = reader_shared;
            loop {
                let mut len = [0u8; 4];
                if let Err(e) = read.read_exact(&mut len).await {
                    shared.fail_all(&format!("connection closed: {e}"));
                    return;
                }
                let len = i32::from_be_bytes(len);
                if len < 4 || len as usize > MAX_FRAME {
                    shared.fail_all(&format!("invalid response frame length {len}"));
                    return;
                }
                let mut body = vec![0u8; len as usize];
                if let Err(e) = read.read_exact(&mut body).await {
                    shared.fail_all(&format!("connection closed: {e}"));
                    return;
                }
                let Some(p) = shared.queue.lock().unwrap().pop_front() else {
                    shared.fail_all("response received with no request outstanding");
                    return;
                };
                let mut body = Bytes::from(body);
                let header = match ResponseHeader::decode(
                    &mut body,
                    p.api_key.response_header_version(p.version),
                ) {
                    Ok(h) => h,
                    Err(e) => {
                        let _ = p.reply.send(Err(Error::Protocol(format!(
                            "bad {:?} response header: {e}",
                            p.api_key
                        ))));
                        shared.fail_all("undecodable response header");
                        return;
                    }
                };
                if header.correlation_id != p.correlation_id {
                    let msg = format!(
                        "correlation id mismatch: expected {}, got {}",
                        p.correlation_id, header.correlation_id
                    );
                    let _ = p.reply.send(Err(Error::Protocol(msg.clone())));
                    shared.fail_all(&msg);
                    return;
                }
                let decoded = ResponseKind::decode(p.api_key, &mut body, p.version).map_err(|e| {
                    Error::Protocol(format!(
                        "cannot decode {:?} v{} response: {e}",
                        p.api_key, p.version
                    ))
                });
                let _ = p.reply.send(decoded);
            }
        });
        let reader_abort = reader.abort_handle();

        let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
        let writer_shared = shared.clone();
        let writer_reader = reader_abort.clone();
        tokio::spawn(async move {
            let shared = writer_shared;
            while let Some(out) = rx.recv().await {
                if shared.closed.load(Ordering::SeqCst) {
                    let err = shared.network("connection is closed");
                    if let Some(p) = out.pending {
                        let _ = p.reply.send(Err(err.clone()));
                    }
                    if let Some(w) = out.written {
                        let _ = w.send(Err(err));
                    }
                    continue;
                }
                if let Some(p) = out.pending {
                    shared.queue.lock().unwrap().push_back(p);
                }
                match write.write_all(&out.frame).await {
                    Ok(()) => {
                        if let Some(w) = out.written {
                            let _ = w.send(Ok(()));
                        }
                        if let Ok(buf) = out.frame.try_into_mut() {
                            if buf.capacity() <= FRAME_POOL_MAX_BYTES {
                                let mut frames = shared.frames.lock().unwrap();
                                if frames.len() < FRAME_POOL_MAX {
                                    frames.push(buf);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        let msg = format!("write failed: {e}");
                        if let Some(w) = out.written {
                            let _ = w.send(Err(shared.network(msg.clone())));
                        }
                        shared.fail_all(&msg);
                        writer_reader.abort();
                    }
                }
            }
            // The Connection was dropped: close the socket.
            let _ = write.shutdown().await;
            writer_reader.abort();
        });

        let mut conn = Connection {
            shared,
            tx,
            versions: HashMap::new(),
            next_correlation: AtomicI32::new(0),
            client_id: client_id.to_string(),
            request_timeout: timeout,
            reader: reader_abort,
        };
        conn.negotiate().await?;
        Ok(conn)
    }

    async fn negotiate(&mut self) -> Result<()> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("gregor-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut response = None;
        // v3 first; a broker that does not know it answers UNSUPPORTED_VERSION in v0 format.
        for version in [3i16, 0] {
            let kind = RequestKind::ApiVersions(request.clone());
            match self
                .send_versioned(ApiKey::ApiVersions, version, &kind)?
                .await
            {
                Ok(ResponseKind::ApiVersions(r)) if r.error_code == 0 => {
                    response = Some(r);
                    break;
                }
                Ok(_) | Err(Error::Protocol(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        let response = response.ok_or_else(|| Error::UnsupportedApi {
            addr: self.addr().to_string(),
            api: "ApiVersions".into(),
        })?;
        for &(key, min, max) in CLIENT_VERSIONS {
            if let Some(b) = response.api_keys.iter().find(|k| k.api_key == key as i16) {
                let hi = max.min(b.max_version);
                if hi >= min.max(b.min_version) {
                    self.versions.insert(key as i16, hi);
                }
            }
        }
        Ok(())
    }

    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// True once the socket failed or was closed; such a connection must be replaced.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// Marks the connection unusable (e.g. after a request timeout).
    pub fn close(&self) {
        self.shared.fail_all("closed by client");
        self.reader.abort();
    }

    /// The negotiated version of `api_key`, if both sides support one.
    pub fn version(&self, api_key: ApiKey) -> Option<i16> {
        self.versions.get(&(api_key as i16)).copied()
    }

    /// The negotiated version, or an `UnsupportedApi` error naming the API.
    pub fn require_version(&self, api_key: ApiKey) -> Result<i16> {
        self.version(api_key).ok_or_else(|| Error::UnsupportedApi {
            addr: self.addr().to_string(),
            api: format!("{api_key:?}"),
        })
    }

    fn frame(&self, api_key: ApiKey, version: i16, request: &RequestKind) -> Result<(i32, Bytes)> {
        let correlation_id = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        let mut buf = self.shared.frames.lock().unwrap().pop().unwrap_or_default();
        buf.clear();
        buf.put_i32(0);
        header
            .encode(&mut buf, api_key.request_header_version(version))
            .map_err(|e| Error::Protocol(format!("cannot encode request header: {e}")))?;
        request
            .encode(&mut buf, version)
            .map_err(|e| Error::Protocol(format!("cannot encode {api_key:?} v{version}: {e}")))?;
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        Ok((correlation_id, buf.freeze()))
    }

    /// Queues `request` at the negotiated version now (so call order is wire order) and
    /// returns a future for its response, bounded by the request timeout.
    pub fn send(
        &self,
        api_key: ApiKey,
        request: &RequestKind,
    ) -> Result<impl Future<Output = Result<ResponseKind>> + Send + 'static> {
        let version = self.require_version(api_key)?;
        self.send_versioned(api_key, version, request)
    }

    /// Like [`Connection::send`] with an explicit version.
    pub fn send_versioned(
        &self,
        api_key: ApiKey,
        version: i16,
        request: &RequestKind,
    ) -> Result<impl Future<Output = Result<ResponseKind>> + Send + 'static> {
        let (correlation_id, frame) = self.frame(api_key, version, request)?;
        let (reply, rx) = oneshot::channel();
        let out = Outgoing {
            frame,
            pending: Some(Pending {
                correlation_id,
                api_key,
                version,
                reply,
            }),
            written: None,
        };
        let shared = self.shared.clone();
        let sent = self.tx.send(out).is_ok();
        let timeout = self.request_timeout;
        Ok(async move {
            if !sent {
                return Err(shared.network("connection is closed"));
            }
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(shared.network("connection closed")),
                Err(_) => {
                    // A late response would mismatch the queue: the connection is done.
                    shared.fail_all("request timed out");
                    Err(Error::RequestTimeout {
                        addr: shared.addr.clone(),
                        timeout_ms: timeout.as_millis() as u64,
                    })
                }
            }
        })
    }

    /// Sends a request the broker does not answer (Produce with acks=0); resolves once
    /// written to the socket.
    pub fn send_without_response(
        &self,
        api_key: ApiKey,
        request: &RequestKind,
    ) -> Result<impl Future<Output = Result<()>> + Send + 'static> {
        let version = self.require_version(api_key)?;
        let (_, frame) = self.frame(api_key, version, request)?;
        let (written, rx) = oneshot::channel();
        let shared = self.shared.clone();
        let sent = self
            .tx
            .send(Outgoing {
                frame,
                pending: None,
                written: Some(written),
            })
            .is_ok();
        Ok(async move {
            if !sent {
                return Err(shared.network("connection is closed"));
            }
            rx.await
                .unwrap_or_else(|_| Err(shared.network("connection closed")))
        })
    }
}
