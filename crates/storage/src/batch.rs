//! Kafka v2 record-batch header handling.
//!
//! Exists because storage must validate producer batches, assign offsets and
//! leader epochs, and walk batch boundaries in log files, all without
//! decoding individual records. Only the fixed 61-byte header is interpreted;
//! the records section is opaque bytes.
//!
//! Layout (big endian): baseOffset i64 @0, batchLength i32 @8 (bytes after
//! this field, so the batch occupies `12 + batchLength` bytes),
//! partitionLeaderEpoch i32 @12, magic i8 @16 (always 2), crc u32 @17
//! (CRC-32C over bytes @21..end), attributes i16 @21, lastOffsetDelta i32
//! @23, baseTimestamp i64 @27, maxTimestamp i64 @35, producerId i64 @43,
//! producerEpoch i16 @51, baseSequence i32 @53, recordsCount i32 @57.
//! baseOffset and partitionLeaderEpoch are not covered by the CRC, which is
//! why the broker can rewrite them without recomputing it.

use crate::error::StorageError;

/// Size of the fixed v2 batch header.
pub const HEADER_SIZE: usize = 61;
/// Bytes preceding (and including) the `batchLength` field.
pub const LOG_OVERHEAD: usize = 12;
/// Smallest legal `batchLength` value (a header with no records section).
pub const MIN_BATCH_LENGTH: i32 = (HEADER_SIZE - LOG_OVERHEAD) as i32;
/// The only supported magic value.
pub const MAGIC_V2: i8 = 2;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;
/// First byte covered by the CRC.
pub const CRC_START: usize = ATTRIBUTES_AT;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// The decoded fixed header of a v2 record batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

#[inline]
fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
#[inline]
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
#[inline]
fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

impl BatchHeader {
    /// Parses the fixed header from the start of `buf` (needs >= 61 bytes).
    /// Does not validate magic, length or CRC; see [`BatchHeader::check_structure`].
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, StorageError> {
        if buf.len() < HEADER_SIZE {
            return Err(StorageError::CorruptMessage(format!(
                "record batch header needs {HEADER_SIZE} bytes, only {} available",
                buf.len()
            )));
        }
        Ok(BatchHeader {
            base_offset: i64_at(buf, BASE_OFFSET_AT),
            batch_length: i32_at(buf, BATCH_LENGTH_AT),
            partition_leader_epoch: i32_at(buf, LEADER_EPOCH_AT),
            magic: buf[MAGIC_AT] as i8,
            crc: u32::from_be_bytes(buf[CRC_AT..CRC_AT + 4].try_into().expect("4 bytes")),
            attributes: i16_at(buf, ATTRIBUTES_AT),
            last_offset_delta: i32_at(buf, LAST_OFFSET_DELTA_AT),
            base_timestamp: i64_at(buf, BASE_TIMESTAMP_AT),
            max_timestamp: i64_at(buf, MAX_TIMESTAMP_AT),
            producer_id: i64_at(buf, PRODUCER_ID_AT),
            producer_epoch: i16_at(buf, PRODUCER_EPOCH_AT),
            base_sequence: i32_at(buf, BASE_SEQUENCE_AT),
            records_count: i32_at(buf, RECORDS_COUNT_AT),
        })
    }

    /// Checks magic, length and offset delta (everything but the CRC).
    pub fn check_structure(&self) -> Result<(), StorageError> {
        if self.magic != MAGIC_V2 {
            return Err(StorageError::CorruptMessage(format!(
                "unsupported record batch magic {} (only v2 is supported)",
                self.magic
            )));
        }
        if self.batch_length < MIN_BATCH_LENGTH {
            return Err(StorageError::CorruptMessage(format!(
                "record batch length {} is smaller than the minimum {MIN_BATCH_LENGTH}",
                self.batch_length
            )));
        }
        if self.last_offset_delta < 0 {
            return Err(StorageError::CorruptMessage(format!(
                "record batch has negative lastOffsetDelta {}",
                self.last_offset_delta
            )));
        }
        Ok(())
    }

    /// Total bytes the batch occupies (`12 + batchLength`).
    #[inline]
    pub fn total_size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// Offset of the last record in the batch.
    #[inline]
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Number of offsets the batch spans (`lastOffsetDelta + 1`).
    #[inline]
    pub fn offset_count(&self) -> i64 {
        self.last_offset_delta as i64 + 1
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }

    /// True when the batch carries LogAppendTime timestamps.
    pub fn timestamp_type_log_append(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }
}

/// Computes the CRC-32C a batch should carry (over bytes @21..end).
pub fn compute_crc(batch: &[u8]) -> u32 {
    debug_assert!(batch.len() >= HEADER_SIZE);
    crc32c::crc32c(&batch[CRC_START..])
}

/// True when `batch` (exactly one whole batch) carries a correct CRC.
pub fn verify_crc(batch: &[u8]) -> bool {
    if batch.len() < HEADER_SIZE {
        return false;
    }
    let stored = u32::from_be_bytes(batch[CRC_AT..CRC_AT + 4].try_into().expect("4 bytes"));
    stored == compute_crc(batch)
}

/// Stores a freshly computed CRC into the batch.
pub fn write_crc(batch: &mut [u8]) {
    let crc = compute_crc(batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Rewrites the base offset (not covered by the CRC).
#[inline]
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Rewrites the partition leader epoch (not covered by the CRC).
#[inline]
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Rewrites the `batchLength` field (covered by nothing; call [`write_crc`]
/// after all changes anyway).
#[inline]
pub fn set_batch_length(batch: &mut [u8], batch_length: i32) {
    batch[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
}

/// Rewrites the `recordsCount` field (CRC covered: call [`write_crc`]).
#[inline]
pub fn set_records_count(batch: &mut [u8], count: i32) {
    batch[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&count.to_be_bytes());
}

/// Marks the batch as LogAppendTime with `maxTimestamp = now_ms` and
/// recomputes the CRC (attributes and maxTimestamp are covered by it).
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    debug_assert!(batch.len() >= HEADER_SIZE);
    let attrs = i16_at(batch, ATTRIBUTES_AT) | TIMESTAMP_TYPE_BIT;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attrs.to_be_bytes());
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
    write_crc(batch);
}

/// Iterates over the complete batches in a byte slice.
///
/// Stops (returns `None`) at the first position that does not hold a
/// structurally sane, complete batch: a torn tail, bad magic or bad length.
/// CRCs are not checked here; callers that need that use [`verify_crc`].
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> BatchIter<'a> {
    pub fn new(buf: &'a [u8]) -> BatchIter<'a> {
        BatchIter { buf, pos: 0 }
    }

    /// Byte position just after the last batch yielded.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = (BatchHeader, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.buf[self.pos..];
        let header = BatchHeader::parse(rest).ok()?;
        header.check_structure().ok()?;
        let size = header.total_size();
        if size > rest.len() {
            return None;
        }
        self.pos += size;
        Some((header, &rest[..size]))
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Builds valid v2 batches for tests (records are opaque payload bytes).
    use super::*;

    pub fn build_batch(
        base_offset: i64,
        records_count: i32,
        base_ts: i64,
        max_ts: i64,
        payload: &[u8],
    ) -> Vec<u8> {
        assert!(records_count >= 1);
        let total = HEADER_SIZE + payload.len();
        let mut b = Vec::with_capacity(total);
        b.extend_from_slice(&base_offset.to_be_bytes());
        b.extend_from_slice(&((total - LOG_OVERHEAD) as i32).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(MAGIC_V2 as u8);
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(records_count - 1).to_be_bytes());
        b.extend_from_slice(&base_ts.to_be_bytes());
        b.extend_from_slice(&max_ts.to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&records_count.to_be_bytes());
        assert_eq!(b.len(), HEADER_SIZE);
        b.extend_from_slice(payload);
        write_crc(&mut b);
        b
    }

    /// A batch with `n` records, timestamps `ts`, and `size` total bytes.
    pub fn simple(n: i32, ts: i64, size: usize) -> Vec<u8> {
        assert!(size >= HEADER_SIZE);
        let payload: Vec<u8> = (0..size - HEADER_SIZE)
            .map(|i| (i * 7 + n as usize) as u8)
            .collect();
        build_batch(0, n, ts, ts, &payload)
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;

    #[test]
    fn parse_roundtrip() {
        let b = build_batch(42, 3, 1000, 1005, b"hello");
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.total_size(), b.len());
        assert_eq!(h.last_offset(), 44);
        assert_eq!(h.records_count, 3);
        assert_eq!(h.base_timestamp, 1000);
        assert_eq!(h.max_timestamp, 1005);
        assert_eq!(h.magic, 2);
        assert_eq!(h.partition_leader_epoch, -1);
        assert_eq!(h.producer_id, -1);
        assert!(!h.is_control() && !h.is_transactional() && !h.timestamp_type_log_append());
        assert_eq!(h.compression(), 0);
        assert!(h.check_structure().is_ok());
        assert!(verify_crc(&b));
        assert!(BatchHeader::parse(&b[..60]).is_err());
    }

    #[test]
    fn crc_covers_attributes_but_not_offset_or_epoch() {
        let mut b = build_batch(0, 1, 5, 5, b"xyz");
        set_base_offset(&mut b, 777);
        set_partition_leader_epoch(&mut b, 9);
        assert!(verify_crc(&b));
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!((h.base_offset, h.partition_leader_epoch), (777, 9));
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(!verify_crc(&b));
        b[last] ^= 1;
        b[22] ^= 0x10;
        assert!(!verify_crc(&b));
    }

    #[test]
    fn log_append_time_sets_bit_timestamp_and_crc() {
        let mut b = build_batch(0, 2, 5, 6, b"abc");
        set_log_append_time(&mut b, 123_456);
        let h = BatchHeader::parse(&b).unwrap();
        assert!(h.timestamp_type_log_append());
        assert_eq!(h.max_timestamp, 123_456);
        assert_eq!(h.base_timestamp, 5);
        assert!(verify_crc(&b));
    }

    #[test]
    fn iter_stops_at_torn_tail_and_bad_magic() {
        let mut buf = build_batch(0, 1, 1, 1, b"a");
        buf.extend(build_batch(1, 2, 1, 1, b"bb"));
        let full = buf.len();
        buf.extend(build_batch(3, 1, 1, 1, b"ccc"));
        let mut it = BatchIter::new(&buf[..buf.len() - 1]);
        assert_eq!(it.next().unwrap().0.base_offset, 0);
        assert_eq!(it.next().unwrap().0.base_offset, 1);
        assert!(it.next().is_none());
        assert_eq!(it.position(), full);
        assert_eq!(BatchIter::new(&buf).count(), 3);
        buf[full + MAGIC_AT] = 1;
        assert_eq!(BatchIter::new(&buf).count(), 2);
    }
}
