//! Requests this broker sends another broker's client listener as a client, for the work
//! that spans brokers: transaction markers to the leaders of a transaction's partitions
//! (WriteTxnMarkers) and KIP-890 verification of a transactional write with the producer's
//! transaction coordinator (AddPartitionsToTxn v5). The replica fetchers keep connections
//! of their own.
//!
//! Synchronous: its callers run on blocking threads (the transaction coordinator holds its
//! lock while it writes markers). One connection per endpoint, kept between requests, one
//! request at a time on it; a connection that failed or timed out is dropped, so a late
//! answer can never be read as the next one's.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Largest response accepted.
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// One endpoint's connection, absent until needed and after a failure.
type Slot = Arc<Mutex<Option<TcpStream>>>;

/// The connections to other brokers, by endpoint.
#[derive(Default)]
pub struct InterBrokerClient {
    connections: Mutex<HashMap<(String, u16), Slot>>,
}

impl InterBrokerClient {
    /// Sends `request` (API `key`, `version`) to `host:port` and decodes the answer, waiting
    /// at most `timeout` for the connection and for each read and write.
    pub fn call<Req: Encodable, Resp: Decodable>(
        &self,
        (host, port): (&str, u16),
        key: ApiKey,
        version: i16,
        request: &Req,
        timeout: Duration,
    ) -> std::io::Result<Resp> {
        let slot = self
            .connections
            .lock()
            .expect("inter-broker connections poisoned")
            .entry((host.to_string(), port))
            .or_default()
            .clone();
        let mut connection = slot.lock().expect("inter-broker connection poisoned");
        let frame = crate::controller_apis::request_frame(key, version, |buf| {
            request
                .encode(buf, version)
                .expect("an inter-broker request encodes")
        });
        let result = (|| {
            if connection.is_none() {
                *connection = Some(connect(host, port, timeout)?);
            }
            let stream = connection.as_mut().expect("connected above");
            exchange(stream, &frame)
        })();
        let body = match result {
            Ok(body) => body,
            Err(e) => {
                *connection = None;
                return Err(e);
            }
        };
        let mut buf = Bytes::from(body);
        let malformed = |e: String| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{key:?}: {e}"))
        };
        ResponseHeader::decode(&mut buf, key.response_header_version(version))
            .map_err(|e| malformed(e.to_string()))?;
        Resp::decode(&mut buf, version).map_err(|e| malformed(e.to_string()))
    }
}

fn connect(host: &str, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let addr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{host}:{port} does not resolve")))?;
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// Writes one length-prefixed frame and reads the answer's frame (without its prefix).
fn exchange(stream: &mut TcpStream, frame: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = BytesMut::with_capacity(4 + frame.len());
    out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    out.extend_from_slice(frame);
    stream.write_all(&out)?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > RESPONSE_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a {len}-byte answer is larger than {RESPONSE_BYTES_MAX}"),
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Ok(body)
}
