//! Decoding of the individual records inside an uncompressed v2 batch.
//!
//! Exists because the log cleaner has to look at record keys and values
//! (to keep only the latest value per key and to find tombstones), whereas
//! the rest of the storage layer treats the records section as opaque.
//!
//! Record layout (v2): `length` (zig-zag varint, bytes after this field),
//! `attributes` (i8, unused), `timestampDelta` (zig-zag varlong),
//! `offsetDelta` (zig-zag varint), `keyLength` (zig-zag varint, -1 = null),
//! key bytes, `valueLength` (zig-zag varint, -1 = null), value bytes,
//! `headerCount` (zig-zag varint) and the headers. Headers are not
//! interpreted; a record is kept or dropped as a whole byte span.

use crate::batch::{BatchHeader, HEADER_SIZE};
use crate::error::StorageError;

/// One record of a batch, borrowed from the batch bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<&'a [u8]>,
    /// `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// The whole encoded record, including its length prefix.
    pub raw: &'a [u8],
}

fn corrupt(why: &str) -> StorageError {
    StorageError::CorruptMessage(format!("malformed record: {why}"))
}

/// Reads an unsigned LEB128 value of at most `max_bytes` bytes.
fn read_uvarint(buf: &[u8], pos: &mut usize, max_bytes: usize) -> Result<u64, StorageError> {
    let mut value = 0u64;
    for i in 0..max_bytes {
        let b = *buf.get(*pos).ok_or_else(|| corrupt("truncated varint"))?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(corrupt("varint too long"))
}

/// Zig-zag encoded 32-bit varint.
pub fn read_varint(buf: &[u8], pos: &mut usize) -> Result<i32, StorageError> {
    let v = read_uvarint(buf, pos, 5)?;
    if v > u64::from(u32::MAX) {
        return Err(corrupt("varint out of range"));
    }
    let v = v as u32;
    Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
}

/// Zig-zag encoded 64-bit varlong.
pub fn read_varlong(buf: &[u8], pos: &mut usize) -> Result<i64, StorageError> {
    let v = read_uvarint(buf, pos, 10)?;
    Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
}

/// A length-prefixed byte field (`-1` = null).
fn read_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>, StorageError> {
    let len = read_varint(buf, pos)?;
    if len < 0 {
        return Ok(None);
    }
    let end = pos
        .checked_add(len as usize)
        .filter(|&e| e <= buf.len())
        .ok_or_else(|| corrupt("field runs past the record"))?;
    let out = &buf[*pos..end];
    *pos = end;
    Ok(Some(out))
}

/// Decodes the records of one whole, uncompressed batch (`batch` holds the
/// header too). Fails on compressed batches, a record count mismatch, or
/// records that do not exactly fill the batch.
pub fn parse_records<'a>(
    batch: &'a [u8],
    header: &BatchHeader,
) -> Result<Vec<RecordView<'a>>, StorageError> {
    if header.compression() != 0 {
        return Err(StorageError::InvalidRecord(
            "cannot decode the records of a compressed batch".into(),
        ));
    }
    if batch.len() != header.total_size() || batch.len() < HEADER_SIZE {
        return Err(corrupt("batch size does not match its header"));
    }
    let section = &batch[HEADER_SIZE..];
    let mut out = Vec::with_capacity(header.records_count.max(0) as usize);
    let mut pos = 0usize;
    while pos < section.len() {
        let start = pos;
        let len = read_varint(section, &mut pos)?;
        if len < 0 {
            return Err(corrupt("negative record length"));
        }
        let end = pos
            .checked_add(len as usize)
            .filter(|&e| e <= section.len())
            .ok_or_else(|| corrupt("record runs past the batch"))?;
        let body = &section[..end];
        let mut p = pos + 1; // attributes
        if p > end {
            return Err(corrupt("record too short"));
        }
        let timestamp_delta = read_varlong(body, &mut p)?;
        let offset_delta = read_varint(body, &mut p)?;
        let key = read_bytes(body, &mut p)?;
        let value = read_bytes(body, &mut p)?;
        if offset_delta < 0 || offset_delta > header.last_offset_delta {
            return Err(corrupt("offset delta outside the batch"));
        }
        out.push(RecordView {
            offset_delta,
            timestamp_delta,
            key,
            value,
            raw: &section[start..end],
        });
        pos = end;
    }
    if out.len() != header.records_count.max(0) as usize {
        return Err(corrupt("record count does not match the batch header"));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Encodes v2 records and keyed batches for tests.
    use crate::batch::test_util::build_batch;

    fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    pub fn put_varint(out: &mut Vec<u8>, v: i32) {
        put_uvarint(out, ((v << 1) ^ (v >> 31)) as u32 as u64);
    }

    pub fn put_varlong(out: &mut Vec<u8>, v: i64) {
        put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
    }

    fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
        match b {
            None => put_varint(out, -1),
            Some(b) => {
                put_varint(out, b.len() as i32);
                out.extend_from_slice(b);
            }
        }
    }

    /// A record's key and value (`None` = null).
    pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

    /// One encoded record (no headers).
    pub fn record(
        offset_delta: i32,
        ts_delta: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut body = vec![0u8]; // attributes
        put_varlong(&mut body, ts_delta);
        put_varint(&mut body, offset_delta);
        put_bytes(&mut body, key);
        put_bytes(&mut body, value);
        put_varint(&mut body, 0); // headers
        let mut out = Vec::new();
        put_varint(&mut out, body.len() as i32);
        out.extend(body);
        out
    }

    /// An uncompressed batch (base offset 0) of keyed records with offset
    /// deltas 0.., all with timestamp `ts`.
    pub fn keyed_batch(ts: i64, records: &[KeyValue<'_>]) -> Vec<u8> {
        let payload: Vec<u8> = records
            .iter()
            .enumerate()
            .flat_map(|(i, (k, v))| record(i as i32, 0, *k, *v))
            .collect();
        build_batch(0, records.len() as i32, ts, ts, &payload)
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;

    #[test]
    fn varints_roundtrip() {
        for v in [0i32, 1, -1, 63, -64, 64, 300, -300, i32::MAX, i32::MIN] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut p = 0;
            assert_eq!(read_varint(&b, &mut p).unwrap(), v);
            assert_eq!(p, b.len());
        }
        for v in [0i64, -1, 1 << 40, i64::MIN, i64::MAX] {
            let mut b = Vec::new();
            put_varlong(&mut b, v);
            let mut p = 0;
            assert_eq!(read_varlong(&b, &mut p).unwrap(), v);
        }
        let mut p = 0;
        assert!(read_varint(&[0x80, 0x80], &mut p).is_err());
    }

    #[test]
    fn parse_keyed_batch() {
        let b = keyed_batch(
            5,
            &[
                (Some(b"k1"), Some(b"v1")),
                (None, Some(b"x")),
                (Some(b"k2"), None),
            ],
        );
        let h = BatchHeader::parse(&b).unwrap();
        let recs = parse_records(&b, &h).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].key, Some(&b"k1"[..]));
        assert_eq!(recs[0].value, Some(&b"v1"[..]));
        assert_eq!(recs[1].key, None);
        assert_eq!(recs[2].offset_delta, 2);
        assert_eq!(recs[2].value, None);
        let total: usize = recs.iter().map(|r| r.raw.len()).sum();
        assert_eq!(total, b.len() - HEADER_SIZE);
        // A truncated records section is rejected.
        let mut bad = b.clone();
        bad.pop();
        assert!(parse_records(&bad, &h).is_err());
    }
}
