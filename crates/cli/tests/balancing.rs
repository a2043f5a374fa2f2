//! Preferred-leader balancing with three `gregor broker` processes on 127.0.0.1, driven by
//! librdkafka and `gregor topic describe`: a SIGKILLed broker's leaderships move to the
//! others; restarted, it catches up, rejoins the ISRs, and the active controller's periodic
//! check (`leader.imbalance.check.interval.seconds`, 1 s here) gives it back every partition
//! that prefers it, while an idempotent acks=all producer writes to every partition: every
//! acknowledged record is readable afterwards, once each. `gregor cluster health` and the
//! brokers' metrics report the dead node and the under-replicated partitions (exit 1), then
//! healthy (exit 0, nothing under-replicated, no imbalance). Every
//! process is killed by its guard, on every path.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use support::cluster::*;
use support::replicated::*;

const TOPIC: &str = "bal";
const PARTITIONS: i32 = 6;

/// A partition's leader, replicas and ISR (sorted).
type PartitionState = (i32, Vec<i32>, Vec<i32>);

/// The state of every partition of the topic at `bootstrap`.
fn partitions(bootstrap: &str) -> Option<Vec<PartitionState>> {
    let c: BaseConsumer = client(bootstrap).create().ok()?;
    let meta = c.fetch_metadata(Some(TOPIC), Duration::from_secs(5)).ok()?;
    let t = meta.topics().iter().find(|t| t.name() == TOPIC)?;
    if t.partitions().len() != PARTITIONS as usize {
        return None;
    }
    Some(
        t.partitions()
            .iter()
            .map(|p| {
                let mut isr = p.isr().to_vec();
                isr.sort();
                (p.leader(), p.replicas().to_vec(), isr)
            })
            .collect(),
    )
}

/// Waits until every partition is led by its preferred replica with all three in sync;
/// returns how long that took.
async fn wait_balanced(bootstrap: String) -> Duration {
    let start = Instant::now();
    tokio::task::spawn_blocking(move || {
        wait_for("every partition led by its preferred replica", || {
            let ps = partitions(&bootstrap)?;
            ps.iter()
                .all(|(leader, replicas, isr)| *leader == replicas[0] && isr.len() == 3)
                .then_some(())
        })
    })
    .await
    .unwrap();
    start.elapsed()
}

/// `gregor topic describe --format json`: each partition's status list.
fn described_status(bootstrap: &str) -> Vec<Vec<String>> {
    let out = Command::new(env!("CARGO_BIN_EXE_gregor"))
        .args([
            "topic",
            "describe",
            TOPIC,
            "--format",
            "json",
            "--brokers",
            bootstrap,
        ])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["status"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

/// `gregor cluster health --format json`: its exit code and report.
fn health(bootstrap: &str) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_gregor"))
        .args([
            "cluster",
            "health",
            "--format",
            "json",
            "--brokers",
            bootstrap,
        ])
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), json)
}

/// Sends `n` records `tag-<i>` round-robin over the partitions, `every` apart; panics on
/// the first that is not acknowledged.
async fn send_all(p: &FutureProducer, n: usize, tag: &str, every: Duration) {
    let mut pending = Vec::new();
    for i in 0..n {
        let value = format!("{tag}-{i:06}");
        let record = FutureRecord::<(), String>::to(TOPIC)
            .partition(i as i32 % PARTITIONS)
            .payload(&value);
        pending.push(p.send_result(record).map_err(|(e, _)| e).expect("queued"));
        tokio::time::sleep(every).await;
    }
    for (i, d) in pending.into_iter().enumerate() {
        match d.await {
            Ok(Ok(_)) => {}
            other => panic!("{tag}-{i:06} was not acknowledged: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_returns_to_the_preferred_replicas_after_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let metrics_ports: Vec<u16> = (0..3).map(|_| support::free_port()).collect();
    let extra = |n: &Node| {
        vec![
            format!(
                "metrics.listener=http://127.0.0.1:{}",
                metrics_ports[(n.id - 1) as usize]
            ),
            "leader.imbalance.check.interval.seconds=1".to_string(),
            "replica.lag.time.max.ms=1500".into(),
            "replica.fetch.backoff.ms=200".into(),
            "broker.session.timeout.ms=2000".into(),
            "broker.heartbeat.interval.ms=200".into(),
        ]
    };
    let (nodes, mut procs) = start_three(root.path(), extra).await;
    let bootstrap = bootstrap_of(&nodes);
    create_topic_rf(&nodes_addr(&nodes, 0), TOPIC, PARTITIONS, 3)
        .await
        .unwrap();
    wait_balanced(bootstrap.clone()).await;
    let producer = durable_producer(&bootstrap);
    send_all(&producer, 120, "a", Duration::ZERO).await;

    // The broker preferred by partition 0 dies: its partitions move to the others.
    let b = bootstrap.clone();
    let before = tokio::task::spawn_blocking(move || partitions(&b).unwrap())
        .await
        .unwrap();
    let victim = before[0].1[0];
    let victim_at = nodes.iter().position(|n| n.id == victim).unwrap();
    let preferring: Vec<usize> = (0..before.len())
        .filter(|&i| before[i].1[0] == victim)
        .collect();
    assert!(!preferring.is_empty());
    procs[victim_at].kill();
    let others = nodes_addr(&nodes, (victim_at + 1) % 3);
    let o = others.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("the dead broker's leaderships to move", || {
            let ps = partitions(&o)?;
            ps.iter()
                .all(|(leader, _, _)| *leader != victim && *leader != -1)
                .then_some(())
        })
    })
    .await
    .unwrap();
    let o = others.clone();
    let status = tokio::task::spawn_blocking(move || described_status(&o))
        .await
        .unwrap();
    for &i in &preferring {
        assert!(
            status[i].contains(&"non-preferred-leader".to_string())
                && status[i].contains(&"under-replicated".to_string()),
            "partition {i}: {status:?}"
        );
    }
    // The survivors' metrics: every partition under-replicated, led by one of them.
    let under: f64 = (0..3)
        .filter(|&i| i != victim_at)
        .map(|i| {
            let (_, text) = support::http::get(metrics_ports[i], "/metrics");
            support::http::value(
                &text,
                "kafka_server_replicamanager_under_replicated_partitions",
            )
        })
        .sum();
    assert_eq!(under, PARTITIONS as f64);
    // The active controller sees the dead node's metadata log fall behind (its fencing and
    // the ISR shrinks were written after it died).
    let behind: Vec<f64> = (0..3)
        .filter(|&i| i != victim_at)
        .filter_map(|i| {
            let (_, text) = support::http::get(metrics_ports[i], "/metrics");
            let active =
                support::http::value(&text, "kafka_controller_kafkacontroller_active_controllers");
            (active == 1.0).then(|| {
                support::http::value(
                    &text,
                    &format!(r#"kafka_server_raft_metrics_replica_lag{{node="{victim}"}}"#),
                )
            })
        })
        .collect();
    assert!(behind.len() == 1 && behind[0] >= 1.0, "{behind:?}");
    // `gregor cluster health`: unhealthy, the node down, its partitions under-replicated.
    let o = others.clone();
    let (code, report) = tokio::task::spawn_blocking(move || health(&o))
        .await
        .unwrap();
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["healthy"], false);
    assert_eq!(report["down_nodes"], serde_json::json!([victim]));
    let under = report["under_replicated_partitions"].as_array().unwrap();
    assert_eq!(
        under.len(),
        PARTITIONS as usize,
        "every partition has a replica there: {report}"
    );
    assert_eq!(
        report["non_preferred_leader_partitions"]
            .as_array()
            .unwrap()
            .len(),
        preferring.len()
    );
    let o = others.clone();
    let text = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_gregor"))
            .args(["cluster", "health", "--brokers", &o])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains("Healthy:                          false"),
        "{text}"
    );
    assert!(
        text.contains(&format!("Nodes down:                       [{victim}]")),
        "{text}"
    );

    // Restarted under a steady producer: it rejoins the ISRs and gets its leaderships back.
    let writer = {
        let producer = producer.clone();
        tokio::spawn(async move {
            send_all(&producer, 300, "b", Duration::from_millis(10)).await;
        })
    };
    let voters = voters_of(&nodes);
    let extras = extra(&nodes[victim_at]);
    let refs: Vec<&str> = extras.iter().map(String::as_str).collect();
    let restarted = Instant::now();
    procs[victim_at] = spawn_with(root.path(), &nodes[victim_at], &voters, &refs);
    procs[victim_at].wait_listening();
    wait_balanced(bootstrap.clone()).await;
    eprintln!(
        "broker {victim} restarted: every partition back on its preferred replica {:?} after start",
        restarted.elapsed()
    );
    writer.await.unwrap();
    let status = tokio::task::spawn_blocking(move || described_status(&others))
        .await
        .unwrap();
    assert!(status.iter().all(|s| s.is_empty()), "{status:?}");
    let b = bootstrap.clone();
    let (code, report) = tokio::task::spawn_blocking(move || health(&b))
        .await
        .unwrap();
    assert_eq!(
        (code, &report["healthy"]),
        (0, &serde_json::json!(true)),
        "{report}"
    );
    for port in &metrics_ports {
        let (_, text) = support::http::get(*port, "/metrics");
        let under = support::http::value(
            &text,
            "kafka_server_replicamanager_under_replicated_partitions",
        );
        assert_eq!(under, 0.0, "broker on metrics port {port}");
        let imbalance = support::http::value(
            &text,
            "kafka_controller_kafkacontroller_preferred_replica_imbalance",
        );
        assert_eq!(imbalance, 0.0);
        assert_eq!(
            support::http::value(
                &text,
                "kafka_server_replicamanager_preferred_leader_elsewhere"
            ),
            0.0
        );
        // Each broker follows some partitions (RF 3), each with a lag series.
        assert!(
            text.contains(&format!(
                r#"kafka_server_fetcherlagmetrics_consumer_lag{{topic="{TOPIC}","#
            )),
            "no follower lag on metrics port {port}"
        );
        let max_lag = support::http::value(&text, "kafka_server_replicafetchermanager_max_lag");
        assert!(max_lag >= 0.0);
    }

    // Every acknowledged record, once.
    let b = bootstrap.clone();
    let values = tokio::task::spawn_blocking(move || {
        read_committed_partitions(&b, TOPIC, &(0..PARTITIONS).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    let got: BTreeSet<&String> = values.iter().collect();
    assert_eq!(got.len(), values.len(), "no record twice");
    let want: BTreeSet<String> = (0..120)
        .map(|i| format!("a-{i:06}"))
        .chain((0..300).map(|i| format!("b-{i:06}")))
        .collect();
    assert_eq!(got, want.iter().collect(), "every acknowledged record");
    drop(procs);
}

fn nodes_addr(nodes: &[Node], i: usize) -> String {
    format!("127.0.0.1:{}", nodes[i].port)
}
