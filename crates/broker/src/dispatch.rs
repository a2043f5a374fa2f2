//! From a request frame to a response frame: guard, decode, route to a handler, encode.
//!
//! Nothing here may panic on client input: the guard rejects frames the codec could not
//! decode safely, decode errors close the connection with a log line (as Kafka does for
//! unparsable requests), and unsupported versions get UNSUPPORTED_VERSION (ApiVersions) or a
//! closed connection (every other API, as Kafka).

use bytes::{BufMut, Bytes, BytesMut};
use gregor_protocol::guard::check_request;
use gregor_protocol::versions;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::Broker;
use crate::handlers::{self, Reply};
use crate::metrics::{with_remote_time, RequestTimes};
use crate::zero_copy::{fetch_frame, Piece};

/// Decoded requests may use at most this many times their frame size in memory (as the
/// guard estimates it: 256 bytes a struct, several times what the codec's structs take). At
/// 16 a CreateTopics with 10,000 assigned partitions (16 frame bytes each) was refused.
const DECODE_MEMORY_FACTOR: usize = 32;

/// The most memory decoding a request frame of `frame_len` bytes may take: at least 1 MiB.
pub fn decode_memory_cap(frame_len: usize) -> usize {
    frame_len.saturating_mul(DECODE_MEMORY_FACTOR).max(1 << 20)
}

/// What the connection should do after a request.
pub enum Outcome {
    /// Write this complete frame (length prefix included).
    Respond(Bytes),
    /// Write this complete frame, parts of it from segment files.
    RespondFromFiles(Vec<Piece>),
    /// Send nothing (acks=0 produce).
    NoResponse,
    /// Close the connection; the text says why.
    Close(String),
}

/// A request served: what to do with the connection, and (for a request that reached its
/// handler) its API and where its time went, the send time still to add.
pub struct Served {
    pub outcome: Outcome,
    pub timed: Option<(ApiKey, RequestTimes)>,
}

impl From<Outcome> for Served {
    fn from(outcome: Outcome) -> Served {
        Served {
            outcome,
            timed: None,
        }
    }
}

/// A request decoded: the header fields its response needs, and the body.
struct Decoded {
    header: RequestHeader,
    request: RequestKind,
    api_key: ApiKey,
}

/// A request's first stage, as [`dispatch_staged`] serves it.
pub enum Staged {
    /// Served in full.
    Served(Served),
    /// A Produce whose records are written and whose answer waits for replication
    /// (acks=all): the connection may take its next Produce meanwhile and answers both in
    /// order.
    Replicating(Pin<Box<dyn Future<Output = Served> + Send>>),
}

/// Serves one request frame (without its length prefix) that arrived at `received`.
pub async fn dispatch(broker: &Broker, frame: Bytes, received: Instant) -> Served {
    let decoded = match decode(frame) {
        Ok(d) => d,
        Err(outcome) => return outcome.into(),
    };
    let started = Instant::now();
    let Decoded {
        header,
        request,
        api_key,
    } = decoded;
    let handled = handlers::handle(broker, &header, request);
    finish(broker, api_key, &header, received, started, handled).await
}

/// Like [`dispatch`], but a Produce that waits for replication comes back as soon as its
/// records are written, with the rest of its serving to run (and answer) later.
pub async fn dispatch_staged(broker: &Arc<Broker>, frame: Bytes, received: Instant) -> Staged {
    if !is_produce(&frame) {
        return Staged::Served(dispatch(broker, frame, received).await);
    }
    let decoded = match decode(frame) {
        Ok(d) => d,
        Err(outcome) => return Staged::Served(outcome.into()),
    };
    let started = Instant::now();
    let Decoded {
        header,
        request: RequestKind::Produce(request),
        api_key,
    } = decoded
    else {
        unreachable!("is_produce checked the api key")
    };
    let appended = handlers::produce::append(broker, request, header.request_api_version);
    let replicating = appended.waits_for_replicas();
    let broker = broker.clone();
    let rest = async move {
        let reply = async {
            Ok(handlers::produce::complete(&broker, appended)
                .await
                .map(|r| Reply {
                    response: ResponseKind::Produce(r),
                    files: Vec::new(),
                }))
        };
        finish(&broker, api_key, &header, received, started, reply).await
    };
    if replicating {
        Staged::Replicating(Box::pin(rest))
    } else {
        Staged::Served(rest.await)
    }
}

/// Whether a request frame (without its length prefix) is a Produce.
pub fn is_produce(frame: &[u8]) -> bool {
    frame.len() >= 2 && i16::from_be_bytes([frame[0], frame[1]]) == ApiKey::Produce as i16
}

/// Checks and decodes a request frame; what the connection must do if it cannot be served.
fn decode(frame: Bytes) -> Result<Decoded, Outcome> {
    let api_key_raw = i16::from_be_bytes([frame[0], frame[1]]);
    let api_version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let max_decoded = decode_memory_cap(frame.len());
    // A client newer than the broker opens with an ApiVersions version the broker does not
    // know; it is answered in v0 without parsing anything past the correlation id.
    if api_key_raw == ApiKey::ApiVersions as i16
        && !versions::is_supported(ApiKey::ApiVersions, api_version)
    {
        return Err(Outcome::Respond(
            handlers::api_versions::unsupported_version_response(correlation_id),
        ));
    }
    if let Err(e) = check_request(&frame, max_decoded) {
        return Err(Outcome::Close(format!(
            "request api_key={api_key_raw} version={api_version} correlation_id={correlation_id} refused: {e}"
        )));
    }
    let api_key = ApiKey::try_from(api_key_raw).expect("guard accepts only known api keys");
    debug_assert!(versions::is_supported(api_key, api_version));
    let mut body = frame;
    let header = RequestHeader::decode(&mut body, api_key.request_header_version(api_version))
        .map_err(|e| Outcome::Close(format!("undecodable request header: {e}")))?;
    let request = RequestKind::decode(api_key, &mut body, api_version).map_err(|e| {
        Outcome::Close(format!(
            "undecodable {api_key:?} v{api_version} request (correlation_id={correlation_id}): {e}"
        ))
    })?;
    Ok(Decoded {
        header,
        request,
        api_key,
    })
}

/// Runs a request's handler (begun at `started`) to its reply and encodes the response,
/// counting its time and errors.
async fn finish(
    broker: &Broker,
    api: ApiKey,
    header: &RequestHeader,
    received: Instant,
    started: Instant,
    handler: impl Future<Output = Result<Option<Reply>, String>>,
) -> Served {
    let (api_version, correlation_id) = (header.request_api_version, header.correlation_id);
    let counting = broker.metrics.counting();
    let (handled, remote) = if counting {
        with_remote_time(handler).await
    } else {
        (handler.await, Duration::ZERO)
    };
    let times = |started: Instant| RequestTimes {
        queue: started.saturating_duration_since(received),
        local: started.elapsed().saturating_sub(remote),
        remote,
        send: Duration::ZERO,
    };
    let Reply { response, files } = match handled {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Served {
                outcome: Outcome::NoResponse,
                timed: counting.then(|| (api, times(started))),
            }
        }
        Err(reason) => return Outcome::Close(reason).into(),
    };
    if counting {
        count_errors(broker, api, &response);
        if let ResponseKind::Fetch(fetch) = &response {
            count_bytes_out(broker, fetch, &files);
        }
    }
    let encoded = match response {
        ResponseKind::Fetch(fetch) if !files.is_empty() => {
            fetch_frame(api_version, correlation_id, fetch, files).map(Outcome::RespondFromFiles)
        }
        response => {
            encode_response(api, api_version, correlation_id, &response).map(Outcome::Respond)
        }
    };
    let outcome = encoded.unwrap_or_else(|e| {
        Outcome::Close(format!(
            "cannot encode {api:?} v{api_version} response: {e}"
        ))
    });
    Served {
        outcome,
        timed: counting.then(|| (api, times(started))),
    }
}

/// The record bytes of each topic a Fetch response sends: its in-memory records, and for a
/// null placeholder the next file slice (they come in encoding order).
fn count_bytes_out(
    broker: &Broker,
    fetch: &kafka_protocol::messages::FetchResponse,
    files: &[gregor_storage::FileRecords],
) {
    let mut files = files.iter();
    for t in &fetch.responses {
        let bytes: usize = t
            .partitions
            .iter()
            .map(|p| match &p.records {
                Some(records) => records.len(),
                None => files.next().map_or(0, |f| f.len()),
            })
            .sum();
        broker.metrics.fetched(t.topic.0.as_str(), bytes as u64);
    }
}

/// Counts the errors a Produce or Fetch response carries, one per partition (as Kafka's
/// ErrorsPerSec), and the top-level error of the others that have one.
fn count_errors(broker: &Broker, api: ApiKey, response: &ResponseKind) {
    let count = |code: i16| {
        if code != 0 {
            broker.metrics.error(api, code);
        }
    };
    match response {
        ResponseKind::Produce(r) => r
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .for_each(|p| count(p.error_code)),
        ResponseKind::Fetch(r) => {
            count(r.error_code);
            r.responses
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| count(p.error_code));
        }
        ResponseKind::JoinGroup(r) => count(r.error_code),
        ResponseKind::SyncGroup(r) => count(r.error_code),
        ResponseKind::Heartbeat(r) => count(r.error_code),
        ResponseKind::FindCoordinator(r) => count(r.error_code),
        ResponseKind::InitProducerId(r) => count(r.error_code),
        ResponseKind::EndTxn(r) => count(r.error_code),
        _ => {}
    }
}

/// Encodes `response` with its header and length prefix.
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &ResponseKind,
) -> Result<Bytes, String> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api_key.response_header_version(version);
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    header
        .encode(&mut buf, header_version)
        .map_err(|e| e.to_string())?;
    response
        .encode(&mut buf, version)
        .map_err(|e| e.to_string())?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}
