//! Helpers for tests of replicated partitions: three broker processes, the state of a
//! partition as Metadata reports it (leader, replicas, ISR), bounded waits on leadership and
//! ISR changes, and librdkafka producers and readers of partition 0.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::cluster::*;
use super::BrokerProcess;

/// (leader, replicas, ISR) of partition 0 of `topic` as broker `bootstrap` reports it.
pub fn partition_state(bootstrap: &str, topic: &str) -> Option<(i32, Vec<i32>, Vec<i32>)> {
    let c: BaseConsumer = client(bootstrap).create().ok()?;
    let meta = c.fetch_metadata(Some(topic), Duration::from_secs(5)).ok()?;
    let t = meta.topics().iter().find(|t| t.name() == topic)?;
    let p = t.partitions().first()?;
    let mut isr = p.isr().to_vec();
    isr.sort();
    Some((p.leader(), p.replicas().to_vec(), isr))
}

/// Three broker processes in `root`, each with the overrides `extra` gives its node, once
/// every one serves and Metadata lists all three.
pub async fn start_three(
    root: &Path,
    extra: impl Fn(&Node) -> Vec<String>,
) -> (Vec<Node>, Vec<BrokerProcess>) {
    let (nodes, voters) = nodes(3);
    let mut procs: Vec<BrokerProcess> = nodes
        .iter()
        .map(|n| {
            let extra = extra(n);
            let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
            spawn_with(root, n, &voters, &refs)
        })
        .collect();
    for p in &mut procs {
        p.wait_listening();
    }
    wait_live(format!("127.0.0.1:{}", nodes[0].port), vec![1, 2, 3]).await;
    (nodes, procs)
}

/// The leader of partition 0 of `topic` at `bootstrap`, once its three replicas are in sync.
pub async fn in_sync_leader(bootstrap: String, topic: &'static str) -> i32 {
    tokio::task::spawn_blocking(move || {
        wait_for(&format!("{topic} in sync"), || {
            let (leader, _, isr) = partition_state(&bootstrap, topic)?;
            (isr.len() == 3).then_some(leader)
        })
    })
    .await
    .unwrap()
}

/// Waits (off the async runtime) until partition 0's ISR at `bootstrap` is `want`; returns
/// how long it took.
pub async fn wait_isr(bootstrap: String, topic: &'static str, want: Vec<i32>) -> Duration {
    let start = Instant::now();
    tokio::task::spawn_blocking(move || {
        wait_for(&format!("ISR {want:?} of {topic}"), || {
            let (_, _, isr) = partition_state(&bootstrap, topic)?;
            (isr == want).then_some(())
        })
    })
    .await
    .unwrap();
    start.elapsed()
}

pub async fn create(bootstrap: &str, topic: &str, min_isr: &str) {
    let admin: AdminClient<DefaultClientContext> = client(bootstrap).create().unwrap();
    let r = admin
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(3))
                .set("min.insync.replicas", min_isr)],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(5))),
        )
        .await
        .unwrap();
    r[0].clone().unwrap();
}

pub fn producer(bootstrap: &str, acks: &str, retries: bool) -> FutureProducer {
    let mut c = client(bootstrap);
    c.set("acks", acks)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "10000");
    if retries {
        c.set("enable.idempotence", "true");
    } else {
        c.set("enable.idempotence", "false").set("retries", "0");
    }
    c.create().unwrap()
}

/// Sends `n` records to partition 0 of `topic`; the first failure, if any.
pub async fn send(p: &FutureProducer, topic: &str, n: usize, tag: &str) -> Result<(), KafkaError> {
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        let value = format!("{tag}-{i:06}");
        pending.push(
            p.send_result(
                FutureRecord::<(), String>::to(topic)
                    .partition(0)
                    .payload(&value),
            )
            .map_err(|(e, _)| e)?,
        );
    }
    for d in pending {
        d.await.expect("delivery future").map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// The broker the metadata at `bootstrap` names as leader of partition 0 of `topic`, once it
/// is one of `candidates`.
pub async fn wait_leader_among(
    bootstrap: String,
    topic: &'static str,
    candidates: Vec<i32>,
) -> i32 {
    tokio::task::spawn_blocking(move || {
        wait_for(&format!("a leader of {topic} among {candidates:?}"), || {
            let (leader, _, _) = partition_state(&bootstrap, topic)?;
            candidates.contains(&leader).then_some(leader)
        })
    })
    .await
    .unwrap()
}

/// Reads partition 0 of `topic` at `bootstrap` from the start until `n` records came (or
/// nothing more comes for a few seconds); their values.
pub fn read_values(bootstrap: &str, topic: &str, isolation: &str, n: usize) -> Vec<String> {
    let mut config = client(bootstrap);
    config
        .set("group.id", format!("{topic}-reader"))
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = config.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut values = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut quiet_since = Instant::now();
    while values.len() < n && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                values.push(String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap());
                quiet_since = Instant::now();
            }
            _ if values.len() >= n || quiet_since.elapsed() > Duration::from_secs(5) => break,
            _ => {}
        }
    }
    values
}

/// An idempotent acks=all producer that keeps retrying through a failover.
pub fn durable_producer(bootstrap: &str) -> FutureProducer {
    durable_config(bootstrap, "1").create().unwrap()
}

/// The configuration of an idempotent acks=all producer with `linger_ms` that retries for
/// up to a minute.
pub fn durable_config(bootstrap: &str, linger_ms: &str) -> rdkafka::ClientConfig {
    let mut c = client(bootstrap);
    c.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", linger_ms)
        .set("message.timeout.ms", "60000");
    c
}

/// When each acknowledgement arrived, by record index; errors as text.
pub type Acks = Arc<Mutex<Vec<(usize, Instant, Result<(), String>)>>>;

/// Sends `n` records `tag-<i>` to partition 0 of `topic`, `per_ms` every millisecond, each
/// acknowledgement recorded in `acks` as it arrives; returns when all are answered.
pub async fn paced_send(
    p: FutureProducer,
    topic: &'static str,
    n: usize,
    per_ms: usize,
    acks: Acks,
) {
    let mut waits = Vec::with_capacity(n);
    for i in 0..n {
        let value = format!("r-{i:06}");
        let delivery = p
            .send_result(
                FutureRecord::<(), String>::to(topic)
                    .partition(0)
                    .payload(&value),
            )
            .map_err(|(e, _)| e)
            .expect("queued");
        let acks = acks.clone();
        waits.push(tokio::spawn(async move {
            let outcome = match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => Err(e.to_string()),
                Err(_) => Err("delivery future dropped".into()),
            };
            acks.lock().unwrap().push((i, Instant::now(), outcome));
        }));
        if (i + 1) % per_ms == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    for w in waits {
        w.await.unwrap();
    }
}

/// Every record `r-000000`.. `r-<n-1>` once, in order.
pub fn assert_exactly_once_in_order(values: &[String], n: usize) {
    let want: Vec<String> = (0..n).map(|i| format!("r-{i:06}")).collect();
    assert_eq!(values.len(), n, "every acknowledged record, none twice");
    assert!(values == want.as_slice(), "in the order sent");
}

/// Every value of `partitions` of `topic` from the start, read_committed, in the order they
/// arrived (a partition's in log order), until nothing more comes for 3 s (bounded by `WAIT`).
pub fn read_committed_partitions(bootstrap: &str, topic: &str, partitions: &[i32]) -> Vec<String> {
    let mut c = client(bootstrap);
    c.set("group.id", format!("{topic}-checker"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut values = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline && quiet_since.elapsed() < Duration::from_secs(3) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            values.push(String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap());
            quiet_since = Instant::now();
        }
    }
    values
}
