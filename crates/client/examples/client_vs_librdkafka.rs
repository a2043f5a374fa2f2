//! The Gregor client against librdkafka (through the `rdkafka` crate), both driven from Rust
//! with the same settings against the same broker, so throughput and CPU per record compare
//! the clients and nothing else (no Python loop in the way).
//!
//! ```text
//! cargo run --release -p gregor-client --example client_vs_librdkafka -- \
//!     BOOTSTRAP produce|consume gregor|librdkafka RECORDS SIZE [ACKS]
//! ```
//! produce: RECORDS values of SIZE bytes to partition 0 of a fresh topic, linger 5 ms,
//! acks ACKS (default 1), idempotence off on both; consume: reads partition 0 of the topic
//! `cvl-consume-SIZE` from the beginning (filled by the first consume run).
//! Prints one JSON line: records/s, MB/s and this process's CPU seconds per million records.

use std::time::{Duration, Instant};

use bytes::Bytes;
use gregor_client::{ClientConfig, Consumer, Producer, ProducerRecord};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

struct Counter(std::sync::atomic::AtomicU64);
impl ClientContext for Counter {}
impl ProducerContext for Counter {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        assert!(
            result.is_ok(),
            "delivery failed: {:?}",
            result.as_ref().err()
        );
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn produce_gregor(bootstrap: &str, topic: &str, records: u64, value: Bytes, acks: &str) {
    let config = ClientConfig::from_pairs([
        ("bootstrap.servers", bootstrap),
        ("acks", acks),
        ("linger.ms", "5"),
        ("batch.size", "1048576"),
        ("enable.idempotence", "false"),
    ]);
    let producer = Producer::new(&config).expect("producer");
    let mut pending = std::collections::VecDeque::new();
    for _ in 0..records {
        let handle = producer
            .send(ProducerRecord::new(topic, value.clone()).with_partition(0))
            .await
            .expect("send");
        pending.push_back(handle);
        if pending.len() >= 100_000 {
            pending.pop_front().unwrap().await.expect("delivered");
        }
    }
    for handle in pending {
        handle.await.expect("delivered");
    }
    producer
        .close(Duration::from_secs(60))
        .await
        .expect("close");
}

fn produce_librdkafka(bootstrap: &str, topic: &str, records: u64, value: &[u8], acks: &str) {
    let producer: ThreadedProducer<Counter> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", acks)
        .set("linger.ms", "5")
        .set("enable.idempotence", "false")
        .create_with_context(Counter(Default::default()))
        .expect("producer");
    for _ in 0..records {
        let mut record = BaseRecord::<(), [u8]>::to(topic)
            .payload(value)
            .partition(0);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    let delivered = producer
        .context()
        .0
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(delivered, records, "every record delivered");
}

async fn consume_gregor(bootstrap: &str, topic: &str, records: u64) {
    let config = ClientConfig::from_pairs([
        ("bootstrap.servers", bootstrap),
        ("group.id", "cvl"),
        ("enable.auto.commit", "false"),
        ("auto.offset.reset", "earliest"),
        ("max.poll.records", "10000"),
    ]);
    let mut consumer = Consumer::new(&config).expect("consumer");
    consumer.assign(vec![(topic, 0)]).expect("assign");
    let mut got = 0u64;
    while got < records {
        let batch = consumer.poll(Duration::from_secs(10)).await.expect("poll");
        assert!(!batch.is_empty(), "stalled after {got} records");
        got += batch.len() as u64;
    }
}

fn consume_librdkafka(bootstrap: &str, topic: &str, records: u64) {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "cvl")
        .set("enable.auto.commit", "false")
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut got = 0u64;
    while got < records {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => {
                std::hint::black_box(m.payload());
                got += 1;
            }
            Some(Err(e)) => panic!("consume: {e}"),
            None => panic!("stalled after {got} records"),
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        eprintln!("usage: BOOTSTRAP produce|consume gregor|librdkafka RECORDS SIZE [ACKS]");
        std::process::exit(2);
    }
    let (bootstrap, mode, client) = (&args[0], args[1].as_str(), args[2].as_str());
    let records: u64 = args[3].parse().expect("RECORDS");
    let size: usize = args[4].parse().expect("SIZE");
    let acks = args.get(5).map(String::as_str).unwrap_or("1");
    let value: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let topic = match mode {
        "produce" => format!("cvl-{client}-{}", std::process::id()),
        _ => format!("cvl-consume-{size}"),
    };
    if mode == "consume" {
        // Fill the topic once (by whichever client runs first); later runs reuse it.
        let reader: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap.as_str())
            .create()
            .unwrap();
        let (_, high) = reader
            .fetch_watermarks(&topic, 0, Duration::from_secs(10))
            .unwrap_or((0, 0));
        if (high as u64) < records {
            produce_librdkafka(bootstrap, &topic, records - high as u64, &value, "1");
        }
    }
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    match (mode, client) {
        ("produce", "gregor") => {
            produce_gregor(bootstrap, &topic, records, Bytes::from(value), acks).await
        }
        ("produce", "librdkafka") => tokio::task::block_in_place(|| {
            produce_librdkafka(bootstrap, &topic, records, &value, acks)
        }),
        ("consume", "gregor") => consume_gregor(bootstrap, &topic, records).await,
        ("consume", "librdkafka") => {
            tokio::task::block_in_place(|| consume_librdkafka(bootstrap, &topic, records))
        }
        _ => panic!("mode must be produce|consume and client gregor|librdkafka"),
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!(
        "{{\"mode\":\"{mode}\",\"client\":\"{client}\",\"acks\":\"{acks}\",\"records\":{records},\"size\":{size},\"records_per_s\":{:.0},\"mb_per_s\":{:.1},\"cpu_s_per_million\":{:.3}}}",
        records as f64 / elapsed,
        records as f64 * size as f64 / elapsed / 1e6,
        cpu * 1e6 / records as f64
    );
}
