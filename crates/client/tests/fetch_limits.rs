//! Consumer fetch limits against a real in-process Gregor broker: `fetch.min.bytes`,
//! `max.partition.fetch.bytes` and `fetch.max.bytes`. Each test compares the setting with its
//! default in the same run, so it fails if the consumer did not send the setting.
//!
//! With a single partition leader the consumer keeps one Fetch in flight, and a `poll` that
//! finds nothing buffered returns the records of exactly one Fetch response: records per poll
//! show what one response carried.

mod common;

use common::{config, start_broker};

use std::time::{Duration, Instant};

use gregor_broker::BrokerHandle;
use gregor_client::consumer::{Consumer, ConsumerRecord};
use gregor_client::{Producer, ProducerRecord};

/// Produces `n` records to `topic`/`partition`, each acknowledged before the next is sent,
/// so each is a record batch of its own (about 270 bytes: a 200-byte value).
async fn produce_separate_batches(broker: &BrokerHandle, topic: &str, partition: i32, n: usize) {
    let producer = Producer::new(&config(broker, &[("linger.ms", "0")])).unwrap();
    for i in 0..n {
        let value = format!("{i:0>200}");
        let md = producer
            .send_and_wait(ProducerRecord::new(topic, value).with_partition(partition))
            .await
            .unwrap();
        assert_eq!(
            md.offset, i as i64,
            "one record per batch, offsets in order"
        );
    }
    producer.close(Duration::from_secs(5)).await.unwrap();
}

/// A consumer reading `partitions` of `topic` from the start, with `extra` settings.
async fn consumer(
    broker: &BrokerHandle,
    topic: &str,
    partitions: &[i32],
    extra: &[(&str, &str)],
) -> Consumer {
    let mut settings = vec![("auto.offset.reset", "earliest")];
    settings.extend_from_slice(extra);
    let mut c = Consumer::new(&config(broker, &settings)).unwrap();
    c.assign(partitions.iter().map(|p| (topic, *p)).collect())
        .unwrap();
    for p in partitions {
        // Initialise positions now (metadata, ListOffsets) so polls only fetch.
        assert_eq!(c.position(topic, *p).await.unwrap(), 0);
    }
    c
}

/// Polls until `count` records arrived (or 15 s passed); returns each non-empty poll.
async fn polls_until(consumer: &mut Consumer, count: usize) -> Vec<Vec<ConsumerRecord>> {
    let mut polls = Vec::new();
    let mut total = 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    while total < count && Instant::now() < deadline {
        let got = consumer.poll(Duration::from_secs(2)).await.unwrap();
        if !got.is_empty() {
            total += got.len();
            polls.push(got);
        }
    }
    assert_eq!(total, count, "all records arrive: {polls:?}");
    polls
}

/// How long the first non-empty poll takes, and how many records it returns.
async fn time_first_records(consumer: &mut Consumer) -> (Duration, usize) {
    let start = Instant::now();
    loop {
        let got = consumer.poll(Duration::from_secs(5)).await.unwrap();
        if !got.is_empty() || start.elapsed() > Duration::from_secs(10) {
            return (start.elapsed(), got.len());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_min_bytes_waits_for_max_wait_when_too_little_data() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    produce_separate_batches(&broker, "fmin", 0, 1).await;

    // One small batch is far below fetch.min.bytes: the broker holds the Fetch until
    // fetch.max.wait.ms (600 ms) passes, then answers with what it has.
    let mut waiting = consumer(
        &broker,
        "fmin",
        &[0],
        &[("fetch.min.bytes", "1000000"), ("fetch.max.wait.ms", "600")],
    )
    .await;
    let (held, n) = time_first_records(&mut waiting).await;
    assert_eq!(n, 1);
    assert!(
        held >= Duration::from_millis(500),
        "fetch.min.bytes=1000000 must hold the fetch for fetch.max.wait.ms, took {held:?}"
    );
    assert!(held < Duration::from_secs(5), "took {held:?}");

    // The same data with fetch.min.bytes=1 (the default) is answered at once.
    let mut eager = consumer(
        &broker,
        "fmin",
        &[0],
        &[("fetch.min.bytes", "1"), ("fetch.max.wait.ms", "600")],
    )
    .await;
    let (quick, n) = time_first_records(&mut eager).await;
    assert_eq!(n, 1);
    assert!(
        quick < Duration::from_millis(400),
        "fetch.min.bytes=1 must not wait, took {quick:?}"
    );
    assert!(quick < held, "{quick:?} vs {held:?}");
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_partition_fetch_bytes_returns_a_batch_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    produce_separate_batches(&broker, "mpfb", 0, 5).await;

    // 100 bytes is below one batch: each Fetch returns just its first batch (Kafka returns
    // the first batch even when it is larger than the limit, so the consumer progresses).
    let mut small = consumer(
        &broker,
        "mpfb",
        &[0],
        &[("max.partition.fetch.bytes", "100")],
    )
    .await;
    let polls = polls_until(&mut small, 5).await;
    let sizes: Vec<usize> = polls.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![1; 5], "one batch per fetch");
    let offsets: Vec<i64> = polls.iter().flatten().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![0, 1, 2, 3, 4]);

    // A limit above two batches (but below three) returns two batches per fetch.
    let mut two = consumer(
        &broker,
        "mpfb",
        &[0],
        &[("max.partition.fetch.bytes", "600")],
    )
    .await;
    let sizes: Vec<usize> = polls_until(&mut two, 5)
        .await
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(
        sizes,
        vec![2, 2, 1],
        "two ~270-byte batches fit in 600 bytes"
    );

    // The default (1 MiB) returns all five batches in one fetch.
    let mut default = consumer(&broker, "mpfb", &[0], &[]).await;
    let sizes: Vec<usize> = polls_until(&mut default, 5)
        .await
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(sizes, vec![5]);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_max_bytes_limits_one_response_across_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("num.partitions", "2")]).await;
    produce_separate_batches(&broker, "fmax", 0, 3).await;
    produce_separate_batches(&broker, "fmax", 1, 3).await;

    // 100 bytes is below one batch: a response carries the first batch of one partition and
    // nothing of the other, so no poll mixes partitions.
    let mut small = consumer(&broker, "fmax", &[0, 1], &[("fetch.max.bytes", "100")]).await;
    let polls = polls_until(&mut small, 6).await;
    for poll in &polls {
        assert_eq!(poll.len(), 1, "one batch per response: {poll:?}");
    }
    let mut seen: Vec<(i32, i64)> = polls
        .iter()
        .flatten()
        .map(|r| (r.partition, r.offset))
        .collect();
    seen.sort();
    assert_eq!(seen, vec![(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]);

    // With the default fetch.max.bytes one response carries both partitions' batches.
    let mut default = consumer(&broker, "fmax", &[0, 1], &[]).await;
    let polls = polls_until(&mut default, 6).await;
    assert_eq!(polls.len(), 1, "one response with everything: {polls:?}");
    let mut partitions: Vec<i32> = polls[0].iter().map(|r| r.partition).collect();
    partitions.sort();
    partitions.dedup();
    assert_eq!(partitions, vec![0, 1]);
    broker.shutdown().await.unwrap();
}
