//! A Jepsen-style nemesis run against three `gregor broker` processes on 127.0.0.1: for a
//! bounded time a nemesis SIGKILLs, SIGSTOPs (then SIGCONTs), SIGTERMs and restarts one
//! broker at a time, at random, while librdkafka clients work the cluster:
//!
//! - an idempotent acks=all producer appends numbered records to every partition of
//!   `nemesis-i` (3 partitions, RF 3, min.insync.replicas 2), keeping what each delivery
//!   report said;
//! - a transactional producer writes small transactions over the partitions of
//!   `nemesis-t`, committing most and aborting some, keeping each outcome (or that it could
//!   not tell);
//! - a read_committed consumer reads both topics throughout.
//!
//! Then the cluster heals, a last read takes everything, and `nemesis/checker.rs` judges the
//! history: nothing acknowledged lost, nothing duplicated or reordered, no aborted or partial
//! transaction visible, offsets monotonic, nothing read that later vanished. Any violation
//! fails the run.
//!
//! `GREGOR_NEMESIS_SECS` sets how long faults go on (default 30, the CI run; `./nemesis 600`
//! runs ten minutes in release mode) and `GREGOR_NEMESIS_SEED` replays a run's choices.
//! Every broker is killed by its guard, on every path.

mod support;

#[path = "nemesis/checker.rs"]
mod checker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use checker::{Ack, History, Read, Txn, TxnOutcome};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DefaultProducerContext, DeliveryResult, Producer, ProducerContext,
    ThreadedProducer,
};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use support::cluster::*;
use support::BrokerProcess;

const IDEMPOTENT: &str = "nemesis-i";
const TRANSACTIONAL: &str = "nemesis-t";
const PARTITIONS: i32 = 3;
/// Longest a healed cluster may take to have every replica back in sync.
const HEAL_TIMEOUT: Duration = Duration::from_secs(90);

/// A small deterministic generator (splitmix64), so a seed replays a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
}

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok().and_then(|v| v.parse().ok())
}

/// Records every delivery report of the idempotent producer.
struct AckRecorder(Arc<Mutex<Vec<Ack>>>);

impl ClientContext for AckRecorder {}

impl ProducerContext for AckRecorder {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let (message, outcome) = match result {
            Ok(m) => (m, Ok(m.offset())),
            Err((e, m)) => (m, Err(e.to_string())),
        };
        let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
        self.0.lock().unwrap().push(Ack {
            partition: message.partition(),
            value,
            outcome,
        });
    }
}

/// Appends `i-<partition>-<seq>` to every partition, round after round, until `stop`;
/// then waits for every delivery report.
fn idempotent_producer(bootstrap: String, stop: Arc<AtomicBool>, acks: Arc<Mutex<Vec<Ack>>>) {
    let mut config = client(&bootstrap);
    config
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000");
    let producer: BaseProducer<AckRecorder> = config
        .create_with_context(AckRecorder(acks))
        .expect("idempotent producer");
    let mut seq = 0u64;
    while !stop.load(Ordering::Acquire) {
        for partition in 0..PARTITIONS {
            let value = checker::idempotent_value(partition, seq);
            loop {
                let record = BaseRecord::<(), String>::to(IDEMPOTENT)
                    .partition(partition)
                    .payload(&value);
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        producer.poll(Duration::from_millis(50));
                    }
                    Err((e, _)) => panic!(
                        "cannot queue {value}: {e}; the producer's fatal error: {:?}",
                        producer.client().fatal_error()
                    ),
                }
            }
        }
        seq += 1;
        producer.poll(Duration::from_millis(5));
    }
    if let Err(e) = producer.flush(Duration::from_secs(90)) {
        panic!("the idempotent producer's last records were not answered: {e}");
    }
}

fn new_txn_producer(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    let mut config = client(bootstrap);
    config
        .set("transactional.id", "nemesis-txn")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .set("transaction.timeout.ms", "30000");
    config.create().expect("transactional producer")
}

/// A transactional producer that works through faults: `init_transactions` retried until
/// it succeeds (or `stop`).
fn ready_txn_producer(
    bootstrap: &str,
    stop: &AtomicBool,
) -> Option<ThreadedProducer<DefaultProducerContext>> {
    while !stop.load(Ordering::Acquire) {
        let producer = new_txn_producer(bootstrap);
        match producer.init_transactions(Duration::from_secs(30)) {
            Ok(()) => return Some(producer),
            Err(e) => {
                eprintln!("nemesis: init_transactions: {e}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    None
}

/// How one transaction ended, and whether the producer must be replaced.
fn end_txn(
    producer: &ThreadedProducer<DefaultProducerContext>,
    commit: bool,
) -> (TxnOutcome, bool) {
    let timeout = Duration::from_secs(30);
    if commit {
        for _ in 0..5 {
            match producer.commit_transaction(timeout) {
                Ok(()) => return (TxnOutcome::Committed, false),
                Err(KafkaError::Transaction(e)) if e.is_retriable() => continue,
                Err(KafkaError::Transaction(e)) if e.txn_requires_abort() => break,
                Err(_) => return (TxnOutcome::Unknown, true),
            }
        }
    }
    match producer.abort_transaction(timeout) {
        // A commit that needed an abort never happened.
        Ok(()) => (TxnOutcome::Aborted, false),
        Err(_) if commit => (TxnOutcome::Unknown, true),
        Err(_) => (TxnOutcome::Aborted, true),
    }
}

/// Transactions of 1-8 records over the partitions of `nemesis-t`, 4 in 5 committed, until
/// `stop`. A producer in a state it cannot leave is replaced (the new one fences it).
fn transactional_producer(
    bootstrap: String,
    stop: Arc<AtomicBool>,
    seed: u64,
    txns: Arc<Mutex<Vec<Txn>>>,
) {
    let mut rng = Rng(seed);
    let Some(mut producer) = ready_txn_producer(&bootstrap, &stop) else {
        return;
    };
    let mut id = 0u64;
    while !stop.load(Ordering::Acquire) {
        if let Err(e) = producer.begin_transaction() {
            eprintln!("nemesis: begin_transaction: {e}; new producer");
            match ready_txn_producer(&bootstrap, &stop) {
                Some(p) => producer = p,
                None => return,
            }
            continue;
        }
        let n = rng.range(1, 9) as usize;
        let records: Vec<(i32, String)> = (0..n)
            .map(|k| {
                (
                    rng.range(0, PARTITIONS as u64) as i32,
                    checker::txn_value(id, k),
                )
            })
            .collect();
        id += 1;
        let mut sent = true;
        for (partition, value) in &records {
            let record = BaseRecord::<(), String>::to(TRANSACTIONAL)
                .partition(*partition)
                .payload(value);
            if let Err((e, _)) = producer.send(record) {
                eprintln!("nemesis: transactional send: {e}");
                sent = false;
                break;
            }
        }
        let commit = sent && rng.range(0, 5) != 0;
        let (outcome, replace) = end_txn(&producer, commit);
        txns.lock().unwrap().push(Txn { records, outcome });
        if replace {
            eprintln!("nemesis: transaction ended {outcome:?}; new producer");
            match ready_txn_producer(&bootstrap, &stop) {
                Some(p) => producer = p,
                None => return,
            }
        }
        std::thread::sleep(Duration::from_millis(rng.range(0, 20)));
    }
}

/// A read_committed consumer of every partition of both topics from the start.
fn reader(bootstrap: &str, group: &str) -> BaseConsumer {
    let mut config = client(bootstrap);
    config
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = config.create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for topic in [IDEMPOTENT, TRANSACTIONAL] {
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&tpl).expect("assign");
    consumer
}

fn read_of(m: &rdkafka::message::BorrowedMessage<'_>) -> Read {
    Read {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
    }
}

/// Reads until `stop`, keeping everything in arrival order.
fn live_consumer(bootstrap: String, stop: Arc<AtomicBool>, reads: Arc<Mutex<Vec<Read>>>) {
    let consumer = reader(&bootstrap, "nemesis-live");
    while !stop.load(Ordering::Acquire) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            reads.lock().unwrap().push(read_of(&m));
        }
    }
}

/// Everything committed, read once the cluster healed: until every partition's position
/// reached its high watermark, or nothing came for 10 s.
fn final_read(bootstrap: &str) -> Vec<Read> {
    let consumer = reader(bootstrap, "nemesis-final");
    let mut ends = Vec::new();
    for topic in [IDEMPOTENT, TRANSACTIONAL] {
        for p in 0..PARTITIONS {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            ends.push((topic, p, high));
        }
    }
    let mut reads = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut quiet_since = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                reads.push(read_of(&m));
                quiet_since = Instant::now();
            }
            Some(Err(e)) => eprintln!("nemesis: final read: {e}"),
            None => {}
        }
        let position = consumer.position().expect("position");
        let done = ends.iter().all(|(topic, p, high)| {
            *high == 0
                || position
                    .find_partition(topic, *p)
                    .and_then(|e| e.offset().to_raw())
                    .is_some_and(|o| o >= *high)
        });
        if done || quiet_since.elapsed() > Duration::from_secs(10) {
            return reads;
        }
        assert!(Instant::now() < deadline, "the final read did not finish");
    }
}

/// The run's directory (data and each broker's log), removed after a run that passed and
/// kept, with its path printed, after one that failed.
struct KeptOnFailure(Option<tempfile::TempDir>);

impl Drop for KeptOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.0.take() {
                eprintln!(
                    "nemesis: the run's brokers' logs and data are kept in {}",
                    dir.keep().display()
                );
            }
        }
    }
}

/// Every broker's overrides, at the start and on each restart.
const BROKER_CONFIG: [&str; 2] = [
    "transaction.state.log.num.partitions=3",
    "offsets.topic.num.partitions=3",
];

/// The brokers' guards, and how to bring each back.
struct Cluster {
    root: std::path::PathBuf,
    nodes: Vec<Node>,
    voters: String,
    procs: Vec<Option<BrokerProcess>>,
}

impl Cluster {
    fn restart(&mut self, i: usize) {
        let mut p = spawn_with(&self.root, &self.nodes[i], &self.voters, &BROKER_CONFIG);
        p.wait_listening();
        self.procs[i] = Some(p);
    }

    fn bootstrap(&self) -> String {
        bootstrap_of(&self.nodes)
    }
}

/// One fault on broker `i` and its repair, described for the timeline.
fn fault(cluster: &mut Cluster, i: usize, rng: &mut Rng) -> String {
    let id = cluster.nodes[i].id;
    match rng.range(0, 3) {
        0 => {
            cluster.procs[i].take().expect("running").kill();
            let down = rng.millis(500, 5000);
            std::thread::sleep(down);
            cluster.restart(i);
            format!("SIGKILL {id}, restarted after {down:?}")
        }
        1 => {
            let p = cluster.procs[i].as_ref().expect("running");
            p.signal(libc::SIGSTOP);
            // Sometimes past broker.session.timeout.ms (9 s): the controller fences it.
            let paused = rng.millis(1000, 12_000);
            std::thread::sleep(paused);
            p.signal(libc::SIGCONT);
            format!("SIGSTOP {id} for {paused:?}")
        }
        _ => {
            let mut p = cluster.procs[i].take().expect("running");
            p.terminate();
            let down = rng.millis(0, 3000);
            std::thread::sleep(down);
            cluster.restart(i);
            format!("SIGTERM {id}, restarted after {down:?}")
        }
    }
}

/// Every broker live and every replica of both topics in sync.
fn healed(bootstrap: &str) -> bool {
    let Some(live) = live_brokers(bootstrap) else {
        return false;
    };
    if live != vec![1, 2, 3] {
        return false;
    }
    let Ok(c) = client(bootstrap).create::<BaseConsumer>() else {
        return false;
    };
    [IDEMPOTENT, TRANSACTIONAL].iter().all(|topic| {
        c.fetch_metadata(Some(topic), Duration::from_secs(5))
            .ok()
            .and_then(|m| {
                let t = m.topics().iter().find(|t| t.name() == *topic)?;
                Some(
                    t.partitions().len() == PARTITIONS as usize
                        && t.partitions()
                            .iter()
                            .all(|p| p.leader() > 0 && p.isr().len() == 3),
                )
            })
            .unwrap_or(false)
    })
}

async fn create_topics(bootstrap: &str) {
    let admin: AdminClient<DefaultClientContext> = client(bootstrap).create().unwrap();
    let topics: Vec<NewTopic<'_>> = [IDEMPOTENT, TRANSACTIONAL]
        .iter()
        .map(|name| {
            NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(3))
                .set("min.insync.replicas", "2")
        })
        .collect();
    let results = admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    for r in results {
        r.unwrap();
    }
}

#[test]
fn a_nemesis_run_loses_nothing_acknowledged() {
    let seconds = env_u64("GREGOR_NEMESIS_SECS").unwrap_or(30);
    let seed = env_u64("GREGOR_NEMESIS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    eprintln!("nemesis: {seconds} s of faults, GREGOR_NEMESIS_SEED={seed}");
    let mut rng = Rng(seed);
    let run_dir = KeptOnFailure(Some(tempfile::tempdir().unwrap()));
    let root = run_dir.0.as_ref().expect("present until dropped");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (nodes, procs) = runtime.block_on(support::replicated::start_three(root.path(), |_| {
        BROKER_CONFIG.iter().map(|c| c.to_string()).collect()
    }));
    let mut cluster = Cluster {
        root: root.path().to_path_buf(),
        voters: voters_of(&nodes),
        nodes,
        procs: procs.into_iter().map(Some).collect(),
    };
    let bootstrap = cluster.bootstrap();
    runtime.block_on(create_topics(&bootstrap));
    wait_for("both topics in sync", || healed(&bootstrap).then_some(()));

    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let txns: Arc<Mutex<Vec<Txn>>> = Arc::default();
    let live: Arc<Mutex<Vec<Read>>> = Arc::default();
    let stop_producers = Arc::new(AtomicBool::new(false));
    let stop_reader = Arc::new(AtomicBool::new(false));
    let producers = [
        std::thread::spawn({
            let (b, s, a) = (bootstrap.clone(), stop_producers.clone(), acks.clone());
            move || idempotent_producer(b, s, a)
        }),
        std::thread::spawn({
            let (b, s, t) = (bootstrap.clone(), stop_producers.clone(), txns.clone());
            let txn_seed = rng.next();
            move || transactional_producer(b, s, txn_seed, t)
        }),
    ];
    let reader_thread = std::thread::spawn({
        let (b, s, l) = (bootstrap.clone(), stop_reader.clone(), live.clone());
        move || live_consumer(b, s, l)
    });

    // Faults, one broker at a time, with the cluster left alone a little in between.
    let started = Instant::now();
    let mut timeline = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(rng.millis(1000, 4000));
        let i = rng.range(0, 3) as usize;
        let what = fault(&mut cluster, i, &mut rng);
        eprintln!("nemesis: {:>6.1?} {what}", started.elapsed());
        timeline.push(what);
    }
    let heal_start = Instant::now();
    let deadline = heal_start + HEAL_TIMEOUT;
    while !healed(&bootstrap) {
        assert!(
            Instant::now() < deadline,
            "the cluster did not heal within {HEAL_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("nemesis: healed in {:?}", heal_start.elapsed());
    stop_producers.store(true, Ordering::Release);
    for p in producers {
        p.join().expect("a producer panicked");
    }
    std::thread::sleep(Duration::from_secs(3));
    stop_reader.store(true, Ordering::Release);
    reader_thread.join().expect("the live consumer panicked");

    let history = History {
        idempotent_topic: IDEMPOTENT.into(),
        txn_topic: TRANSACTIONAL.into(),
        acks: std::mem::take(&mut acks.lock().unwrap()),
        txns: std::mem::take(&mut txns.lock().unwrap()),
        live_reads: std::mem::take(&mut live.lock().unwrap()),
        final_reads: final_read(&bootstrap),
    };
    let report = checker::check(&history);
    let failed_acks = history.acks.iter().filter(|a| a.outcome.is_err()).count();
    eprintln!(
        "nemesis: {} faults; {} records acknowledged ({failed_acks} deliveries failed), {} transactions committed, {} aborted, {} unknown; {} records read at the end, {} during the run",
        timeline.len(),
        report.acknowledged,
        report.committed_txns,
        report.aborted_txns,
        report.unknown_txns,
        report.read,
        history.live_reads.len()
    );
    for (kind, count, examples) in report.violations() {
        eprintln!("nemesis: VIOLATION {kind}: {count}, e.g. {examples:#?}");
    }
    assert!(report.is_ok(), "the checker found violations (seed {seed})");
    assert!(!timeline.is_empty(), "the nemesis did something");
    assert!(
        report.acknowledged > 0 && report.committed_txns > 0,
        "the clients made progress"
    );
    drop(cluster);
}
