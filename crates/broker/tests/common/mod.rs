//! Test support: a real broker started in-process on an ephemeral port, librdkafka clients
//! pointed at it, and a raw-protocol connection for requests clients would never send.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use gregor_broker::{BrokerConfig, BrokerHandle};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::config::ClientConfig;

/// Starts a broker on 127.0.0.1:0 storing data in `dir`, with extra `overrides`.
pub async fn start_broker(dir: &Path, overrides: &[(&str, &str)]) -> BrokerHandle {
    let mut pairs = vec![
        (
            "listeners".to_string(),
            "PLAINTEXT://127.0.0.1:0".to_string(),
        ),
        ("log.dirs".to_string(), dir.display().to_string()),
    ];
    pairs.extend(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let config = BrokerConfig::from_pairs(pairs).expect("valid test config");
    gregor_broker::start(config).await.expect("broker starts")
}

/// A broker on a port that survives restarts within one test (the port of the first start).
pub async fn restart_broker(dir: &Path, port: u16, overrides: &[(&str, &str)]) -> BrokerHandle {
    let listener = format!("PLAINTEXT://127.0.0.1:{port}");
    let mut all: Vec<(&str, &str)> = vec![("listeners", listener.as_str())];
    all.extend_from_slice(overrides);
    // Owned copies: `start_broker` prepends port 0, which the later entry overrides.
    let owned: Vec<(String, String)> = all
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let refs: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    start_broker(dir, &refs).await
}

/// librdkafka client config for the broker at `addr`.
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("socket.timeout.ms", "10000");
    c
}

/// Polls `cond` until it holds or `timeout` passes.
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// A plain TCP connection speaking the Kafka protocol by hand.
pub struct RawConnection {
    stream: TcpStream,
    correlation_id: i32,
}

impl RawConnection {
    pub fn connect(addr: std::net::SocketAddr) -> RawConnection {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        RawConnection {
            stream,
            correlation_id: 0,
        }
    }

    /// Sends raw bytes (a frame must include its own length prefix).
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one response frame body (without the length prefix).
    pub fn read_frame(&mut self) -> std::io::Result<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body)?;
        Ok(Bytes::from(body))
    }

    /// True when the broker closed the connection (read returns EOF or reset).
    pub fn is_closed_by_peer(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }

    /// Encodes and sends `request` as `version`, returns the decoded response.
    pub fn request(
        &mut self,
        api_key: ApiKey,
        version: i16,
        request: &RequestKind,
    ) -> ResponseKind {
        self.correlation_id += 1;
        let frame = encode_request(api_key, version, self.correlation_id, request);
        self.send_raw(&frame).expect("send");
        let mut body = self.read_frame().expect("response");
        let header =
            ResponseHeader::decode(&mut body, api_key.response_header_version(version)).unwrap();
        assert_eq!(header.correlation_id, self.correlation_id);
        ResponseKind::decode(api_key, &mut body, version).expect("decodable response")
    }
}

/// A complete request frame, length prefix included.
pub fn encode_request(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    request: &RequestKind,
) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("raw-test")));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header
        .encode(&mut buf, api_key.request_header_version(version))
        .unwrap();
    request.encode(&mut buf, version).unwrap();
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

/// Appends a zigzag varint.
fn put_varint(buf: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            buf.put_u8(z as u8);
            return;
        }
        buf.put_u8((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

/// A v2 record batch of keyless `values`, as an idempotent producer would send it.
pub fn idempotent_batch(
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
    values: &[&[u8]],
) -> Bytes {
    producer_batch(producer_id, epoch, base_sequence, values, false)
}

/// [`idempotent_batch`], with the transactional attribute when `transactional`.
pub fn producer_batch(
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
    values: &[&[u8]],
    transactional: bool,
) -> Bytes {
    let mut records = BytesMut::new();
    for (i, v) in values.iter().enumerate() {
        let mut r = BytesMut::new();
        r.put_u8(0); // attributes
        put_varint(&mut r, 0); // timestamp delta
        put_varint(&mut r, i as i64); // offset delta
        put_varint(&mut r, -1); // null key
        put_varint(&mut r, v.len() as i64);
        r.extend_from_slice(v);
        put_varint(&mut r, 0); // headers
        put_varint(&mut records, r.len() as i64);
        records.extend_from_slice(&r);
    }
    let mut b = BytesMut::new();
    b.put_i64(0); // base offset
    b.put_i32(0); // batch length, patched below
    b.put_i32(-1); // partition leader epoch
    b.put_i8(2); // magic
    b.put_u32(0); // crc, patched below
    b.put_i16(if transactional { 0x10 } else { 0 }); // attributes
    b.put_i32(values.len() as i32 - 1);
    b.put_i64(1_700_000_000_000);
    b.put_i64(1_700_000_000_000);
    b.put_i64(producer_id);
    b.put_i16(epoch);
    b.put_i32(base_sequence);
    b.put_i32(values.len() as i32);
    b.extend_from_slice(&records);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}
