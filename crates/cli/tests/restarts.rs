//! Faults of the whole cluster on three `gregor broker` processes on 127.0.0.1, driven by
//! librdkafka: every broker SIGKILLed at once and restarted loses no record acknowledged
//! with acks=all (the idempotent producer that kept retrying meanwhile has every record
//! written once, in order); and a rolling restart (SIGTERM, restart, wait for the ISR, next
//! broker) shows an idempotent acks=all producer and a consumer group only retriable errors,
//! with nothing lost, duplicated in the log or reordered. Every process is killed by its
//! guard, on every path.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use support::cluster::*;
use support::replicated::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_cluster_killed_at_once_and_restarted_keeps_every_acknowledged_record() {
    const RECORDS: usize = 20_000;
    let root = tempfile::tempdir().unwrap();
    let (nodes, mut procs) = start_three(root.path(), |_| Vec::new()).await;
    let addr = |i: usize| format!("127.0.0.1:{}", nodes[i].port);
    create(&addr(0), "everyone-killed", "2").await;
    in_sync_leader(addr(0), "everyone-killed").await;

    let acks: Acks = Arc::default();
    let sender = tokio::spawn(paced_send(
        durable_producer(&bootstrap_of(&nodes)),
        "everyone-killed",
        RECORDS,
        2,
        acks.clone(),
    ));
    let deadline = Instant::now() + WAIT;
    while acks.lock().unwrap().len() < RECORDS / 4 {
        assert!(Instant::now() < deadline, "the producer never got going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // All three at once: signals first, reaping after.
    for p in &procs {
        p.signal(libc::SIGKILL);
    }
    let acked_before = acks.lock().unwrap().len();
    for p in &mut procs {
        p.kill();
    }
    for (i, node) in nodes.iter().enumerate() {
        procs[i] = spawn(root.path(), node, &voters_of(&nodes));
    }
    for p in &mut procs {
        p.wait_listening();
    }
    eprintln!("all three SIGKILLed after {acked_before} of {RECORDS} acks and restarted");

    tokio::time::timeout(Duration::from_secs(120), sender)
        .await
        .expect("every record answered")
        .unwrap();
    let acks = acks.lock().unwrap().clone();
    let failed: Vec<_> = acks.iter().filter(|(_, _, r)| r.is_err()).take(3).collect();
    assert!(
        failed.is_empty(),
        "acks=all with idempotence retries through the restart: {failed:?}"
    );
    let reader = addr(1);
    let values = tokio::task::spawn_blocking(move || {
        read_values(&reader, "everyone-killed", "read_committed", RECORDS)
    })
    .await
    .unwrap();
    assert_exactly_once_in_order(&values, RECORDS);
    wait_isr(addr(0), "everyone-killed", vec![1, 2, 3]).await;
    drop(procs);
}

/// Every error a client reported through librdkafka's error callback, and every failed
/// offset commit or poll: whether it is retriable, and what it said. (Checked after the
/// run: a panic inside a librdkafka callback would abort the process.)
#[derive(Default, Clone)]
struct ErrorLog(Arc<Mutex<Vec<(bool, String)>>>);

impl ErrorLog {
    fn record(&self, e: &KafkaError, what: &str) {
        let ok = e.rdkafka_error_code().is_some_and(retriable);
        self.0.lock().unwrap().push((ok, format!("{what}: {e}")));
    }
}

impl ClientContext for ErrorLog {
    fn error(&self, error: KafkaError, reason: &str) {
        self.record(&error, reason);
    }
}

impl ConsumerContext for ErrorLog {
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            self.record(&e, "offset commit");
        }
    }
}

/// Errors a client meets while brokers stop and start and leadership and coordinators
/// move, and retries by itself (librdkafka's own notices of a closed connection included).
fn retriable(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        BrokerTransportFailure
            | AllBrokersDown
            | RequestTimedOut
            | OperationTimedOut
            | NotLeaderForPartition
            | LeaderNotAvailable
            | NotCoordinator
            | CoordinatorNotAvailable
            | CoordinatorLoadInProgress
            | NotEnoughReplicas
            | NotEnoughReplicasAfterAppend
            | RebalanceInProgress
            | NetworkException
            | KafkaStorageError
            | FencedLeaderEpoch
            | UnknownLeaderEpoch
            | NoOffset
            | PartitionEOF
    )
}

const PARTITIONS: i32 = 3;

/// `p<partition>-<index>`, the value of a record of the rolling-restart topic.
fn value_of(partition: i32, i: usize) -> String {
    format!("p{partition}-{i:06}")
}

/// Sends records round-robin to the topic's partitions until `stop`, each awaited in a
/// window of 100; every record's partition and value once it was acknowledged (any
/// delivery failure fails the test).
async fn send_until(
    p: FutureProducer<ErrorLog>,
    topic: &'static str,
    stop: Arc<AtomicBool>,
) -> Vec<(i32, String)> {
    let mut acked = Vec::new();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let mut window = Vec::with_capacity(100);
        for _ in 0..100 {
            let partition = (i % PARTITIONS as usize) as i32;
            let value = value_of(partition, i);
            let delivery = p
                .send_result(
                    FutureRecord::<(), String>::to(topic)
                        .partition(partition)
                        .payload(&value),
                )
                .map_err(|(e, _)| e)
                .expect("queued");
            window.push((partition, value, delivery));
            i += 1;
        }
        for (partition, value, delivery) in window {
            match delivery.await {
                Ok(Ok(_)) => acked.push((partition, value)),
                Ok(Err((e, _))) => panic!("record {value} not delivered: {e}"),
                Err(_) => panic!("record {value}: delivery future dropped"),
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        p.client().fatal_error().is_none(),
        "the producer stays usable"
    );
    acked
}

/// Every partition of `topic` led by a broker and in sync on all three, at `bootstrap`.
fn all_in_sync(bootstrap: &str, topic: &str) -> Option<()> {
    let c: BaseConsumer = client(bootstrap).create().ok()?;
    let meta = c.fetch_metadata(Some(topic), Duration::from_secs(5)).ok()?;
    let t = meta.topics().iter().find(|t| t.name() == topic)?;
    let ready = t.partitions().len() == PARTITIONS as usize
        && t.partitions()
            .iter()
            .all(|p| p.leader() > 0 && p.isr().len() == 3);
    ready.then_some(())
}

/// What the group consumed, per partition in order of arrival.
type Consumed = HashMap<i32, Vec<String>>;

/// A member of `group` consuming `topic` with auto-commit until `stop`; what it consumed.
fn consume_until(
    bootstrap: &str,
    group: &str,
    topic: &str,
    errors: ErrorLog,
    stop: Arc<AtomicBool>,
) -> Consumed {
    let mut c = client(bootstrap);
    c.set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("auto.commit.interval.ms", "500")
        .set("session.timeout.ms", "10000");
    let consumer: BaseConsumer<ErrorLog> = c.create_with_context(errors.clone()).unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut consumed = Consumed::new();
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => consumed
                .entry(m.partition())
                .or_default()
                .push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap()),
            Some(Err(e)) => errors.record(&e, "consumer poll"),
            None => {}
        }
    }
    consumed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_shows_the_producer_and_the_group_only_retriable_errors() {
    let root = tempfile::tempdir().unwrap();
    let (nodes, mut procs) = start_three(root.path(), |_| {
        vec!["offsets.topic.num.partitions=3".into()]
    })
    .await;
    let bootstrap = bootstrap_of(&nodes);
    let admin: AdminClient<DefaultClientContext> = client(&bootstrap).create().unwrap();
    admin
        .create_topics(
            &[
                NewTopic::new("rolling", PARTITIONS, TopicReplication::Fixed(3))
                    .set("min.insync.replicas", "2"),
            ],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(5))),
        )
        .await
        .unwrap()[0]
        .clone()
        .unwrap();
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || wait_for("rolling in sync", || all_in_sync(&b, "rolling")))
        .await
        .unwrap();

    let errors = ErrorLog::default();
    let producer: FutureProducer<ErrorLog> = durable_config(&bootstrap, "5")
        .create_with_context(errors.clone())
        .unwrap();
    let stop_sending = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn(send_until(producer, "rolling", stop_sending.clone()));
    let stop_consuming = Arc::new(AtomicBool::new(false));
    let (b, e, s) = (bootstrap.clone(), errors.clone(), stop_consuming.clone());
    let consumer =
        tokio::task::spawn_blocking(move || consume_until(&b, "rolling-group", "rolling", e, s));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let voters = voters_of(&nodes);
    for (at, node) in nodes.iter().enumerate() {
        let started = Instant::now();
        procs[at].signal(libc::SIGTERM);
        let status = tokio::task::block_in_place(|| procs[at].wait_exit(Duration::from_secs(30)))
            .expect("a broker stopped with SIGTERM exits");
        assert!(
            status.success(),
            "broker {} exits cleanly: {status}",
            node.id
        );
        procs[at] = spawn(root.path(), node, &voters);
        procs[at].wait_listening();
        // Asked of the restarted broker itself: its metadata has caught up too.
        let restarted = format!("127.0.0.1:{}", node.port);
        tokio::task::spawn_blocking(move || {
            wait_for("rolling back in sync", || {
                all_in_sync(&restarted, "rolling")
            })
        })
        .await
        .unwrap();
        eprintln!(
            "broker {} restarted and back in every ISR after {:?}",
            node.id,
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    stop_sending.store(true, Ordering::Relaxed);
    let acked = tokio::time::timeout(Duration::from_secs(90), sender)
        .await
        .expect("the producer finishes")
        .unwrap();
    let mut want: HashMap<i32, Vec<String>> = HashMap::new();
    for (p, v) in &acked {
        want.entry(*p).or_default().push(v.clone());
    }
    // The group catches up with everything acknowledged, then stops.
    let deadline = Instant::now() + Duration::from_secs(30);
    let last: Vec<String> = (0..PARTITIONS)
        .map(|p| want[&p].last().unwrap().clone())
        .collect();
    let check = bootstrap.clone();
    let caught_up = tokio::task::spawn_blocking(move || {
        // The group's position reaches the end of every partition.
        let c: BaseConsumer = {
            let mut c = client(&check);
            c.set("group.id", "rolling-group");
            c.create().unwrap()
        };
        while Instant::now() < deadline {
            let mut tpl = TopicPartitionList::new();
            for p in 0..PARTITIONS {
                tpl.add_partition("rolling", p);
            }
            let committed = c.committed_offsets(tpl, Duration::from_secs(5)).ok();
            let ends: Option<Vec<i64>> = (0..PARTITIONS)
                .map(|p| {
                    c.fetch_watermarks("rolling", p, Duration::from_secs(5))
                        .ok()
                        .map(|w| w.1)
                })
                .collect();
            if let (Some(committed), Some(ends)) = (committed, ends) {
                let done = (0..PARTITIONS).all(|p| {
                    committed
                        .find_partition("rolling", p)
                        .and_then(|e| match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        })
                        == Some(ends[p as usize])
                });
                if done {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    })
    .await
    .unwrap();
    stop_consuming.store(true, Ordering::Relaxed);
    let consumed = consumer.await.unwrap();
    assert!(
        caught_up,
        "the group committed the end of every partition; last sent {last:?}"
    );

    let errors = errors.0.lock().unwrap().clone();
    eprintln!(
        "{} records acknowledged; errors the clients saw:",
        acked.len()
    );
    for (_, e) in &errors {
        eprintln!("  {e}");
    }
    let fatal: Vec<&String> = errors
        .iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, e)| e)
        .collect();
    assert!(fatal.is_empty(), "only retriable errors: {fatal:?}");
    for p in 0..PARTITIONS {
        let got = &consumed[&p];
        let sent = &want[&p];
        // The group may read a record again after a rebalance (at least once), but it skips
        // none and sees them in order.
        let mut first_seen = Vec::with_capacity(sent.len());
        let mut seen = std::collections::HashSet::new();
        for v in got {
            if seen.insert(v) {
                first_seen.push(v.clone());
            }
        }
        assert!(
            first_seen == *sent,
            "partition {p}: the group read every record once in order"
        );
        let b = bootstrap.clone();
        let log =
            tokio::task::spawn_blocking(move || read_committed_partitions(&b, "rolling", &[p]))
                .await
                .unwrap();
        assert!(
            log == *sent,
            "partition {p}: the log holds every record exactly once, in order"
        );
    }
    drop(procs);
}
