//! A broker hosting more partitions than it may hold descriptors: started with an open-file
//! limit of 1,024, it creates 5,000 partitions, takes a record in every one, serves each back
//! (librdkafka), keeps its descriptors under the limit, and after a SIGKILL and after a clean
//! stop comes back with every record. The broker is killed by its guard on every path.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use support::cluster::client;
use support::{free_port, BrokerProcess};

const PARTITIONS: i32 = 5_000;
const NOFILE: u64 = 1_024;
const TOPIC: &str = "wide";

fn start(dir: &Path, port: u16) -> BrokerProcess {
    BrokerProcess::start_with_nofile(dir, port, &[], NOFILE)
}

fn open_descriptors(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Reads every partition from its start until each has given its one record; value by
/// partition.
fn read_every_partition(bootstrap: &str) -> BTreeMap<i32, String> {
    let consumer: BaseConsumer = client(bootstrap)
        .set("group.id", "wide-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < PARTITIONS as usize {
        assert!(
            Instant::now() < deadline,
            "only {} of {PARTITIONS} partitions read",
            seen.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let v = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
                let earlier = seen.insert(m.partition(), v);
                assert!(
                    earlier.is_none(),
                    "partition {} read twice: at offset {} after {earlier:?}",
                    m.partition(),
                    m.offset()
                );
            }
            Some(Err(e)) => panic!("consume: {e}"),
            None => {}
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_partitions_under_a_limit_of_1024_descriptors() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("broker");
    let port = free_port();
    let mut broker = start(&dir, port);
    let bootstrap = broker.addr();

    // Creating 5,000 partitions (20,000 files) takes seconds in a debug build.
    let admin: AdminClient<DefaultClientContext> = client(&bootstrap)
        .set("socket.timeout.ms", "60000")
        .create()
        .unwrap();
    let r = admin
        .create_topics(
            &[NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new()
                .operation_timeout(Some(Duration::from_secs(60)))
                .request_timeout(Some(Duration::from_secs(60))),
        )
        .await
        .unwrap();
    r[0].clone().unwrap();

    let produced = Instant::now();
    let producer: FutureProducer = client(&bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();
    let mut pending = Vec::new();
    for p in 0..PARTITIONS {
        let value = format!("record-of-{p}");
        pending.push(
            producer
                .send_result(
                    FutureRecord::<(), String>::to(TOPIC)
                        .partition(p)
                        .payload(&value),
                )
                .map_err(|(e, _)| e)
                .unwrap(),
        );
    }
    for d in pending {
        d.await.unwrap().unwrap();
    }
    drop(producer);
    eprintln!(
        "a record to each of {PARTITIONS} partitions: {:?}",
        produced.elapsed()
    );
    let expected: BTreeMap<i32, String> = (0..PARTITIONS)
        .map(|p| (p, format!("record-of-{p}")))
        .collect();

    let b = bootstrap.clone();
    let read = tokio::task::spawn_blocking(move || read_every_partition(&b))
        .await
        .unwrap();
    assert_eq!(read, expected);
    let fds = open_descriptors(broker.pid());
    assert!(fds < NOFILE as usize, "{fds} descriptors open");
    eprintln!("{PARTITIONS} partitions served with {fds} descriptors open");

    // After a SIGKILL (every partition recovered) and after a clean stop.
    for how in ["SIGKILL", "SIGTERM"] {
        if how == "SIGKILL" {
            broker.kill();
        } else {
            broker.terminate();
        }
        let started = Instant::now();
        broker = start(&dir, port);
        eprintln!("restart after {how}: {:?}", started.elapsed());
        let b = bootstrap.clone();
        let read = tokio::task::spawn_blocking(move || read_every_partition(&b))
            .await
            .unwrap();
        assert_eq!(read, expected, "after {how}");
        let fds = open_descriptors(broker.pid());
        assert!(fds < NOFILE as usize, "{fds} descriptors open after {how}");
    }
}
