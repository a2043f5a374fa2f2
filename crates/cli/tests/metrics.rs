//! The metrics and health endpoint of a `gregor broker` process (`metrics.listener`),
//! scraped over HTTP while librdkafka produces and consumes: the counters match what the test
//! did (records and bytes in, bytes out, requests, an error it caused), the state gauges
//! what the broker holds, the health checks answer, and Debian's `promtool check metrics`
//! accepts the exposition; the Grafana dashboard queries only exported series; a real
//! Prometheus server (Debian's) scrapes the broker and answers a query. Every process is
//! killed by its guard on every path.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use support::http::{get, value};
use support::{free_port, BrokerProcess};

#[test]
fn a_scrape_counts_what_clients_did_and_the_health_checks_answer() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let listener = format!("metrics.listener=http://127.0.0.1:{metrics_port}");
    // Flushes every 100 records, so the flush histogram has some.
    let broker = BrokerProcess::start(
        dir.path(),
        free_port(),
        &[&listener, "log.flush.interval.messages=100"],
    );
    let addr = broker.addr();

    let (live, body) = get(metrics_port, "/v1/status/live");
    assert_eq!((live, body.as_str()), (200, "live\n"));
    let (ready, body) = get(metrics_port, "/v1/status/ready");
    assert_eq!(ready, 200, "{body}");
    assert_eq!(get(metrics_port, "/nope").0, 404);

    // 1,000 records of 100 bytes in, all read back.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let value_bytes = vec![b'v'; 100];
    for _ in 0..1000 {
        loop {
            match producer.send(
                BaseRecord::<(), [u8]>::to("m")
                    .partition(0)
                    .payload(&value_bytes),
            ) {
                Ok(()) => break,
                Err((_, _)) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("group.id", "metrics-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("m", 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut read = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while read < 1000 && std::time::Instant::now() < deadline {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            read += 1;
        }
    }
    assert_eq!(read, 1000);
    // Nothing more to read: the consumer's fetches wait in the purgatory (fetch.wait.max.ms,
    // 500 ms by default), which is their remote time.
    assert!(consumer.poll(Duration::from_millis(1200)).is_none());
    // The group commits 600: a lag of 400.
    let mut at = TopicPartitionList::new();
    at.add_partition_offset("m", 0, Offset::Offset(600))
        .unwrap();
    consumer
        .commit(&at, rdkafka::consumer::CommitMode::Sync)
        .unwrap();
    drop(consumer);
    // A fetch past the end: OFFSET_OUT_OF_RANGE, counted as a Fetch error.
    let stray: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("group.id", "metrics-stray")
        .set("auto.offset.reset", "error")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("m", 0, Offset::Offset(1_000_000))
        .unwrap();
    stray.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut refused = false;
    while !refused && std::time::Instant::now() < deadline {
        refused = matches!(stray.poll(Duration::from_millis(100)), Some(Err(_)));
    }
    assert!(refused, "the consumer saw the out-of-range error");

    let (status, text) = get(metrics_port, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        value(
            &text,
            r#"kafka_server_brokertopicmetrics_messages_in_total{topic="m"}"#
        ),
        1000.0
    );
    let bytes_in = value(
        &text,
        r#"kafka_server_brokertopicmetrics_bytes_in_bytes_total{topic="m"}"#,
    );
    assert!((100_000.0..200_000.0).contains(&bytes_in), "{bytes_in}");
    let bytes_out = value(
        &text,
        r#"kafka_server_brokertopicmetrics_bytes_out_bytes_total{topic="m"}"#,
    );
    assert!(
        bytes_out >= bytes_in,
        "every batch was read once at least: {bytes_out}"
    );
    assert!(
        value(
            &text,
            r#"kafka_network_requestmetrics_requests_total{request="Produce"}"#
        ) >= 1.0
    );
    assert!(
        value(
            &text,
            r#"kafka_network_requestmetrics_total_time_seconds_count{request="Fetch"}"#
        ) >= 1.0
    );
    assert!(
        value(
            &text,
            r#"kafka_network_requestmetrics_errors_total{request="Fetch",error="OFFSET_OUT_OF_RANGE"}"#
        ) >= 1.0
    );
    // One broker leads everything it hosts: `m` and `__consumer_offsets` (the groups).
    let leaders = value(&text, "kafka_server_replicamanager_leaders");
    assert!(leaders >= 2.0, "{leaders}");
    assert_eq!(
        value(&text, "kafka_server_replicamanager_partitions"),
        leaders
    );
    assert_eq!(
        value(
            &text,
            "kafka_server_replicamanager_under_replicated_partitions"
        ),
        0.0
    );
    assert_eq!(
        value(&text, "kafka_controller_kafkacontroller_active_controllers"),
        1.0
    );
    assert_eq!(
        value(&text, "kafka_controller_kafkacontroller_offline_partitions"),
        0.0
    );
    assert!(value(&text, "process_open_fds") > 3.0);
    assert_eq!(
        value(
            &text,
            r#"kafka_consumergroup_lag{group="metrics-reader",topic="m",partition="0"}"#
        ),
        400.0
    );
    let log_size = value(
        &text,
        r#"kafka_log_log_size_bytes{topic="m",partition="0"}"#,
    );
    assert!(log_size >= bytes_in, "{log_size} {bytes_in}");
    assert_eq!(
        value(&text, r#"kafka_log_log_segments{topic="m",partition="0"}"#),
        1.0
    );
    assert!(
        value(
            &text,
            "kafka_server_socketservermetrics_connection_creation_total"
        ) >= 3.0
    );
    // No acks=all produce waits now; a parked fetch of a client may.
    let parked = value(
        &text,
        r#"kafka_server_delayedoperationpurgatory_purgatory_size{delayed_operation="Fetch"}"#,
    );
    assert!((0.0..=3.0).contains(&parked), "{parked}");
    assert_eq!(
        value(
            &text,
            r#"kafka_server_delayedoperationpurgatory_purgatory_size{delayed_operation="Produce"}"#
        ),
        0.0
    );
    assert!(
        value(
            &text,
            r#"kafka_coordinator_group_groupmetadatamanager_groups{state="Empty"}"#
        ) >= 1.0
    );
    // Request time, split as Kafka splits it: the long-polls' wait is remote time, the
    // produces' work local time; every request has a queue and a send time.
    let fetch_remote = value(
        &text,
        r#"kafka_network_requestmetrics_remote_time_seconds_sum{request="Fetch"}"#,
    );
    assert!(fetch_remote >= 0.4, "fetch remote time {fetch_remote}");
    let fetch_total = value(
        &text,
        r#"kafka_network_requestmetrics_total_time_seconds_sum{request="Fetch"}"#,
    );
    assert!(
        fetch_total >= fetch_remote,
        "{fetch_total} < {fetch_remote}"
    );
    for part in [
        "request_queue_time",
        "local_time",
        "remote_time",
        "response_send_time",
    ] {
        let count = value(
            &text,
            &format!(r#"kafka_network_requestmetrics_{part}_seconds_count{{request="Produce"}}"#),
        );
        assert!(count >= 1.0, "{part}: {count}");
    }
    assert!(
        value(
            &text,
            r#"kafka_network_requestmetrics_local_time_seconds_sum{request="Produce"}"#
        ) > 0.0
    );
    // The broker's heartbeats ran on its own controller.
    assert!(
        value(
            &text,
            "kafka_controller_controllereventmanager_event_queue_processing_time_seconds_count"
        ) >= 1.0
    );
    assert!(value(&text, "kafka_log_logflushstats_log_flush_seconds_count") >= 1.0);
    assert!(value(&text, "kafka_server_raft_metrics_current_leader") >= 0.0);
    assert!(value(&text, "kafka_server_raft_metrics_log_end_offset") >= 0.0);
    assert_eq!(
        value(&text, "kafka_server_replicafetchermanager_max_lag"),
        0.0
    );
    assert!(value(&text, "process_resident_memory_bytes") > 1e6);
    assert!(value(&text, "kafka_server_metadata_last_applied_offset") > 0.0);

    dashboard_queries_name_exported_series(&text);

    // The exposition passes Prometheus' own linter (installed by ./test from Debian).
    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            // promtool (2.42) lints the Prometheus text format, where a counter's HELP names
            // the `_total` series; OpenMetrics, which the endpoint serves, puts it on the
            // family name. That one lint is expected for each counter; any other fails.
            let report = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            let unexpected: Vec<&str> = report
                .lines()
                .filter(|l| {
                    let counter_help = l.ends_with(" no help text")
                        && l.split(' ').next().is_some_and(|n| n.ends_with("_total"));
                    !l.trim().is_empty() && !counter_help
                })
                .collect();
            assert!(unexpected.is_empty(), "promtool check metrics: {report}");
        }
        Err(e) => panic!("promtool is needed (Debian package prometheus; ./test installs it): {e}"),
    }
    drop(broker);
}

#[test]
fn a_bad_metrics_listener_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gregor"))
        .args([
            "broker",
            "--override",
            &format!("listeners=PLAINTEXT://127.0.0.1:{}", free_port()),
            "--override",
            &format!("log.dirs={}", dir.path().display()),
            "--override",
            "metrics.listener=http://nowhere:notaport",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("metrics.listener"), "{stderr}");
}

/// The Grafana dashboard (`deploy/grafana`, file-provisioning format) parses, and every
/// query names only series this broker exports (`text`, a scrape).
fn dashboard_queries_name_exported_series(text: &str) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/gregor-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());
    // Exported names: each family (`# TYPE name kind`) with the suffixes its samples carry.
    let mut exported = std::collections::BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split(' ');
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for s in suffixes {
                exported.insert(format!("{name}{s}"));
            }
        }
    }
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            queries += 1;
            let names = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("kafka_") || w.starts_with("process_"));
            for name in names {
                assert!(
                    exported.contains(name),
                    "dashboard query {expr:?} names {name}, which is not exported"
                );
            }
        }
    }
    assert!(queries >= 20, "{queries} queries");
}

/// A child process killed and reaped when dropped (on every path).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let listener = format!("metrics.listener=http://127.0.0.1:{metrics_port}");
    let broker = BrokerProcess::start(&dir.path().join("broker"), free_port(), &[&listener]);
    let prometheus_port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: gregor\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
        ),
    )
    .unwrap();
    let _prometheus = Child(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is needed (Debian package prometheus; ./test installs it)"),
    );
    // Bounded: Prometheus starts, scrapes every second, and answers the query.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let query = "/api/v1/query?query=kafka_controller_kafkacontroller_active_controllers";
    loop {
        let answer = TcpStream::connect(("127.0.0.1", prometheus_port))
            .ok()
            .map(|_| get(prometheus_port, query));
        if let Some((200, body)) = &answer {
            let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            if let Some(sample) = v["data"]["result"].as_array().and_then(|r| r.first()) {
                assert_eq!(sample["metric"]["job"], "gregor", "{v}");
                assert_eq!(sample["value"][1], "1", "one active controller: {v}");
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Prometheus never had the series: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(broker);
}
