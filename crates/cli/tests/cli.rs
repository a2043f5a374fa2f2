//! The client commands of the `gregor` binary against a real `gregor broker` process:
//! produce/consume round trips (text and JSON), consumer groups, perf tools and errors.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use std::time::{Duration, Instant};
use support::{free_port, BrokerProcess};

/// A broker process (killed on drop, before its directory is removed).
struct Broker {
    _process: BrokerProcess,
    addr: String,
    _dir: tempfile::TempDir,
}

fn start_broker(extra: &[&str]) -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let mut overrides = vec!["group.initial.rebalance.delay.ms=0"];
    overrides.extend_from_slice(extra);
    let process = BrokerProcess::start(dir.path(), free_port(), &overrides);
    Broker {
        addr: process.addr(),
        _process: process,
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

    // Transactional: throttled to ~2 s so several commits happen, then read back with
    // read_committed.
    let out = gregor(
        &b.addr,
        &[
            "perf",
            "produce",
            "--topic",
            "perf-txn",
            "--records",
            "2000",
            "--record-size",
            "10",
            "--throughput",
            "1000",
            "--transactional-id",
            "perf-tx",
            "--commit-interval-ms",
            "300",
            "--json",
        ],
        b"",
    );
    let v: serde_json::Value = serde_json::from_str(ok(&out).trim()).unwrap();
    assert_eq!(v["records"], 2000);
    assert!(v["transactions_committed"].as_u64().unwrap() >= 4, "{v}");
    let out = gregor(
        &b.addr,
        &[
            "perf",
            "consume",
            "--topic",
            "perf-txn",
            "--records",
            "2000",
            "-X",
            "isolation.level=read_committed",
        ],
        b"",
    );
    assert!(ok(&out).starts_with("2000 records consumed, "));

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
    for cmd in [
        "broker", "produce", "consume", "perf", "topic", "group", "txn", "cluster",
    ] {
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

fn json(out: &Output) -> serde_json::Value {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn topic_admin_commands() {
    let b = start_broker(&["num.partitions=1"]);
    let g = |args: &[&str]| gregor(&b.addr, args, b"");
    let out = g(&[
        "topic",
        "create",
        "admin-t",
        "--partitions",
        "2",
        "--replication-factor",
        "1",
        "--config",
        "retention.ms=123456",
    ]);
    assert!(ok(&out).contains("admin-t"));
    one_line_error(
        &g(&["topic", "create", "admin-t"]),
        "topic 'admin-t' already exists",
    );
    one_line_error(
        &g(&["topic", "describe", "missing"]),
        "topic 'missing' does not exist",
    );
    one_line_error(
        &g(&["topic", "create", "bad", "--config", "noequals"]),
        "noequals",
    );

    assert_eq!(ok(&g(&["topic", "list"])), "admin-t\n");
    let v = json(&g(&["topic", "list", "--format", "json"]));
    assert_eq!(v, serde_json::json!(["admin-t"]));

    let text = ok(&g(&["topic", "describe", "admin-t"]));
    assert!(text.contains("Partitions: 2"), "{text}");
    assert!(
        text.contains("PARTITION  LEADER  REPLICAS  ISR  ELR  LOG-START  LOG-END  STATUS"),
        "{text}"
    );
    assert!(text.contains("retention.ms  123456"), "{text}");
    ok(&gregor(
        &b.addr,
        &["produce", "admin-t", "--partition", "1"],
        b"x\ny\n",
    ));
    let v = json(&g(&["topic", "describe", "admin-t", "--format", "json"]));
    assert_eq!(v["name"], "admin-t");
    assert_eq!(v["partitions"].as_array().unwrap().len(), 2);
    assert_eq!(v["partitions"][1]["leader"], 1);
    assert_eq!(v["partitions"][1]["replicas"], serde_json::json!([1]));
    assert_eq!(v["partitions"][1]["isr"], serde_json::json!([1]));
    assert_eq!(v["partitions"][1]["log_start_offset"], 0);
    assert_eq!(v["partitions"][1]["log_end_offset"], 2);
    assert_eq!(v["partitions"][0]["log_end_offset"], 0);
    assert_eq!(v["configs"]["retention.ms"], "123456");

    ok(&g(&[
        "topic",
        "alter-config",
        "admin-t",
        "--set",
        "max.message.bytes=2048",
        "--delete",
        "retention.ms",
    ]));
    let v = json(&g(&["topic", "describe", "admin-t", "--format", "json"]));
    assert_eq!(v["configs"]["max.message.bytes"], "2048", "{v}");
    assert!(v["configs"].get("retention.ms").is_none(), "{v}");
    one_line_error(
        &g(&["topic", "alter-config", "missing", "--set", "a=b"]),
        "topic 'missing' does not exist",
    );

    ok(&g(&["topic", "add-partitions", "admin-t", "--total", "4"]));
    let text = ok(&g(&["topic", "describe", "admin-t"]));
    assert!(text.contains("Partitions: 4"), "{text}");
    one_line_error(
        &g(&["topic", "add-partitions", "admin-t", "--total", "3"]),
        "admin-t",
    );

    ok(&g(&["topic", "delete", "admin-t"]));
    assert_eq!(ok(&g(&["topic", "list"])), "");
    one_line_error(
        &g(&["topic", "delete", "admin-t"]),
        "topic 'admin-t' does not exist",
    );
}

#[test]
fn group_admin_commands() {
    let b = start_broker(&["num.partitions=1"]);
    let g = |args: &[&str]| gregor(&b.addr, args, b"");
    ok(&g(&["topic", "create", "gt", "--partitions", "1"]));
    ok(&gregor(&b.addr, &["produce", "gt"], b"a\nb\nc\nd\ne\n"));
    let consumed = ok(&g(&[
        "consume",
        "gt",
        "--group",
        "gg",
        "--from-beginning",
        "--count",
        "3",
        "--timeout-ms",
        "8000",
    ]));
    assert_eq!(consumed, "a\nb\nc\n");

    let text = ok(&g(&["group", "list"]));
    assert!(text.starts_with("GROUP"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("gg ")), "{text}");
    let v = json(&g(&["group", "list", "--format", "json"]));
    assert!(
        v.as_array().unwrap().iter().any(|x| x["group"] == "gg"),
        "{v}"
    );

    let text = ok(&g(&["group", "describe", "gg"]));
    assert!(text.contains("State: Empty"), "{text}");
    assert!(
        text.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 5 && f[..5] == ["gt", "0", "3", "5", "2"]
        }),
        "{text}"
    );
    let v = json(&g(&["group", "describe", "gg", "--format", "json"]));
    assert_eq!(v["offsets"][0]["committed_offset"], 3, "{v}");
    assert_eq!(v["offsets"][0]["log_end_offset"], 5, "{v}");
    assert_eq!(v["offsets"][0]["lag"], 2, "{v}");
    one_line_error(
        &g(&["group", "describe", "nogroup"]),
        "group 'nogroup' does not exist",
    );

    // Dry run: prints the plan, changes nothing.
    let text = ok(&g(&[
        "group",
        "reset-offsets",
        "gg",
        "--topic",
        "gt",
        "--to-earliest",
    ]));
    assert!(text.contains("dry run"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["gt", "0", "3", "0"]),
        "{text}"
    );
    let v = json(&g(&["group", "describe", "gg", "--format", "json"]));
    assert_eq!(v["offsets"][0]["committed_offset"], 3, "{v}");

    let v = json(&g(&[
        "group",
        "reset-offsets",
        "gg",
        "--topic",
        "gt",
        "--to-offset",
        "1",
        "--execute",
        "--format",
        "json",
    ]));
    assert_eq!(v["partitions"][0]["current_offset"], 3, "{v}");
    assert_eq!(v["partitions"][0]["new_offset"], 1, "{v}");
    let v = json(&g(&["group", "describe", "gg", "--format", "json"]));
    assert_eq!(v["offsets"][0]["committed_offset"], 1, "{v}");
    assert_eq!(v["offsets"][0]["lag"], 4, "{v}");
    ok(&g(&[
        "group",
        "reset-offsets",
        "gg",
        "--topic",
        "gt",
        "--to-latest",
        "--execute",
    ]));
    let v = json(&g(&["group", "describe", "gg", "--format", "json"]));
    assert_eq!(v["offsets"][0]["committed_offset"], 5, "{v}");
    one_line_error(
        &g(&[
            "group",
            "reset-offsets",
            "gg",
            "--topic",
            "nope",
            "--to-latest",
        ]),
        "topic 'nope' does not exist",
    );

    ok(&g(&["group", "delete", "gg"]));
    let v = json(&g(&["group", "list", "--format", "json"]));
    assert!(
        v.as_array().unwrap().iter().all(|x| x["group"] != "gg"),
        "{v}"
    );
    one_line_error(&g(&["group", "delete", "gg"]), "group 'gg' does not exist");
}

#[test]
fn cluster_info_text_and_json() {
    let b = start_broker(&[]);
    let text = ok(&gregor(&b.addr, &["cluster", "info"], b""));
    assert!(text.contains("Cluster id: "), "{text}");
    assert!(text.contains("Controller: 1"), "{text}");
    assert!(text.contains(&format!("1   {}  yes", b.addr)), "{text}");
    let v = json(&gregor(
        &b.addr,
        &["cluster", "info", "--format", "json"],
        b"",
    ));
    assert!(!v["cluster_id"].as_str().unwrap().is_empty(), "{v}");
    assert_eq!(v["controller"], 1);
    assert_eq!(v["brokers"][0]["id"], 1);
    assert_eq!(
        format!(
            "{}:{}",
            v["brokers"][0]["host"].as_str().unwrap(),
            v["brokers"][0]["port"]
        ),
        b.addr
    );
    assert!(
        text.contains(&format!(
            "Gregor CLI version: {}",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(text.contains("API versions (broker 1):"), "{text}");
    let api_row = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
    };
    for name in ["Produce", "Fetch"] {
        let row = api_row(name).unwrap_or_else(|| panic!("no {name} row in {text}"));
        assert_eq!(row.len(), 2, "{row:?}");
        let (min, max): (i16, i16) = (row[0].parse().unwrap(), row[1].parse().unwrap());
        assert!(min <= max, "{name} {min}..{max}");
    }
    assert_eq!(v["gregor_version"], env!("CARGO_PKG_VERSION"));
    for ranges in [&v["api_versions"], &v["brokers"][0]["api_versions"]] {
        let ranges = ranges.as_array().unwrap_or_else(|| panic!("{v}"));
        for name in ["Produce", "Fetch"] {
            let r = ranges
                .iter()
                .find(|r| r["api"] == name)
                .unwrap_or_else(|| panic!("no {name} in {v}"));
            let (min, max) = (r["min"].as_i64().unwrap(), r["max"].as_i64().unwrap());
            assert!(0 <= min && min <= max, "{r}");
        }
    }
    let text = ok(&gregor(&b.addr, &["cluster", "health"], b""));
    assert!(
        text.contains("Healthy:                          true"),
        "{text}"
    );
    assert!(
        text.contains("Nodes down:                       []"),
        "{text}"
    );
    let v = json(&gregor(
        &b.addr,
        &["cluster", "health", "--format", "json"],
        b"",
    ));
    assert_eq!(v["healthy"], true, "{v}");
    assert_eq!(v["live_brokers"], serde_json::json!([1]), "{v}");
    let dead = format!("127.0.0.1:{}", free_port());
    one_line_error(
        &gregor(&dead, &["cluster", "health"], b""),
        &format!("cannot reach {dead}: connection refused"),
    );
    one_line_error(
        &gregor(&dead, &["cluster", "info"], b""),
        &format!("cannot reach {dead}: connection refused"),
    );
}

#[test]
fn reset_offsets_is_refused_while_the_group_has_members() {
    let b = start_broker(&["num.partitions=1"]);
    ok(&gregor(&b.addr, &["produce", "busy"], b"a\n"));
    let mut consumer = Command::new(env!("CARGO_BIN_EXE_gregor"))
        .args([
            "consume",
            "busy",
            "--group",
            "busy-g",
            "--timeout-ms",
            "15000",
        ])
        .env("GREGOR_BROKERS", &b.addr)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut member = false;
    while Instant::now() < deadline {
        let out = gregor(
            &b.addr,
            &["group", "describe", "busy-g", "--format", "json"],
            b"",
        );
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if v["state"] == "Stable" && !v["members"].as_array().unwrap().is_empty() {
                let text = ok(&gregor(&b.addr, &["group", "describe", "busy-g"], b""));
                assert!(text.contains("MEMBER-ID"), "{text}");
                assert!(text.contains("busy-0"), "{text}");
                member = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = gregor(
        &b.addr,
        &[
            "group",
            "reset-offsets",
            "busy-g",
            "--topic",
            "busy",
            "--to-earliest",
            "--execute",
        ],
        b"",
    );
    let _ = consumer.kill();
    let _ = consumer.wait();
    assert!(member, "the consumer joined");
    one_line_error(&out, "group 'busy-g' has 1 active member(s)");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn consume_from_timestamp_with_and_without_group() {
    let b = start_broker(&["num.partitions=2"]);
    ok(&gregor(&b.addr, &["produce", "ts"], b"a\nb\nc\n"));
    std::thread::sleep(Duration::from_millis(50));
    let noted = now_ms().to_string();
    std::thread::sleep(Duration::from_millis(5));
    ok(&gregor(&b.addr, &["produce", "ts"], b"d\ne\n"));
    let consume = |extra: &[&str]| {
        let mut args = vec![
            "consume",
            "ts",
            "--from-timestamp",
            &noted,
            "--timeout-ms",
            "20000",
        ];
        args.extend_from_slice(extra);
        let out = gregor(&b.addr, &args, b"");
        assert!(
            out.stderr.is_empty(),
            "quiet when piped: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lines: Vec<String> = ok(&out).lines().map(String::from).collect();
        lines.sort();
        lines
    };
    assert_eq!(consume(&["--count", "2"]), ["d", "e"]);
    assert_eq!(consume(&["--count", "2", "--group", "tsg"]), ["d", "e"]);
    // Past every record: each partition starts at its end, so nothing arrives.
    let future = (now_ms() + 3_600_000).to_string();
    let out = gregor(
        &b.addr,
        &[
            "consume",
            "ts",
            "--from-timestamp",
            &future,
            "--timeout-ms",
            "1500",
        ],
        b"",
    );
    assert_eq!(ok(&out), "");
}

/// A transactional Gregor producer (`transactional.id` = `id`) on its own runtime, for the
/// `gregor txn` tests: the CLI inspects the transaction it holds open.
struct TxnProducer {
    runtime: tokio::runtime::Runtime,
    producer: gregor_client::Producer,
}

const TXN_TIMEOUT: Duration = Duration::from_secs(20);

impl TxnProducer {
    fn new(brokers: &str, id: &str) -> TxnProducer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let config = gregor_client::ClientConfig::from_pairs([
            ("bootstrap.servers", brokers),
            ("transactional.id", id),
            ("transaction.timeout.ms", "50000"),
        ]);
        let producer = runtime.block_on(async {
            let p = gregor_client::Producer::new(&config).unwrap();
            p.init_transactions(TXN_TIMEOUT).await.unwrap();
            p
        });
        TxnProducer { runtime, producer }
    }

    /// Begins a transaction and writes `values` to `topic`-`partition` (flushed).
    fn write_open(&self, topic: &str, partition: i32, values: &[&str]) {
        self.runtime.block_on(async {
            self.producer.begin_transaction().unwrap();
            for v in values {
                self.producer
                    .send(
                        gregor_client::ProducerRecord::new(topic, v.to_string())
                            .with_partition(partition),
                    )
                    .await
                    .unwrap();
            }
            self.producer.flush(TXN_TIMEOUT).await.unwrap();
        })
    }

    fn commit(&self) {
        self.runtime
            .block_on(self.producer.commit_transaction(TXN_TIMEOUT))
            .unwrap();
    }

    fn producer_id(&self) -> i64 {
        self.producer.identity().unwrap().producer_id
    }
}

#[test]
fn txn_admin_commands() {
    let b = start_broker(&["num.partitions=1"]);
    let g = |args: &[&str]| gregor(&b.addr, args, b"");
    ok(&g(&["topic", "create", "tt", "--partitions", "2"]));
    // One plain record first: the transaction then starts at offset 1.
    ok(&gregor(
        &b.addr,
        &["produce", "tt", "--partition", "0"],
        b"plain\n",
    ));
    let tp = TxnProducer::new(&b.addr, "cli-tx");
    tp.write_open("tt", 0, &["t1", "t2"]);
    let pid = tp.producer_id();

    // txn list: text, JSON and every filter.
    let text = ok(&g(&["txn", "list"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "TRANSACTIONAL-ID  PRODUCER-ID  STATE", "{text}");
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        vec!["cli-tx", &pid.to_string(), "Ongoing"]
    );
    let v = json(&g(&[
        "txn", "list", "--state", "Ongoing", "--format", "json",
    ]));
    assert_eq!(
        v,
        serde_json::json!([{"transactional_id": "cli-tx", "producer_id": pid, "state": "Ongoing"}])
    );
    let v = json(&g(&[
        "txn",
        "list",
        "--state",
        "CompleteCommit",
        "--state",
        "Empty",
        "--format",
        "json",
    ]));
    assert_eq!(v, serde_json::json!([]));
    assert_eq!(
        ok(&g(&["txn", "list", "--state", "CompleteCommit"])),
        "TRANSACTIONAL-ID  PRODUCER-ID  STATE\n"
    );
    let pid_arg = pid.to_string();
    let other_pid = (pid + 1000).to_string();
    let count = |args: &[&str]| {
        let mut all = vec!["txn", "list", "--format", "json"];
        all.extend_from_slice(args);
        json(&g(&all)).as_array().unwrap().len()
    };
    assert_eq!(count(&["--producer-id", &pid_arg]), 1);
    assert_eq!(count(&["--producer-id", &other_pid]), 0);
    assert_eq!(
        count(&["--producer-id", &other_pid, "--producer-id", &pid_arg]),
        1
    );
    assert_eq!(count(&["--min-duration-ms", "0"]), 1);
    assert_eq!(count(&["--min-duration-ms", "3600000"]), 0);
    one_line_error(
        &g(&["txn", "list", "--state", "Bogus"]),
        "unknown transaction state 'Bogus'",
    );

    // txn describe.
    let text = ok(&g(&["txn", "describe", "cli-tx"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        vec![
            "TRANSACTIONAL-ID",
            "STATE",
            "PRODUCER-ID",
            "EPOCH",
            "TIMEOUT-MS",
            "START-TIME-MS",
            "DURATION-MS",
            "PARTITIONS"
        ]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        row[..5],
        ["cli-tx", "Ongoing", &pid_arg, "0", "50000"],
        "{text}"
    );
    assert!(row[5].parse::<i64>().unwrap() > 1_600_000_000_000, "{text}");
    assert!(row[6].parse::<i64>().unwrap() >= 0, "{text}");
    assert_eq!(row[7], "tt-0");
    let v = json(&g(&["txn", "describe", "cli-tx", "--format", "json"]));
    let d = &v[0];
    assert_eq!(d["transactional_id"], "cli-tx");
    assert_eq!(d["state"], "Ongoing");
    assert_eq!(d["producer_id"], pid);
    assert_eq!(d["producer_epoch"], 0);
    assert_eq!(d["timeout_ms"], 50000);
    assert!(
        d["start_time_ms"].as_i64().unwrap() > 1_600_000_000_000,
        "{v}"
    );
    assert!(d["duration_ms"].as_i64().unwrap() >= 0, "{v}");
    assert_eq!(
        d["partitions"],
        serde_json::json!([{"topic": "tt", "partition": 0}])
    );
    // An unknown id: the known ones are still shown, then a one-line error and exit 1.
    let out = g(&["txn", "describe", "cli-tx", "nope"]);
    one_line_error(&out, "transactional id 'nope' does not exist");
    assert!(String::from_utf8_lossy(&out.stdout).contains("cli-tx"));
    one_line_error(
        &g(&["txn", "describe", "nope", "--format", "json"]),
        "transactional id 'nope' does not exist",
    );

    // txn producers: the plain producer and the open transaction (from offset 1).
    let text = ok(&g(&["txn", "producers", "tt"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        vec![
            "PARTITION",
            "PRODUCER-ID",
            "EPOCH",
            "LAST-SEQUENCE",
            "LAST-TIMESTAMP",
            "COORDINATOR-EPOCH",
            "TXN-START-OFFSET"
        ]
    );
    assert_eq!(lines.len(), 3, "{text}");
    let txn_row: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|r| r[1] == pid_arg)
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!((txn_row[0], txn_row[2], txn_row[3]), ("0", "0", "1"));
    assert_eq!(txn_row[6], "1", "{text}");
    let v = json(&g(&["txn", "producers", "tt", "--format", "json"]));
    assert_eq!(v["topic"], "tt");
    assert_eq!(v["partitions"][1]["partition"], 1);
    assert_eq!(v["partitions"][1]["producers"], serde_json::json!([]));
    let on0 = v["partitions"][0]["producers"].as_array().unwrap();
    assert_eq!(on0.len(), 2, "{v}");
    let txn = on0.iter().find(|p| p["producer_id"] == pid).unwrap();
    assert_eq!(txn["current_txn_start_offset"], 1, "{v}");
    assert_eq!(txn["last_sequence"], 1, "{v}");
    let plain = on0.iter().find(|p| p["producer_id"] != pid).unwrap();
    assert_eq!(plain["current_txn_start_offset"], serde_json::Value::Null);
    let v = json(&g(&[
        "txn",
        "producers",
        "tt",
        "--partition",
        "1",
        "--format",
        "json",
    ]));
    assert_eq!(
        v,
        serde_json::json!({"topic": "tt", "partitions": [{"partition": 1, "producers": []}]})
    );
    assert_eq!(
        ok(&g(&["txn", "producers", "tt", "--partition", "1"])),
        "no active producers on topic 'tt'\n"
    );
    one_line_error(
        &g(&["txn", "producers", "tt", "--partition", "5"]),
        "topic 'tt' has no partition 5",
    );
    one_line_error(
        &g(&["txn", "producers", "missing"]),
        "topic 'missing' does not exist",
    );

    // After commit.
    tp.commit();
    let v = json(&g(&["txn", "describe", "cli-tx", "--format", "json"]));
    assert_eq!(v[0]["state"], "CompleteCommit", "{v}");
    assert_eq!(v[0]["duration_ms"], serde_json::Value::Null, "{v}");
    assert_eq!(count(&["--state", "Ongoing"]), 0);
    assert_eq!(count(&["--state", "CompleteCommit"]), 1);
    let v = json(&g(&[
        "txn",
        "producers",
        "tt",
        "--partition",
        "0",
        "--format",
        "json",
    ]));
    let txn = v["partitions"][0]["producers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["producer_id"] == pid)
        .cloned()
        .unwrap();
    assert_eq!(
        txn["current_txn_start_offset"],
        serde_json::Value::Null,
        "{v}"
    );

    // No broker: one line, exit 1.
    let dead = format!("127.0.0.1:{}", free_port());
    for args in [
        vec!["txn", "list"],
        vec!["txn", "describe", "x"],
        vec!["txn", "producers", "t"],
    ] {
        one_line_error(
            &gregor(&dead, &args, b""),
            &format!("cannot reach {dead}: connection refused"),
        );
    }
}

#[test]
fn elect_leaders_and_reassign_text_and_json() {
    let b = start_broker(&[]);
    ok(&gregor(
        &b.addr,
        &["topic", "create", "moves", "--partitions", "2"],
        b"",
    ));
    // Elections: nothing is needed on a one-broker cluster.
    let text = ok(&gregor(&b.addr, &["cluster", "elect-leaders"], b""));
    assert!(text.contains("No partition needed an election."), "{text}");
    let v = json(&gregor(
        &b.addr,
        &["cluster", "elect-leaders", "--format", "json"],
        b"",
    ));
    assert_eq!(v, serde_json::json!([]));
    let text = ok(&gregor(
        &b.addr,
        &["cluster", "elect-leaders", "--topic", "moves"],
        b"",
    ));
    assert!(text.contains("TOPIC  PARTITION  RESULT"), "{text}");
    assert!(
        text.contains("moves  1          ELECTION_NOT_NEEDED"),
        "{text}"
    );
    let refused = gregor(
        &b.addr,
        &["cluster", "elect-leaders", "--partition", "0"],
        b"",
    );
    assert!(!refused.status.success(), "--partition needs --topic");
    let unknown = gregor(
        &b.addr,
        &["cluster", "elect-leaders", "--topic", "nope"],
        b"",
    );
    one_line_error(&unknown, "nope");

    // Reassignment: list, generate, execute, verify, bad input.
    let text = ok(&gregor(&b.addr, &["topic", "reassign", "--list"], b""));
    assert!(
        text.contains("No partition reassignment is under way."),
        "{text}"
    );
    let v = json(&gregor(
        &b.addr,
        &["topic", "reassign", "--list", "--format", "json"],
        b"",
    ));
    assert_eq!(v, serde_json::json!([]));
    let gen = [
        "topic",
        "reassign",
        "--generate",
        "--topics",
        "moves",
        "--broker-list",
        "1",
    ];
    let text = ok(&gregor(&b.addr, &gen, b""));
    assert!(
        text.contains("Current partition replica assignment"),
        "{text}"
    );
    assert!(
        text.contains("Proposed partition reassignment configuration"),
        "{text}"
    );
    let mut gen_json = gen.to_vec();
    gen_json.extend(["--format", "json"]);
    let v = json(&gregor(&b.addr, &gen_json, b""));
    let proposed = v["proposed"]["partitions"].as_array().unwrap();
    assert_eq!(proposed.len(), 2, "{v}");
    assert_eq!(proposed[1]["replicas"], serde_json::json!([1]), "{v}");
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.json");
    std::fs::write(&plan, v["proposed"].to_string()).unwrap();
    let plan = plan.to_str().unwrap();
    let text = ok(&gregor(
        &b.addr,
        &[
            "topic",
            "reassign",
            "--execute",
            "--reassignment-json-file",
            plan,
        ],
        b"",
    ));
    assert!(
        text.contains("Successfully started partition reassignments for moves-0,moves-1"),
        "{text}"
    );
    let text = ok(&gregor(
        &b.addr,
        &[
            "topic",
            "reassign",
            "--verify",
            "--reassignment-json-file",
            plan,
        ],
        b"",
    ));
    assert!(
        text.contains("Reassignment of partition moves-0 is complete."),
        "{text}"
    );
    one_line_error(
        &gregor(
            &b.addr,
            &[
                "topic",
                "reassign",
                "--generate",
                "--topics",
                "moves",
                "--broker-list",
                "1,1",
            ],
            b"",
        ),
        "names a broker twice",
    );
    one_line_error(
        &gregor(
            &b.addr,
            &[
                "topic",
                "reassign",
                "--generate",
                "--topics",
                "moves",
                "--broker-list",
                "7",
            ],
            b"",
        ),
        "broker 7",
    );
    one_line_error(
        &gregor(&b.addr, &["topic", "reassign", "--execute"], b""),
        "--reassignment-json-file is required",
    );
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{not json").unwrap();
    one_line_error(
        &gregor(
            &b.addr,
            &[
                "topic",
                "reassign",
                "--execute",
                "--reassignment-json-file",
                bad.to_str().unwrap(),
            ],
            b"",
        ),
        "is not a reassignment plan",
    );
    let missing = dir.path().join("missing.json");
    std::fs::write(
        &missing,
        r#"{"version":1,"partitions":[{"topic":"moves","partition":9,"replicas":[1]}]}"#,
    )
    .unwrap();
    one_line_error(
        &gregor(
            &b.addr,
            &[
                "topic",
                "reassign",
                "--execute",
                "--reassignment-json-file",
                missing.to_str().unwrap(),
            ],
            b"",
        ),
        "moves-9 does not exist",
    );
}
