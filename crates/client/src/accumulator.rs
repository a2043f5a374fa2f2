//! The record accumulator: per-partition queues of batches, buffer accounting, the
//! idempotence bookkeeping and batch encoding. Everything here runs under one mutex.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::interceptor::Reply;
use crate::producer::txn_state::TransactionManager;
use crate::record::RecordMetadata;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
};

/// Fixed overhead of a v2 record batch header.
pub(crate) const BATCH_OVERHEAD: usize = 61;

/// Upper-bound estimate of one record's encoded size.
pub(crate) fn estimate_record_size(
    key: Option<&Bytes>,
    value: Option<&Bytes>,
    headers: &[(String, Option<Bytes>)],
) -> usize {
    let len = |b: Option<&Bytes>| b.map_or(0, Bytes::len);
    // attributes, varint lengths, timestamp and offset deltas: at most 21 bytes.
    21 + len(key)
        + len(value)
        + headers
            .iter()
            .map(|(k, v)| 10 + k.len() + len(v.as_ref()))
            .sum::<usize>()
}

use crate::in_flight::InFlight;
/// A topic-partition.
pub(crate) use crate::record::Tp;

/// One accepted record waiting for its acknowledgement (its bytes are already encoded in
/// its batch).
pub(crate) struct PendingRecord {
    pub timestamp: i64,
    pub reply: Reply,
}

/// The parts of a record that are written into its batch.
pub(crate) struct RecordData<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(String, Option<Bytes>)],
    pub timestamp: i64,
}

/// The producer id and epoch stamped on idempotent (and transactional) batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdentity {
    pub producer_id: i64,
    pub epoch: i16,
}

/// Idempotence bookkeeping: the identity and the next sequence number of each partition.
#[derive(Debug, Default)]
pub(crate) struct Idempotence {
    pub enabled: bool,
    pub identity: Option<ProducerIdentity>,
    /// Set when a sequence gap may exist: a new identity is needed before sending more.
    pub needs_reset: bool,
    next_sequence: HashMap<Tp, i32>,
}

impl Idempotence {
    /// Reserves `count` sequence numbers for `tp`, returning the first.
    pub fn reserve(&mut self, tp: &Tp, count: i32) -> i32 {
        let next = self.next_sequence.entry(tp.clone()).or_insert(0);
        let base = *next;
        *next = next.wrapping_add(count) & i32::MAX;
        base
    }

    /// Installs a fresh identity; all sequences restart from zero.
    pub fn install(&mut self, identity: ProducerIdentity) {
        self.identity = Some(identity);
        self.needs_reset = false;
        self.next_sequence.clear();
    }
}

/// The bytes of a batch: [`BATCH_OVERHEAD`] header bytes (written by [`Batch::encode`])
/// followed by the records, encoded as they are appended.
enum BatchData {
    /// Still owned here (appending, or kept for a compressed re-encode).
    Open(BytesMut),
    /// Handed to a request as is (uncompressed); reclaimed once the request is gone.
    Sealed(Bytes),
    /// Given back to the buffer pool.
    Released,
}

/// A batch of records for one partition.
pub(crate) struct Batch {
    pub tp: Tp,
    pub records: Vec<PendingRecord>,
    /// Estimated encoded size, also the amount of buffer memory it holds.
    pub size: usize,
    pub created: Instant,
    pub attempts: u32,
    pub retry_after: Option<Instant>,
    pub last_error: Option<Error>,
    /// Identity and base sequence, fixed at the first drain of an idempotent batch.
    pub sequence: Option<(ProducerIdentity, i32)>,
    data: BatchData,
    /// Timestamp of the first record: the base of the records' timestamp deltas.
    base_timestamp: i64,
    max_timestamp: i64,
}

impl Batch {
    fn new(tp: Tp, mut buf: BytesMut, records: Vec<PendingRecord>, created: Instant) -> Batch {
        buf.clear();
        buf.put_bytes(0, BATCH_OVERHEAD);
        Batch {
            tp,
            records,
            size: BATCH_OVERHEAD,
            created,
            attempts: 0,
            retry_after: None,
            last_error: None,
            sequence: None,
            data: BatchData::Open(buf),
            base_timestamp: 0,
            max_timestamp: 0,
        }
    }

    /// Encodes `record` at the end of the batch (which must not have been encoded yet).
    fn push(&mut self, record: &RecordData<'_>, reply: Reply, size: usize) {
        let BatchData::Open(buf) = &mut self.data else {
            unreachable!("records are only appended to batches never sent");
        };
        if self.records.is_empty() {
            self.base_timestamp = record.timestamp;
            self.max_timestamp = record.timestamp;
        } else {
            self.max_timestamp = self.max_timestamp.max(record.timestamp);
        }
        write_record(
            buf,
            self.records.len() as i32,
            record.timestamp.wrapping_sub(self.base_timestamp),
            record,
        );
        self.records.push(PendingRecord {
            timestamp: record.timestamp,
            reply,
        });
        self.size += size;
    }

    /// The batch as one v2 record batch (`transactional`: part of a transaction). Without
    /// compression the records are not copied: the header is written in front of them.
    pub fn encode(&mut self, compression: Compression, transactional: bool) -> Result<Bytes> {
        let (producer_id, epoch, base_sequence) = match self.sequence {
            Some((id, seq)) => (id.producer_id, id.epoch, seq),
            None => (NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE),
        };
        let mut buf = match std::mem::replace(&mut self.data, BatchData::Released) {
            BatchData::Open(b) => b,
            // Normally unique again: the request that used it is gone.
            BatchData::Sealed(b) => b.try_into_mut().unwrap_or_else(|b| BytesMut::from(&b[..])),
            BatchData::Released => unreachable!("a released batch is never encoded"),
        };
        let mut attributes = compression as i16;
        if transactional {
            attributes |= 1 << 4;
        }
        let header = BatchHeader {
            attributes,
            last_offset_delta: self.records.len() as i32 - 1,
            first_timestamp: self.base_timestamp,
            max_timestamp: self.max_timestamp,
            producer_id,
            epoch,
            base_sequence,
            count: self.records.len() as i32,
        };
        if compression == Compression::None {
            header.write(&mut buf);
            let bytes = buf.freeze();
            self.data = BatchData::Sealed(bytes.clone());
            return Ok(bytes);
        }
        let records = &buf[BATCH_OVERHEAD..];
        let mut out = BytesMut::with_capacity(BATCH_OVERHEAD + records.len() / 2 + 64);
        out.put_bytes(0, BATCH_OVERHEAD);
        let result = compress(compression, &mut out, records);
        self.data = BatchData::Open(buf);
        result?;
        header.write(&mut out);
        Ok(out.freeze())
    }

    /// Takes the batch's buffer back (for the pool), if it is not shared any more.
    fn take_buffer(&mut self) -> Option<BytesMut> {
        match std::mem::replace(&mut self.data, BatchData::Released) {
            BatchData::Open(b) => Some(b),
            BatchData::Sealed(b) => b.try_into_mut().ok(),
            BatchData::Released => None,
        }
    }

    /// Resolves every record of the batch; returns the emptied record list for reuse.
    pub fn complete(
        mut self,
        outcome: std::result::Result<(i64, i64), Error>,
    ) -> Vec<PendingRecord> {
        for (i, r) in self.records.drain(..).enumerate() {
            let result = match &outcome {
                Ok((base_offset, log_append_time)) => Ok(RecordMetadata {
                    topic: self.tp.0.clone(),
                    partition: self.tp.1,
                    offset: if *base_offset >= 0 {
                        base_offset + i as i64
                    } else {
                        -1
                    },
                    timestamp: if *log_append_time >= 0 {
                        *log_append_time
                    } else {
                        r.timestamp
                    },
                }),
                Err(e) => Err(e.clone()),
            };
            r.reply.send(result);
        }
        std::mem::take(&mut self.records)
    }
}

/// The fields of a v2 record batch header that vary.
struct BatchHeader {
    attributes: i16,
    last_offset_delta: i32,
    first_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
    count: i32,
}

impl BatchHeader {
    /// Fills the first [`BATCH_OVERHEAD`] bytes of `batch` (the whole encoded batch) and its CRC.
    fn write(&self, batch: &mut [u8]) {
        let batch_length = (batch.len() - 12) as i32;
        let h = &mut batch[..BATCH_OVERHEAD];
        h[0..8].copy_from_slice(&0i64.to_be_bytes()); // base offset
        h[8..12].copy_from_slice(&batch_length.to_be_bytes());
        h[12..16].copy_from_slice(&NO_PARTITION_LEADER_EPOCH.to_be_bytes());
        h[16] = 2; // magic
        h[21..23].copy_from_slice(&self.attributes.to_be_bytes());
        h[23..27].copy_from_slice(&self.last_offset_delta.to_be_bytes());
        h[27..35].copy_from_slice(&self.first_timestamp.to_be_bytes());
        h[35..43].copy_from_slice(&self.max_timestamp.to_be_bytes());
        h[43..51].copy_from_slice(&self.producer_id.to_be_bytes());
        h[51..53].copy_from_slice(&self.epoch.to_be_bytes());
        h[53..57].copy_from_slice(&self.base_sequence.to_be_bytes());
        h[57..61].copy_from_slice(&self.count.to_be_bytes());
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

/// Compresses the encoded `records` onto the end of `out`.
fn compress(compression: Compression, out: &mut BytesMut, records: &[u8]) -> Result<()> {
    use kafka_protocol::compression::{self as cmpr, Compressor};
    let fill = |tmp: &mut BytesMut| {
        tmp.extend_from_slice(records);
        Ok(())
    };
    match compression {
        Compression::None => {
            out.extend_from_slice(records);
            Ok(())
        }
        Compression::Gzip => <cmpr::Gzip as Compressor<BytesMut>>::compress(out, fill),
        Compression::Snappy => <cmpr::Snappy as Compressor<BytesMut>>::compress(out, fill),
        Compression::Lz4 => <cmpr::Lz4 as Compressor<BytesMut>>::compress(out, fill),
        Compression::Zstd => <cmpr::Zstd as Compressor<BytesMut>>::compress(out, fill),
    }
    .map_err(|e| Error::Protocol(format!("cannot compress record batch: {e}")))
}

fn varint_len(v: u64) -> usize {
    // 7 bits per byte, at least one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn zigzag32(v: i32) -> u64 {
    ((v << 1) ^ (v >> 31)) as u32 as u64
}

fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Length (as a zigzag varint) plus bytes of a nullable field.
fn nullable_len(b: Option<&[u8]>) -> usize {
    match b {
        Some(b) => varint_len(zigzag32(b.len() as i32)) + b.len(),
        None => 1,
    }
}

fn put_nullable(buf: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varint(buf, zigzag32(b.len() as i32));
            buf.extend_from_slice(b);
        }
        None => put_varint(buf, zigzag32(-1)),
    }
}

/// Headers as written: one value per name (the last one given, at the first one's place).
fn dedup_headers(headers: &[(String, Option<Bytes>)]) -> Vec<(&str, Option<&[u8]>)> {
    let mut out: Vec<(&str, Option<&[u8]>)> = Vec::with_capacity(headers.len());
    for (k, v) in headers {
        let v = v.as_deref();
        match out.iter_mut().find(|(name, _)| *name == k.as_str()) {
            Some(slot) => slot.1 = v,
            None => out.push((k.as_str(), v)),
        }
    }
    out
}

/// Appends one v2 record (length-prefixed) to `buf`.
fn write_record(buf: &mut BytesMut, offset_delta: i32, timestamp_delta: i64, r: &RecordData<'_>) {
    let headers = dedup_headers(r.headers);
    let ts = zigzag64(timestamp_delta);
    let od = zigzag32(offset_delta);
    let body = 1
        + varint_len(ts)
        + varint_len(od)
        + nullable_len(r.key)
        + nullable_len(r.value)
        + varint_len(zigzag32(headers.len() as i32))
        + headers
            .iter()
            .map(|(k, v)| varint_len(zigzag32(k.len() as i32)) + k.len() + nullable_len(*v))
            .sum::<usize>();
    let len = zigzag32(body as i32);
    buf.reserve(varint_len(len) + body);
    put_varint(buf, len);
    buf.put_u8(0); // attributes
    put_varint(buf, ts);
    put_varint(buf, od);
    put_nullable(buf, r.key);
    put_nullable(buf, r.value);
    put_varint(buf, zigzag32(headers.len() as i32));
    for (k, v) in &headers {
        put_nullable(buf, Some(k.as_bytes()));
        put_nullable(buf, *v);
    }
}

/// Batches queued for one partition and what is in flight for it.
#[derive(Default)]
pub(crate) struct PartitionQueue {
    pub batches: VecDeque<Batch>,
    /// Base sequences of this partition's idempotent batches currently in flight.
    pub in_flight_sequences: Vec<i32>,
}

impl PartitionQueue {
    /// Puts a batch back for a retry, keeping idempotent batches in sequence order.
    pub fn requeue(&mut self, batch: Batch) {
        let pos = match batch.sequence {
            Some((_, seq)) => self
                .batches
                .iter()
                .position(|b| b.sequence.is_none_or(|(_, s)| s > seq))
                .unwrap_or(self.batches.len()),
            None => 0,
        };
        self.batches.insert(pos, batch);
    }

    /// Whether a batch with a sequence lower than `seq` is queued or in flight (so `seq` may
    /// have been out of order only because that batch failed or is not written yet).
    pub fn has_earlier(&self, seq: i32) -> bool {
        self.in_flight_sequences.iter().any(|s| *s < seq)
            || self
                .batches
                .iter()
                .any(|b| b.sequence.is_some_and(|(_, s)| s < seq))
    }
}

/// Most batch buffers kept for reuse.
const POOL_MAX: usize = 16;

/// All mutable producer state.
pub(crate) struct State {
    pub queues: BTreeMap<Tp, PartitionQueue>,
    pub buffer_used: usize,
    /// `buffer.memory`: reserved records plus pooled buffers stay within it.
    buffer_memory: usize,
    /// Buffers of finished batches, reused for new ones (no fresh allocation, and no page
    /// faults, per batch), and their total capacity.
    pool: Vec<BytesMut>,
    pool_bytes: usize,
    /// Emptied record lists of finished batches, reused likewise.
    record_lists: Vec<Vec<PendingRecord>>,
    /// Records accepted by `send` and not yet resolved.
    pub unacked: usize,
    /// Active `flush` / `close` calls: while > 0 every batch is ready at once.
    pub flushing: usize,
    /// No new records are accepted.
    pub closed: bool,
    /// The sender should exit once everything is resolved.
    pub shutdown: bool,
    /// Produce requests outstanding, per broker.
    pub in_flight: InFlight,
    pub idempotence: Idempotence,
    pub topics: BTreeSet<String>,
    pub metadata_needed: bool,
    /// The transaction manager of a transactional producer.
    pub txn: Option<TransactionManager>,
}

impl State {
    pub fn new(idempotent: bool, buffer_memory: usize) -> State {
        State {
            queues: BTreeMap::new(),
            buffer_used: 0,
            buffer_memory,
            pool: Vec::new(),
            pool_bytes: 0,
            record_lists: Vec::new(),
            unacked: 0,
            flushing: 0,
            closed: false,
            shutdown: false,
            in_flight: InFlight::default(),
            idempotence: Idempotence {
                enabled: idempotent,
                ..Idempotence::default()
            },
            topics: BTreeSet::new(),
            metadata_needed: false,
            txn: None,
        }
    }

    /// Encodes a record onto the partition's last batch, or into a new batch. Returns
    /// whether the sender should look at the partition now: a new batch was started, or the
    /// batch is full. `size` bytes of buffer memory were already reserved by the caller; a
    /// new batch adds its header overhead, so that `release` (which returns `batch.size`)
    /// gives back exactly what was taken.
    pub fn append(
        &mut self,
        topic: String,
        partition: i32,
        record: &RecordData<'_>,
        reply: Reply,
        size: usize,
        batch_size: usize,
    ) -> bool {
        self.unacked += 1;
        if !self.topics.contains(&topic) {
            self.topics.insert(topic.clone());
        }
        let tp = (topic, partition);
        // Look up without cloning the topic; only a new partition clones it.
        let q = match self.queues.get_mut(&tp) {
            Some(q) => q,
            None => self.queues.entry(tp.clone()).or_default(),
        };
        if let Some(last) = q.batches.back_mut() {
            if last.attempts == 0 && last.sequence.is_none() && last.size + size <= batch_size {
                last.push(record, reply, size);
                return last.size >= batch_size;
            }
        }
        self.buffer_used += BATCH_OVERHEAD;
        let buf = match self.pool.pop() {
            Some(b) => {
                self.pool_bytes -= b.capacity();
                b
            }
            // Grows as records arrive; reused at its grown size afterwards.
            None => BytesMut::with_capacity(BATCH_OVERHEAD + size.max(batch_size.min(64 * 1024))),
        };
        let records = self.record_lists.pop().unwrap_or_default();
        let mut batch = Batch::new(tp, buf, records, Instant::now());
        batch.push(record, reply, size);
        q.batches.push_back(batch);
        true
    }

    /// Releases the memory and accounting of a finished batch; its buffer goes to the pool
    /// while pooled and reserved memory together stay within `buffer.memory`.
    pub fn release(&mut self, batch: &mut Batch) {
        debug_assert!(
            self.buffer_used >= batch.size,
            "buffer accounting is symmetric"
        );
        self.buffer_used = self.buffer_used.saturating_sub(batch.size);
        self.unacked = self.unacked.saturating_sub(batch.records.len());
        if let Some(buf) = batch.take_buffer() {
            let cap = buf.capacity();
            if self.pool.len() < POOL_MAX
                && self.buffer_used + self.pool_bytes + cap <= self.buffer_memory
            {
                self.pool_bytes += cap;
                self.pool.push(buf);
            }
        }
    }

    /// Keeps an emptied record list (from [`Batch::complete`]) for the next batches.
    pub fn recycle_records(&mut self, list: Vec<PendingRecord>) {
        if self.record_lists.len() < POOL_MAX && list.capacity() > 0 {
            debug_assert!(list.is_empty());
            self.record_lists.push(list);
        }
    }

    /// Removes and returns every queued (not in-flight) batch, releasing its accounting.
    pub fn take_queued(&mut self) -> Vec<Batch> {
        let mut batches: Vec<Batch> = self
            .queues
            .values_mut()
            .flat_map(|q| q.batches.drain(..))
            .collect();
        for b in &mut batches {
            if b.sequence.is_some() {
                // Its sequence numbers were used: a gap now needs a new epoch.
                self.idempotence.needs_reset = true;
            }
            self.release(b);
        }
        batches
    }

    /// Removes and returns queued batches older than `delivery_timeout`.
    pub fn expire(&mut self, now: Instant, delivery_timeout: Duration) -> Vec<Batch> {
        let mut expired = Vec::new();
        for q in self.queues.values_mut() {
            if q.batches
                .iter()
                .all(|b| now.duration_since(b.created) < delivery_timeout)
            {
                continue;
            }
            let mut keep = VecDeque::with_capacity(q.batches.len());
            for b in q.batches.drain(..) {
                if now.duration_since(b.created) >= delivery_timeout {
                    expired.push(b);
                } else {
                    keep.push_back(b);
                }
            }
            q.batches = keep;
        }
        for b in &expired {
            if b.sequence.is_some() {
                self.idempotence.needs_reset = true;
            }
        }
        for b in &mut expired {
            self.release(b);
        }
        expired
    }

    /// After a new identity: forget the sequences of batches not yet in flight.
    pub fn clear_sequences(&mut self) {
        for q in self.queues.values_mut() {
            for b in q.batches.iter_mut() {
                b.sequence = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    fn batch_of(records: &[TestRecord<'_>]) -> Batch {
        let tp = ("t".to_string(), 0);
        let mut batch = Batch::new(tp, BytesMut::new(), Vec::new(), Instant::now());
        for (key, value, headers, timestamp) in records {
            let (tx, _rx) = tokio::sync::oneshot::channel();
            let data = RecordData {
                key: *key,
                value: *value,
                headers,
                timestamp: *timestamp,
            };
            batch.push(&data, Reply::new(tx, None), 10);
        }
        batch
    }

    #[test]
    fn encoded_batches_decode_with_every_codec() {
        let big = vec![7u8; 300];
        let records = vec![
            (
                Some(&b"k1"[..]),
                Some(&b"v1"[..]),
                vec![],
                1_700_000_000_000,
            ),
            (
                None,
                Some(&big[..]),
                vec![("h".to_string(), Some(Bytes::from_static(b"x")))],
                1_700_000_000_500,
            ),
            // Earlier than the first: a negative delta.
            (
                Some(&b""[..]),
                None,
                vec![
                    ("a".to_string(), None),
                    ("a".to_string(), Some(Bytes::from_static(b"2"))),
                ],
                1_699_999_999_000,
            ),
        ];
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut batch = batch_of(&records);
            let identity = ProducerIdentity {
                producer_id: 42,
                epoch: 3,
            };
            batch.sequence = Some((identity, 17));
            for round in 0..2 {
                // Encoding twice (a retry) gives the same batch.
                let bytes = batch.encode(compression, round == 1).unwrap();
                let set = RecordBatchDecoder::decode(&mut bytes.clone()).unwrap();
                assert_eq!(set.records.len(), 3, "{compression:?}");
                for (i, (r, (k, v, h, ts))) in set.records.iter().zip(&records).enumerate() {
                    assert_eq!(r.offset, i as i64);
                    assert_eq!(r.sequence, 17 + i as i32);
                    assert_eq!(r.producer_id, 42);
                    assert_eq!(r.producer_epoch, 3);
                    assert_eq!(r.transactional, round == 1);
                    assert_eq!(r.timestamp, *ts);
                    assert_eq!(r.key.as_deref(), *k);
                    assert_eq!(r.value.as_deref(), *v);
                    let expected: IndexMapLike =
                        h.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    let got: IndexMapLike = r
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect();
                    assert_eq!(got, expected);
                }
            }
        }
    }

    type TestRecord<'a> = (
        Option<&'a [u8]>,
        Option<&'a [u8]>,
        Vec<(String, Option<Bytes>)>,
        i64,
    );

    /// Headers by name, last value winning, like the batch encoder keeps them.
    type IndexMapLike = std::collections::BTreeMap<String, Option<Bytes>>;
}
