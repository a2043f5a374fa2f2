//! Transaction control markers: the one-record control batches that end a producer's
//! transaction in a partition. Exists so that writing a marker (the coordinator) and reading
//! one back (replay of the log on start) share one definition of Kafka's format.
//!
//! A marker is a v2 batch with the transactional (0x10) and control (0x20) attribute bits,
//! the producer's id and epoch, base sequence -1 and a single record whose key is
//! `[version i16 = 0][type i16: 0 = abort, 1 = commit]` and whose value is
//! `[version i16 = 0][coordinator epoch i32]`.

use gregor_storage::batch::{self, BatchHeader, HEADER_SIZE, LOG_OVERHEAD};
use gregor_storage::records::parse_records;

const TRANSACTIONAL_AND_CONTROL: i16 = 0x10 | 0x20;
const ABORT: i16 = 0;
const COMMIT: i16 = 1;

/// What a marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// The marker batch (base offset 0, to be assigned by the log) with a correct CRC-32C.
pub fn marker_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Vec<u8> {
    let mut key = [0u8; 4];
    key[2..].copy_from_slice(&(if commit { COMMIT } else { ABORT }).to_be_bytes());
    let mut value = [0u8; 6];
    value[2..].copy_from_slice(&coordinator_epoch.to_be_bytes());
    // attributes, timestamp delta 0, offset delta 0, key, value, no headers; each small
    // length is a one-byte zig-zag varint.
    let mut record = vec![0u8, 0, 0, zigzag(key.len())];
    record.extend_from_slice(&key);
    record.push(zigzag(value.len()));
    record.extend_from_slice(&value);
    record.push(0);

    let mut b = Vec::with_capacity(HEADER_SIZE + 1 + record.len());
    b.extend_from_slice(&0i64.to_be_bytes()); // base offset
    b.extend_from_slice(&0i32.to_be_bytes()); // batch length, set below
    b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    b.push(batch::MAGIC_V2 as u8);
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, set below
    b.extend_from_slice(&TRANSACTIONAL_AND_CONTROL.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&producer_id.to_be_bytes());
    b.extend_from_slice(&producer_epoch.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&1i32.to_be_bytes()); // records count
    debug_assert_eq!(b.len(), HEADER_SIZE);
    b.push(zigzag(record.len()));
    b.extend_from_slice(&record);
    let len = (b.len() - LOG_OVERHEAD) as i32;
    batch::set_batch_length(&mut b, len);
    batch::write_crc(&mut b);
    b
}

fn zigzag(small: usize) -> u8 {
    assert!(small < 64, "one-byte varint");
    (small as u8) << 1
}

/// Reads the marker of a control batch (`bytes` is the whole batch); `None` when the
/// batch is not a well-formed marker.
pub fn parse_marker(bytes: &[u8], header: &BatchHeader) -> Option<Marker> {
    if !header.is_control() || header.compression() != 0 {
        return None;
    }
    let records = parse_records(bytes, header).ok()?;
    let record = records.first()?;
    let key = record.key?;
    let value = record.value?;
    if key.len() < 4 || value.len() < 6 || key[..2] != [0, 0] {
        return None;
    }
    let kind = i16::from_be_bytes([key[2], key[3]]);
    let coordinator_epoch = i32::from_be_bytes(value[2..6].try_into().ok()?);
    match kind {
        ABORT | COMMIT => Some(Marker {
            commit: kind == COMMIT,
            coordinator_epoch,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trip_and_layout() {
        for commit in [false, true] {
            let b = marker_batch(42, 3, commit, 9, 1_234);
            let h = BatchHeader::parse(&b).unwrap();
            assert!(h.check_structure().is_ok());
            assert!(batch::verify_crc(&b));
            assert_eq!(h.total_size(), b.len());
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (42, 3, -1)
            );
            assert_eq!((h.records_count, h.last_offset_delta), (1, 0));
            assert_eq!((h.base_timestamp, h.max_timestamp), (1_234, 1_234));
            let records = parse_records(&b, &h).unwrap();
            assert_eq!(records[0].key, Some(&[0, 0, 0, commit as u8][..]));
            assert_eq!(records[0].value, Some(&[0, 0, 0, 0, 0, 9][..]));
            assert_eq!(
                parse_marker(&b, &h),
                Some(Marker {
                    commit,
                    coordinator_epoch: 9
                })
            );
        }
    }
}
