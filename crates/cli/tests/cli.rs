//! The client commands of the `gregor` binary against a real `gregor broker` process:
//! produce/consume round trips (text and JSON), consumer groups, perf tools and errors.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A broker process, killed on drop.
struct Broker {
    child: Child,
    _stdout: std::io::Lines<BufReader<ChildStdout>>,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_broker(extra: &[&str]) -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gregor"));
    cmd.arg("broker")
        .arg("--override")
        .arg(format!("listeners=PLAINTEXT://127.0.0.1:{port}"))
        .arg("--override")
        .arg(format!("log.dirs={}", dir.path().display()))
        .args(["--override", "group.initial.rebalance.delay.ms=0"]);
    for e in extra {
        cmd.arg("--override").arg(e);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gregor broker");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a start-up line").unwrap();
    assert!(first.contains("listening on"), "{first}");
    Broker {
        child,
        _stdout: lines,
        addr: format!("127.0.0.1:{port}"),
        _dir: dir,
    }
}

/// Runs `gregor ARGS` with `stdin`, the broker address in `GREGOR_BROKERS`.
fn gregor(brokers: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gregor"))
        .args(args)
        .env("GREGOR_BROKERS", brokers)
        .env_remove("GREGOR_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gregor");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Asserts a failure with exactly one line on stderr containing `needle`.
fn one_line_error(out: &Output, needle: &str) {
    assert!(!out.status.success(), "should fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
}

#[test]
fn produce_then_consume_text_and_json() {
    let b = start_broker(&["num.partitions=1"]);
    let input = "k1:hello\nk2:wor:ld\nk3:\u{fc}n\u{ef}\n".as_bytes();
    let out = gregor(
        &b.addr,
        &[
            "produce",
            "lines",
            "--key-separator",
            ":",
            "--header",
            "h1=v1",
            "--header",
            "h2=v2",
            "--acks",
            "all",
            "--compression",
            "gzip",
        ],
        input,
    );
    assert_eq!(ok(&out), "", "silent without --verbose");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Binary value, explicit partition, --verbose prints partition and offset.
    let out = gregor(
        &b.addr,
        &[
            "produce",
            "lines",
            "--key-separator",
            "=",
            "--partition",
            "0",
            "--verbose",
            "--brokers",
            &b.addr,
        ],
        b"bin=\xff\xfe\x00\n",
    );
    assert_eq!(ok(&out), "0\t3\n");

    let out = gregor(
        &b.addr,
        &[
            "consume",
            "lines",
            "--from-beginning",
            "--count",
            "3",
            "--print-key",
            "--timeout-ms",
            "20000",
        ],
        b"",
    );
    assert_eq!(ok(&out), "k1\thello\nk2\twor:ld\nk3\t\u{fc}n\u{ef}\n");

    let out = gregor(
        &b.addr,
        &[
            "consume",
            "lines",
            "--from-beginning",
            "--count",
            "4",
            "--format",
            "json",
            "--timeout-ms",
            "20000",
        ],
        b"",
    );
    let text = ok(&out);
    let lines: Vec<&str> = text.lines().collect();
    let expect = [
        (
            0,
            r#""key":"k1","value":"hello","headers":{"h1":"v1","h2":"v2"}}"#,
        ),
        (
            1,
            r#""key":"k2","value":"wor:ld","headers":{"h1":"v1","h2":"v2"}}"#,
        ),
        (
            2,
            "\"key\":\"k3\",\"value\":\"\u{fc}n\u{ef}\",\"headers\":{\"h1\":\"v1\",\"h2\":\"v2\"}}",
        ),
        (3, r#""key":"bin","value":"//4A","headers":{}}"#),
    ];
    assert_eq!(lines.len(), 4, "{text}");
    for (line, (offset, tail)) in lines.iter().zip(expect) {
        let head = format!(r#"{{"topic":"lines","partition":0,"offset":{offset},"timestamp":"#);
        assert!(line.starts_with(&head), "{line}");
        assert!(line.ends_with(tail), "{line}");
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    }

    // --offset with --partition; value only.
    let out = gregor(
        &b.addr,
        &[
            "consume",
            "lines",
            "--partition",
            "0",
            "--offset",
            "1",
            "--count",
            "2",
            "--timeout-ms",
            "20000",
        ],
        b"",
    );
    assert_eq!(ok(&out), "wor:ld\n\u{fc}n\u{ef}\n");

    // Default start is the end: nothing old arrives.
    let out = gregor(&b.addr, &["consume", "lines", "--timeout-ms", "1000"], b"");
    assert_eq!(ok(&out), "");
}

#[test]
fn group_consumer_commits_what_it_printed() {
    let b = start_broker(&["num.partitions=2"]);
    let out = gregor(&b.addr, &["produce", "grouped"], b"a\nb\nc\nd\n");
    ok(&out);
    let consume = |extra: &[&str]| {
        let mut args = vec!["consume", "grouped", "--group", "g1", "--from-beginning"];
        args.extend_from_slice(extra);
        ok(&gregor(&b.addr, &args, b""))
    };
    // Stop after 3 of the 4 records: only those 3 are committed.
    let first = consume(&["--count", "3", "--timeout-ms", "20000"]);
    assert_eq!(first.lines().count(), 3, "{first}");
    let second = consume(&["--timeout-ms", "5000"]);
    let mut all: Vec<&str> = first.lines().chain(second.lines()).collect();
    all.sort();
    assert_eq!(
        all,
        ["a", "b", "c", "d"],
        "first {first:?} second {second:?}"
    );
    // Everything is committed now: nothing new.
    let third = consume(&["--timeout-ms", "3000"]);
    assert_eq!(third, "");
    ok(&gregor(&b.addr, &["produce", "grouped"], b"e\n"));
    let fourth = consume(&["--count", "1", "--timeout-ms", "20000"]);
    assert_eq!(fourth, "e\n");
}

#[test]
fn perf_tools_report_summaries() {
    let b = start_broker(&[]);
    let out = gregor(
        &b.addr,
        &[
            "perf",
            "produce",
            "--topic",
            "perf",
            "--records",
            "2000",
            "--record-size",
            "100",
            "--acks",
            "1",
            "--linger-ms",
            "2",
            "--batch-size",
            "16384",
            "--compression",
            "lz4",
        ],
        b"",
    );
    let text = ok(&out);
    assert!(text.starts_with("2000 records sent, "), "{text}");
    for word in [
        "records/sec",
        "MB/sec",
        "avg",
        "p50",
        "p95",
        "p99",
        "p99.9",
        "max",
    ] {
        assert!(text.contains(word), "{word} in {text}");
    }
    assert_eq!(text.lines().count(), 1);

    let out = gregor(
        &b.addr,
        &[
            "perf",
            "produce",
            "--topic",
            "perf",
            "--records",
            "2000",
            "--record-size",
            "10",
            "--throughput",
            "20000",
            "--json",
        ],
        b"",
    );
    let v: serde_json::Value = serde_json::from_str(ok(&out).trim()).unwrap();
    assert_eq!(v["records"], 2000);
    assert_eq!(v["failed"], 0);
    for k in [
        "latency_avg_ms",
        "latency_p50_ms",
        "latency_p999_ms",
        "latency_max_ms",
    ] {
        assert!(v[k].as_f64().unwrap() >= 0.0, "{k}");
    }
    assert!(v["latency_p50_ms"].as_f64() <= v["latency_max_ms"].as_f64());

    let out = gregor(
        &b.addr,
        &["perf", "consume", "--topic", "perf", "--records", "4000"],
        b"",
    );
    let text = ok(&out);
    assert!(text.starts_with("4000 records consumed, "), "{text}");
    let out = gregor(
        &b.addr,
        &[
            "perf",
            "consume",
            "--topic",
            "perf",
            "--records",
            "2000",
            "--group",
            "pg",
            "--json",
        ],
        b"",
    );
    let v: serde_json::Value = serde_json::from_str(ok(&out).trim()).unwrap();
    assert_eq!(v["records"], 2000);
    assert!(v["records_per_sec"].as_f64().unwrap() > 0.0);
    // More records than exist: a summary, then a failure after the timeout.
    let out = gregor(
        &b.addr,
        &[
            "perf",
            "consume",
            "--topic",
            "perf",
            "--records",
            "5000",
            "--timeout-ms",
            "1000",
        ],
        b"",
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("4000 records consumed"));
    one_line_error(&out, "only 4000 of 5000");
}

#[test]
fn errors_are_one_line_and_fail() {
    let dead = format!("127.0.0.1:{}", free_port());
    for args in [
        vec!["produce", "t"],
        vec!["consume", "t", "--count", "1"],
        vec![
            "perf",
            "produce",
            "--topic",
            "t",
            "--records",
            "5",
            "--record-size",
            "1",
        ],
        vec!["perf", "consume", "--topic", "t", "--records", "5"],
    ] {
        let started = Instant::now();
        let out = gregor(&dead, &args, b"x\n");
        one_line_error(&out, &format!("cannot reach {dead}: connection refused"));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{args:?} quick"
        );
    }
    // Unknown -X keys are rejected, naming the key, before any connection.
    let out = gregor(&dead, &["produce", "t", "-X", "no.such.key=1"], b"x\n");
    one_line_error(&out, "no.such.key");
    let out = gregor(&dead, &["consume", "t", "-X", "linger.ms=5"], b"");
    one_line_error(&out, "linger.ms");
    let out = gregor(&dead, &["produce", "t", "-X", "noequals"], b"");
    one_line_error(&out, "noequals");
    let out = gregor(&dead, &["produce", "t", "-X", "linger.ms=soon"], b"");
    one_line_error(&out, "linger.ms");
}

#[test]
fn produce_fails_on_bad_lines_and_partitions() {
    let b = start_broker(&["num.partitions=1"]);
    // A line without the separator fails (the others are still sent).
    let out = gregor(
        &b.addr,
        &["produce", "bad", "--key-separator", ":"],
        b"k:v\nnokey\n",
    );
    one_line_error(&out, "line 2 has no key separator");
    let out = gregor(&b.addr, &["produce", "bad", "--partition", "7"], b"v\n");
    one_line_error(&out, "partition 7");
    let out = gregor(
        &b.addr,
        &[
            "consume",
            "bad",
            "--from-beginning",
            "--count",
            "1",
            "--timeout-ms",
            "20000",
            "--print-key",
        ],
        b"",
    );
    assert_eq!(ok(&out), "k\tv\n");
}

#[test]
fn help_lists_the_commands() {
    let out = Command::new(env!("CARGO_BIN_EXE_gregor"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["broker", "produce", "consume", "perf"] {
        assert!(text.contains(cmd), "{text}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_gregor"))
        .args(["perf", "produce", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--records",
        "--record-size",
        "--throughput",
        "--json",
        "--brokers",
        "-X",
    ] {
        assert!(text.contains(flag), "{flag} in {text}");
    }
}
