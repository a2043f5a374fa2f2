//! Record-level lookups inside batches: ListOffsets by timestamp, and the key check of
//! compacted topics.
//!
//! The data plane never decodes records; only these lookups do. A batch's records follow
//! its 61-byte header: each is `length: varint`, `attributes: i8`, `timestampDelta: varlong`,
//! `offsetDelta: varint`, then key, value and headers, which are skipped using the length.
//! Compressed batches are inflated first (bounded by `INFLATED_BYTES_MAX`).

use bytes::{Buf, Bytes};
use gregor_storage::batch::{BatchHeader, BatchIter, HEADER_SIZE};
use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};

/// Largest decompressed batch this lookup inflates.
const INFLATED_BYTES_MAX: usize = 256 * 1024 * 1024;

/// (offset, timestamp) of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPosition {
    pub offset: i64,
    pub timestamp: i64,
    /// Length of the record's key; -1 for a null key.
    pub key_len: i64,
}

/// Walks the records of the first batch in `batch`, calling `visit` with each record's
/// position until it returns `true`. Errors describe a malformed batch.
pub fn scan_records(
    batch: &[u8],
    mut visit: impl FnMut(RecordPosition) -> bool,
) -> Result<(), String> {
    let header = BatchHeader::parse(batch).map_err(|e| e.to_string())?;
    let end = header.total_size().min(batch.len());
    let body = Bytes::copy_from_slice(&batch[HEADER_SIZE..end]);
    let records = inflate(header.compression(), body)?;
    let log_append = header.timestamp_type_log_append();
    let mut buf: &[u8] = &records;
    for _ in 0..header.records_count.max(0) {
        let len = read_varint(&mut buf)?;
        if len < 0 || len as usize > buf.len() {
            return Err("record length beyond the batch".into());
        }
        let mut record = &buf[..len as usize];
        buf.advance(len as usize);
        if record.is_empty() {
            return Err("empty record".into());
        }
        record.advance(1); // attributes
        let ts_delta = read_varint(&mut record)?;
        let offset_delta = read_varint(&mut record)?;
        let key_len = read_varint(&mut record)?;
        let timestamp = if log_append {
            header.max_timestamp
        } else {
            header.base_timestamp.wrapping_add(ts_delta)
        };
        if visit(RecordPosition {
            offset: header.base_offset + offset_delta,
            timestamp,
            key_len,
        }) {
            break;
        }
    }
    Ok(())
}

/// The first record of the batch with a timestamp at or after `target`.
pub fn first_at_or_after(batch: &[u8], target: i64) -> Result<Option<RecordPosition>, String> {
    let mut found = None;
    scan_records(batch, |r| {
        if r.timestamp >= target {
            found = Some(r);
        }
        found.is_some()
    })?;
    Ok(found)
}

/// The first record of the batch holding the batch's largest timestamp.
pub fn max_timestamp_record(batch: &[u8]) -> Result<Option<RecordPosition>, String> {
    let mut best: Option<RecordPosition> = None;
    scan_records(batch, |r| {
        if best.is_none_or(|b| r.timestamp > b.timestamp) {
            best = Some(r);
        }
        false
    })?;
    Ok(best)
}

/// Positions (index within its batch) of the records without a key, over every batch of a
/// producer's record set; a compacted topic refuses them.
pub fn records_without_key(record_set: &[u8]) -> Result<Vec<i32>, String> {
    let mut missing = Vec::new();
    for (_, batch) in BatchIter::new(record_set) {
        let mut index = 0i32;
        scan_records(batch, |r| {
            if r.key_len < 0 {
                missing.push(index);
            }
            index += 1;
            false
        })?;
    }
    Ok(missing)
}

fn inflate(codec: u8, mut body: Bytes) -> Result<Bytes, String> {
    let keep = |b: &mut Bytes| Ok(std::mem::take(b));
    let out = match codec {
        0 => return Ok(body),
        1 => Gzip::decompress(&mut body, keep),
        2 => Snappy::decompress(&mut body, keep),
        3 => Lz4::decompress(&mut body, keep),
        4 => Zstd::decompress(&mut body, keep),
        other => return Err(format!("unknown compression codec {other}")),
    }
    .map_err(|e| format!("cannot decompress batch: {e}"))?;
    if out.len() > INFLATED_BYTES_MAX {
        return Err("decompressed batch too large".into());
    }
    Ok(out)
}

/// Reads a zigzag varint (at most 10 bytes).
fn read_varint(buf: &mut &[u8]) -> Result<i64, String> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let Some(&b) = buf.first() else {
            return Err("truncated varint".into());
        };
        buf.advance(1);
        value |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err("varint longer than 10 bytes".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_varints() {
        let mut b: &[u8] = &[0x00, 0x01, 0x02, 0xac, 0x02];
        assert_eq!(read_varint(&mut b).unwrap(), 0);
        assert_eq!(read_varint(&mut b).unwrap(), -1);
        assert_eq!(read_varint(&mut b).unwrap(), 1);
        assert_eq!(read_varint(&mut b).unwrap(), 150);
        let mut bad: &[u8] = &[0xff; 11];
        assert!(read_varint(&mut bad).is_err());
    }
}
