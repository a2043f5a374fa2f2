//! Retention, compaction and DeleteRecords against a real broker, driven by librdkafka.

mod common;

use std::time::{Duration, Instant};

use common::{client_config, start_broker};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(20);
/// Background work runs often so the tests wait little.
const FAST: &[(&str, &str)] = &[
    ("log.retention.check.interval.ms", "100"),
    ("log.cleaner.backoff.ms", "100"),
    ("log.segment.delete.delay.ms", "0"),
];

async fn create(bootstrap: &str, topic: &str, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create().unwrap();
    let mut t = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let r = admin
        .create_topics(&[t], &AdminOptions::new())
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
}

/// Produces `(key, value, timestamp)` records, one awaited batch.
async fn produce(bootstrap: &str, topic: &str, records: &[(Option<String>, Option<String>, i64)]) {
    // Small batches: a batch must fit in the 1 KiB segments these tests use.
    let producer: FutureProducer = client_config(bootstrap)
        .set("linger.ms", "0")
        .set("batch.size", "400")
        .create()
        .unwrap();
    let deliveries: Vec<_> = records
        .iter()
        .map(|(k, v, ts)| {
            let mut r = FutureRecord::<String, String>::to(topic).timestamp(*ts);
            if let Some(k) = k {
                r = r.key(k);
            }
            if let Some(v) = v {
                r = r.payload(v);
            }
            producer.send_result(r).expect("enqueued")
        })
        .collect();
    for d in deliveries {
        d.await.unwrap().expect("delivered");
    }
}

fn reader(bootstrap: &str, reset: &str) -> BaseConsumer {
    client_config(bootstrap)
        .set("group.id", "retention-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", reset)
        .create()
        .unwrap()
}

fn low_watermark(c: &BaseConsumer, topic: &str) -> i64 {
    c.fetch_watermarks(topic, 0, TIMEOUT).unwrap().0
}

/// Reads everything from `from` up to the high watermark: (offset, key, value).
fn read_all(
    c: &BaseConsumer,
    topic: &str,
    from: Offset,
) -> Vec<(i64, Option<String>, Option<String>)> {
    let high = c.fetch_watermarks(topic, 0, TIMEOUT).unwrap().1;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, from).unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while out.last().is_none_or(|r: &(i64, _, _)| r.0 + 1 < high) && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let s = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
            out.push((m.offset(), s(m.key()), s(m.payload())));
        }
    }
    out
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_retention_deletes_old_segments_and_consumers_reset() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), FAST).await;
    let b = broker.local_addr.to_string();
    create(
        &b,
        "aging",
        &[("segment.bytes", "1024"), ("retention.ms", "60000")],
    )
    .await;
    // 100 records an hour old fill many 1 KiB segments; 10 fresh ones follow.
    let old = now_ms() - 3_600_000;
    let records: Vec<_> = (0..100)
        .map(|i| (None, Some(format!("old-{i:03}-{}", "x".repeat(50))), old))
        .collect();
    produce(&b, "aging", &records).await;
    let fresh: Vec<_> = (0..10)
        .map(|i| (None, Some(format!("fresh-{i}")), now_ms()))
        .collect();
    produce(&b, "aging", &fresh).await;
    let c = reader(&b, "earliest");
    wait_for("the log start offset to advance", || {
        low_watermark(&c, "aging") > 0
    })
    .await;
    let low = low_watermark(&c, "aging");
    assert!(low <= 100, "fresh records are kept: start {low}");
    // A consumer positioned below the log start resets to the earliest offset.
    let got = read_all(&c, "aging", Offset::Offset(0));
    assert_eq!(
        got.first().map(|r| r.0),
        Some(low),
        "reset to the log start"
    );
    assert_eq!(
        got.iter()
            .filter(|r| r.2.as_deref().unwrap().starts_with("fresh"))
            .count(),
        10
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_retention_and_delete_records() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), FAST).await;
    let b = broker.local_addr.to_string();
    create(
        &b,
        "sized",
        &[("segment.bytes", "1024"), ("retention.bytes", "4096")],
    )
    .await;
    create(&b, "trimmed", &[]).await;
    let records: Vec<_> = (0..200)
        .map(|i| (None, Some(format!("{i:04}-{}", "y".repeat(60))), now_ms()))
        .collect();
    produce(&b, "sized", &records).await;
    produce(&b, "trimmed", &records[..20]).await;
    let c = reader(&b, "earliest");
    wait_for("size retention", || low_watermark(&c, "sized") > 0).await;

    let admin: AdminClient<DefaultClientContext> = client_config(&b).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("trimmed", 0, Offset::Offset(5))
        .unwrap();
    let r = admin
        .delete_records(&tpl, &AdminOptions::new())
        .await
        .unwrap();
    assert_eq!(
        r.find_partition("trimmed", 0).unwrap().offset(),
        Offset::Offset(5)
    );
    assert_eq!(
        low_watermark(&c, "trimmed"),
        5,
        "ListOffsets earliest reflects DeleteRecords"
    );
    let got = read_all(&c, "trimmed", Offset::Beginning);
    assert!(got.iter().all(|r| r.0 >= 5) && got.iter().any(|r| r.0 == 5));
    // Beyond the high watermark is refused.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("trimmed", 0, Offset::Offset(500))
        .unwrap();
    let r = admin
        .delete_records(&tpl, &AdminOptions::new())
        .await
        .unwrap();
    assert!(r.find_partition("trimmed", 0).unwrap().error().is_err());
    assert_eq!(low_watermark(&c, "trimmed"), 5);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_latest_value_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), FAST).await;
    let b = broker.local_addr.to_string();
    create(
        &b,
        "state",
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "1024"),
            ("segment.ms", "200"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "0"),
        ],
    )
    .await;
    // 10 keys × 20 versions; key 9 ends with a tombstone.
    let mut records = Vec::new();
    for round in 0..20 {
        for k in 0..10 {
            records.push((
                Some(format!("k{k}")),
                Some(format!("k{k}-v{round}")),
                now_ms(),
            ));
        }
    }
    records.push((Some("k9".to_string()), None, now_ms()));
    produce(&b, "state", &records).await;
    let c = reader(&b, "earliest");
    let mut last = Vec::new();
    wait_for("the log to be compacted", || {
        last = read_all(&c, "state", Offset::Beginning);
        last.len() == 9
    })
    .await;
    for (i, (_, key, value)) in last.iter().enumerate() {
        let key = key.clone().unwrap();
        assert_eq!(
            value.as_deref(),
            Some(format!("{key}-v19").as_str()),
            "latest value of {key}"
        );
        assert!(
            i == 0 || last[i - 1].0 < last[i].0,
            "offsets preserved and increasing"
        );
    }
    assert!(
        last.iter().all(|r| r.1.as_deref() != Some("k9")),
        "the tombstoned key is gone"
    );
    broker.shutdown().await.unwrap();
}
