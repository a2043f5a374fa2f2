//! Codec of the `__transaction_state` records, in Kafka's own schemas (key v0; value v0,
//! non-flexible) so the topic is the coordinator's only state and tools can read it.
//!
//! Key: `[version i16 = 0][transactional_id string]`. Value: `[version i16 = 0]
//! [producer_id i64][producer_epoch i16][timeout_ms i32][status i8][partitions: nullable
//! array of (topic string, [partition i32])][last_update_ms i64][start_ms i64]`. A null value
//! (tombstone) forgets the id. Decoding treats its input as untrusted.

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes};

use super::state::{TxnMetadata, TxnStatus};
use crate::group::offsets_log::{put_string, OffsetsLogError, Reader};

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;

/// The record key of `transactional_id`.
pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut out = Vec::with_capacity(4 + transactional_id.len());
    out.put_i16(KEY_VERSION);
    put_string(&mut out, transactional_id);
    Bytes::from(out)
}

/// The record value holding `m`.
pub fn encode_value(m: &TxnMetadata) -> Bytes {
    let mut out = Vec::with_capacity(64);
    out.put_i16(VALUE_VERSION);
    out.put_i64(m.producer_id);
    out.put_i16(m.producer_epoch);
    out.put_i32(m.timeout_ms);
    out.put_i8(m.status as i8);
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for (topic, p) in &m.partitions {
        match topics.last_mut() {
            Some((t, ps)) if *t == topic.as_str() => ps.push(*p),
            _ => topics.push((topic, vec![*p])),
        }
    }
    out.put_i32(topics.len() as i32);
    for (topic, ps) in topics {
        put_string(&mut out, topic);
        out.put_i32(ps.len() as i32);
        for p in ps {
            out.put_i32(p);
        }
    }
    out.put_i64(m.last_update_ms);
    out.put_i64(m.start_ms);
    Bytes::from(out)
}

/// Decodes one record: the transactional id and its metadata (`None` for a tombstone).
pub fn decode(
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(String, Option<TxnMetadata>), OffsetsLogError> {
    let mut k = Reader::new(key);
    let version = k.i16("transaction log key version")?;
    if version != KEY_VERSION {
        return Err(OffsetsLogError::UnknownKeyVersion(version));
    }
    let id = k.string("transactional id")?;
    k.finish("transaction log key")?;
    let Some(value) = value else {
        return Ok((id, None));
    };
    let mut r = Reader::new(value);
    let version = r.i16("transaction log value version")?;
    if version != VALUE_VERSION {
        return Err(OffsetsLogError::UnsupportedValueVersion {
            kind: "transaction log",
            version,
        });
    }
    let producer_id = r.i64("producer id")?;
    let producer_epoch = r.i16("producer epoch")?;
    let timeout_ms = r.i32("transaction timeout")?;
    let status_code = r.i8("transaction status")?;
    let status = TxnStatus::from_code(status_code).ok_or(OffsetsLogError::InvalidLength {
        what: "transaction status",
        len: status_code.into(),
    })?;
    let mut partitions = BTreeSet::new();
    let topics = r.i32("transaction partitions")?;
    for _ in 0..topics.max(0) {
        let topic = r.string("transaction topic")?;
        let count = r.array_len("transaction partition ids")?;
        for _ in 0..count {
            partitions.insert((topic.clone(), r.i32("partition id")?));
        }
    }
    let last_update_ms = r.i64("last update timestamp")?;
    let start_ms = r.i64("start timestamp")?;
    r.finish("transaction log value")?;
    Ok((
        id.clone(),
        Some(TxnMetadata {
            transactional_id: id,
            producer_id,
            producer_epoch,
            last_producer_epoch: -1,
            timeout_ms,
            status,
            partitions,
            start_ms,
            last_update_ms,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_garbage_is_an_error() {
        let mut m = TxnMetadata::new("tx-1", 42, 60_000, 1_000);
        m.status = TxnStatus::Ongoing;
        m.producer_epoch = 3;
        m.start_ms = 900;
        for (t, p) in [("a", 0), ("a", 2), ("b", 1), ("__consumer_offsets", 17)] {
            m.partitions.insert((t.to_string(), p));
        }
        let key = encode_key("tx-1");
        let value = encode_value(&m);
        assert_eq!(
            decode(&key, Some(&value)).unwrap(),
            ("tx-1".to_string(), Some(m))
        );
        assert_eq!(decode(&key, None).unwrap(), ("tx-1".to_string(), None));
        for cut in 0..value.len() {
            assert!(decode(&key, Some(&value[..cut])).is_err(), "cut at {cut}");
        }
        let mut bad_status = value.to_vec();
        bad_status[16] = 9;
        assert!(decode(&key, Some(&bad_status)).is_err());
        assert!(decode(&[0, 1], None).is_err());
    }
}
