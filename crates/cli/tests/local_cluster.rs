//! `gregor local-cluster` end to end: up (3 nodes), status (text and JSON), kill and start of
//! one node with the cluster serving admin requests meanwhile, stop, down, and the errors of
//! a second `up` and of an unknown node. A guard kills every recorded pid, whatever happens.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Kills every node the cluster in `dir` recorded, on every path.
struct ClusterGuard(PathBuf);

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            if let Ok(pid) = std::fs::read_to_string(entry.path().join("pid")) {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    // SAFETY: a pid this test's cluster started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
}

fn gregor(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gregor"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .env_remove("GREGOR_LOG")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A base port with the six ports three nodes need free right now.
fn free_base() -> u16 {
    support::free_base(&[0, 1, 2, 100, 101, 102, 200, 201, 202])
}

fn alive(dir: &Path) -> Vec<bool> {
    let out = ok(&gregor(
        dir,
        &["local-cluster", "status", "--format", "json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["alive"].as_bool().unwrap())
        .collect()
}

fn create_topic(bootstrap: &str, name: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gregor"))
        .args([
            "topic",
            "create",
            name,
            "--partitions",
            "3",
            "--brokers",
            bootstrap,
        ])
        .output()
        .unwrap()
}

#[test]
fn up_status_kill_start_stop_down() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cluster");
    let _guard = ClusterGuard(dir.clone());
    let base = free_base();
    let out = ok(&gregor(
        &dir,
        &[
            "local-cluster",
            "up",
            "--nodes",
            "3",
            "--base-port",
            &base.to_string(),
        ],
    ));
    let bootstrap = format!(
        "127.0.0.1:{base},127.0.0.1:{},127.0.0.1:{}",
        base + 1,
        base + 2
    );
    assert!(
        out.contains(&format!("bootstrap servers: {bootstrap}")),
        "{out}"
    );
    assert_eq!(alive(&dir), vec![true, true, true]);
    let text = ok(&gregor(&dir, &["local-cluster", "status"]));
    assert!(
        text.contains("ALIVE") && text.contains(&format!("127.0.0.1:{}", base + 101)),
        "{text}"
    );

    // A second `up` on a running cluster is refused.
    let again = gregor(
        &dir,
        &[
            "local-cluster",
            "up",
            "--nodes",
            "3",
            "--base-port",
            &base.to_string(),
        ],
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("still running"));

    // Node 2 killed: the others still take admin requests; started again, it serves.
    ok(&create_topic(&bootstrap, "before"));
    ok(&gregor(&dir, &["local-cluster", "kill", "2"]));
    assert_eq!(alive(&dir), vec![true, false, true]);
    let others = format!("127.0.0.1:{base},127.0.0.1:{}", base + 2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !create_topic(&others, "while-2-is-down").status.success() {
        assert!(
            std::time::Instant::now() < deadline,
            "no CreateTopics without node 2"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = ok(&gregor(&dir, &["local-cluster", "start", "2"]));
    assert!(
        out.contains(&format!("node 2 serving on 127.0.0.1:{}", base + 1)),
        "{out}"
    );
    assert_eq!(alive(&dir), vec![true, true, true]);
    let restarted = gregor(&dir, &["local-cluster", "start", "2"]);
    assert!(String::from_utf8_lossy(&restarted.stderr).contains("already running"));

    // Unknown nodes and a stopped node.
    let unknown = gregor(&dir, &["local-cluster", "stop", "7"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not in this cluster"));
    ok(&gregor(&dir, &["local-cluster", "stop", "3"]));
    assert_eq!(alive(&dir), vec![true, true, false]);
    let twice = gregor(&dir, &["local-cluster", "stop", "3"]);
    assert!(String::from_utf8_lossy(&twice.stderr).contains("not running"));
    // A node stopped cleanly asked to be fenced on its way out: started again, it registers
    // at once instead of waiting out its old session (broker.session.timeout.ms, 9 s).
    let started = std::time::Instant::now();
    ok(&gregor(&dir, &["local-cluster", "start", "3"]));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(6),
        "restart after a clean stop took {:?}",
        started.elapsed()
    );
    assert_eq!(alive(&dir), vec![true, true, true]);

    ok(&gregor(&dir, &["local-cluster", "down"]));
    assert_eq!(alive(&dir), vec![false, false, false]);
}

#[test]
fn a_node_that_does_not_come_up_is_reported_and_nothing_is_left_running() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cluster");
    let _guard = ClusterGuard(dir.clone());
    let base = free_base().to_string();
    let out = gregor(
        &dir,
        &[
            "local-cluster",
            "up",
            "--nodes",
            "3",
            "--base-port",
            &base,
            "--override",
            "num.partitions=zero",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("did not come up") && err.contains("num.partitions"),
        "{err}"
    );
    assert_eq!(alive(&dir), vec![false, false, false]);
    let bad = gregor(&dir, &["local-cluster", "up", "--nodes", "0"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("at least 1"));
    let none = gregor(&root.path().join("nothing"), &["local-cluster", "status"]);
    assert!(String::from_utf8_lossy(&none.stderr).contains("no local cluster"));
}
