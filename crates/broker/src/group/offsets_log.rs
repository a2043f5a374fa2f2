//! Codec for the records of the internal `__consumer_offsets` topic.
//!
//! Group metadata and committed offsets are persisted as records of the compacted topic
//! `__consumer_offsets`, using Kafka's own (non-flexible) key and value schemas so that
//! tools reading that topic understand them, and so that the coordinator's state can be
//! rebuilt by replaying the topic. This module is pure: records <-> bytes, and uncompressed
//! v2 record batches <-> lists of records. It performs no I/O.
//!
//! Keys start with an `i16` key version: 0 and 1 are offset-commit keys (group, topic,
//! partition), 2 is a group-metadata key (group). Values start with an `i16` value version.
//! We write offset-commit values at v3 and group-metadata values at v3, and read v0..=v3 of
//! both. A record with a null value (a tombstone) deletes what its key names.
//!
//! All decoding treats its input as untrusted: every length is bounded by the bytes that
//! remain, nothing is pre-allocated from a count read off the data, and malformed input is
//! reported as an [`OffsetsLogError`], never a panic.

use bytes::{BufMut, Bytes};

/// Longest string (in UTF-8 bytes) the non-flexible schemas can hold (`i16` length prefix).
pub const MAX_STRING_LEN: usize = i16::MAX as usize;

/// Key version written for offset-commit keys.
const OFFSET_KEY_VERSION: i16 = 1;
/// Key version of group-metadata keys.
const GROUP_KEY_VERSION: i16 = 2;
/// Value version written for offset-commit values.
const OFFSET_VALUE_VERSION: i16 = 3;
/// Value version written for group-metadata values.
const GROUP_VALUE_VERSION: i16 = 3;

// Record batch (magic v2) layout.
const BATCH_HEADER_SIZE: usize = 61;
/// baseOffset (8) + batchLength (4): the bytes not counted by `batchLength`.
const LOG_OVERHEAD: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
/// First byte covered by the CRC (the attributes field).
const CRC_START: usize = 21;
const MAGIC_V2: i8 = 2;
const COMPRESSION_MASK: i16 = 0x07;
const CONTROL_BIT: i16 = 0x20;
const TRANSACTIONAL_BIT: i16 = 0x10;

/// Errors from decoding `__consumer_offsets` records and batches.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsLogError {
    #[error("truncated data: {what} needs {needed} bytes but only {remaining} remain")]
    Truncated {
        what: &'static str,
        needed: usize,
        remaining: usize,
    },
    #[error("invalid length {len} for {what}")]
    InvalidLength { what: &'static str, len: i64 },
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 { what: &'static str },
    #[error("malformed varint in {what}")]
    InvalidVarint { what: &'static str },
    #[error("{count} unexpected trailing bytes after {what}")]
    TrailingBytes { what: &'static str, count: usize },
    #[error("record has a null key")]
    NullKey,
    #[error("unknown key version {0}")]
    UnknownKeyVersion(i16),
    #[error("unsupported {kind} value version {version}")]
    UnsupportedValueVersion { kind: &'static str, version: i16 },
    #[error("unsupported record batch magic {0} (only v2 is supported)")]
    UnsupportedMagic(i8),
    #[error("record batch is compressed (codec {0}); coordinators never compress their batches")]
    Compressed(u8),
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("record offset overflows: base offset {base_offset} + delta {delta}")]
    OffsetOverflow { base_offset: i64, delta: i32 },
    #[error("{what} is {len} bytes, longer than the {max} the schema allows")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
}

/// Key of a committed offset: (group, topic, partition).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OffsetCommitKey {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

/// A committed offset.
///
/// Written at value version 3, which does not carry an expire timestamp: on write
/// `expire_timestamp_ms` is dropped; it is only ever `Some` when read from a v1 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitValue {
    pub offset: i64,
    /// -1 if unknown (always -1 when read from v0..=v2).
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    pub expire_timestamp_ms: Option<i64>,
}

/// One member of a classic group, as persisted in the group-metadata value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMemberRecord {
    pub member_id: String,
    /// Always `None` when read from v0..=v2.
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Read from v0 values (which lack it) as the session timeout.
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// The persisted state of a classic group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadataValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// -1 when read from v0/v1 values (which lack it).
    pub current_state_timestamp_ms: i64,
    pub members: Vec<GroupMemberRecord>,
}

/// One record of `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsRecord {
    /// A committed offset; `value: None` is a tombstone removing it.
    Offset {
        key: OffsetCommitKey,
        value: Option<OffsetCommitValue>,
    },
    /// A group's metadata; `value: None` is a tombstone removing the group.
    Group {
        group: String,
        value: Option<GroupMetadataValue>,
    },
}

impl OffsetsRecord {
    /// The group this record belongs to.
    pub fn group(&self) -> &str {
        match self {
            OffsetsRecord::Offset { key, .. } => &key.group,
            OffsetsRecord::Group { group, .. } => group,
        }
    }

    /// True for a tombstone (null value).
    pub fn is_tombstone(&self) -> bool {
        match self {
            OffsetsRecord::Offset { value, .. } => value.is_none(),
            OffsetsRecord::Group { value, .. } => value.is_none(),
        }
    }

    /// Checks that every string fits its `i16` length prefix (and byte fields their `i32`
    /// prefix). The encoders never fail; a record that does not pass this check would be
    /// written with over-long fields cut short, so callers must check untrusted input first.
    pub fn check_encodable(&self) -> Result<(), OffsetsLogError> {
        fn s(what: &'static str, v: &str) -> Result<(), OffsetsLogError> {
            if v.len() > MAX_STRING_LEN {
                return Err(OffsetsLogError::TooLong {
                    what,
                    len: v.len(),
                    max: MAX_STRING_LEN,
                });
            }
            Ok(())
        }
        fn b(what: &'static str, v: &[u8]) -> Result<(), OffsetsLogError> {
            let max = i32::MAX as usize;
            if v.len() > max {
                return Err(OffsetsLogError::TooLong {
                    what,
                    len: v.len(),
                    max,
                });
            }
            Ok(())
        }
        match self {
            OffsetsRecord::Offset { key, value } => {
                s("group id", &key.group)?;
                s("topic name", &key.topic)?;
                if let Some(v) = value {
                    s("offset metadata", &v.metadata)?;
                }
            }
            OffsetsRecord::Group { group, value } => {
                s("group id", group)?;
                if let Some(v) = value {
                    s("protocol type", &v.protocol_type)?;
                    s("protocol", v.protocol.as_deref().unwrap_or(""))?;
                    s("leader", v.leader.as_deref().unwrap_or(""))?;
                    for m in &v.members {
                        s("member id", &m.member_id)?;
                        s(
                            "group instance id",
                            m.group_instance_id.as_deref().unwrap_or(""),
                        )?;
                        s("client id", &m.client_id)?;
                        s("client host", &m.client_host)?;
                        b("subscription", &m.subscription)?;
                        b("assignment", &m.assignment)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The record key: offset keys at version 1, group keys at version 2.
    pub fn encode_key(&self) -> Bytes {
        let mut out = Vec::with_capacity(64);
        match self {
            OffsetsRecord::Offset { key, .. } => {
                out.put_i16(OFFSET_KEY_VERSION);
                put_string(&mut out, &key.group);
                put_string(&mut out, &key.topic);
                out.put_i32(key.partition);
            }
            OffsetsRecord::Group { group, .. } => {
                out.put_i16(GROUP_KEY_VERSION);
                put_string(&mut out, group);
            }
        }
        Bytes::from(out)
    }

    /// The record value (v3 of either schema), or `None` for a tombstone.
    pub fn encode_value(&self) -> Option<Bytes> {
        let mut out = Vec::with_capacity(128);
        match self {
            OffsetsRecord::Offset { value, .. } => {
                let v = value.as_ref()?;
                out.put_i16(OFFSET_VALUE_VERSION);
                out.put_i64(v.offset);
                out.put_i32(v.leader_epoch);
                put_string(&mut out, &v.metadata);
                out.put_i64(v.commit_timestamp_ms);
            }
            OffsetsRecord::Group { value, .. } => {
                let v = value.as_ref()?;
                out.put_i16(GROUP_VALUE_VERSION);
                put_string(&mut out, &v.protocol_type);
                out.put_i32(v.generation);
                put_nullable_string(&mut out, v.protocol.as_deref());
                put_nullable_string(&mut out, v.leader.as_deref());
                out.put_i64(v.current_state_timestamp_ms);
                out.put_i32(i32::try_from(v.members.len()).unwrap_or(i32::MAX));
                for m in v.members.iter().take(i32::MAX as usize) {
                    put_string(&mut out, &m.member_id);
                    put_nullable_string(&mut out, m.group_instance_id.as_deref());
                    put_string(&mut out, &m.client_id);
                    put_string(&mut out, &m.client_host);
                    out.put_i32(m.rebalance_timeout_ms);
                    out.put_i32(m.session_timeout_ms);
                    put_bytes(&mut out, &m.subscription);
                    put_bytes(&mut out, &m.assignment);
                }
            }
        }
        Some(Bytes::from(out))
    }

    /// [`Self::decode`], with a record of an unknown key version as `Ok(None)`: readers
    /// skip those (Kafka adds key versions for other record kinds).
    pub fn decode_known(
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<Option<OffsetsRecord>, OffsetsLogError> {
        match OffsetsRecord::decode(key, value) {
            Ok(record) => Ok(Some(record)),
            Err(OffsetsLogError::UnknownKeyVersion(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Decodes one record from its key and (possibly null) value.
    ///
    /// An unknown key version yields [`OffsetsLogError::UnknownKeyVersion`] (which
    /// [`Self::decode_known`] turns into `None`); anything else malformed is an error too.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<OffsetsRecord, OffsetsLogError> {
        let mut k = Reader::new(key);
        let key_version = k.i16("key version")?;
        match key_version {
            0 | 1 => {
                let group = k.string("group id")?;
                let topic = k.string("topic name")?;
                let partition = k.i32("partition")?;
                k.finish("offset commit key")?;
                let value = value.map(decode_offset_value).transpose()?;
                Ok(OffsetsRecord::Offset {
                    key: OffsetCommitKey {
                        group,
                        topic,
                        partition,
                    },
                    value,
                })
            }
            2 => {
                let group = k.string("group id")?;
                k.finish("group metadata key")?;
                let value = value.map(decode_group_value).transpose()?;
                Ok(OffsetsRecord::Group { group, value })
            }
            other => Err(OffsetsLogError::UnknownKeyVersion(other)),
        }
    }
}

fn decode_offset_value(value: &[u8]) -> Result<OffsetCommitValue, OffsetsLogError> {
    let mut r = Reader::new(value);
    let version = r.i16("offset commit value version")?;
    let v = match version {
        0 | 2 => {
            let offset = r.i64("offset")?;
            let metadata = r.string("offset metadata")?;
            let commit_timestamp_ms = r.i64("commit timestamp")?;
            OffsetCommitValue {
                offset,
                leader_epoch: -1,
                metadata,
                commit_timestamp_ms,
                expire_timestamp_ms: None,
            }
        }
        1 => {
            let offset = r.i64("offset")?;
            let metadata = r.string("offset metadata")?;
            let commit_timestamp_ms = r.i64("commit timestamp")?;
            let expire = r.i64("expire timestamp")?;
            OffsetCommitValue {
                offset,
                leader_epoch: -1,
                metadata,
                commit_timestamp_ms,
                expire_timestamp_ms: Some(expire),
            }
        }
        3 => {
            let offset = r.i64("offset")?;
            let leader_epoch = r.i32("leader epoch")?;
            let metadata = r.string("offset metadata")?;
            let commit_timestamp_ms = r.i64("commit timestamp")?;
            OffsetCommitValue {
                offset,
                leader_epoch,
                metadata,
                commit_timestamp_ms,
                expire_timestamp_ms: None,
            }
        }
        other => {
            return Err(OffsetsLogError::UnsupportedValueVersion {
                kind: "offset commit",
                version: other,
            })
        }
    };
    r.finish("offset commit value")?;
    Ok(v)
}

fn decode_group_value(value: &[u8]) -> Result<GroupMetadataValue, OffsetsLogError> {
    let mut r = Reader::new(value);
    let version = r.i16("group metadata value version")?;
    if !(0..=3).contains(&version) {
        return Err(OffsetsLogError::UnsupportedValueVersion {
            kind: "group metadata",
            version,
        });
    }
    let protocol_type = r.string("protocol type")?;
    let generation = r.i32("generation")?;
    let protocol = r.nullable_string("protocol")?;
    let leader = r.nullable_string("leader")?;
    let current_state_timestamp_ms = if version >= 2 {
        r.i64("current state timestamp")?
    } else {
        -1
    };
    let count = r.array_len("members")?;
    let mut members = Vec::new();
    for _ in 0..count {
        let member_id = r.string("member id")?;
        let group_instance_id = if version >= 3 {
            r.nullable_string("group instance id")?
        } else {
            None
        };
        let client_id = r.string("client id")?;
        let client_host = r.string("client host")?;
        let rebalance_timeout = if version >= 1 {
            Some(r.i32("rebalance timeout")?)
        } else {
            None
        };
        let session_timeout_ms = r.i32("session timeout")?;
        let subscription = r.bytes("subscription")?;
        let assignment = r.bytes("assignment")?;
        members.push(GroupMemberRecord {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms: rebalance_timeout.unwrap_or(session_timeout_ms),
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    r.finish("group metadata value")?;
    Ok(GroupMetadataValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp_ms,
        members,
    })
}

/// One uncompressed v2 record batch (magic 2, CRC-32C set, base offset 0, producer id -1,
/// epoch -1, sequence -1, timestamps = now_ms) holding `records` in order, at offset
/// deltas 0, 1, 2, ... The caller (the log append) assigns the real base offset.
pub fn encode_batch(records: &[OffsetsRecord], now_ms: i64) -> Bytes {
    encode_records(records, now_ms, None)
}

/// [`encode_batch`], as a transactional batch of `txn_producer` (id, epoch) when given.
pub fn encode_records(
    records: &[OffsetsRecord],
    now_ms: i64,
    txn_producer: Option<(i64, i16)>,
) -> Bytes {
    let kvs: Vec<KvRecord> = records
        .iter()
        .map(|r| (r.encode_key(), r.encode_value()))
        .collect();
    encode_kv_batch(&kvs, now_ms, txn_producer)
}

/// One record of an internal topic: its key and its value (`None`: a tombstone).
pub type KvRecord = (Bytes, Option<Bytes>);

/// An uncompressed v2 batch of key/value records, as [`encode_batch`] writes it; with
/// `txn_producer` = (producer id, epoch) it is a transactional batch of that producer
/// (sequence -1: coordinators' writes carry no sequence numbers).
pub fn encode_kv_batch(
    records: &[KvRecord],
    now_ms: i64,
    txn_producer: Option<(i64, i16)>,
) -> Bytes {
    let mut body = Vec::with_capacity(records.len() * 64);
    let mut record = Vec::with_capacity(128);
    for (i, (key, value)) in records.iter().enumerate() {
        record.clear();
        record.put_i8(0); // attributes
        put_varlong(&mut record, 0); // timestamp delta
        put_varint(&mut record, clamp_i32(i));
        put_varint(&mut record, clamp_i32(key.len()));
        record.extend_from_slice(key);
        match value {
            Some(value) => {
                put_varint(&mut record, clamp_i32(value.len()));
                record.extend_from_slice(value);
            }
            None => put_varint(&mut record, -1),
        }
        put_varint(&mut record, 0); // headers count
        put_varint(&mut body, clamp_i32(record.len()));
        body.extend_from_slice(&record);
    }
    let (producer_id, producer_epoch, attributes) = match txn_producer {
        Some((id, epoch)) => (id, epoch, TRANSACTIONAL_BIT),
        None => (-1, -1, 0),
    };

    let mut out = Vec::with_capacity(BATCH_HEADER_SIZE + body.len());
    out.put_i64(0); // base offset
    out.put_i32(clamp_i32(BATCH_HEADER_SIZE - LOG_OVERHEAD + body.len()));
    out.put_i32(-1); // partition leader epoch
    out.put_i8(MAGIC_V2);
    out.put_u32(0); // CRC, filled in below
    out.put_i16(attributes); // no compression, create time
    out.put_i32(clamp_i32(records.len().saturating_sub(1))); // last offset delta
    out.put_i64(now_ms); // base timestamp
    out.put_i64(now_ms); // max timestamp
    out.put_i64(producer_id);
    out.put_i16(producer_epoch);
    out.put_i32(-1); // base sequence
    out.put_i32(clamp_i32(records.len()));
    out.extend_from_slice(&body);
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(out)
}

/// One decoded batch of an internal topic.
#[derive(Debug, Clone, PartialEq)]
pub struct KvBatch {
    pub base_offset: i64,
    /// Offset of the batch's last record (base offset + last offset delta).
    pub last_offset: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub transactional: bool,
    /// For a control batch: `Some(true)` for a commit marker, `Some(false)` for an abort.
    pub control: Option<bool>,
    /// (offset, key, value) of each record; empty for a control batch.
    pub records: Vec<(i64, Bytes, Option<Bytes>)>,
}

/// Parses every batch in `data` (as read from the log: possibly several whole batches),
/// returning (offset, record) pairs in order.
///
/// Control batches are skipped, and so are records whose key version is unknown. Every
/// batch's CRC is verified. Compressed batches, a torn (incomplete) trailing batch and any
/// other malformed data are errors. (The coordinator's replay works on
/// [`decode_kv_batches`], which also sees transactional batches and markers.)
#[cfg(test)]
pub fn decode_batches(data: &[u8]) -> Result<Vec<(i64, OffsetsRecord)>, OffsetsLogError> {
    let mut out = Vec::new();
    for batch in decode_kv_batches(data)? {
        for (offset, key, value) in batch.records {
            if let Some(record) = OffsetsRecord::decode_known(&key, value.as_deref())? {
                out.push((offset, record));
            }
        }
    }
    Ok(out)
}

/// Parses every batch in `data` into [`KvBatch`]es (control batches included, with their
/// marker type): every CRC verified; compressed batches, a torn trailing batch and other
/// malformed data are errors.
pub fn decode_kv_batches(data: &[u8]) -> Result<Vec<KvBatch>, OffsetsLogError> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let mut head = Reader::new(rest);
        let base_offset = head.i64("batch base offset")?;
        let batch_length = head.i32("batch length")?;
        let min_length = (BATCH_HEADER_SIZE - LOG_OVERHEAD) as i64;
        if i64::from(batch_length) < min_length {
            return Err(OffsetsLogError::InvalidLength {
                what: "record batch",
                len: batch_length.into(),
            });
        }
        let total = LOG_OVERHEAD + batch_length as usize;
        if total > rest.len() {
            return Err(OffsetsLogError::Truncated {
                what: "record batch",
                needed: total,
                remaining: rest.len(),
            });
        }
        let (batch, tail) = rest.split_at(total);
        rest = tail;
        decode_one_batch(base_offset, batch, &mut out)?;
    }
    Ok(out)
}

/// Decodes one whole batch (`batch` is exactly its bytes, header included).
fn decode_one_batch(
    base_offset: i64,
    batch: &[u8],
    out: &mut Vec<KvBatch>,
) -> Result<(), OffsetsLogError> {
    let magic = batch[MAGIC_AT] as i8;
    if magic != MAGIC_V2 {
        return Err(OffsetsLogError::UnsupportedMagic(magic));
    }
    let stored = u32::from_be_bytes([
        batch[CRC_AT],
        batch[CRC_AT + 1],
        batch[CRC_AT + 2],
        batch[CRC_AT + 3],
    ]);
    let computed = crc32c::crc32c(&batch[CRC_START..]);
    if stored != computed {
        return Err(OffsetsLogError::CrcMismatch { stored, computed });
    }

    let mut r = Reader::new(&batch[CRC_START..]);
    let attributes = r.i16("batch attributes")?;
    let last_offset_delta = r.i32("last offset delta")?;
    let _base_timestamp = r.i64("base timestamp")?;
    let _max_timestamp = r.i64("max timestamp")?;
    let producer_id = r.i64("producer id")?;
    let producer_epoch = r.i16("producer epoch")?;
    let _base_sequence = r.i32("base sequence")?;
    let records_count = r.i32("records count")?;

    let compression = (attributes & COMPRESSION_MASK) as u8;
    if compression != 0 {
        return Err(OffsetsLogError::Compressed(compression));
    }
    let mut batch = KvBatch {
        base_offset,
        last_offset: base_offset.saturating_add(last_offset_delta.max(0).into()),
        producer_id,
        producer_epoch,
        transactional: attributes & TRANSACTIONAL_BIT != 0,
        control: None,
        records: Vec::new(),
    };
    if records_count < 0 {
        return Err(OffsetsLogError::InvalidLength {
            what: "records count",
            len: records_count.into(),
        });
    }

    for _ in 0..records_count {
        let len = r.varint("record length")?;
        let mut rec = Reader::new(r.sized(len, "record")?);
        let _attributes = rec.i8("record attributes")?;
        let _timestamp_delta = rec.varlong("record timestamp delta")?;
        let offset_delta = rec.varint("record offset delta")?;
        if offset_delta < 0 {
            return Err(OffsetsLogError::InvalidLength {
                what: "record offset delta",
                len: offset_delta.into(),
            });
        }
        let offset = base_offset.checked_add(offset_delta.into()).ok_or(
            OffsetsLogError::OffsetOverflow {
                base_offset,
                delta: offset_delta,
            },
        )?;
        let key = rec
            .nullable_varint_bytes("record key")?
            .ok_or(OffsetsLogError::NullKey)?;
        let value = rec.nullable_varint_bytes("record value")?;
        let headers = rec.varint("record headers count")?;
        if headers < 0 {
            return Err(OffsetsLogError::InvalidLength {
                what: "record headers count",
                len: headers.into(),
            });
        }
        for _ in 0..headers {
            let header_key_len = rec.varint("record header key")?;
            rec.sized(header_key_len, "record header key")?;
            rec.nullable_varint_bytes("record header value")?;
        }
        rec.finish("record")?;
        if attributes & CONTROL_BIT != 0 {
            // A control record's key is [version i16][type i16]: 0 abort, 1 commit.
            if key.len() >= 4 {
                batch.control = Some(i16::from_be_bytes([key[2], key[3]]) == 1);
            }
        } else {
            batch.records.push((
                offset,
                Bytes::copy_from_slice(key),
                value.map(Bytes::copy_from_slice),
            ));
        }
    }
    r.finish("record batch")?;
    out.push(batch);
    Ok(())
}

fn clamp_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn clamp_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub(crate) fn put_string(out: &mut Vec<u8>, s: &str) {
    let s = clamp_str(s, MAX_STRING_LEN);
    out.put_i16(s.len() as i16);
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn put_nullable_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_string(out, s),
        None => out.put_i16(-1),
    }
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let b = &b[..b.len().min(i32::MAX as usize)];
    out.put_i32(b.len() as i32);
    out.extend_from_slice(b);
}

pub(crate) fn put_varint(out: &mut Vec<u8>, v: i32) {
    let mut z = ((v << 1) ^ (v >> 31)) as u32;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

pub(crate) fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// A bounds-checked big-endian reader over untrusted bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn take(
        &mut self,
        n: usize,
        what: &'static str,
    ) -> Result<&'a [u8], OffsetsLogError> {
        if n > self.buf.len() {
            return Err(OffsetsLogError::Truncated {
                what,
                needed: n,
                remaining: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], OffsetsLogError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    pub(crate) fn i8(&mut self, what: &'static str) -> Result<i8, OffsetsLogError> {
        Ok(i8::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn i16(&mut self, what: &'static str) -> Result<i16, OffsetsLogError> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, OffsetsLogError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, OffsetsLogError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    /// `len` bytes, where `len` was read off the data (negative is an error).
    pub(crate) fn sized(
        &mut self,
        len: i32,
        what: &'static str,
    ) -> Result<&'a [u8], OffsetsLogError> {
        if len < 0 {
            return Err(OffsetsLogError::InvalidLength {
                what,
                len: len.into(),
            });
        }
        self.take(len as usize, what)
    }

    pub(crate) fn utf8(bytes: &[u8], what: &'static str) -> Result<String, OffsetsLogError> {
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| OffsetsLogError::InvalidUtf8 { what })
    }

    pub(crate) fn string(&mut self, what: &'static str) -> Result<String, OffsetsLogError> {
        let len = self.i16(what)?;
        let bytes = self.sized(len.into(), what)?;
        Self::utf8(bytes, what)
    }

    pub(crate) fn nullable_string(
        &mut self,
        what: &'static str,
    ) -> Result<Option<String>, OffsetsLogError> {
        let len = self.i16(what)?;
        if len == -1 {
            return Ok(None);
        }
        let bytes = self.sized(len.into(), what)?;
        Self::utf8(bytes, what).map(Some)
    }

    pub(crate) fn bytes(&mut self, what: &'static str) -> Result<Bytes, OffsetsLogError> {
        let len = self.i32(what)?;
        Ok(Bytes::copy_from_slice(self.sized(len, what)?))
    }

    /// An `i32` array count, bounded by the bytes remaining (every element takes at least one).
    pub(crate) fn array_len(&mut self, what: &'static str) -> Result<usize, OffsetsLogError> {
        let count = self.i32(what)?;
        if count < 0 || count as usize > self.buf.len() {
            return Err(OffsetsLogError::InvalidLength {
                what,
                len: count.into(),
            });
        }
        Ok(count as usize)
    }

    /// Unsigned LEB128 of at most `max_bytes` bytes whose value fits in `bits` bits.
    pub(crate) fn uvarint(
        &mut self,
        what: &'static str,
        max_bytes: u32,
        bits: u32,
    ) -> Result<u64, OffsetsLogError> {
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let byte = self.i8(what)? as u8;
            let chunk = u64::from(byte & 0x7f);
            let shift = 7 * i;
            if shift + 7 > bits && chunk >> (bits - shift) != 0 {
                return Err(OffsetsLogError::InvalidVarint { what });
            }
            value |= chunk << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(OffsetsLogError::InvalidVarint { what })
    }

    /// A zigzag-encoded signed varint (32 bits).
    pub(crate) fn varint(&mut self, what: &'static str) -> Result<i32, OffsetsLogError> {
        let z = self.uvarint(what, 5, 32)? as u32;
        Ok((z >> 1) as i32 ^ -((z & 1) as i32))
    }

    /// A zigzag-encoded signed varlong (64 bits).
    pub(crate) fn varlong(&mut self, what: &'static str) -> Result<i64, OffsetsLogError> {
        let z = self.uvarint(what, 10, 64)?;
        Ok((z >> 1) as i64 ^ -((z & 1) as i64))
    }

    /// Varint length (-1 = null) followed by that many bytes.
    pub(crate) fn nullable_varint_bytes(
        &mut self,
        what: &'static str,
    ) -> Result<Option<&'a [u8]>, OffsetsLogError> {
        let len = self.varint(what)?;
        if len == -1 {
            return Ok(None);
        }
        self.sized(len, what).map(Some)
    }

    /// Errors unless everything was consumed.
    pub(crate) fn finish(&self, what: &'static str) -> Result<(), OffsetsLogError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(OffsetsLogError::TrailingBytes {
                what,
                count: self.buf.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };
    use proptest::prelude::*;

    fn offset_record(group: &str, topic: &str, partition: i32, offset: i64) -> OffsetsRecord {
        OffsetsRecord::Offset {
            key: OffsetCommitKey {
                group: group.into(),
                topic: topic.into(),
                partition,
            },
            value: Some(OffsetCommitValue {
                offset,
                leader_epoch: 7,
                metadata: "meta-ü".into(),
                commit_timestamp_ms: 1_700_000_000_123,
                expire_timestamp_ms: None,
            }),
        }
    }

    fn member(id: &str, instance: Option<&str>) -> GroupMemberRecord {
        GroupMemberRecord {
            member_id: id.into(),
            group_instance_id: instance.map(str::to_owned),
            client_id: format!("client-{id}"),
            client_host: "/10.0.0.1".into(),
            rebalance_timeout_ms: 300_000,
            session_timeout_ms: 45_000,
            subscription: Bytes::from_static(b"\x00\x01sub"),
            assignment: Bytes::from_static(b"\x00\x01assign\xff"),
        }
    }

    fn group_record(group: &str) -> OffsetsRecord {
        OffsetsRecord::Group {
            group: group.into(),
            value: Some(GroupMetadataValue {
                protocol_type: "consumer".into(),
                generation: 5,
                protocol: Some("range".into()),
                leader: Some("m1".into()),
                current_state_timestamp_ms: 1_700_000_000_999,
                members: vec![member("m1", Some("inst-1")), member("m2", None)],
            }),
        }
    }

    fn roundtrip(rec: &OffsetsRecord) -> OffsetsRecord {
        let key = rec.encode_key();
        let value = rec.encode_value();
        OffsetsRecord::decode(&key, value.as_deref()).expect("decode")
    }

    // Independent writers for hand-built older versions.
    fn w_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as i16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    fn w_nstr(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            Some(s) => w_str(out, s),
            None => out.extend_from_slice(&(-1i16).to_be_bytes()),
        }
    }
    fn w_bytes(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as i32).to_be_bytes());
        out.extend_from_slice(b);
    }

    fn offset_key_v0(group: &str, topic: &str, partition: i32) -> Vec<u8> {
        let mut k = 0i16.to_be_bytes().to_vec();
        w_str(&mut k, group);
        w_str(&mut k, topic);
        k.extend_from_slice(&partition.to_be_bytes());
        k
    }

    #[test]
    fn offset_commit_roundtrip() {
        let rec = offset_record("g1", "orders", 3, 42);
        assert_eq!(roundtrip(&rec), rec);
        assert_eq!(rec.group(), "g1");
        assert!(!rec.is_tombstone());
        // Key is version 1, value version 3.
        assert_eq!(&rec.encode_key()[..2], &1i16.to_be_bytes());
        assert_eq!(&rec.encode_value().unwrap()[..2], &3i16.to_be_bytes());
    }

    #[test]
    fn offset_commit_v3_exact_bytes() {
        let rec = OffsetsRecord::Offset {
            key: OffsetCommitKey {
                group: "g".into(),
                topic: "t".into(),
                partition: 2,
            },
            value: Some(OffsetCommitValue {
                offset: 9,
                leader_epoch: -1,
                metadata: "".into(),
                commit_timestamp_ms: 5,
                expire_timestamp_ms: None,
            }),
        };
        assert_eq!(
            rec.encode_key().as_ref(),
            &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 2]
        );
        assert_eq!(
            rec.encode_value().unwrap().as_ref(),
            &[0, 3, 0, 0, 0, 0, 0, 0, 0, 9, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]
        );
    }

    #[test]
    fn offset_tombstone_roundtrip() {
        let rec = OffsetsRecord::Offset {
            key: OffsetCommitKey {
                group: "g1".into(),
                topic: "t".into(),
                partition: 0,
            },
            value: None,
        };
        assert!(rec.encode_value().is_none());
        assert!(rec.is_tombstone());
        assert_eq!(roundtrip(&rec), rec);
    }

    #[test]
    fn group_metadata_roundtrip() {
        let rec = group_record("my-group");
        assert_eq!(roundtrip(&rec), rec);
        assert_eq!(rec.group(), "my-group");
        assert_eq!(&rec.encode_key()[..2], &2i16.to_be_bytes());
        assert_eq!(&rec.encode_value().unwrap()[..2], &3i16.to_be_bytes());
    }

    #[test]
    fn group_metadata_nulls_and_empty_roundtrip() {
        let rec = OffsetsRecord::Group {
            group: "empty".into(),
            value: Some(GroupMetadataValue {
                protocol_type: "".into(),
                generation: 0,
                protocol: None,
                leader: None,
                current_state_timestamp_ms: -1,
                members: vec![],
            }),
        };
        assert_eq!(roundtrip(&rec), rec);
        let with_null_instance = OffsetsRecord::Group {
            group: "g".into(),
            value: Some(GroupMetadataValue {
                protocol_type: "consumer".into(),
                generation: 1,
                protocol: None,
                leader: None,
                current_state_timestamp_ms: 0,
                members: vec![member("only", None)],
            }),
        };
        assert_eq!(roundtrip(&with_null_instance), with_null_instance);
    }

    #[test]
    fn group_tombstone_roundtrip() {
        let rec = OffsetsRecord::Group {
            group: "gone".into(),
            value: None,
        };
        assert!(rec.encode_value().is_none());
        assert_eq!(roundtrip(&rec), rec);
    }

    #[test]
    fn decodes_offset_value_v0() {
        let key = offset_key_v0("grp", "topic", 7);
        let mut v = 0i16.to_be_bytes().to_vec();
        v.extend_from_slice(&100i64.to_be_bytes());
        w_str(&mut v, "md");
        v.extend_from_slice(&1234i64.to_be_bytes());
        let rec = OffsetsRecord::decode(&key, Some(&v)).unwrap();
        assert_eq!(
            rec,
            OffsetsRecord::Offset {
                key: OffsetCommitKey {
                    group: "grp".into(),
                    topic: "topic".into(),
                    partition: 7
                },
                value: Some(OffsetCommitValue {
                    offset: 100,
                    leader_epoch: -1,
                    metadata: "md".into(),
                    commit_timestamp_ms: 1234,
                    expire_timestamp_ms: None,
                })
            }
        );
    }

    #[test]
    fn decodes_offset_value_v1_and_v2() {
        let key = offset_key_v0("grp", "topic", 0);
        let mut v1 = 1i16.to_be_bytes().to_vec();
        v1.extend_from_slice(&55i64.to_be_bytes());
        w_str(&mut v1, "");
        v1.extend_from_slice(&10i64.to_be_bytes());
        v1.extend_from_slice(&20i64.to_be_bytes());
        match OffsetsRecord::decode(&key, Some(&v1)).unwrap() {
            OffsetsRecord::Offset { value: Some(v), .. } => {
                assert_eq!(v.offset, 55);
                assert_eq!(v.leader_epoch, -1);
                assert_eq!(v.metadata, "");
                assert_eq!(v.commit_timestamp_ms, 10);
                assert_eq!(v.expire_timestamp_ms, Some(20));
            }
            other => panic!("unexpected {other:?}"),
        }

        let mut v2 = 2i16.to_be_bytes().to_vec();
        v2.extend_from_slice(&56i64.to_be_bytes());
        w_str(&mut v2, "x");
        v2.extend_from_slice(&11i64.to_be_bytes());
        match OffsetsRecord::decode(&key, Some(&v2)).unwrap() {
            OffsetsRecord::Offset { value: Some(v), .. } => {
                assert_eq!((v.offset, v.commit_timestamp_ms), (56, 11));
                assert_eq!(v.metadata, "x");
                assert_eq!(v.expire_timestamp_ms, None);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn decodes_group_value_v0() {
        let mut key = 2i16.to_be_bytes().to_vec();
        w_str(&mut key, "old-group");
        let mut v = 0i16.to_be_bytes().to_vec();
        w_str(&mut v, "consumer");
        v.extend_from_slice(&3i32.to_be_bytes());
        w_nstr(&mut v, Some("roundrobin"));
        w_nstr(&mut v, None);
        v.extend_from_slice(&1i32.to_be_bytes()); // one member
        w_str(&mut v, "member-a");
        w_str(&mut v, "cid");
        w_str(&mut v, "/127.0.0.1");
        v.extend_from_slice(&10_000i32.to_be_bytes()); // session timeout
        w_bytes(&mut v, b"sub");
        w_bytes(&mut v, b"");
        let rec = OffsetsRecord::decode(&key, Some(&v)).unwrap();
        assert_eq!(
            rec,
            OffsetsRecord::Group {
                group: "old-group".into(),
                value: Some(GroupMetadataValue {
                    protocol_type: "consumer".into(),
                    generation: 3,
                    protocol: Some("roundrobin".into()),
                    leader: None,
                    current_state_timestamp_ms: -1,
                    members: vec![GroupMemberRecord {
                        member_id: "member-a".into(),
                        group_instance_id: None,
                        client_id: "cid".into(),
                        client_host: "/127.0.0.1".into(),
                        rebalance_timeout_ms: 10_000,
                        session_timeout_ms: 10_000,
                        subscription: Bytes::from_static(b"sub"),
                        assignment: Bytes::new(),
                    }],
                })
            }
        );
    }

    #[test]
    fn decodes_group_value_v2() {
        let mut key = 2i16.to_be_bytes().to_vec();
        w_str(&mut key, "g");
        let mut v = 2i16.to_be_bytes().to_vec();
        w_str(&mut v, "consumer");
        v.extend_from_slice(&1i32.to_be_bytes());
        w_nstr(&mut v, Some("range"));
        w_nstr(&mut v, Some("m"));
        v.extend_from_slice(&777i64.to_be_bytes());
        v.extend_from_slice(&1i32.to_be_bytes());
        w_str(&mut v, "m");
        w_str(&mut v, "c");
        w_str(&mut v, "h");
        v.extend_from_slice(&60_000i32.to_be_bytes());
        v.extend_from_slice(&30_000i32.to_be_bytes());
        w_bytes(&mut v, b"s");
        w_bytes(&mut v, b"a");
        match OffsetsRecord::decode(&key, Some(&v)).unwrap() {
            OffsetsRecord::Group { value: Some(g), .. } => {
                assert_eq!(g.current_state_timestamp_ms, 777);
                assert_eq!(g.members.len(), 1);
                assert_eq!(g.members[0].rebalance_timeout_ms, 60_000);
                assert_eq!(g.members[0].session_timeout_ms, 30_000);
                assert_eq!(g.members[0].group_instance_id, None);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rejects_bad_records() {
        let key = offset_record("g", "t", 0, 1).encode_key();
        // Unknown key version.
        let mut k = 9i16.to_be_bytes().to_vec();
        w_str(&mut k, "g");
        assert!(matches!(
            OffsetsRecord::decode(&k, None),
            Err(OffsetsLogError::UnknownKeyVersion(9))
        ));
        // Unknown value version.
        let mut v = 4i16.to_be_bytes().to_vec();
        v.extend_from_slice(&[0; 32]);
        assert!(matches!(
            OffsetsRecord::decode(&key, Some(&v)),
            Err(OffsetsLogError::UnsupportedValueVersion { version: 4, .. })
        ));
        // Trailing bytes after the key.
        let mut long_key = key.to_vec();
        long_key.push(0);
        assert!(matches!(
            OffsetsRecord::decode(&long_key, None),
            Err(OffsetsLogError::TrailingBytes { .. })
        ));
        // Invalid UTF-8 in the group id.
        let mut bad = 2i16.to_be_bytes().to_vec();
        bad.extend_from_slice(&[0, 2, 0xc3, 0x28]);
        assert!(matches!(
            OffsetsRecord::decode(&bad, None),
            Err(OffsetsLogError::InvalidUtf8 { .. })
        ));
        // Null (non-nullable) group id.
        let mut null_group = 2i16.to_be_bytes().to_vec();
        null_group.extend_from_slice(&(-1i16).to_be_bytes());
        assert!(OffsetsRecord::decode(&null_group, None).is_err());
        // A huge member count with no data behind it.
        let mut key2 = 2i16.to_be_bytes().to_vec();
        w_str(&mut key2, "g");
        let mut gv = 3i16.to_be_bytes().to_vec();
        w_str(&mut gv, "consumer");
        gv.extend_from_slice(&1i32.to_be_bytes());
        w_nstr(&mut gv, None);
        w_nstr(&mut gv, None);
        gv.extend_from_slice(&0i64.to_be_bytes());
        gv.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            OffsetsRecord::decode(&key2, Some(&gv)),
            Err(OffsetsLogError::InvalidLength { .. })
        ));
    }

    #[test]
    fn truncated_records_error() {
        for rec in [offset_record("group", "topic", 1, 2), group_record("group")] {
            let key = rec.encode_key();
            let value = rec.encode_value().unwrap();
            for cut in 0..key.len() {
                assert!(OffsetsRecord::decode(&key[..cut], Some(&value)).is_err());
            }
            for cut in 0..value.len() {
                let err = OffsetsRecord::decode(&key, Some(&value[..cut])).unwrap_err();
                // Every message is readable.
                assert!(!err.to_string().is_empty());
            }
        }
    }

    fn sample_records() -> Vec<OffsetsRecord> {
        vec![
            offset_record("g1", "a", 0, 10),
            group_record("g1"),
            OffsetsRecord::Offset {
                key: OffsetCommitKey {
                    group: "g1".into(),
                    topic: "b".into(),
                    partition: 1,
                },
                value: None,
            },
            OffsetsRecord::Group {
                group: "g2".into(),
                value: None,
            },
            offset_record("g2", "c", 5, i64::MAX),
        ]
    }

    fn with_base_offset(batch: &[u8], base: i64) -> Vec<u8> {
        let mut b = batch.to_vec();
        b[..8].copy_from_slice(&base.to_be_bytes());
        b
    }

    #[test]
    fn batch_roundtrip_with_offsets() {
        let records = sample_records();
        let batch = with_base_offset(&encode_batch(&records, 1_000), 100);
        let decoded = decode_batches(&batch).unwrap();
        let expected: Vec<(i64, OffsetsRecord)> = records
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, r)| (100 + i as i64, r))
            .collect();
        assert_eq!(decoded, expected);
    }

    #[test]
    fn batch_header_fields() {
        let records = sample_records();
        let batch = encode_batch(&records, 1_234);
        let i64_at = |at: usize| i64::from_be_bytes(batch[at..at + 8].try_into().unwrap());
        let i32_at = |at: usize| i32::from_be_bytes(batch[at..at + 4].try_into().unwrap());
        let i16_at = |at: usize| i16::from_be_bytes(batch[at..at + 2].try_into().unwrap());
        assert_eq!(i64_at(0), 0);
        assert_eq!(i32_at(8) as usize, batch.len() - 12);
        assert_eq!(i32_at(12), -1);
        assert_eq!(batch[16], 2);
        assert_eq!(i16_at(21), 0);
        assert_eq!(i32_at(23), records.len() as i32 - 1);
        assert_eq!(i64_at(27), 1_234);
        assert_eq!(i64_at(35), 1_234);
        assert_eq!(i64_at(43), -1);
        assert_eq!(i16_at(51), -1);
        assert_eq!(i32_at(53), -1);
        assert_eq!(i32_at(57), records.len() as i32);
    }

    #[test]
    fn several_batches_decode_in_order() {
        let first = with_base_offset(&encode_batch(&sample_records()[..2], 1), 0);
        let second = with_base_offset(&encode_batch(&sample_records()[2..], 2), 2);
        let mut data = first.clone();
        data.extend_from_slice(&second);
        let decoded = decode_batches(&data).unwrap();
        let offsets: Vec<i64> = decoded.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, vec![0, 1, 2, 3, 4]);
        let recs: Vec<OffsetsRecord> = decoded.into_iter().map(|(_, r)| r).collect();
        assert_eq!(recs, sample_records());
        assert!(decode_batches(&[]).unwrap().is_empty());
    }

    #[test]
    fn crc_is_valid_and_corruption_detected() {
        // The crate computes CRC-32C (Castagnoli), not CRC-32.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        let batch = encode_batch(&sample_records(), 99);
        let stored = u32::from_be_bytes(batch[17..21].try_into().unwrap());
        assert_eq!(stored, crc32c::crc32c(&batch[21..]));
        assert_ne!(stored, 0);
        // Flip a byte anywhere in the CRC-covered range: detected.
        for at in [21, 30, 61, batch.len() / 2, batch.len() - 1] {
            let mut bad = batch.to_vec();
            bad[at] ^= 0x40;
            assert!(
                matches!(
                    decode_batches(&bad),
                    Err(OffsetsLogError::CrcMismatch { .. })
                ),
                "flip at {at} not detected"
            );
        }
        // A flipped CRC byte is detected too.
        let mut bad = batch.to_vec();
        bad[18] ^= 1;
        assert!(matches!(
            decode_batches(&bad),
            Err(OffsetsLogError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn truncated_batches_error() {
        let batch = encode_batch(&sample_records(), 5);
        for cut in 1..batch.len() {
            assert!(decode_batches(&batch[..cut]).is_err(), "cut at {cut}");
        }
        // A whole batch followed by a torn one errors as well.
        let mut data = batch.to_vec();
        data.extend_from_slice(&batch[..40]);
        assert!(matches!(
            decode_batches(&data),
            Err(OffsetsLogError::Truncated { .. })
        ));
    }

    /// Recomputes the CRC so that structural checks (not the CRC) are exercised.
    fn fix_crc(batch: &mut [u8]) {
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn control_compressed_and_magic() {
        let batch = encode_batch(&sample_records(), 5);
        // Control batch: skipped, but a following batch still decodes.
        let mut control = batch.to_vec();
        control[22] |= 0x20;
        fix_crc(&mut control);
        let mut data = control.clone();
        data.extend_from_slice(&with_base_offset(&batch, 10));
        let decoded = decode_batches(&data).unwrap();
        assert_eq!(decoded.len(), sample_records().len());
        assert_eq!(decoded[0].0, 10);
        // Compressed batch: error.
        let mut gz = batch.to_vec();
        gz[22] |= 0x01;
        fix_crc(&mut gz);
        assert!(matches!(
            decode_batches(&gz),
            Err(OffsetsLogError::Compressed(1))
        ));
        // Other magic: error.
        let mut m1 = batch.to_vec();
        m1[16] = 1;
        assert!(matches!(
            decode_batches(&m1),
            Err(OffsetsLogError::UnsupportedMagic(1))
        ));
        // Records count larger than the records present: error.
        let mut more = batch.to_vec();
        more[60] += 1;
        fix_crc(&mut more);
        assert!(decode_batches(&more).is_err());
        // Records count smaller than the records present: trailing bytes error.
        let mut fewer = batch.to_vec();
        fewer[60] -= 1;
        fix_crc(&mut fewer);
        assert!(matches!(
            decode_batches(&fewer),
            Err(OffsetsLogError::TrailingBytes { .. })
        ));
    }

    fn kp_record(offset: i64, key: &[u8], value: Option<Bytes>, headers: bool) -> Record {
        let mut h = IndexMap::new();
        if headers {
            h.insert("h1".to_string().into(), Some(Bytes::from_static(b"v")));
            h.insert("h2".to_string().into(), None);
        }
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: offset as i32, // constant offset-sequence keeps one batch
            timestamp: 42,
            key: Some(Bytes::copy_from_slice(key)),
            value,
            headers: h,
        }
    }

    #[test]
    fn batch_readable_by_kafka_protocol_crate() {
        let records = sample_records();
        let batch = encode_batch(&records, 42);
        let mut buf = batch.clone();
        let sets = RecordBatchDecoder::decode_all(&mut buf).unwrap();
        assert_eq!(sets.len(), 1);
        let got = &sets[0].records;
        assert_eq!(got.len(), records.len());
        for (i, (r, rec)) in got.iter().zip(&records).enumerate() {
            assert_eq!(r.offset, i as i64);
            assert_eq!(r.timestamp, 42);
            assert_eq!(r.key.as_ref(), Some(&rec.encode_key()));
            assert_eq!(r.value, rec.encode_value());
            assert!(r.headers.is_empty());
        }
    }

    #[test]
    fn reads_batch_from_kafka_protocol_crate_with_headers_and_unknown_keys() {
        let recs = sample_records();
        let mut unknown_key = 5i16.to_be_bytes().to_vec();
        w_str(&mut unknown_key, "new-style-group");
        let kp = vec![
            kp_record(0, &recs[0].encode_key(), recs[0].encode_value(), true),
            kp_record(1, &unknown_key, Some(Bytes::from_static(b"??")), false),
            kp_record(2, &recs[1].encode_key(), recs[1].encode_value(), false),
            kp_record(3, &recs[3].encode_key(), None, true),
        ];
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &kp,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        let mut data = buf.to_vec();
        let mut view: &[u8] = &data;
        assert_eq!(
            RecordBatchDecoder::decode_batch_info(&mut view)
                .unwrap()
                .len(),
            1
        );
        data[..8].copy_from_slice(&50i64.to_be_bytes());
        let decoded = decode_batches(&data).unwrap();
        assert_eq!(
            decoded,
            vec![
                (50, recs[0].clone()),
                (52, recs[1].clone()),
                (53, recs[3].clone())
            ]
        );
    }

    #[test]
    fn varints_roundtrip_and_reject_overlong() {
        for v in [0, 1, -1, 63, -64, 64, 300, -300, i32::MAX, i32::MIN] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut r = Reader::new(&out);
            assert_eq!(r.varint("v").unwrap(), v);
            assert!(r.finish("v").is_ok());
        }
        for v in [0, -1, i64::MAX, i64::MIN, 1 << 40] {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            let mut r = Reader::new(&out);
            assert_eq!(r.varlong("v").unwrap(), v);
        }
        // Single byte encodings: zigzag maps -1 -> 1, 1 -> 2.
        let mut out = Vec::new();
        put_varint(&mut out, -1);
        put_varint(&mut out, 1);
        assert_eq!(out, vec![1, 2]);
        // Six continuation bytes for a 32-bit varint: rejected.
        let overlong = [0x80u8, 0x80, 0x80, 0x80, 0x80, 0x01];
        assert!(Reader::new(&overlong).varint("v").is_err());
        // Five bytes but overflowing 32 bits: rejected.
        let overflow = [0xffu8, 0xff, 0xff, 0xff, 0x7f];
        assert!(Reader::new(&overflow).varint("v").is_err());
        // Eleven bytes for a varlong: rejected.
        let overlong64 = [0x80u8; 11];
        assert!(Reader::new(&overlong64).varlong("v").is_err());
    }

    #[test]
    fn check_encodable_limits_strings() {
        assert!(group_record("g").check_encodable().is_ok());
        let long = "x".repeat(MAX_STRING_LEN + 1);
        let rec = offset_record(&long, "t", 0, 0);
        assert!(matches!(
            rec.check_encodable(),
            Err(OffsetsLogError::TooLong { .. })
        ));
        // Encoding still does not panic and yields a decodable (clamped) key.
        let decoded = OffsetsRecord::decode(&rec.encode_key(), None).unwrap();
        assert_eq!(decoded.group().len(), MAX_STRING_LEN);
    }

    fn arb_string() -> impl Strategy<Value = String> {
        ".{0,12}"
    }

    fn arb_record() -> impl Strategy<Value = OffsetsRecord> {
        let offset_value = (any::<i64>(), any::<i32>(), arb_string(), any::<i64>()).prop_map(
            |(offset, leader_epoch, metadata, ts)| OffsetCommitValue {
                offset,
                leader_epoch,
                metadata,
                commit_timestamp_ms: ts,
                expire_timestamp_ms: None,
            },
        );
        let offset = (
            arb_string(),
            arb_string(),
            any::<i32>(),
            proptest::option::of(offset_value),
        )
            .prop_map(|(group, topic, partition, value)| OffsetsRecord::Offset {
                key: OffsetCommitKey {
                    group,
                    topic,
                    partition,
                },
                value,
            });
        let member = (
            arb_string(),
            proptest::option::of(arb_string()),
            arb_string(),
            arb_string(),
            any::<i32>(),
            any::<i32>(),
            proptest::collection::vec(any::<u8>(), 0..8),
            proptest::collection::vec(any::<u8>(), 0..8),
        )
            .prop_map(|(m, i, c, h, r, s, sub, asg)| GroupMemberRecord {
                member_id: m,
                group_instance_id: i,
                client_id: c,
                client_host: h,
                rebalance_timeout_ms: r,
                session_timeout_ms: s,
                subscription: Bytes::from(sub),
                assignment: Bytes::from(asg),
            });
        let group_value = (
            arb_string(),
            any::<i32>(),
            proptest::option::of(arb_string()),
            proptest::option::of(arb_string()),
            any::<i64>(),
            proptest::collection::vec(member, 0..3),
        )
            .prop_map(|(pt, generation, protocol, leader, ts, members)| {
                GroupMetadataValue {
                    protocol_type: pt,
                    generation,
                    protocol,
                    leader,
                    current_state_timestamp_ms: ts,
                    members,
                }
            });
        let group = (arb_string(), proptest::option::of(group_value))
            .prop_map(|(group, value)| OffsetsRecord::Group { group, value });
        prop_oneof![offset, group]
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..512),
            split in any::<usize>(),
            null_value in any::<bool>(),
        ) {
            let _ = decode_batches(&data);
            let at = if data.is_empty() { 0 } else { split % data.len() };
            let (k, v) = data.split_at(at);
            let _ = OffsetsRecord::decode(k, if null_value { None } else { Some(v) });
        }

        #[test]
        fn mutated_batches_never_panic(
            records in proptest::collection::vec(arb_record(), 0..4),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
        ) {
            let mut batch = encode_batch(&records, 7).to_vec();
            for (at, x) in flips {
                let at = CRC_START + at % (batch.len() - CRC_START);
                batch[at] ^= x;
            }
            // Fix the CRC so the record parser (not the CRC check) sees the damage.
            fix_crc(&mut batch);
            let _ = decode_batches(&batch);
            let cut = cut % (batch.len() + 1);
            let _ = decode_batches(&batch[..cut]);
        }

        #[test]
        fn random_records_roundtrip(records in proptest::collection::vec(arb_record(), 0..5)) {
            for rec in &records {
                prop_assert_eq!(&roundtrip(rec), rec);
            }
            let decoded = decode_batches(&encode_batch(&records, 3)).unwrap();
            let expected: Vec<(i64, OffsetsRecord)> =
                records.into_iter().enumerate().map(|(i, r)| (i as i64, r)).collect();
            prop_assert_eq!(decoded, expected);
        }
    }
}
