//! The record accumulator: per-partition queues of batches, buffer accounting, the
//! idempotence bookkeeping and batch encoding. Everything here runs under one mutex.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::interceptor::Reply;
use crate::producer::txn_state::TransactionManager;
use crate::producer::RecordMetadata;
use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
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

/// A topic-partition.
pub(crate) type Tp = (String, i32);

/// One accepted record waiting for its acknowledgement.
pub(crate) struct PendingRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    pub timestamp: i64,
    pub reply: Reply,
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
}

impl Batch {
    /// Encodes the batch as one v2 record batch (`transactional`: part of a transaction).
    pub fn encode(&self, compression: Compression, transactional: bool) -> Result<Bytes> {
        let (producer_id, epoch, base_sequence) = match self.sequence {
            Some((id, seq)) => (id.producer_id, id.epoch, seq),
            None => (NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE),
        };
        let records: Vec<Record> = self
            .records
            .iter()
            .enumerate()
            .map(|(i, r)| Record {
                transactional,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                producer_id,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // Offsets and sequences must advance together for the encoder to keep one batch.
                sequence: base_sequence.wrapping_add(i as i32),
                timestamp: r.timestamp,
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone()))
                    .collect::<IndexMap<_, _>>(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .map_err(|e| Error::Protocol(format!("cannot encode record batch: {e}")))?;
        Ok(buf.freeze())
    }

    /// Resolves every record of the batch.
    pub fn complete(self, outcome: std::result::Result<(i64, i64), Error>) {
        for (i, r) in self.records.into_iter().enumerate() {
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

/// All mutable producer state.
pub(crate) struct State {
    pub queues: BTreeMap<Tp, PartitionQueue>,
    pub buffer_used: usize,
    /// Records accepted by `send` and not yet resolved.
    pub unacked: usize,
    /// Active `flush` / `close` calls: while > 0 every batch is ready at once.
    pub flushing: usize,
    /// No new records are accepted.
    pub closed: bool,
    /// The sender should exit once everything is resolved.
    pub shutdown: bool,
    pub node_in_flight: HashMap<i32, usize>,
    /// Produce requests in flight overall.
    pub requests_in_flight: usize,
    pub idempotence: Idempotence,
    pub topics: BTreeSet<String>,
    pub metadata_needed: bool,
    /// The transaction manager of a transactional producer.
    pub txn: Option<TransactionManager>,
}

impl State {
    pub fn new(idempotent: bool) -> State {
        State {
            queues: BTreeMap::new(),
            buffer_used: 0,
            unacked: 0,
            flushing: 0,
            closed: false,
            shutdown: false,
            node_in_flight: HashMap::new(),
            requests_in_flight: 0,
            idempotence: Idempotence {
                enabled: idempotent,
                ..Idempotence::default()
            },
            topics: BTreeSet::new(),
            metadata_needed: false,
            txn: None,
        }
    }

    /// Appends a record to the partition's last batch, or starts a new batch. Returns whether
    /// a new batch was started. `size` bytes of buffer memory were already reserved by the
    /// caller; a new batch adds its header overhead, so that `release` (which returns
    /// `batch.size`) gives back exactly what was taken.
    pub fn append(
        &mut self,
        tp: Tp,
        record: PendingRecord,
        size: usize,
        batch_size: usize,
    ) -> bool {
        self.unacked += 1;
        self.topics.insert(tp.0.clone());
        let q = self.queues.entry(tp.clone()).or_default();
        if let Some(last) = q.batches.back_mut() {
            if last.attempts == 0 && last.sequence.is_none() && last.size + size <= batch_size {
                last.size += size;
                last.records.push(record);
                return false;
            }
        }
        self.buffer_used += BATCH_OVERHEAD;
        q.batches.push_back(Batch {
            tp,
            records: vec![record],
            size: BATCH_OVERHEAD + size,
            created: Instant::now(),
            attempts: 0,
            retry_after: None,
            last_error: None,
            sequence: None,
        });
        true
    }

    /// Releases the memory and accounting of a finished batch.
    pub fn release(&mut self, batch: &Batch) {
        debug_assert!(
            self.buffer_used >= batch.size,
            "buffer accounting is symmetric"
        );
        self.buffer_used = self.buffer_used.saturating_sub(batch.size);
        self.unacked = self.unacked.saturating_sub(batch.records.len());
    }

    /// Removes and returns every queued (not in-flight) batch, releasing its accounting.
    pub fn take_queued(&mut self) -> Vec<Batch> {
        let batches: Vec<Batch> = self
            .queues
            .values_mut()
            .flat_map(|q| q.batches.drain(..))
            .collect();
        for b in &batches {
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
        for b in &expired {
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
