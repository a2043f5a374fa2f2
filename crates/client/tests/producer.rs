//! Producer tests against a real in-process Gregor broker.

mod common;

use common::{config, start_broker};

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gregor_client::consumer::{fetch_once, ConsumerRecord};
use gregor_client::partitioner::partition_for_key;
use gregor_client::{ClientConfig, Error, Producer, ProducerRecord};

/// Reads `count` records of a partition from offset 0 (several fetches if needed).
async fn read_all(
    c: &ClientConfig,
    topic: &str,
    partition: i32,
    count: usize,
) -> Vec<ConsumerRecord> {
    let mut out: Vec<ConsumerRecord> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < count && Instant::now() < deadline {
        let next = out.last().map_or(0, |r| r.offset + 1);
        let got = fetch_once(c, topic, partition, next, Duration::from_millis(200))
            .await
            .expect("fetch");
        out.extend(got);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_keys_values_headers_and_nulls() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let c = config(&broker, &[]);
    let producer = Producer::new(&c).unwrap();
    let records = [
        ProducerRecord::new("rt", "v0")
            .with_key("k0")
            .with_header("h1", Some(Bytes::from_static(b"x")))
            .with_header("h2", None)
            .with_timestamp(1_700_000_000_123),
        ProducerRecord {
            topic: "rt".into(),
            key: Some(Bytes::from_static(b"k1")),
            value: None,
            ..ProducerRecord::default()
        },
        ProducerRecord {
            topic: "rt".into(),
            value: Some(Bytes::from_static(b"no key")),
            ..ProducerRecord::default()
        },
    ];
    for (i, r) in records.iter().enumerate() {
        let md = producer.send_and_wait(r.clone()).await.unwrap();
        assert_eq!(
            (md.topic.as_str(), md.partition, md.offset),
            ("rt", 0, i as i64)
        );
    }
    producer.close(Duration::from_secs(5)).await.unwrap();
    let got = read_all(&c, "rt", 0, 3).await;
    assert_eq!(got.len(), 3);
    for (r, g) in records.iter().zip(&got) {
        assert_eq!(g.key, r.key);
        assert_eq!(g.value, r.value);
        assert_eq!(g.headers, r.headers);
    }
    assert_eq!(got[0].timestamp, 1_700_000_000_123);
    assert!(got[1].value.is_none());
    assert!(got[2].key.is_none());
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_land_on_murmur2_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("num.partitions", "5")]).await;
    let c = config(&broker, &[]);
    let producer = Producer::new(&c).unwrap();
    let mut per_partition = vec![Vec::new(); 5];
    for i in 0..40 {
        let key = format!("key-{i}");
        let md = producer
            .send_and_wait(ProducerRecord::new("keyed", format!("v{i}")).with_key(key.clone()))
            .await
            .unwrap();
        assert_eq!(md.partition, partition_for_key(key.as_bytes(), 5), "{key}");
        per_partition[md.partition as usize].push(key);
    }
    assert!(per_partition.iter().filter(|p| !p.is_empty()).count() > 1);
    producer.close(Duration::from_secs(5)).await.unwrap();
    for (p, keys) in per_partition.iter().enumerate() {
        let got = read_all(&c, "keyed", p as i32, keys.len()).await;
        let got_keys: Vec<String> = got
            .iter()
            .map(|r| String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap())
            .collect();
        assert_eq!(&got_keys, keys, "partition {p}");
    }
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_records_with_linger_are_batched_on_one_sticky_partition() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("num.partitions", "3")]).await;
    let c = config(&broker, &[("linger.ms", "1000")]);
    let producer = Producer::new(&c).unwrap();
    // Warm the metadata so all records are appended within the linger window.
    producer
        .send_and_wait(ProducerRecord::new("sticky", "warm"))
        .await
        .unwrap();
    let before = producer.metrics();
    let mut futures = Vec::new();
    for i in 0..50 {
        futures.push(
            producer
                .send(ProducerRecord::new("sticky", format!("value-{i}")))
                .await
                .unwrap(),
        );
    }
    let mut partitions = std::collections::BTreeSet::new();
    for f in futures {
        partitions.insert(f.await.unwrap().partition);
    }
    let after = producer.metrics();
    assert_eq!(after.records_sent - before.records_sent, 50);
    let batches = after.batches_sent - before.batches_sent;
    assert!(
        batches == 1,
        "50 lingering records went out in {batches} batches"
    );
    assert!(
        partitions.len() == 1,
        "sticky partitioner spread records over {partitions:?}"
    );
    assert!(after.batch_size_avg > 0.0);
    assert!(after.request_latency_max_ms >= after.request_latency_avg_ms);
    assert!(after.requests >= 2);
    producer.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(producer.metrics().buffer_bytes_in_use, 0);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compression_codec_round_trips_and_compresses() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        let c = config(&broker, &[("compression.type", codec), ("linger.ms", "50")]);
        let producer = Producer::new(&c).unwrap();
        let values: Vec<String> = (0..20)
            .map(|i| format!("{i:04}{}", "a".repeat(500)))
            .collect();
        let mut futures = Vec::new();
        for v in &values {
            futures.push(
                producer
                    .send(ProducerRecord::new(topic.clone(), v.clone()))
                    .await
                    .unwrap(),
            );
        }
        for f in futures {
            f.await.unwrap();
        }
        let m = producer.metrics();
        let raw: u64 = values.iter().map(|v| v.len() as u64).sum();
        if codec == "none" {
            assert!(
                m.bytes_sent > raw,
                "{codec}: {} bytes for {raw}",
                m.bytes_sent
            );
        } else {
            assert!(
                m.bytes_sent * 4 < raw,
                "{codec}: {} bytes for {raw}",
                m.bytes_sent
            );
        }
        producer.close(Duration::from_secs(5)).await.unwrap();
        let got = read_all(&config(&broker, &[]), &topic, 0, values.len()).await;
        let got: Vec<String> = got
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
            .collect();
        assert_eq!(got, values, "{codec}");
    }
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buffer_blocks_for_max_block_ms_then_fails_and_close_reports_pending() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let c = config(
        &broker,
        &[
            ("buffer.memory", "2000"),
            ("max.block.ms", "700"),
            ("linger.ms", "0"),
            ("request.timeout.ms", "1000"),
            ("retry.backoff.ms", "50"),
        ],
    );
    let producer = Producer::new(&c).unwrap();
    producer
        .send_and_wait(ProducerRecord::new("full", "warm"))
        .await
        .unwrap();
    broker.shutdown().await.unwrap();

    let value = "x".repeat(300);
    let mut accepted = Vec::new();
    let err = loop {
        let start = Instant::now();
        match producer
            .send(ProducerRecord::new("full", value.clone()))
            .await
        {
            Ok(f) => {
                assert!(
                    start.elapsed() < Duration::from_millis(500),
                    "send blocked with free buffer"
                );
                accepted.push(f);
                assert!(accepted.len() < 10, "buffer.memory not enforced");
            }
            Err(e) => {
                let waited = start.elapsed();
                assert!(
                    waited >= Duration::from_millis(650),
                    "failed after {waited:?}"
                );
                assert!(
                    waited < Duration::from_millis(3000),
                    "failed after {waited:?}"
                );
                break e;
            }
        }
    };
    assert!(matches!(err, Error::MaxBlockTimeout { .. }), "{err}");
    assert!(err.to_string().contains("buffer memory"), "{err}");
    assert!(!accepted.is_empty());
    assert!(producer.metrics().buffer_bytes_in_use > 0);
    // close() must not silently drop the accepted records.
    let e = producer
        .close(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Timeout { op: "close", pending } if pending == accepted.len()),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_fails_within_max_block_ms() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = ClientConfig::from_pairs([
        ("bootstrap.servers", format!("127.0.0.1:{port}")),
        ("max.block.ms", "500".to_string()),
    ]);
    let producer = Producer::new(&c).unwrap();
    let start = Instant::now();
    let err = producer
        .send(ProducerRecord::new("t", "v"))
        .await
        .unwrap_err();
    let waited = start.elapsed();
    assert!(matches!(err, Error::MaxBlockTimeout { .. }), "{err}");
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    producer.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_delivers_without_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let c = config(&broker, &[("acks", "0")]);
    let producer = Producer::new(&c).unwrap();
    assert!(!producer.config().enable_idempotence);
    for i in 0..10 {
        let md = producer
            .send_and_wait(ProducerRecord::new("acks0", format!("v{i}")))
            .await
            .unwrap();
        assert_eq!(md.offset, -1);
    }
    producer.close(Duration::from_secs(5)).await.unwrap();
    let got = read_all(&config(&broker, &[]), "acks0", 0, 10).await;
    assert_eq!(got.len(), 10);
    assert_eq!(got[9].value.as_deref(), Some(&b"v9"[..]));
    assert!(got.iter().all(|r| r.producer_id == -1));
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_by_default_with_contiguous_offsets_and_five_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let c = config(&broker, &[("linger.ms", "0"), ("batch.size", "400")]);
    let producer = Producer::new(&c).unwrap();
    assert!(producer.config().enable_idempotence);
    assert_eq!(producer.config().max_in_flight, 5);
    let mut futures = Vec::new();
    for i in 0..600 {
        futures.push(
            producer
                .send(ProducerRecord::new("idem", format!("value-{i:05}")))
                .await
                .unwrap(),
        );
    }
    let mut offsets = Vec::new();
    for f in futures {
        offsets.push(f.await.unwrap().offset);
    }
    assert_eq!(offsets, (0..600).collect::<Vec<i64>>());
    let identity = producer.identity().expect("producer id obtained");
    assert!(identity.producer_id >= 0);
    assert!(
        producer.metrics().batches_sent > 5,
        "{:?}",
        producer.metrics()
    );
    producer.close(Duration::from_secs(5)).await.unwrap();
    let got = read_all(&config(&broker, &[]), "idem", 0, 600).await;
    assert_eq!(got.len(), 600);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.value.as_deref(), Some(format!("value-{i:05}").as_bytes()));
        assert_eq!(r.producer_id, identity.producer_id);
    }
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_flushes_everything_despite_long_linger() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("num.partitions", "2")]).await;
    let c = config(&broker, &[("linger.ms", "60000")]);
    let producer = Producer::new(&c).unwrap();
    let mut futures = Vec::new();
    for i in 0..30 {
        futures.push(
            producer
                .send(ProducerRecord::new("closing", format!("v{i}")).with_partition(i % 2))
                .await
                .unwrap(),
        );
    }
    let start = Instant::now();
    producer.close(Duration::from_secs(10)).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    for f in futures {
        f.await.unwrap();
    }
    assert!(matches!(
        producer.send(ProducerRecord::new("closing", "late")).await,
        Err(Error::Closed)
    ));
    let c = config(&broker, &[]);
    assert_eq!(read_all(&c, "closing", 0, 15).await.len(), 15);
    assert_eq!(read_all(&c, "closing", 1, 15).await.len(), 15);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_and_round_robin_partitioners() {
    struct Last;
    impl gregor_client::Partitioner for Last {
        fn partition(&self, _: &str, _: Option<&[u8]>, _: Option<&[u8]>, n: i32) -> i32 {
            n - 1
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("num.partitions", "3")]).await;
    let producer = Producer::with_partitioner(&config(&broker, &[]), Arc::new(Last)).unwrap();
    let md = producer
        .send_and_wait(ProducerRecord::new("custom", "v").with_key("k"))
        .await
        .unwrap();
    assert_eq!(md.partition, 2);
    producer.close(Duration::from_secs(5)).await.unwrap();

    let c = config(&broker, &[("partitioner.class", "round_robin")]);
    let producer = Producer::new(&c).unwrap();
    let mut parts = Vec::new();
    for _ in 0..6 {
        let md = producer
            .send_and_wait(ProducerRecord::new("rr", "v").with_key("same"))
            .await
            .unwrap();
        parts.push(md.partition);
    }
    assert_eq!(parts, vec![0, 1, 2, 0, 1, 2]);
    producer.close(Duration::from_secs(5)).await.unwrap();
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_retried_across_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let port = broker.local_addr.port();
    let c = config(
        &broker,
        &[("request.timeout.ms", "2000"), ("retry.backoff.ms", "100")],
    );
    let producer = Producer::new(&c).unwrap();
    let first = producer
        .send_and_wait(ProducerRecord::new("restart", "before"))
        .await
        .unwrap();
    assert_eq!(first.offset, 0);
    broker.shutdown().await.unwrap();

    let mut futures = Vec::new();
    for i in 0..5 {
        futures.push(
            producer
                .send(ProducerRecord::new("restart", format!("during-{i}")))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let listener = format!("PLAINTEXT://127.0.0.1:{port}");
    let broker = start_broker(dir.path(), &[("listeners", listener.as_str())]).await;
    let mut offsets = Vec::new();
    for f in futures {
        offsets.push(f.await.unwrap().offset);
    }
    assert_eq!(offsets, vec![1, 2, 3, 4, 5]);
    assert!(producer.metrics().retries > 0, "{:?}", producer.metrics());
    producer.close(Duration::from_secs(5)).await.unwrap();
    let got = read_all(&config(&broker, &[]), "restart", 0, 6).await;
    assert_eq!(got.len(), 6);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topic_triggers_metadata_refresh_and_retry() {
    use gregor_client::connection::Connection;
    use kafka_protocol::messages::{ApiKey, DeleteTopicsRequest, RequestKind, TopicName};
    use kafka_protocol::protocol::StrBytes;

    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    // metadata.max.age.ms is long, so only the error-driven refresh can recreate the topic.
    let c = config(
        &broker,
        &[
            ("request.timeout.ms", "3000"),
            ("delivery.timeout.ms", "5000"),
        ],
    );
    let producer = Producer::new(&c).unwrap();
    let md = producer
        .send_and_wait(ProducerRecord::new("moving", "a"))
        .await
        .unwrap();
    assert_eq!(md.offset, 0);

    let admin = Connection::connect(
        &broker.local_addr.to_string(),
        "admin",
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let delete = DeleteTopicsRequest::default()
        .with_topic_names(vec![TopicName(StrBytes::from_static_str("moving"))])
        .with_timeout_ms(5000);
    admin
        .send_versioned(ApiKey::DeleteTopics, 4, &RequestKind::DeleteTopics(delete))
        .unwrap()
        .await
        .unwrap();

    // The cached leader now answers UNKNOWN_TOPIC_OR_PARTITION; the refresh auto-creates it.
    let md = producer
        .send_and_wait(ProducerRecord::new("moving", "b"))
        .await
        .unwrap();
    assert_eq!((md.partition, md.offset), (0, 0));
    assert!(producer.metrics().retries > 0, "{:?}", producer.metrics());
    producer.close(Duration::from_secs(5)).await.unwrap();
    let got = read_all(&config(&broker, &[]), "moving", 0, 1).await;
    assert_eq!(got[0].value.as_deref(), Some(&b"b"[..]));
    broker.shutdown().await.unwrap();
}

/// Many tasks sending at once through a small buffer: batches are released on other threads
/// while records are being added, and the buffer accounting must stay exact (it once
/// underflowed when a release subtracted a batch overhead that was never added).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sends_through_a_small_buffer_keep_exact_accounting() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let c = config(
        &broker,
        &[
            ("buffer.memory", "65536"),
            ("batch.size", "4096"),
            ("linger.ms", "1"),
        ],
    );
    let producer = Arc::new(Producer::new(&c).unwrap());
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let producer = producer.clone();
            tokio::spawn(async move {
                let mut futures = Vec::new();
                for i in 0..5_000 {
                    let record = ProducerRecord::new("busy", format!("task-{t}-record-{i}"));
                    futures.push(producer.send(record).await.expect("accepted"));
                }
                for f in futures {
                    f.await.expect("delivered");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("no task panicked");
    }
    assert_eq!(
        producer.metrics().buffer_bytes_in_use,
        0,
        "every reserved byte was given back"
    );
    broker.shutdown().await.unwrap();
}

/// The three send styles: `send` returns before the acknowledgement (the record lingers for
/// linger.ms), `send_with_callback` reports it to a callback, `send_and_wait` returns it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_callback_and_sync_sends() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let c = config(&broker, &[("linger.ms", "400")]);
    let producer = Producer::new(&c).unwrap();
    producer
        .send_and_wait(ProducerRecord::new("styles", "warm-up").with_partition(0))
        .await
        .unwrap();

    let start = Instant::now();
    let future = producer
        .send(ProducerRecord::new("styles", "async").with_partition(0))
        .await
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(200),
        "send returns at once, before linger.ms"
    );
    let (tx, rx) = tokio::sync::oneshot::channel();
    producer
        .send_with_callback(
            ProducerRecord::new("styles", "callback").with_partition(0),
            move |result| {
                let _ = tx.send(result);
            },
        )
        .await
        .unwrap();
    let acked = future.await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "acknowledged only after lingering"
    );
    let called = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("the callback is called")
        .unwrap()
        .unwrap();
    assert_eq!((acked.offset, called.offset), (1, 2));

    let sync_start = Instant::now();
    let meta = producer
        .send_and_wait(ProducerRecord::new("styles", "sync").with_partition(0))
        .await
        .unwrap();
    assert_eq!(meta.offset, 3);
    assert!(
        sync_start.elapsed() >= Duration::from_millis(300),
        "waited for the ack"
    );
    producer.close(Duration::from_secs(5)).await.unwrap();
    broker.shutdown().await.unwrap();
}
