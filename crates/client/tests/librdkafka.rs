//! Interoperability with librdkafka (the `rdkafka` crate) through a real Gregor broker:
//! identical keyed partitioning, and records crossing between the two clients in both
//! directions for every codec, with headers and null keys and values.

mod common;

use common::{config, start_broker};

use std::time::{Duration, Instant};

use bytes::Bytes;
use gregor_client::{Consumer, Producer, ProducerRecord};
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(20);
const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

fn rd_config(bootstrap: &str, extra: &[(&str, &str)]) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("socket.timeout.ms", "10000");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c
}

/// A record as both clients see it: key, value, headers (name, value).
type Plain = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
);

/// Record `i` of a test set: every third has a null key, every fifth a null value, all have
/// an `index` header and a null-valued `empty` header.
fn record(i: usize) -> Plain {
    let key = (!i.is_multiple_of(3)).then(|| format!("key-{i}").into_bytes());
    let value =
        (!i.is_multiple_of(5)).then(|| format!("value-{i}-{}", "x".repeat(i % 40)).into_bytes());
    let headers = vec![
        ("index".to_string(), Some(i.to_string().into_bytes())),
        ("empty".to_string(), None),
    ];
    (key, value, headers)
}

fn rd_consumer(bootstrap: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = rd_config(
        bootstrap,
        &[
            ("group.id", "rd-reader"),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "false"),
        ],
    )
    .create()
    .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    consumer
}

async fn rd_consume(consumer: &StreamConsumer, count: usize) -> Vec<Plain> {
    let mut out = Vec::new();
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
            msg.key().map(<[u8]>::to_vec),
            msg.payload().map(<[u8]>::to_vec),
            headers,
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_land_where_librdkafka_murmur2_random_puts_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("num.partitions", "7")]).await;
    let bootstrap = broker.local_addr.to_string();
    let keys: Vec<String> = (0..200).map(|i| format!("user-{i}-{}", i * 7919)).collect();

    let rd: FutureProducer = rd_config(&bootstrap, &[("partitioner", "murmur2_random")])
        .create()
        .unwrap();
    let mut rd_partitions = Vec::new();
    for k in &keys {
        let d = rd
            .send(
                FutureRecord::to("rd-keys").key(k.as_str()).payload("v"),
                TIMEOUT,
            )
            .await
            .expect("delivered");
        rd_partitions.push(d.partition);
    }

    let producer = Producer::new(&config(&broker, &[])).unwrap();
    let mut gregor_partitions = Vec::new();
    for k in &keys {
        let m = producer
            .send_and_wait(ProducerRecord::new("gregor-keys", "v").with_key(k.clone()))
            .await
            .unwrap();
        gregor_partitions.push(m.partition);
    }
    producer.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(gregor_partitions, rd_partitions);
    // Not trivially equal: the keys are spread over all partitions.
    let mut used = rd_partitions.clone();
    used.sort();
    used.dedup();
    assert_eq!(used, (0..7).collect::<Vec<i32>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gregor_producer_to_librdkafka_consumer_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let bootstrap = broker.local_addr.to_string();
    let n = 60;
    for codec in CODECS {
        let topic = format!("g2rd-{codec}");
        let producer = Producer::new(&config(
            &broker,
            &[("compression.type", codec), ("linger.ms", "20")],
        ))
        .unwrap();
        let mut futures = Vec::new();
        for i in 0..n {
            let (key, value, headers) = record(i);
            futures.push(
                producer
                    .send(ProducerRecord {
                        topic: topic.clone(),
                        partition: Some(0),
                        key: key.map(Bytes::from),
                        value: value.map(Bytes::from),
                        headers: headers
                            .into_iter()
                            .map(|(k, v)| (k, v.map(Bytes::from)))
                            .collect(),
                        timestamp: None,
                    })
                    .await
                    .unwrap(),
            );
        }
        for f in futures {
            f.await.unwrap();
        }
        producer.close(Duration::from_secs(5)).await.unwrap();
        let got = rd_consume(&rd_consumer(&bootstrap, &topic), n).await;
        let expected: Vec<Plain> = (0..n).map(record).collect();
        assert_eq!(got, expected, "{codec}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_producer_to_gregor_consumer_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let bootstrap = broker.local_addr.to_string();
    let n = 60;
    for codec in CODECS {
        let topic = format!("rd2g-{codec}");
        let rd: FutureProducer = rd_config(
            &bootstrap,
            &[("compression.type", codec), ("linger.ms", "20")],
        )
        .create()
        .unwrap();
        let mut deliveries = Vec::new();
        for i in 0..n {
            let (key, value, headers) = record(i);
            let mut h = OwnedHeaders::new();
            for (name, v) in &headers {
                h = h.insert(Header {
                    key: name,
                    value: v.as_deref(),
                });
            }
            let mut r = FutureRecord::<[u8], [u8]>::to(&topic)
                .partition(0)
                .headers(h);
            if let Some(k) = &key {
                r = r.key(k.as_slice());
            }
            if let Some(v) = &value {
                r = r.payload(v.as_slice());
            }
            deliveries.push(rd.send_result(r).map_err(|(e, _)| e).unwrap());
        }
        for d in deliveries {
            d.await.unwrap().expect("delivered");
        }
        let mut c = Consumer::new(&config(&broker, &[("auto.offset.reset", "earliest")])).unwrap();
        c.assign(vec![(topic.clone(), 0)]).unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        while got.len() < n && Instant::now() < deadline {
            got.extend(c.poll(Duration::from_millis(100)).await.unwrap());
        }
        let got: Vec<Plain> = got
            .into_iter()
            .map(|r| {
                (
                    r.key.map(|k| k.to_vec()),
                    r.value.map(|v| v.to_vec()),
                    r.headers
                        .into_iter()
                        .map(|(k, v)| (k, v.map(|v| v.to_vec())))
                        .collect(),
                )
            })
            .collect();
        let expected: Vec<Plain> = (0..n).map(record).collect();
        assert_eq!(got, expected, "{codec}");
    }
}
