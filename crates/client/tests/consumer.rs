//! Consumer tests against a real in-process Gregor broker.

mod common;

use common::{config, start_broker};

use std::time::{Duration, Instant};

use bytes::Bytes;
use gregor_broker::BrokerHandle;
use gregor_client::connection::Connection;
use gregor_client::consumer::{Consumer, ConsumerRecord};
use gregor_client::{ClientConfig, ConfigError, Error, Producer, ProducerRecord};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::{
    ApiKey, DeleteRecordsRequest, RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

/// Produces `n` records `v{i}` (key `k{i}`) to `topic`/`partition`.
async fn produce(
    broker: &BrokerHandle,
    topic: &str,
    partition: i32,
    n: usize,
    extra: &[(&str, &str)],
) {
    let producer = Producer::new(&config(broker, extra)).unwrap();
    let mut futs = Vec::new();
    for i in 0..n {
        futs.push(
            producer
                .send(
                    ProducerRecord::new(topic, format!("v{i}"))
                        .with_key(format!("k{i}"))
                        .with_partition(partition),
                )
                .await
                .unwrap(),
        );
    }
    for f in futs {
        f.await.unwrap();
    }
    producer.close(Duration::from_secs(5)).await.unwrap();
}

/// Polls until `count` records arrived (or 10 s passed).
async fn poll_n(consumer: &mut Consumer, count: usize) -> Vec<ConsumerRecord> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < count && Instant::now() < deadline {
        out.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
    }
    out
}

fn consumer(broker: &BrokerHandle, extra: &[(&str, &str)]) -> Consumer {
    Consumer::new(&config(broker, extra)).unwrap()
}

#[test]
fn config_defaults_and_errors() {
    let c = ClientConfig::from_pairs([("bootstrap.servers", "localhost:9092")]);
    let consumer = Consumer::new(&c).unwrap();
    let cfg = consumer.config();
    assert_eq!(cfg.fetch_min_bytes, 1);
    assert_eq!(cfg.fetch_max_wait, Duration::from_millis(500));
    assert_eq!(cfg.fetch_max_bytes, 52_428_800);
    assert_eq!(cfg.max_partition_fetch_bytes, 1_048_576);
    assert_eq!(cfg.max_poll_records, 500);
    assert_eq!(cfg.isolation_level, 0);
    assert!(cfg.enable_auto_commit);
    assert_eq!(cfg.auto_commit_interval, Duration::from_secs(5));
    assert!(cfg.check_crcs);
    assert_eq!(cfg.group_id, None);
    assert_eq!(
        cfg.auto_offset_reset,
        gregor_client::consumer::OffsetReset::Latest
    );
    for (k, v) in [
        ("auto.offset.reset", "smallest"),
        ("isolation.level", "dirty"),
        ("max.poll.records", "0"),
        ("fetch.max.wait.ms", "soon"),
        ("enable.auto.commit", "yes"),
    ] {
        let mut c = c.clone();
        c.set(k, v);
        let e = Consumer::new(&c).unwrap_err();
        assert!(e.to_string().contains(&format!("`{k}`")), "{e}");
    }
    let mut bad = c.clone();
    bad.set("max.poll.record", "5");
    match Consumer::new(&bad).unwrap_err() {
        Error::Config(ConfigError::Unknown(k)) => assert_eq!(k, "max.poll.record"),
        e => panic!("unexpected {e}"),
    }
    let mut rc = c.clone();
    rc.set("isolation.level", "read_committed");
    assert_eq!(Consumer::new(&rc).unwrap().config().isolation_level, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_every_codec_with_keys_headers_and_nulls() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("rt-{codec}");
        let producer = Producer::new(&config(
            &broker,
            &[("compression.type", codec), ("linger.ms", "20")],
        ))
        .unwrap();
        let mut sent = Vec::new();
        let mut futs = Vec::new();
        for i in 0..50 {
            let mut r = ProducerRecord::new(topic.as_str(), format!("value-{i}-{}", "x".repeat(i)))
                .with_header("h", Some(Bytes::from(format!("hv{i}"))))
                .with_header("empty", None);
            if i % 3 == 0 {
                r = r.with_key(format!("key-{i}"));
            }
            if i % 7 == 0 {
                r.value = None;
            }
            sent.push(r.clone());
            futs.push(producer.send(r).await.unwrap());
        }
        for f in futs {
            f.await.unwrap();
        }
        producer.close(Duration::from_secs(5)).await.unwrap();

        let mut c = consumer(&broker, &[("auto.offset.reset", "earliest")]);
        c.assign(vec![(topic.clone(), 0)]).unwrap();
        let got = poll_n(&mut c, 50).await;
        assert_eq!(got.len(), 50, "{codec}");
        for (i, (s, g)) in sent.iter().zip(&got).enumerate() {
            assert_eq!(g.offset, i as i64, "{codec}");
            assert_eq!(g.topic, topic);
            assert_eq!(g.key, s.key, "{codec}");
            assert_eq!(g.value, s.value, "{codec}");
            assert_eq!(g.headers, s.headers, "{codec}");
        }
        assert_eq!(c.position(&topic, 0).await.unwrap(), 50);
    }
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    produce(&broker, "sk", 0, 20, &[]).await;
    let mut c = consumer(&broker, &[("auto.offset.reset", "earliest")]);
    c.assign(vec![("sk", 0)]).unwrap();
    assert_eq!(c.assignment(), vec![("sk".to_string(), 0)]);
    assert_eq!(c.position("sk", 0).await.unwrap(), 0);
    c.seek("sk", 0, 15).unwrap();
    assert_eq!(c.position("sk", 0).await.unwrap(), 15);
    let got = poll_n(&mut c, 5).await;
    let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (15..20).collect::<Vec<_>>());
    assert_eq!(got[0].value.as_deref(), Some(&b"v15"[..]));
    assert_eq!(c.position("sk", 0).await.unwrap(), 20);
    // Seek backwards: records before the position inside the batch are skipped.
    c.seek("sk", 0, 3).unwrap();
    let got = poll_n(&mut c, 17).await;
    assert_eq!(got.first().map(|r| r.offset), Some(3));
    assert_eq!(got.len(), 17);
    assert!(c.seek("other", 0, 1).is_err());
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("num.partitions", "2")]).await;
    produce(&broker, "pr", 0, 10, &[]).await;
    produce(&broker, "pr", 1, 10, &[]).await;
    let mut c = consumer(
        &broker,
        &[("auto.offset.reset", "earliest"), ("max.poll.records", "2")],
    );
    c.assign(vec![("pr", 0), ("pr", 1)]).unwrap();
    // One small poll: both partitions now have fetched (buffered) records.
    let first = poll_n(&mut c, 1).await;
    let mut seen = [0usize; 2];
    for r in &first {
        seen[r.partition as usize] += 1;
    }
    c.pause(&[("pr".to_string(), 1)]).unwrap();
    assert_eq!(c.paused(), vec![("pr".to_string(), 1)]);
    produce(&broker, "pr", 1, 5, &[]).await;
    let mut got = Vec::new();
    for _ in 0..15 {
        got.extend(c.poll(Duration::from_millis(100)).await.unwrap());
    }
    assert!(got.iter().all(|r| r.partition == 0), "{got:?}");
    assert_eq!(got.len() + seen[0], 10);
    let p1_position = c.position("pr", 1).await.unwrap();
    assert_eq!(p1_position, seen[1] as i64);
    c.resume(&[("pr".to_string(), 1)]).unwrap();
    let got = poll_n(&mut c, 15 - seen[1]).await;
    assert_eq!(got.len(), 15 - seen[1]);
    assert!(got.iter().all(|r| r.partition == 1));
    assert_eq!(got[0].offset, p1_position);
    assert_eq!(got.last().unwrap().offset, 14);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_poll_records_bounds_a_poll() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    produce(&broker, "mp", 0, 25, &[]).await;
    let mut c = consumer(
        &broker,
        &[("auto.offset.reset", "earliest"), ("max.poll.records", "7")],
    );
    c.assign(vec![("mp", 0)]).unwrap();
    let mut all = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while all.len() < 25 && Instant::now() < deadline {
        let got = c.poll(Duration::from_millis(200)).await.unwrap();
        assert!(got.len() <= 7, "{}", got.len());
        all.extend(got);
    }
    let offsets: Vec<i64> = all.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..25).collect::<Vec<_>>());
    // Pipelining: a fetch is kept in flight after each poll.
    assert_eq!(c.fetches_in_flight(), 1);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_offset_reset_earliest_latest_none() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    produce(&broker, "ar", 0, 5, &[]).await;

    let mut earliest = consumer(&broker, &[("auto.offset.reset", "earliest")]);
    earliest.assign(vec![("ar", 0)]).unwrap();
    assert_eq!(earliest.position("ar", 0).await.unwrap(), 0);

    let mut latest = consumer(&broker, &[]);
    latest.assign(vec![("ar", 0)]).unwrap();
    assert_eq!(latest.position("ar", 0).await.unwrap(), 5);
    assert!(latest
        .poll(Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
    produce(&broker, "ar", 0, 2, &[]).await;
    let got = poll_n(&mut latest, 2).await;
    assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![5, 6]);

    let mut none = consumer(&broker, &[("auto.offset.reset", "none")]);
    none.assign(vec![("ar", 0)]).unwrap();
    let e = none.poll(Duration::from_millis(200)).await.unwrap_err();
    assert!(
        matches!(e, Error::NoOffsetForPartition { ref topic, partition: 0 } if topic == "ar"),
        "{e}"
    );
    assert!(e.to_string().contains("auto.offset.reset"), "{e}");
    // An explicit seek makes it usable.
    none.seek("ar", 0, 1).unwrap();
    let got = poll_n(&mut none, 6).await;
    assert_eq!(got.first().map(|r| r.offset), Some(1));
    // Out of range with none is an error too.
    none.seek("ar", 0, 1000).unwrap();
    let mut err = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while err.is_none() && Instant::now() < deadline {
        err = none.poll(Duration::from_millis(200)).await.err();
    }
    assert!(
        matches!(err, Some(Error::OffsetOutOfRange { offset: 1000, .. })),
        "{err:?}"
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_sync_then_new_consumer_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    produce(&broker, "cm", 0, 10, &[]).await;
    let group = [
        ("group.id", "g1"),
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "false"),
    ];
    let mut c = consumer(&broker, &group);
    c.assign(vec![("cm", 0)]).unwrap();
    assert_eq!(
        c.committed(&[("cm".to_string(), 0)]).await.unwrap(),
        vec![None]
    );
    let got = poll_n(&mut c, 4).await;
    assert!(got.len() >= 4);
    c.commit_sync(&[("cm".to_string(), 0, 4)]).await.unwrap();
    assert_eq!(
        c.committed(&[("cm".to_string(), 0)]).await.unwrap(),
        vec![Some(4)]
    );
    drop(c);

    let mut c2 = consumer(&broker, &group);
    c2.assign(vec![("cm", 0)]).unwrap();
    assert_eq!(c2.position("cm", 0).await.unwrap(), 4);
    let got = poll_n(&mut c2, 6).await;
    assert_eq!(
        got.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (4..10).collect::<Vec<_>>()
    );
    c2.commit_async(vec![("cm".to_string(), 0, 10)])
        .await
        .unwrap()
        .unwrap();

    // Without group.id commits are refused clearly.
    let nogroup = consumer(&broker, &[]);
    let e = nogroup
        .commit_sync(&[("cm".to_string(), 0, 1)])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("group.id"), "{e}");
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_commit_commits_positions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    produce(&broker, "ac", 0, 5, &[]).await;
    let cfg = [
        ("group.id", "g-auto"),
        ("auto.offset.reset", "earliest"),
        ("auto.commit.interval.ms", "100"),
    ];
    let mut c = consumer(&broker, &cfg);
    c.assign(vec![("ac", 0)]).unwrap();
    assert_eq!(poll_n(&mut c, 5).await.len(), 5);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut committed = None;
    while committed != Some(5) && Instant::now() < deadline {
        c.poll(Duration::from_millis(150)).await.unwrap();
        committed = c.committed(&[("ac".to_string(), 0)]).await.unwrap()[0];
    }
    assert_eq!(committed, Some(5));
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn position_below_log_start_resets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    produce(&broker, "ls", 0, 10, &[]).await;
    // Advance the log start offset to 6 with a raw DeleteRecords request.
    let conn = Connection::connect(
        &broker.local_addr.to_string(),
        "test",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let request = DeleteRecordsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("ls")))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(6)])]);
    let ResponseKind::DeleteRecords(r) = conn
        .send(ApiKey::DeleteRecords, &RequestKind::DeleteRecords(request))
        .unwrap()
        .await
        .unwrap()
    else {
        panic!("unexpected response");
    };
    let p = &r.topics[0].partitions[0];
    assert_eq!((p.error_code, p.low_watermark), (0, 6));

    let mut c = consumer(&broker, &[("auto.offset.reset", "earliest")]);
    c.assign(vec![("ls", 0)]).unwrap();
    assert_eq!(c.position("ls", 0).await.unwrap(), 6);
    c.seek("ls", 0, 2).unwrap();
    let got = poll_n(&mut c, 4).await;
    assert_eq!(
        got.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![6, 7, 8, 9]
    );

    let mut latest = consumer(&broker, &[("auto.offset.reset", "latest")]);
    latest.assign(vec![("ls", 0)]).unwrap();
    latest.seek("ls", 0, 1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        assert!(latest
            .poll(Duration::from_millis(100))
            .await
            .unwrap()
            .is_empty());
        if latest.position("ls", 0).await.unwrap() == 10 {
            break;
        }
    }
    assert_eq!(latest.position("ls", 0).await.unwrap(), 10);
    broker.shutdown().await.unwrap();
}

fn group_config(group: &str) -> Vec<(&str, &str)> {
    vec![
        ("group.id", group),
        ("auto.offset.reset", "earliest"),
        ("heartbeat.interval.ms", "100"),
        ("session.timeout.ms", "6000"),
        ("max.poll.interval.ms", "10000"),
        ("auto.commit.interval.ms", "200"),
    ]
}

/// Polls until the assignment has `n` partitions (collecting records) or 20 s passed.
async fn poll_until_assigned(c: &mut Consumer, n: usize, records: &mut Vec<ConsumerRecord>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        records.extend(c.poll(Duration::from_millis(100)).await.unwrap());
        if c.assignment().len() == n {
            return;
        }
    }
    panic!("assignment never reached {n}: {:?}", c.assignment());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribe_rebalances_between_two_members() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(
        dir.path(),
        &[
            ("num.partitions", "4"),
            ("group.initial.rebalance.delay.ms", "0"),
        ],
    )
    .await;
    for p in 0..4 {
        produce(&broker, "sub", p, 5, &[]).await;
    }
    let cfg = config(&broker, &group_config("gs"));
    let mut a = Consumer::new(&cfg).unwrap();
    a.subscribe(vec!["sub"]).unwrap();
    assert!(a.assign(vec![("sub", 0)]).is_err());
    let mut records_a = Vec::new();
    poll_until_assigned(&mut a, 4, &mut records_a).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while records_a.len() < 20 && Instant::now() < deadline {
        records_a.extend(a.poll(Duration::from_millis(100)).await.unwrap());
    }
    assert_eq!(records_a.len(), 20);

    // A second member joins: the range assignor splits the 4 partitions 2 / 2.
    let task_a = tokio::spawn(async move {
        let mut more = Vec::new();
        poll_until_assigned(&mut a, 2, &mut more).await;
        (a, more)
    });
    let mut b = Consumer::new(&cfg).unwrap();
    b.subscribe(vec!["sub"]).unwrap();
    let mut records_b = Vec::new();
    poll_until_assigned(&mut b, 2, &mut records_b).await;
    let (mut a, more_a) = task_a.await.unwrap();
    let mut all: Vec<(String, i32)> = a.assignment();
    all.extend(b.assignment());
    all.sort();
    assert_eq!(
        all,
        (0..4).map(|p| ("sub".to_string(), p)).collect::<Vec<_>>()
    );
    // A committed its positions before the rebalance: B does not re-read anything.
    assert!(more_a.is_empty(), "{more_a:?}");
    assert!(records_b.is_empty(), "{records_b:?}");

    // New records reach whichever member owns the partition.
    for p in 0..4 {
        produce(&broker, "sub", p, 1, &[]).await;
    }
    let task_b = tokio::spawn(async move {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < 2 && Instant::now() < deadline {
            got.extend(b.poll(Duration::from_millis(100)).await.unwrap());
        }
        (b, got)
    });
    let mut got_a = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got_a.len() < 2 && Instant::now() < deadline {
        got_a.extend(a.poll(Duration::from_millis(100)).await.unwrap());
    }
    let (b, got_b) = task_b.await.unwrap();
    assert_eq!(got_a.len(), 2);
    assert_eq!(got_b.len(), 2);
    assert!(got_a
        .iter()
        .all(|r| r.offset == 5 && a.assignment().contains(&(r.topic.clone(), r.partition))));

    // B leaves: A gets all 4 partitions back.
    b.close().await.unwrap();
    let mut rest = Vec::new();
    poll_until_assigned(&mut a, 4, &mut rest).await;
    assert!(rest.is_empty(), "{rest:?}");
    a.close().await.unwrap();
    broker.shutdown().await.unwrap();
}
