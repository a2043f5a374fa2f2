//! The CRC-checked frames both metadata files use (the first release's `metadata.log` and
//! the quorum's `raft-log`): `length u32 BE`, `crc32c u32 BE` of the payload, the payload.

const HEADER_BYTES: usize = 8;

/// `payload` as one frame.
pub fn encode(payload: &[u8], max_bytes: usize) -> Vec<u8> {
    assert!(
        payload.len() <= max_bytes,
        "a metadata frame over {max_bytes} bytes"
    );
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of the complete, CRC-valid frame at the start of `buf` and the frame's
/// length; `None` for a torn, oversized or corrupt frame.
pub fn parse(buf: &[u8], max_bytes: usize) -> Option<(&[u8], usize)> {
    if buf.len() < HEADER_BYTES {
        return None;
    }
    let len = u32::from_be_bytes(buf[0..4].try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(buf[4..8].try_into().ok()?);
    if len > max_bytes || buf.len() < HEADER_BYTES + len {
        return None;
    }
    let payload = &buf[HEADER_BYTES..HEADER_BYTES + len];
    (crc32c::crc32c(payload) == crc).then_some((payload, HEADER_BYTES + len))
}
