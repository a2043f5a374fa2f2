//! Helpers for tests with several `gregor broker` processes forming one cluster: nodes with
//! free ports, their voters string, spawning voters and observers, and bounded waits on what
//! the cluster reports through librdkafka and `gregor cluster info`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::{free_port, BrokerProcess};

pub const WAIT: Duration = Duration::from_secs(20);

pub fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("socket.timeout.ms", "5000");
    c
}

pub struct Node {
    pub id: i32,
    pub port: u16,
    pub controller_port: u16,
}

pub fn overrides(node: &Node, voters: &str) -> Vec<String> {
    vec![
        format!("node.id={}", node.id),
        format!(
            "listeners=PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
            node.port, node.controller_port
        ),
        format!("controller.quorum.voters={voters}"),
    ]
}

/// `n` nodes with free ports, and their voters string.
pub fn nodes(n: i32) -> (Vec<Node>, String) {
    let nodes: Vec<Node> = (1..=n)
        .map(|id| Node {
            id,
            port: free_port(),
            controller_port: free_port(),
        })
        .collect();
    let voters = voters_of(&nodes);
    (nodes, voters)
}

/// `controller.quorum.voters` naming `nodes`.
pub fn voters_of(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn spawn(root: &Path, node: &Node, voters: &str) -> BrokerProcess {
    spawn_with(root, node, voters, &[])
}

/// A broker-only node (an observer of the metadata quorum): no CONTROLLER listener.
pub fn spawn_observer(root: &Path, node: &Node, voters: &str, extra: &[&str]) -> BrokerProcess {
    let o = [
        format!("node.id={}", node.id),
        "process.roles=broker".to_string(),
        format!("controller.quorum.voters={voters}"),
    ];
    let mut refs: Vec<&str> = o.iter().map(String::as_str).collect();
    refs.extend_from_slice(extra);
    BrokerProcess::spawn(&root.join(format!("node-{}", node.id)), node.port, &refs)
}

pub fn spawn_with(root: &Path, node: &Node, voters: &str, extra: &[&str]) -> BrokerProcess {
    let o = overrides(node, voters);
    let mut refs: Vec<&str> = o.iter().map(String::as_str).collect();
    refs.extend_from_slice(extra);
    BrokerProcess::spawn(&root.join(format!("node-{}", node.id)), node.port, &refs)
}

/// The brokers Metadata lists at `bootstrap` (the live ones), sorted.
pub fn live_brokers(bootstrap: &str) -> Option<Vec<i32>> {
    let c: BaseConsumer = client(bootstrap).create().ok()?;
    let meta = c.fetch_metadata(None, Duration::from_secs(5)).ok()?;
    let mut ids: Vec<i32> = meta.brokers().iter().map(|b| b.id()).collect();
    ids.sort();
    Some(ids)
}

/// `gregor cluster info --format json` at `bootstrap`.
pub fn cluster_info(bootstrap: &str) -> Option<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_gregor"))
        .args([
            "cluster",
            "info",
            "--format",
            "json",
            "--brokers",
            bootstrap,
        ])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// The controller id as `gregor cluster info` reports it at `bootstrap`.
pub fn controller_id(bootstrap: &str) -> Option<i32> {
    cluster_info(bootstrap)?["controller"]
        .as_i64()
        .map(|id| id as i32)
}

/// Partition leaders of `topic` as broker `bootstrap` reports them, once it knows the topic.
pub fn leaders(bootstrap: &str, topic: &str) -> Option<Vec<i32>> {
    let c: BaseConsumer = client(bootstrap).create().ok()?;
    let meta = c.fetch_metadata(Some(topic), Duration::from_secs(5)).ok()?;
    let t = meta.topics().iter().find(|t| t.name() == topic)?;
    if t.error().is_some() || t.partitions().is_empty() {
        return None;
    }
    Some(t.partitions().iter().map(|p| p.leader()).collect())
}

pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32) -> Result<(), String> {
    create_topic_rf(bootstrap, name, partitions, 1).await
}

pub async fn create_topic_rf(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    rf: i32,
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = client(bootstrap).create().unwrap();
    let r = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(rf))],
            // Short, so a retry after the controller moved is not held up by librdkafka.
            &AdminOptions::new()
                .operation_timeout(Some(Duration::from_millis(500)))
                .request_timeout(Some(Duration::from_millis(500))),
        )
        .await
        .map_err(|e| e.to_string())?;
    r[0].clone().map(|_| ()).map_err(|(_, e)| e.to_string())
}

/// Waits (off the async runtime) until `bootstrap` lists exactly `want` as live brokers;
/// returns how long it took.
pub async fn wait_live(bootstrap: String, want: Vec<i32>) -> Duration {
    let start = Instant::now();
    tokio::task::spawn_blocking(move || {
        wait_for(&format!("live brokers {want:?}"), || {
            (live_brokers(&bootstrap)? == want).then_some(())
        })
    })
    .await
    .unwrap();
    start.elapsed()
}

/// The bootstrap list naming every node's Kafka listener.
pub fn bootstrap_of(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect::<Vec<_>>()
        .join(",")
}
