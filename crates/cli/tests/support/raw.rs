//! Raw Kafka requests over a plain TCP connection, for tests that must control exactly what
//! goes on the wire (pipelined requests, malformed record sets).

use std::io::Read;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};

/// Appends one request frame (length prefix included) to `out`.
pub fn frame<R: Encodable>(
    out: &mut Vec<u8>,
    key: ApiKey,
    version: i16,
    correlation: i32,
    body: &R,
) {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0; 4]);
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str("raw-test")))
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&buf);
}

/// One response frame's body (after its length prefix).
pub fn read_frame(conn: &mut std::net::TcpStream) -> Bytes {
    let mut size = [0u8; 4];
    conn.read_exact(&mut size).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(size) as usize];
    conn.read_exact(&mut body).unwrap();
    Bytes::from(body)
}
