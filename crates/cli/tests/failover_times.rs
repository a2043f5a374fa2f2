//! Failover times, measured rather than asserted: a benchmark run by hand, not part of
//! `./test` (its tests are ignored). Three `gregor broker` processes on 127.0.0.1 with
//! default settings (heartbeat 2 s, session 9 s), an RF 3 topic with `min.insync.replicas=2`
//! and an idempotent acks=all librdkafka producer (linger 0) sending one record at a time;
//! each trial faults the partition's leader and times how long produce is unavailable, then
//! heals the broker and waits until it is back in the ISR. Prints p50 and max per fault:
//!
//!   ./test --release -p gregor-cli --test failover_times -- --ignored --nocapture
//!
//! `GREGOR_FAILOVER_TRIALS` (default 5) sets the trials per fault and
//! `GREGOR_FAILOVER_PARTITIONS` (default 4000) the partitions the broker stopped with
//! SIGTERM leads in the large controlled-shutdown run. `GREGOR_FAILOVER_SOCKET_TIMEOUT_MS`
//! (default 5000) is the producer's `socket.timeout.ms`, and `GREGOR_FAILOVER_DEBUG` a
//! librdkafka `debug` list whose log is printed with the time since the test began;
//! `GREGOR_FAILOVER_CLIENT=gregor` measures the Gregor client (default settings) instead.
//! Besides the produce wait, each trial prints when a surviving broker's Metadata first
//! named the new leader: the brokers' share of the failover. docs/benchmarks.md has the
//! figures.

mod support;

use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use support::cluster::*;
use support::replicated::*;
use support::BrokerProcess;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// p50 and max of `times`.
fn report(what: &str, times: &mut [Duration]) {
    times.sort();
    let p50 = times[times.len() / 2];
    let max = times[times.len() - 1];
    eprintln!(
        "{what}: p50 {:.2} s, max {:.2} s over {} trials ({:?})",
        p50.as_secs_f64(),
        max.as_secs_f64(),
        times.len(),
        times
            .iter()
            .map(|t| format!("{:.2}", t.as_secs_f64()))
            .collect::<Vec<_>>()
    );
}

/// When the test began: the origin of every time it prints.
fn began() -> Instant {
    static BEGAN: OnceLock<Instant> = OnceLock::new();
    *BEGAN.get_or_init(Instant::now)
}

/// Prints librdkafka's log (when `debug` is set) with the time since the test began.
struct StderrLog;

impl ClientContext for StderrLog {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        eprintln!(
            "{:9.3} {fac} {log_message}",
            began().elapsed().as_secs_f64()
        );
    }
}

/// Polls Metadata at `survivor` from now until it names a leader of partition 0 of `topic`
/// other than `old`; the thread answers how long that took.
fn watch_leader_change(survivor: String, topic: &'static str, old: i32) -> JoinHandle<Duration> {
    let from = Instant::now();
    std::thread::spawn(move || loop {
        if let Some((leader, _, _)) = partition_state(&survivor, topic) {
            if leader >= 0 && leader != old {
                return from.elapsed();
            }
        }
        assert!(
            from.elapsed() < Duration::from_secs(60),
            "no new leader named by {survivor}"
        );
        std::thread::sleep(Duration::from_millis(20));
    })
}

/// The producer a run measures: librdkafka, or the Gregor client when
/// `GREGOR_FAILOVER_CLIENT=gregor` (both idempotent, acks=all, linger 0).
enum TimedProducer {
    Librdkafka(FutureProducer<StderrLog>),
    Gregor(gregor_client::Producer),
}

impl TimedProducer {
    /// Sends one record to partition `partition` of `topic` and waits for its
    /// acknowledgement.
    async fn send_one(&self, topic: &str, partition: i32, i: usize) {
        let value = format!("r-{i:08}");
        match self {
            TimedProducer::Librdkafka(p) => {
                p.send(
                    FutureRecord::<(), String>::to(topic)
                        .partition(partition)
                        .payload(&value),
                    Duration::from_secs(60),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("acks=all with idempotence retries through a failover");
            }
            TimedProducer::Gregor(p) => {
                let record =
                    gregor_client::ProducerRecord::new(topic, value).with_partition(partition);
                p.send(record)
                    .await
                    .expect("queued")
                    .await
                    .expect("acks=all with idempotence retries through a failover");
            }
        }
    }
}

/// The longest wait for an acknowledgement of records sent one after the other to
/// `partition` for `window` after `fault` is applied (its time included): how long produce
/// was unavailable.
async fn longest_wait(
    p: &TimedProducer,
    topic: &str,
    partition: i32,
    sent: &mut usize,
    window: Duration,
    fault: impl FnOnce(),
) -> Duration {
    for _ in 0..20 {
        p.send_one(topic, partition, *sent).await;
        *sent += 1;
    }
    fault();
    let faulted = Instant::now();
    let mut last = faulted;
    let mut longest = Duration::ZERO;
    while faulted.elapsed() < window {
        p.send_one(topic, partition, *sent).await;
        *sent += 1;
        longest = longest.max(last.elapsed());
        last = Instant::now();
    }
    longest
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill,
    Stop,
    Terminate,
}

#[ignore = "a benchmark: run by hand, see the module doc"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_times_of_a_leader_killed_paused_and_stopped() {
    let trials = env_or("GREGOR_FAILOVER_TRIALS", 5);
    let root = tempfile::tempdir().unwrap();
    let (nodes, mut procs) = start_three(root.path(), |_| Vec::new()).await;
    let bootstrap = bootstrap_of(&nodes);
    create(&bootstrap, "timed", "2").await;
    let mut config = durable_config(&bootstrap, "0");
    config.set(
        "socket.timeout.ms",
        env_or("GREGOR_FAILOVER_SOCKET_TIMEOUT_MS", 5000).to_string(),
    );
    if let Ok(debug) = std::env::var("GREGOR_FAILOVER_DEBUG") {
        config.set("debug", debug);
        config.set_log_level(RDKafkaLogLevel::Debug);
    }
    began();
    let producer = if std::env::var("GREGOR_FAILOVER_CLIENT").as_deref() == Ok("gregor") {
        let config = gregor_client::ClientConfig::from_pairs([
            ("bootstrap.servers", bootstrap.as_str()),
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("linger.ms", "0"),
        ]);
        TimedProducer::Gregor(gregor_client::Producer::new(&config).unwrap())
    } else {
        TimedProducer::Librdkafka(config.create_with_context(StderrLog).unwrap())
    };
    let mut sent = 0usize;
    let voters = voters_of(&nodes);
    for fault in [Fault::Kill, Fault::Stop, Fault::Terminate] {
        let mut times = Vec::with_capacity(trials);
        let mut moved = Vec::with_capacity(trials);
        for _ in 0..trials {
            // The leader as every broker reports it: one just resumed from SIGSTOP still
            // serves its metadata from before the pause for a moment (and would name itself).
            let at = loop {
                let mut named = Vec::with_capacity(nodes.len());
                for n in &nodes {
                    named.push(in_sync_leader(format!("127.0.0.1:{}", n.port), "timed").await);
                }
                if named.windows(2).all(|w| w[0] == w[1]) {
                    break nodes.iter().position(|n| n.id == named[0]).unwrap();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let window = match fault {
                Fault::Stop => Duration::from_secs(15),
                _ => Duration::from_secs(5),
            };
            let target = &procs[at];
            let survivor = format!("127.0.0.1:{}", nodes[(at + 1) % nodes.len()].port);
            let mut watcher = None;
            let t = longest_wait(&producer, "timed", 0, &mut sent, window, || {
                eprintln!(
                    "{:9.3} {fault:?} broker {}",
                    began().elapsed().as_secs_f64(),
                    nodes[at].id
                );
                match fault {
                    Fault::Kill => target.signal(libc::SIGKILL),
                    Fault::Stop => target.signal(libc::SIGSTOP),
                    Fault::Terminate => target.signal(libc::SIGTERM),
                }
                watcher = Some(watch_leader_change(survivor, "timed", nodes[at].id));
            })
            .await;
            let m = watcher
                .expect("the fault ran")
                .join()
                .expect("a new leader");
            eprintln!(
                "{fault:?}: produce waited {:.2} s, new leader in Metadata after {:.2} s",
                t.as_secs_f64(),
                m.as_secs_f64()
            );
            times.push(t);
            moved.push(m);
            match fault {
                Fault::Stop => procs[at].signal(libc::SIGCONT),
                Fault::Kill | Fault::Terminate => {
                    tokio::task::block_in_place(|| procs[at].wait_exit(Duration::from_secs(30)))
                        .expect("the broker exits");
                    procs[at] = spawn(root.path(), &nodes[at], &voters);
                    procs[at].wait_listening();
                }
            }
            wait_isr(bootstrap.clone(), "timed", vec![1, 2, 3]).await;
        }
        report(&format!("{fault:?} of the leader"), &mut times);
        report(
            "  until a survivor's Metadata names the new leader",
            &mut moved,
        );
    }
    drop(procs);
}

/// Partitions of `topic` (of `count`) whose leader Metadata at `bootstrap` names as `broker`.
fn led_by(bootstrap: &str, topic: &str, broker: i32) -> Option<usize> {
    let c: BaseConsumer = client(bootstrap).create().ok()?;
    let meta = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .ok()?;
    let t = meta.topics().iter().find(|t| t.name() == topic)?;
    Some(
        t.partitions()
            .iter()
            .filter(|p| p.leader() == broker)
            .count(),
    )
}

/// Whether every partition of `topic` at `bootstrap` has both its replicas in the ISR.
fn all_isr_full(bootstrap: &str, topic: &str, count: usize) -> Option<()> {
    let c: BaseConsumer = client(bootstrap).create().ok()?;
    let meta = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .ok()?;
    let t = meta.topics().iter().find(|t| t.name() == topic)?;
    let full = t.partitions().len() == count && t.partitions().iter().all(|p| p.isr().len() == 2);
    full.then_some(())
}

/// Polls `f` every 200 ms for up to `limit`.
fn wait_long<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[ignore = "a benchmark: run by hand, see the module doc"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controlled_shutdown_of_a_broker_leading_many_partitions() {
    let trials = env_or("GREGOR_FAILOVER_TRIALS", 5);
    let count = env_or("GREGOR_FAILOVER_PARTITIONS", 4000);
    let root = tempfile::tempdir().unwrap();
    let (nodes, mut procs) = start_three(root.path(), |_| Vec::new()).await;
    let bootstrap = bootstrap_of(&nodes);
    // Every partition on brokers 1 and 2, led by 1: each of them hosts `count` replicas.
    let assignment: Vec<&[i32]> = vec![&[1, 2]; count];
    // Creating thousands of partitions takes longer than the usual 5 s socket timeout.
    let admin: AdminClient<DefaultClientContext> = client(&bootstrap)
        .set("socket.timeout.ms", "180000")
        .create()
        .unwrap();
    let created = Instant::now();
    admin
        .create_topics(
            &[NewTopic::new(
                "many",
                count as i32,
                TopicReplication::Variable(&assignment),
            )
            .set("min.insync.replicas", "1")],
            &AdminOptions::new()
                .operation_timeout(Some(Duration::from_secs(150)))
                .request_timeout(Some(Duration::from_secs(170))),
        )
        .await
        .unwrap()[0]
        .clone()
        .unwrap();
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        wait_long("every partition in sync", Duration::from_secs(300), || {
            all_isr_full(&b, "many", count)
        })
    })
    .await
    .unwrap();
    eprintln!(
        "{count} partitions on brokers 1 and 2 in sync after {:?}",
        created.elapsed()
    );

    let producer = TimedProducer::Librdkafka(
        durable_config(&bootstrap, "0")
            .create_with_context(StderrLog)
            .unwrap(),
    );
    let voters = voters_of(&nodes);
    let mut sent = 0usize;
    let (mut waits, mut moved) = (Vec::new(), Vec::new());
    for trial in 0..trials {
        // Leadership does not move back by itself yet: the trials alternate.
        let (leader, other) = if trial % 2 == 0 { (1, 2) } else { (2, 1) };
        let b = bootstrap.clone();
        let led = tokio::task::spawn_blocking(move || {
            wait_long("leadership on one broker", Duration::from_secs(60), || {
                led_by(&b, "many", leader).filter(|&n| n == count)
            })
        })
        .await
        .unwrap();
        let at = (leader - 1) as usize;
        let target: &BrokerProcess = &procs[at];
        let mut signalled = Instant::now();
        let wait = longest_wait(
            &producer,
            "many",
            0,
            &mut sent,
            Duration::from_secs(3),
            || {
                signalled = Instant::now();
                target.signal(libc::SIGTERM);
            },
        )
        .await;
        let survivor = format!("127.0.0.1:{}", nodes[(other - 1) as usize].port);
        let all_moved = tokio::task::spawn_blocking(move || {
            wait_long("every leader moved", Duration::from_secs(60), || {
                led_by(&survivor, "many", other).filter(|&n| n == count)
            });
            signalled.elapsed()
        })
        .await
        .unwrap();
        let exit = tokio::task::block_in_place(|| procs[at].wait_exit(Duration::from_secs(60)))
            .expect("the broker exits");
        assert!(exit.success());
        eprintln!(
            "trial {trial}: broker {leader} led {led}; longest produce wait {wait:?}, all moved by {all_moved:?}"
        );
        waits.push(wait);
        moved.push(all_moved);
        procs[at] = spawn(root.path(), &nodes[at], &voters);
        procs[at].wait_listening();
        let b = bootstrap.clone();
        tokio::task::spawn_blocking(move || {
            wait_long(
                "every partition back in sync",
                Duration::from_secs(300),
                || all_isr_full(&b, "many", count),
            )
        })
        .await
        .unwrap();
    }
    report(
        &format!("controlled shutdown of a broker leading {count}: longest produce wait"),
        &mut waits,
    );
    report(
        "  until Metadata shows every leader moved (includes metadata polling)",
        &mut moved,
    );
    drop(procs);
}
