//! The internal topics (`__consumer_offsets`, `__transaction_state`) are the coordinators'
//! alone: librdkafka cannot produce to them, and a record in them that a coordinator cannot
//! decode (written into the segment file by the test) is skipped at start-up instead of
//! stopping the broker.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{client_config, restart_broker, start_broker};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(20);
const STATE_PARTITIONS: i32 = 4;

/// Appends one CRC-valid v2 batch holding a single record with `key` at the end of the
/// partition's first segment, at the offset after its last batch.
fn append_foreign_record(partition_dir: &Path, key: &[u8]) {
    let path = partition_dir.join("00000000000000000000.log");
    let existing = std::fs::read(&path).unwrap();
    let mut next_offset = 0i64;
    let mut pos = 0usize;
    while pos + 61 <= existing.len() {
        let base = i64::from_be_bytes(existing[pos..pos + 8].try_into().unwrap());
        let len = i32::from_be_bytes(existing[pos + 8..pos + 12].try_into().unwrap()) as usize;
        let last_delta = i32::from_be_bytes(existing[pos + 23..pos + 27].try_into().unwrap());
        next_offset = base + last_delta as i64 + 1;
        pos += 12 + len;
    }
    assert_eq!(pos, existing.len(), "whole batches only");

    let mut record = vec![0u8, 0, 0]; // attributes, timestamp delta, offset delta
    record.push((key.len() as u8) << 1);
    record.extend_from_slice(key);
    record.push(2 << 1); // value of 2 bytes
    record.extend_from_slice(b"??");
    record.push(0); // no headers
    let mut b = Vec::new();
    b.extend_from_slice(&next_offset.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // length, set below
    b.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, set below
    b.extend_from_slice(&0i16.to_be_bytes()); // attributes
    b.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    b.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    b.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&1i32.to_be_bytes()); // one record
    b.push((record.len() as u8) << 1);
    b.extend_from_slice(&record);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    let mut all = existing;
    all.extend_from_slice(&b);
    std::fs::write(&path, all).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_cannot_write_internal_topics_and_replay_skips_what_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = STATE_PARTITIONS.to_string();
    let overrides = [
        ("transaction.state.log.num.partitions", partitions.as_str()),
        ("offsets.topic.num.partitions", partitions.as_str()),
    ];
    let broker = start_broker(dir.path(), &overrides).await;
    let port = broker.local_addr.port();
    let bootstrap = broker.local_addr.to_string();

    // A transactional id and a committed offset give both internal topics content.
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        client_config(&bootstrap).create().unwrap();
    let created = admin
        .create_topics(
            &[NewTopic::new("plain", 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(created[0].is_ok(), "{created:?}");
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let p: FutureProducer = client_config(&b)
            .set("transactional.id", "guarded")
            .create()
            .unwrap();
        p.init_transactions(TIMEOUT).unwrap();
        let c: BaseConsumer = client_config(&b).set("group.id", "g").create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("plain", 0, Offset::Offset(7))
            .unwrap();
        c.commit(&tpl, CommitMode::Sync).unwrap();
    })
    .await
    .unwrap();

    // A plain producer is refused on every partition of both internal topics.
    let plain: FutureProducer = client_config(&bootstrap)
        .set("message.timeout.ms", "5000")
        .create()
        .unwrap();
    for topic in ["__transaction_state", "__consumer_offsets"] {
        for partition in 0..STATE_PARTITIONS {
            let result = plain
                .send(
                    FutureRecord::to(topic)
                        .partition(partition)
                        .key(&b"\xff\xffgarbage"[..])
                        .payload("x"),
                    TIMEOUT,
                )
                .await;
            match result {
                Err((KafkaError::MessageProduction(code), _)) => {
                    assert_eq!(code, RDKafkaErrorCode::InvalidTopic, "{topic}-{partition}")
                }
                other => panic!("{topic}-{partition}: expected a refusal, got {other:?}"),
            }
        }
    }
    broker.shutdown().await.unwrap();

    // Records no coordinator can read, in every partition of both topics (as an older or
    // foreign writer could have left them): a known key version with a cut-off key.
    let cut_off: [(&str, &[u8]); 2] = [
        ("__transaction_state", b"\x00\x00\x7f"),
        ("__consumer_offsets", b"\x00\x01\x7f"),
    ];
    for (topic, key) in cut_off {
        for partition in 0..STATE_PARTITIONS {
            append_foreign_record(&dir.path().join(format!("{topic}-{partition}")), key);
        }
    }

    let broker = restart_broker(dir.path(), port, &overrides).await;
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        // The transactional id and the committed offset survived the skipped records.
        let p: FutureProducer = client_config(&b)
            .set("transactional.id", "guarded")
            .create()
            .unwrap();
        p.init_transactions(TIMEOUT).unwrap();
        let c: BaseConsumer = client_config(&b).set("group.id", "g").create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("plain", 0);
        let committed = c.committed_offsets(tpl, TIMEOUT).unwrap();
        assert_eq!(
            committed.find_partition("plain", 0).unwrap().offset(),
            Offset::Offset(7)
        );
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}
