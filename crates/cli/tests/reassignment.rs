//! Partition reassignment with three `gregor broker` processes on 127.0.0.1, driven by
//! `gregor topic reassign` (the Gregor client) while a librdkafka idempotent acks=all
//! producer writes and a librdkafka consumer reads: a partition moves from brokers {1,2} to
//! {2,3} (the new replica copies the log, joins the ISR, the removed leader hands over and
//! deletes its copy), and a replication factor goes from 1 to 3. A throttled copy runs near
//! its rate; a second plan is refused while one runs; a cancelled move goes back and the
//! half-copied replica is deleted. Every acknowledged record is
//! read afterwards, once each, in order. Every process is killed by its guard, on every path.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use support::cluster::*;
use support::replicated::*;

/// `gregor topic reassign` at `bootstrap` with `args`: exit code and stdout.
fn reassign(bootstrap: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gregor"))
        .args(["topic", "reassign", "--brokers", bootstrap])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), format!("{text}{err}"))
}

/// A plan file moving partition 0 of `topic` to `replicas`.
fn plan(dir: &Path, topic: &str, replicas: &[i32]) -> String {
    let path = dir.join(format!("{topic}-plan.json"));
    let json = serde_json::json!({
        "version": 1,
        "partitions": [{"topic": topic, "partition": 0, "replicas": replicas, "log_dirs": ["any"]}],
    });
    std::fs::write(&path, json.to_string()).unwrap();
    path.to_str().unwrap().to_string()
}

/// Waits until `--verify` reports every partition of the plan complete.
async fn wait_complete(bootstrap: String, plan: String) -> Duration {
    let start = Instant::now();
    tokio::task::spawn_blocking(move || {
        wait_for("the reassignment to complete", || {
            let (code, out) = reassign(
                &bootstrap,
                &[
                    "--verify",
                    "--reassignment-json-file",
                    &plan,
                    "--format",
                    "json",
                ],
            );
            let json: serde_json::Value = serde_json::from_str(&out).ok()?;
            (code == 0 && json["complete"] == true).then_some(())
        })
    })
    .await
    .unwrap();
    start.elapsed()
}

async fn create_on(bootstrap: &str, topic: &str, replicas: &[i32]) {
    let admin: AdminClient<DefaultClientContext> = client(bootstrap).create().unwrap();
    let r = admin
        .create_topics(
            &[NewTopic::new(
                topic,
                1,
                TopicReplication::Variable(&[replicas]),
            )],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(5))),
        )
        .await
        .unwrap();
    r[0].clone().unwrap();
}

/// A consumer reading partition 0 of `topic` from the start into `values` until it has `n`
/// (bounded by a minute).
fn consume(bootstrap: String, topic: &'static str, n: usize, values: Arc<Mutex<Vec<String>>>) {
    let mut c = client(&bootstrap);
    c.set("group.id", format!("{topic}-live"))
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while values.lock().unwrap().len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let v = String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap();
            values.lock().unwrap().push(v);
        }
    }
}

/// Moves partition 0 of `topic` (on `from`) to `to` while a producer writes `n` records and
/// a consumer reads them; checks every record arrives once, in order.
async fn move_under_load(
    root: &Path,
    nodes: &[Node],
    topic: &'static str,
    from: &[i32],
    to: &[i32],
) {
    let bootstrap = bootstrap_of(nodes);
    create_on(&bootstrap, topic, from).await;
    let b = bootstrap.clone();
    let want = from.len();
    tokio::task::spawn_blocking(move || {
        wait_for("the topic in sync", || {
            let (_, _, isr) = partition_state(&b, topic)?;
            (isr.len() == want).then_some(())
        })
    })
    .await
    .unwrap();
    const N: usize = 3000;
    let acks: Acks = Arc::default();
    let writer = tokio::spawn(paced_send(
        durable_producer(&bootstrap),
        topic,
        N,
        2,
        acks.clone(),
    ));
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let reader = {
        let (b, seen) = (bootstrap.clone(), seen.clone());
        tokio::task::spawn_blocking(move || consume(b, topic, N, seen))
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let plan = plan(root, topic, to);
    let (code, out) = reassign(
        &bootstrap,
        &["--execute", "--reassignment-json-file", &plan],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Successfully started"), "{out}");
    let took = wait_complete(bootstrap.clone(), plan).await;
    eprintln!("{topic}: {from:?} -> {to:?} complete after {took:?}");
    writer.await.unwrap();
    reader.await.unwrap();
    let failed: Vec<_> = acks
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, r)| r.is_err())
        .map(|(i, _, r)| (*i, r.clone()))
        .collect();
    assert!(failed.is_empty(), "every record acknowledged: {failed:?}");
    assert_exactly_once_in_order(&seen.lock().unwrap(), N);
    // After: the new replicas and ISR, and the same records read from the new leader.
    let b = bootstrap.clone();
    let (leader, replicas, isr) =
        tokio::task::spawn_blocking(move || partition_state(&b, topic).unwrap())
            .await
            .unwrap();
    assert_eq!(replicas, to);
    let mut sorted = to.to_vec();
    sorted.sort();
    assert_eq!(isr, sorted);
    assert!(to.contains(&leader));
    let at = format!("127.0.0.1:{}", nodes[(to[0] - 1) as usize].port);
    let values = tokio::task::spawn_blocking(move || read_values(&at, topic, "read_committed", N))
        .await
        .unwrap();
    assert_exactly_once_in_order(&values, N);
    // A removed replica's copy is deleted.
    for b in from.iter().filter(|b| !to.contains(b)) {
        let dir = root.join(format!("node-{b}")).join(format!("{topic}-0"));
        let deadline = Instant::now() + WAIT;
        while dir.exists() {
            assert!(Instant::now() < deadline, "{} still exists", dir.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_move_between_brokers_and_change_replication_factor_under_load() {
    let root = tempfile::tempdir().unwrap();
    let (nodes, procs) = start_three(root.path(), |_| {
        vec![
            "replica.lag.time.max.ms=3000".to_string(),
            "replica.fetch.backoff.ms=200".into(),
        ]
    })
    .await;
    move_under_load(root.path(), &nodes, "moved", &[1, 2], &[2, 3]).await;
    move_under_load(root.path(), &nodes, "grown", &[1], &[1, 2, 3]).await;

    // A balanced plan names only the given brokers; bad plans are refused, nothing moves.
    let bootstrap = bootstrap_of(&nodes);
    let (code, out) = reassign(
        &bootstrap,
        &[
            "--generate",
            "--topics",
            "moved",
            "--broker-list",
            "1,3",
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    for p in json["proposed"]["partitions"].as_array().unwrap() {
        let r: Vec<i64> = p["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_i64().unwrap())
            .collect();
        let distinct: std::collections::BTreeSet<_> = r.iter().collect();
        assert_eq!(distinct.len(), r.len(), "{p}");
        assert!(r.iter().all(|b| [1, 3].contains(b)), "{p}");
    }
    let (code, out) = reassign(
        &bootstrap,
        &["--generate", "--topics", "grown", "--broker-list", "1,3"],
    );
    assert_ne!(code, 0, "3 replicas cannot go on 2 brokers: {out}");
    for (target, error) in [
        (vec![2, 9], "INVALID_REPLICA_ASSIGNMENT"),
        (vec![3, 3], "INVALID_REPLICA_ASSIGNMENT"),
        (vec![], "INVALID_REPLICA_ASSIGNMENT"),
    ] {
        let plan = plan(root.path(), "moved", &target);
        let (code, out) = reassign(
            &bootstrap,
            &["--execute", "--reassignment-json-file", &plan],
        );
        assert_eq!(code, 1, "{target:?}: {out}");
        assert!(out.contains(error), "{target:?}: {out}");
    }
    let plan_file = plan(root.path(), "moved", &[2, 3]);
    let (code, out) = reassign(
        &bootstrap,
        &["--cancel", "--reassignment-json-file", &plan_file],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("NO_REASSIGNMENT_IN_PROGRESS"), "{out}");
    let (code, out) = reassign(&bootstrap, &["--list"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No partition reassignment"), "{out}");
    let b = bootstrap.clone();
    let (_, replicas, _) =
        tokio::task::spawn_blocking(move || partition_state(&b, "moved").unwrap())
            .await
            .unwrap();
    assert_eq!(replicas, vec![2, 3], "refused plans changed nothing");

    // A throttled copy: 6 MB at 1 MB/s takes seconds (unthrottled, the moves above took
    // well under one); --verify then removes the throttle.
    create_on(&bootstrap, "slow", &[1]).await;
    let big = producer(&bootstrap, "all", true);
    let value = "x".repeat(1000);
    let mut pending = Vec::new();
    for _ in 0..6000 {
        let record = rdkafka::producer::FutureRecord::<(), String>::to("slow")
            .partition(0)
            .payload(&value);
        pending.push(big.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for d in pending {
        d.await.unwrap().unwrap();
    }
    let plan_file = plan(root.path(), "slow", &[1, 2]);
    const RATE: f64 = 1_000_000.0;
    let started = Instant::now();
    let (code, out) = reassign(
        &bootstrap,
        &[
            "--execute",
            "--reassignment-json-file",
            &plan_file,
            "--throttle",
            "1000000",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = reassign(&bootstrap, &["--list", "--format", "json"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("\"adding\": [\n      2"),
        "the move is listed: {out}"
    );
    wait_complete(bootstrap.clone(), plan_file).await;
    let took = started.elapsed();
    let copied = std::fs::read_dir(root.path().join("node-2").join("slow-0"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| e.metadata().unwrap().len())
        .sum::<u64>() as f64;
    let rate = copied / took.as_secs_f64();
    eprintln!("throttled copy: {copied} bytes in {took:?} = {rate:.0} B/s (throttle {RATE})");
    assert!(copied > 6_000_000.0, "{copied}");
    assert!(rate > 0.4 * RATE && rate < 1.6 * RATE, "{rate} B/s");
    let describe = Command::new(env!("CARGO_BIN_EXE_gregor"))
        .args(["topic", "describe", "slow", "--brokers", &bootstrap])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&describe.stdout);
    assert!(!text.contains("throttled"), "the throttle is gone: {text}");

    // A slow move is refused a second plan while it runs, and cancelled: the partition goes
    // back to its replicas and the half-copied replica is deleted.
    let grow = plan(root.path(), "slow", &[1, 2, 3]);
    let (code, out) = reassign(
        &bootstrap,
        &[
            "--execute",
            "--reassignment-json-file",
            &grow,
            "--throttle",
            "100000",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let other = plan(root.path(), "moved", &[3, 2]);
    let (code, out) = reassign(
        &bootstrap,
        &["--execute", "--reassignment-json-file", &other],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("reassignments are under way (slow-0)"),
        "{out}"
    );
    let copy = root.path().join("node-3").join("slow-0");
    let deadline = Instant::now() + WAIT;
    while !copy.exists() {
        assert!(Instant::now() < deadline, "replica 3 never started copying");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, out) = reassign(&bootstrap, &["--cancel", "--reassignment-json-file", &grow]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Successfully cancelled"), "{out}");
    let b = bootstrap.clone();
    let (_, replicas, isr) =
        tokio::task::spawn_blocking(move || partition_state(&b, "slow").unwrap())
            .await
            .unwrap();
    assert_eq!((replicas, isr), (vec![1, 2], vec![1, 2]));
    while copy.exists() {
        assert!(
            Instant::now() < deadline,
            "the cancelled replica's copy stays"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = bootstrap.clone();
    let (code, out) = tokio::task::spawn_blocking(move || reassign(&b, &["--list"]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No partition reassignment"), "{out}");
    drop(procs);
}
