//! Interoperability: a real broker driven by librdkafka (the `rdkafka` crate).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{client_config, start_broker};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(20);

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    client_config(bootstrap).create().expect("admin client")
}

fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut c = client_config(bootstrap);
    c.set("linger.ms", "5").set("acks", "all");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("producer")
}

async fn create_topic(bootstrap: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let results = admin(bootstrap)
        .create_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        )
        .await
        .expect("create_topics");
    assert!(results[0].is_ok(), "create {name}: {:?}", results[0]);
}

/// A consumer without a group, reading `partitions` of `topic` from the beginning.
fn assigned_consumer(bootstrap: &str, topic: &str, partitions: i32) -> StreamConsumer {
    let consumer: StreamConsumer = client_config(bootstrap)
        .set("enable.partition.eof", "false")
        // librdkafka needs a group id even for manual assignment; nothing is committed.
        .set("group.id", "assigned-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    consumer
}

/// (partition, offset, key, value, headers) of each consumed record.
type Consumed = (
    i32,
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
);

async fn consume(consumer: &StreamConsumer, count: usize) -> Vec<Consumed> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let msg = tokio::time::timeout(TIMEOUT, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out after {} of {count} records", out.len()))
            .expect("consume");
        let headers = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        out.push((
            msg.partition(),
            msg.offset(),
            msg.key().map(<[u8]>::to_vec),
            msg.payload().map(<[u8]>::to_vec),
            headers,
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_keys_headers_nulls_contiguous_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let bootstrap = broker.local_addr.to_string();
    create_topic(&bootstrap, "round-trip", 3, &[]).await;

    let producer = producer(&bootstrap, &[]);
    let n = 300;
    let mut deliveries = Vec::new();
    for i in 0..n {
        let key = format!("key-{i}");
        let value = format!("value-{i}");
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "index",
                value: Some(&i.to_string()),
            })
            .insert(Header {
                key: "empty",
                value: None::<&[u8]>,
            });
        let mut record = FutureRecord::to("round-trip")
            .key(&key)
            .partition(i % 3)
            .headers(headers);
        if i % 10 != 0 {
            record = record.payload(&value);
        }
        deliveries.push(producer.send_result(record).expect("enqueued"));
    }
    for d in deliveries {
        d.await.expect("not cancelled").expect("delivered");
    }

    let consumer = assigned_consumer(&bootstrap, "round-trip", 3);
    let records = consume(&consumer, n as usize).await;
    let mut next_offset: HashMap<i32, i64> = HashMap::new();
    for (partition, offset, key, value, headers) in &records {
        let expected = next_offset.entry(*partition).or_insert(0);
        assert_eq!(
            *offset, *expected,
            "offsets are contiguous from 0 in partition {partition}"
        );
        *expected += 1;
        let key = String::from_utf8(key.clone().unwrap()).unwrap();
        let i: i32 = key.strip_prefix("key-").unwrap().parse().unwrap();
        assert_eq!(i % 3, *partition);
        if i % 10 == 0 {
            assert_eq!(*value, None, "null value kept null");
        } else {
            assert_eq!(value.as_deref(), Some(format!("value-{i}").as_bytes()));
        }
        assert_eq!(headers.len(), 2);
        assert_eq!(
            headers[0],
            ("index".to_string(), Some(i.to_string().into_bytes()))
        );
        assert_eq!(headers[1], ("empty".to_string(), None));
    }
    assert_eq!(next_offset.values().sum::<i64>(), n as i64);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compression_codec_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let bootstrap = broker.local_addr.to_string();
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        create_topic(&bootstrap, &topic, 1, &[]).await;
        let producer = producer(
            &bootstrap,
            &[("compression.type", codec), ("linger.ms", "50")],
        );
        let n = 500;
        // Enqueue everything first so linger.ms puts many records in each compressed batch.
        let deliveries: Vec<_> = (0..n)
            .map(|i| {
                let value = format!("{codec} record {i} {}", "x".repeat(i % 50));
                let record = FutureRecord::<(), _>::to(&topic).payload(&value);
                producer.send_result(record).expect("enqueued")
            })
            .collect();
        for d in deliveries {
            d.await.expect("not cancelled").expect("delivered");
        }
        let consumer = assigned_consumer(&bootstrap, &topic, 1);
        let records = consume(&consumer, n).await;
        for (i, (_, offset, _, value, _)) in records.iter().enumerate() {
            assert_eq!(*offset, i as i64);
            let expected = format!("{codec} record {i} {}", "x".repeat(i % 50));
            assert_eq!(value.as_deref(), Some(expected.as_bytes()), "{codec}");
        }
    }
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_by_timestamp_and_watermarks() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let bootstrap = broker.local_addr.to_string();
    create_topic(&bootstrap, "times", 1, &[]).await;
    let producer = producer(&bootstrap, &[("linger.ms", "100")]);
    let base = 1_700_000_000_000i64;
    // Ten records in one or more batches with timestamps base, base+1000, ...
    // Enqueued together so several records share a batch and the lookup must find the
    // record inside it.
    let deliveries: Vec<_> = (0..10)
        .map(|i| {
            let value = format!("v{i}");
            let record = FutureRecord::<(), _>::to("times")
                .payload(&value)
                .timestamp(base + i * 1000);
            producer.send_result(record).expect("enqueued")
        })
        .collect();
    for d in deliveries {
        d.await.expect("not cancelled").expect("delivered");
    }
    let consumer = assigned_consumer(&bootstrap, "times", 1);
    let (low, high) = consumer.fetch_watermarks("times", 0, TIMEOUT).unwrap();
    assert_eq!((low, high), (0, 10));
    for (ts, expected) in [
        (base, 0),
        (base + 1, 1),
        (base + 4500, 5),
        (base + 9000, 9),
        (base + 9001, -1),
        (0, 0),
    ] {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("times", 0, Offset::Offset(ts))
            .unwrap();
        let found = consumer.offsets_for_times(tpl, TIMEOUT).unwrap();
        let offset = found.find_partition("times", 0).unwrap().offset();
        let expected = if expected < 0 {
            Offset::End
        } else {
            Offset::Offset(expected)
        };
        assert_eq!(offset, expected, "timestamp {ts}");
    }
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_partitions_grows_and_refuses_decrease() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let bootstrap = broker.local_addr.to_string();
    create_topic(&bootstrap, "grow", 2, &[]).await;
    let admin = admin(&bootstrap);
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let r = admin
        .create_partitions(&[NewPartitions::new("grow", 5)], &opts)
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    let r = admin
        .create_partitions(&[NewPartitions::new("grow", 3)], &opts)
        .await
        .unwrap();
    assert_eq!(
        r[0],
        Err(("grow".to_string(), RDKafkaErrorCode::InvalidPartitions))
    );
    let metadata = admin.inner().fetch_metadata(Some("grow"), TIMEOUT).unwrap();
    assert_eq!(metadata.topics()[0].partitions().len(), 5);
    // The new partitions take writes.
    let producer = producer(&bootstrap, &[]);
    let d = producer
        .send(
            FutureRecord::<(), _>::to("grow").payload("x").partition(4),
            TIMEOUT,
        )
        .await
        .expect("delivered");
    assert_eq!((d.partition, d.offset), (4, 0));
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_and_alter_topic_configs() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("log.segment.bytes", "1048576")]).await;
    let bootstrap = broker.local_addr.to_string();
    create_topic(&bootstrap, "configured", 1, &[("retention.ms", "3600000")]).await;
    let admin = admin(&bootstrap);
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic("configured")], &opts)
        .await
        .unwrap();
    let resource = described[0].as_ref().expect("described");
    let retention = resource.get("retention.ms").unwrap();
    assert_eq!(retention.value.as_deref(), Some("3600000"));
    assert!(!retention.is_default);
    let segment = resource.get("segment.bytes").unwrap();
    assert_eq!(
        segment.value.as_deref(),
        Some("1048576"),
        "broker static default applies"
    );
    let cleanup = resource.get("cleanup.policy").unwrap();
    assert_eq!(cleanup.value.as_deref(), Some("delete"));

    let alter =
        AlterConfig::new(ResourceSpecifier::Topic("configured")).set("cleanup.policy", "compact");
    let r = admin.alter_configs(&[alter], &opts).await.unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic("configured")], &opts)
        .await
        .unwrap();
    let resource = described[0].as_ref().unwrap();
    assert_eq!(
        resource.get("cleanup.policy").unwrap().value.as_deref(),
        Some("compact")
    );
    // Legacy AlterConfigs replaces the whole set: retention.ms went back to its default.
    assert_eq!(
        resource.get("retention.ms").unwrap().value.as_deref(),
        Some("604800000")
    );

    let bad = AlterConfig::new(ResourceSpecifier::Topic("configured")).set("segment.bytes", "tiny");
    // The rdkafka crate drops per-resource errors of AlterConfigs (raw_protocol.rs checks
    // the INVALID_CONFIG code); here the refused value must not have been applied.
    admin.alter_configs(&[bad], &opts).await.unwrap();
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic("configured")], &opts)
        .await
        .unwrap();
    let resource = described[0].as_ref().unwrap();
    assert_eq!(
        resource.get("segment.bytes").unwrap().value.as_deref(),
        Some("1048576")
    );
    assert_eq!(
        resource.get("cleanup.policy").unwrap().value.as_deref(),
        Some("compact")
    );
    let described = admin
        .describe_configs(&[ResourceSpecifier::Broker(1)], &opts)
        .await
        .unwrap();
    let resource = described[0].as_ref().unwrap();
    assert_eq!(
        resource.get("log.segment.bytes").unwrap().value.as_deref(),
        Some("1048576")
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_errors_and_auto_creation() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("num.partitions", "2")]).await;
    let bootstrap = broker.local_addr.to_string();
    let admin = admin(&bootstrap);
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let bad = NewTopic::new("bad name!", 1, TopicReplication::Fixed(1));
    let r = admin.create_topics(&[bad], &opts).await.unwrap();
    assert_eq!(
        r[0],
        Err(("bad name!".to_string(), RDKafkaErrorCode::InvalidTopic))
    );
    let rf = NewTopic::new("rf3", 1, TopicReplication::Fixed(3));
    let r = admin.create_topics(&[rf], &opts).await.unwrap();
    assert_eq!(
        r[0],
        Err((
            "rf3".to_string(),
            RDKafkaErrorCode::InvalidReplicationFactor
        ))
    );
    let r = admin.delete_topics(&["missing"], &opts).await.unwrap();
    assert_eq!(
        r[0],
        Err((
            "missing".to_string(),
            RDKafkaErrorCode::UnknownTopicOrPartition
        ))
    );

    // Producing to an unknown topic creates it with num.partitions.
    let producer = producer(&bootstrap, &[]);
    producer
        .send(
            FutureRecord::<(), _>::to("auto-made").payload("hello"),
            TIMEOUT,
        )
        .await
        .expect("delivered to an auto-created topic");
    let md = admin
        .inner()
        .fetch_metadata(Some("auto-made"), TIMEOUT)
        .unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 2);
    let r = admin.delete_topics(&["auto-made"], &opts).await.unwrap();
    assert!(r[0].is_ok());
    let md = admin.inner().fetch_metadata(None, TIMEOUT).unwrap();
    assert!(md.topics().iter().all(|t| t.name() != "auto-made"));
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_record_gets_message_too_large_and_broker_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("message.max.bytes", "10000")]).await;
    let bootstrap = broker.local_addr.to_string();
    create_topic(&bootstrap, "small", 1, &[]).await;
    let producer = producer(&bootstrap, &[("message.max.bytes", "1000000")]);
    let big = vec![7u8; 50_000];
    let err = producer
        .send(FutureRecord::<(), _>::to("small").payload(&big), TIMEOUT)
        .await
        .expect_err("refused");
    assert_eq!(
        err.0,
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
    );
    let d = producer
        .send(FutureRecord::<(), _>::to("small").payload("fits"), TIMEOUT)
        .await
        .expect("a normal record still goes through");
    assert_eq!(d.offset, 0, "the refused batch took no offset");
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("log.segment.bytes", "4096")]).await;
    let port = broker.local_addr.port();
    let bootstrap = broker.local_addr.to_string();
    create_topic(&bootstrap, "durable", 2, &[]).await;
    let first = producer(&bootstrap, &[]);
    for i in 0..200 {
        let value = format!("record-{i:04}-{}", "y".repeat(64));
        first
            .send(
                FutureRecord::<(), _>::to("durable")
                    .payload(&value)
                    .partition(i % 2),
                TIMEOUT,
            )
            .await
            .expect("delivered");
    }
    drop(first);
    broker.shutdown().await.unwrap();
    assert!(
        dir.path().join(".kafka_cleanshutdown").exists(),
        "clean shutdown marker written"
    );

    let broker = common::restart_broker(dir.path(), port, &[("log.segment.bytes", "4096")]).await;
    let consumer = assigned_consumer(&bootstrap, "durable", 2);
    let records = consume(&consumer, 200).await;
    let mut seen: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8(r.3.clone().unwrap()).unwrap())
        .collect();
    seen.sort();
    for (i, v) in seen.iter().enumerate() {
        assert!(v.starts_with(&format!("record-{i:04}-")));
    }
    let producer = producer(&bootstrap, &[]);
    let d = producer
        .send(
            FutureRecord::<(), _>::to("durable")
                .payload("after")
                .partition(0),
            TIMEOUT,
        )
        .await
        .expect("delivered");
    assert_eq!(d.offset, 100, "appends continue after the recovered end");
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_topic_refuses_records_without_key() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let bootstrap = broker.local_addr.to_string();
    create_topic(&bootstrap, "compacted", 1, &[("cleanup.policy", "compact")]).await;
    let producer = producer(&bootstrap, &[("linger.ms", "0")]);
    let err = producer
        .send(
            FutureRecord::<(), _>::to("compacted").payload("no key"),
            TIMEOUT,
        )
        .await
        .expect_err("a keyless record is refused");
    assert_eq!(
        err.0,
        KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord)
    );
    let d = producer
        .send(
            FutureRecord::to("compacted").key("k").payload("keyed"),
            TIMEOUT,
        )
        .await
        .expect("a keyed record is accepted");
    assert_eq!(d.offset, 0, "the refused record took no offset");
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_writes_each_record_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let bootstrap = broker.local_addr.to_string();
    create_topic(&bootstrap, "idempotent", 1, &[]).await;
    let producer = producer(
        &bootstrap,
        &[
            ("enable.idempotence", "true"),
            ("max.in.flight.requests.per.connection", "5"),
            ("linger.ms", "1"),
        ],
    );
    let deliveries: Vec<_> = (0..2000)
        .map(|i| {
            let value = format!("{i}");
            producer
                .send_result(FutureRecord::<(), _>::to("idempotent").payload(&value))
                .expect("enqueued")
        })
        .collect();
    for (i, d) in deliveries.into_iter().enumerate() {
        let d = d.await.unwrap().expect("delivered");
        assert_eq!(d.offset, i as i64, "in order, no gaps, no duplicates");
    }
    let consumer = assigned_consumer(&bootstrap, "idempotent", 1);
    let records = consume(&consumer, 2000).await;
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.3.as_deref(), Some(i.to_string().as_bytes()));
    }
    broker.shutdown().await.unwrap();
}

/// A value of about 1 KiB that compresses poorly (so compressed reads are large too).
fn noisy_value(tag: &str, i: usize) -> String {
    let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let noise: String = (0..1000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect();
    format!("{tag}-{i:05}-{noise}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_fetches_are_sent_from_segment_files_byte_for_byte() {
    use rdkafka::producer::Producer;
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let bootstrap = broker.local_addr.to_string();
    let n = 1500;
    for (tag, extra) in [
        ("plain", vec![("linger.ms", "20")]),
        (
            "zstd",
            vec![("linger.ms", "20"), ("compression.type", "zstd")],
        ),
        ("txn", vec![("transactional.id", "zero-copy-txn")]),
    ] {
        create_topic(&bootstrap, tag, 1, &[]).await;
        let producer = producer(&bootstrap, &extra);
        if tag == "txn" {
            producer.init_transactions(TIMEOUT).unwrap();
            producer.begin_transaction().unwrap();
        }
        let deliveries: Vec<_> = (0..n)
            .map(|i| {
                let value = noisy_value(tag, i);
                producer
                    .send_result(FutureRecord::<(), _>::to(tag).payload(&value))
                    .expect("enqueued")
            })
            .collect();
        for d in deliveries {
            d.await.expect("not cancelled").expect("delivered");
        }
        if tag == "txn" {
            producer.commit_transaction(TIMEOUT).unwrap();
        }
        let before = gregor_broker::zero_copy::bytes_sent_from_files();
        let consumer: StreamConsumer = client_config(&bootstrap)
            .set("group.id", "zero-copy-reader")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(tag, 0, Offset::Beginning).unwrap();
        consumer.assign(&tpl).unwrap();
        let records = consume(&consumer, n).await;
        let values: Vec<String> = records
            .iter()
            .map(|r| String::from_utf8(r.3.clone().unwrap()).unwrap())
            .collect();
        let expected: Vec<String> = (0..n).map(|i| noisy_value(tag, i)).collect();
        assert!(values == expected, "{tag}: every record, once, in order");
        let sent = gregor_broker::zero_copy::bytes_sent_from_files() - before;
        assert!(
            sent >= (n as u64) * 500,
            "{tag}: the records came from the segment files ({sent} bytes sent so)"
        );
    }
    broker.shutdown().await.unwrap();
}
