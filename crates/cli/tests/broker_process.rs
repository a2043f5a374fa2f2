//! The `gregor broker` binary as a separate process: start-up messages, bad configuration,
//! and durability across SIGKILL (every record acknowledged with acks=1 and
//! log.flush.interval.messages=1 is there after a restart).

mod support;

use std::path::Path;
use std::process::Command;

use std::time::{Duration, Instant};
use support::{free_port, BrokerProcess};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(20);

/// Starts the broker binary and waits for its "listening" line.
fn spawn_broker(dir: &Path, port: u16, extra: &[&str]) -> BrokerProcess {
    BrokerProcess::start(dir, port, extra)
}

fn client(port: u16) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("broker.address.family", "v4");
    c
}

#[test]
fn invalid_config_stops_startup_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gregor"))
        .args(["broker", "--override", "num.partitions=many", "--override"])
        .arg(format!("log.dirs={}", dir.path().display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("num.partitions"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_gregor"))
        .args(["broker", "--override", "no-equals-sign"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("key=value"));
}

/// Runs `gregor broker` with `overrides` and data in `dir`, bounded by `timeout 30`; returns
/// whether it failed and its stderr.
fn broker_fails(dir: &Path, overrides: &[String]) -> (bool, String) {
    let mut cmd = Command::new("timeout");
    cmd.arg("30")
        .arg(env!("CARGO_BIN_EXE_gregor"))
        .arg("broker");
    cmd.arg("--override")
        .arg(format!("log.dirs={}", dir.display()));
    for o in overrides {
        cmd.arg("--override").arg(o);
    }
    let out = cmd.output().unwrap();
    (
        !out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cluster_misconfiguration_stops_startup_with_one_error_and_nothing_written() {
    let (a, b, c) = (free_port(), free_port(), free_port());
    let listeners = format!(
        "listeners=PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{a}",
        free_port()
    );
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "node.id=4".into(),
                listeners.clone(),
                format!("controller.quorum.voters=1@127.0.0.1:{a},2@127.0.0.1:{b}"),
            ],
            "not one of the controller.quorum.voters",
        ),
        (
            vec![
                "node.id=1".into(),
                listeners.clone(),
                format!("controller.quorum.voters=1@127.0.0.1:{a},1@127.0.0.1:{b}"),
            ],
            "appears twice",
        ),
        (
            vec![
                "node.id=1".into(),
                listeners.clone(),
                format!("controller.quorum.voters=1@127.0.0.1:{a},2@127.0.0.1:{a}"),
            ],
            "appears twice",
        ),
        (
            vec![
                "node.id=1".into(),
                listeners.clone(),
                format!("controller.quorum.voters=1@127.0.0.1:{a},two@127.0.0.1:{c}"),
            ],
            "invalid node id",
        ),
        (
            vec![
                "node.id=1".into(),
                listeners,
                "controller.quorum.voters=1-127.0.0.1".into(),
            ],
            "is not id@host:port",
        ),
        (vec!["process.roles=broker,gateway".into()], "unknown role"),
    ];
    for (overrides, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (failed, stderr) = broker_fails(&data, &overrides);
        assert!(failed, "{overrides:?} started");
        assert!(stderr.contains(expected), "{overrides:?}: {stderr}");
        assert_eq!(
            stderr.lines().filter(|l| l.starts_with("Error")).count(),
            1,
            "{stderr}"
        );
        assert!(!data.exists(), "{overrides:?} wrote {}", data.display());
    }

    // A data directory formatted for node 1 does not open as node 2.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut first = spawn_broker(dir.path(), port, &["node.id=1"]);
    first.terminate();
    let (failed, stderr) = broker_fails(dir.path(), &["node.id=2".into()]);
    assert!(failed);
    assert!(
        stderr.contains("was formatted for node.id 1, but this node is node.id 2"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let flush = ["log.flush.interval.messages=1", "log.segment.bytes=65536"];
    let mut broker = spawn_broker(dir.path(), port, &flush);

    let admin: AdminClient<DefaultClientContext> = client(port).create().unwrap();
    let topic = NewTopic::new("crash", 2, TopicReplication::Fixed(1));
    let r = admin
        .create_topics(&[topic], &AdminOptions::new())
        .await
        .unwrap();
    assert!(r[0].is_ok());

    let producer: FutureProducer = client(port)
        .set("acks", "1")
        .set("linger.ms", "1")
        .set("message.timeout.ms", "5000")
        .create()
        .unwrap();
    // Produce continuously from a task; kill the broker once enough records were acked.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sender = {
        let acked = acked.clone();
        let producer = producer.clone();
        tokio::spawn(async move {
            for i in 0..20_000u32 {
                let value = format!("crash-{i}");
                let fut = producer.send_result(
                    FutureRecord::<(), _>::to("crash")
                        .payload(&value)
                        .partition((i % 2) as i32),
                );
                let Ok(fut) = fut else { break };
                let acked = acked.clone();
                tokio::spawn(async move {
                    if let Ok(Ok(d)) = fut.await {
                        acked.lock().unwrap().push((d.partition, d.offset, value));
                    }
                });
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        })
    };
    let deadline = Instant::now() + TIMEOUT;
    while acked.lock().unwrap().len() < 2_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    broker.kill();
    sender.abort();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let acked: Vec<(i32, i64, String)> = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 2_000,
        "only {} records acknowledged before the kill",
        acked.len()
    );
    drop(producer);

    let mut broker = spawn_broker(dir.path(), port, &flush);
    let consumer: StreamConsumer = client(port)
        .set("group.id", "crash-check")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("crash", 0, Offset::Beginning)
        .unwrap();
    tpl.add_partition_offset("crash", 1, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let total: i64 = (0..2)
        .map(|p| consumer.fetch_watermarks("crash", p, TIMEOUT).unwrap().1)
        .sum();
    let mut found = std::collections::HashMap::new();
    while (found.len() as i64) < total {
        let m = tokio::time::timeout(TIMEOUT, consumer.recv())
            .await
            .expect("records")
            .unwrap();
        found.insert(
            (m.partition(), m.offset()),
            String::from_utf8(m.payload().unwrap().to_vec()).unwrap(),
        );
    }
    for (partition, offset, value) in &acked {
        assert_eq!(
            found.get(&(*partition, *offset)),
            Some(value),
            "acked record at {partition}/{offset} lost"
        );
    }
    broker.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = spawn_broker(dir.path(), port, &["group.initial.rebalance.delay.ms=100"]);
    let admin: AdminClient<DefaultClientContext> = client(port).create().unwrap();
    let topic = NewTopic::new("offsets-kill", 3, TopicReplication::Fixed(1));
    assert!(admin
        .create_topics(&[topic], &AdminOptions::new())
        .await
        .unwrap()[0]
        .is_ok());
    let consumer: StreamConsumer = client(port)
        .set("group.id", "survivors")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&["offsets-kill"]).unwrap();
    // Wait for the assignment, then commit explicit offsets for every partition.
    let deadline = Instant::now() + TIMEOUT;
    while consumer.assignment().unwrap().count() < 3 && Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset("offsets-kill", p, Offset::Offset(10 + p as i64))
            .unwrap();
    }
    consumer
        .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .expect("commit acknowledged");
    broker.kill();
    drop(consumer);

    let mut broker = spawn_broker(dir.path(), port, &["group.initial.rebalance.delay.ms=100"]);
    let checker: StreamConsumer = client(port).set("group.id", "survivors").create().unwrap();
    let mut wanted = TopicPartitionList::new();
    for p in 0..3 {
        wanted.add_partition("offsets-kill", p);
    }
    let committed = checker.committed_offsets(wanted, TIMEOUT).unwrap();
    for p in 0..3 {
        assert_eq!(
            committed
                .find_partition("offsets-kill", p)
                .unwrap()
                .offset(),
            Offset::Offset(10 + p as i64),
            "partition {p}"
        );
    }
    broker.kill();
}

/// An idempotent producer keeps writing while the broker is SIGKILLed and restarted three
/// times: every acknowledged record is in the log exactly once, in send order (the broker
/// rebuilds producer state from its snapshot and the log tail and answers retried batches
/// with their original offsets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_survives_repeated_sigkills_without_duplicates() {
    const RECORDS: u32 = 6_000;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = spawn_broker(dir.path(), port, &[]);
    let admin: AdminClient<DefaultClientContext> = client(port).create().unwrap();
    let topic = NewTopic::new("idem-kill", 1, TopicReplication::Fixed(1));
    let r = admin
        .create_topics(&[topic], &AdminOptions::new())
        .await
        .unwrap();
    assert!(r[0].is_ok());
    drop(admin);

    let producer: FutureProducer = client(port)
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("batch.num.messages", "50")
        .set("message.timeout.ms", "60000")
        .set("retry.backoff.ms", "50")
        .create()
        .unwrap();
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sender = {
        let producer = producer.clone();
        let acked = acked.clone();
        tokio::spawn(async move {
            let mut waits = Vec::new();
            for i in 0..RECORDS {
                let value = format!("{i:06}");
                let fut = producer
                    .send_result(
                        FutureRecord::<(), _>::to("idem-kill")
                            .payload(&value)
                            .partition(0),
                    )
                    .expect("queued");
                let acked = acked.clone();
                waits.push(tokio::spawn(async move {
                    let delivered = fut.await.expect("delivery future");
                    delivered.expect("every record is delivered despite the kills");
                    acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }));
                if i % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            for w in waits {
                w.await.unwrap();
            }
        })
    };
    for round in 1..=3usize {
        let target = round * RECORDS as usize / 5;
        let deadline = Instant::now() + TIMEOUT;
        while acked.load(std::sync::atomic::Ordering::Relaxed) < target && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        broker.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        broker = spawn_broker(dir.path(), port, &[]);
    }
    tokio::time::timeout(Duration::from_secs(90), sender)
        .await
        .expect("all records acknowledged in time")
        .unwrap();
    assert_eq!(
        acked.load(std::sync::atomic::Ordering::Relaxed),
        RECORDS as usize
    );

    let consumer: StreamConsumer = client(port)
        .set("group.id", "idem-check")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("idem-kill", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let end = consumer
        .fetch_watermarks("idem-kill", 0, TIMEOUT)
        .unwrap()
        .1;
    let mut values = Vec::new();
    while values.len() < RECORDS as usize {
        let m = tokio::time::timeout(TIMEOUT, consumer.recv())
            .await
            .expect("records")
            .unwrap();
        values.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
    }
    let expected: Vec<String> = (0..RECORDS).map(|i| format!("{i:06}")).collect();
    assert_eq!(values, expected, "each record once, in send order");
    assert_eq!(end, RECORDS as i64, "nothing written twice");
    broker.kill();
}

/// The broker is SIGKILLed while a transaction is open (and after another one committed):
/// after the restart the committed one is still visible to read_committed, the open one is
/// aborted by the coordinator once its timeout passes, and read_committed consumers move on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_sigkilled_mid_transaction_recovers_and_aborts_it() {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let fast = ["transaction.abort.timed.out.transaction.cleanup.interval.ms=200"];
    let mut broker = spawn_broker(dir.path(), port, &fast);
    let admin: AdminClient<DefaultClientContext> = client(port).create().unwrap();
    let topic = NewTopic::new("txn-kill", 1, TopicReplication::Fixed(1));
    let r = admin
        .create_topics(&[topic], &AdminOptions::new())
        .await
        .unwrap();
    assert!(r[0].is_ok());
    drop(admin);

    tokio::task::spawn_blocking(move || {
        let producer: BaseProducer = client(port)
            .set("transactional.id", "kill-tx")
            .set("transaction.timeout.ms", "3000")
            .set("socket.timeout.ms", "3000")
            .create()
            .unwrap();
        producer.init_transactions(TIMEOUT).unwrap();
        let send = |v: &str| {
            producer
                .send(
                    BaseRecord::<(), str>::to("txn-kill")
                        .payload(v)
                        .partition(0),
                )
                .map_err(|(e, _)| e)
                .unwrap()
        };
        producer.begin_transaction().unwrap();
        send("committed");
        producer.commit_transaction(TIMEOUT).unwrap();
        producer.begin_transaction().unwrap();
        send("open");
        producer.flush(TIMEOUT).unwrap();
        broker.kill();
        // The producer is gone with the broker; only the coordinator can end its transaction.
        drop(producer);

        let mut broker = spawn_broker(dir.path(), port, &fast);
        let plain: BaseProducer = client(port).create().unwrap();
        plain
            .send(
                BaseRecord::<(), str>::to("txn-kill")
                    .payload("after")
                    .partition(0),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        plain.flush(TIMEOUT).unwrap();
        let consumer: BaseConsumer = client(port)
            .set("group.id", "kill-check")
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("txn-kill", 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut seen = Vec::new();
        while seen.len() < 2 && Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                let m = m.unwrap();
                seen.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
            }
        }
        assert_eq!(seen, vec!["committed", "after"]);
        broker.kill();
    })
    .await
    .unwrap();
}

/// Everything in `partition` of `topic` from the beginning, as (key, value) strings.
async fn read_all(port: u16, topic: &str, partition: i32, expect: usize) -> Vec<(String, String)> {
    let consumer: StreamConsumer = client(port)
        .set("group.id", "fixture-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while out.len() < expect && Instant::now() < deadline {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            let text =
                |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
            out.push((text(m.key()), text(m.payload())));
        }
    }
    out
}

/// A data directory of the first single-node release (a fixture made with its binary, see
/// `tests/fixtures/README.md`) opens with this release: the metadata log is imported into
/// the metadata quorum once, and every topic, config, record and committed offset is there,
/// also after a second restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_release_data_directory_upgrades_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/single-node-0.1.0.tar.gz");
    let untar = Command::new("tar")
        .arg("-xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(untar.success());
    let metadata = dir.path().join("__cluster_metadata-0");
    assert!(metadata.join("metadata.log").exists());
    let port = free_port();
    for start in 0..2 {
        let mut broker = spawn_broker(dir.path(), port, &[]);
        assert!(
            !metadata.join("metadata.log").exists(),
            "start {start}: imported once"
        );
        assert!(metadata.join("metadata.log.imported").exists());

        let admin: AdminClient<DefaultClientContext> = client(port).create().unwrap();
        let described = admin
            .describe_configs(
                &[rdkafka::admin::ResourceSpecifier::Topic("greetings")],
                &AdminOptions::new(),
            )
            .await
            .unwrap();
        let config = described[0].as_ref().expect("the topic exists");
        let retention = config.get("retention.ms").and_then(|e| e.value.clone());
        assert_eq!(retention.as_deref(), Some("86400000"), "start {start}");
        let partitions = tokio::task::spawn_blocking(move || {
            let c: rdkafka::consumer::BaseConsumer = client(port).create().unwrap();
            let meta = c.fetch_metadata(Some("greetings"), TIMEOUT).unwrap();
            meta.topics()[0].partitions().len()
        })
        .await
        .unwrap();
        assert_eq!(partitions, 2, "start {start}");

        let records = read_all(port, "greetings", 0, 3).await;
        assert_eq!(
            records,
            [("alice", "hello"), ("bob", "world"), ("carol", "again")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .to_vec(),
            "start {start}"
        );
        let group: StreamConsumer = client(port).set("group.id", "readers").create().unwrap();
        let mut wanted = TopicPartitionList::new();
        wanted.add_partition("greetings", 0);
        let committed = group.committed_offsets(wanted, TIMEOUT).unwrap();
        assert_eq!(
            committed.find_partition("greetings", 0).unwrap().offset(),
            Offset::Offset(3),
            "start {start}: the group's committed offset"
        );
        // New metadata goes on from the imported state.
        let created = admin
            .create_topics(
                &[NewTopic::new(
                    &format!("after-{start}"),
                    1,
                    TopicReplication::Fixed(1),
                )],
                &AdminOptions::new(),
            )
            .await
            .unwrap();
        assert!(created[0].is_ok(), "{created:?}");
        broker.kill();
    }
}
