//! `gregor consume TOPIC`: prints records as text (value, or key TAB value) or JSON lines.
//! Without `--group` it assigns all partitions (or `--partition`) itself; with `--group` it
//! subscribes and commits the offsets of the records it printed.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use gregor_client::metadata::Cluster;
use gregor_client::{ClientConfig, Consumer, ConsumerRecord};

use gregor_client::{AdminClient, OffsetSpec};

use crate::common::{check_reachable, json_bytes, json_str, stderr_is_terminal, ConnArgs};

/// Output format of `gregor consume`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The value (or `key<TAB>value` with --print-key), one record per line.
    Text,
    /// One JSON object per line: topic, partition, offset, timestamp, key, value, headers.
    Json,
}

/// Arguments of `gregor consume`.
#[derive(Args)]
pub struct ConsumeArgs {
    /// The topic to read.
    topic: String,
    /// Start at the beginning of the log (with --group: when the group has no offset).
    #[arg(long, conflicts_with_all = ["offset", "from_timestamp"])]
    from_beginning: bool,
    /// Start every partition at the first record whose timestamp is at least MS
    /// (milliseconds since the epoch); a partition with no such record starts at its end.
    #[arg(long, value_name = "MS", conflicts_with = "offset")]
    from_timestamp: Option<i64>,
    /// Start at this offset of --partition.
    #[arg(long, requires = "partition", conflicts_with = "group")]
    offset: Option<i64>,
    /// Read only this partition.
    #[arg(long, conflicts_with = "group")]
    partition: Option<i32>,
    /// Consumer group: subscribe and commit the offsets of printed records.
    #[arg(long)]
    group: Option<String>,
    /// Stop after N records.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Stop after T ms without a record (default: run until Ctrl-C or --count).
    #[arg(long, value_name = "T")]
    timeout_ms: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// With --format text, print `key<TAB>value`.
    #[arg(long)]
    print_key: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Formats one record as a line (without the newline).
pub fn format_record(r: &ConsumerRecord, format: Format, print_key: bool) -> String {
    let text = |b: &Option<bytes::Bytes>| match b {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => "null".to_string(),
    };
    match format {
        Format::Text if print_key => format!("{}\t{}", text(&r.key), text(&r.value)),
        Format::Text => text(&r.value),
        Format::Json => {
            let headers: Vec<String> = r
                .headers
                .iter()
                .map(|(k, v)| format!("{}:{}", json_str(k), json_bytes(v.as_deref())))
                .collect();
            format!(
                "{{\"topic\":{},\"partition\":{},\"offset\":{},\"timestamp\":{},\"key\":{},\"value\":{},\"headers\":{{{}}}}}",
                json_str(&r.topic),
                r.partition,
                r.offset,
                r.timestamp,
                json_bytes(r.key.as_deref()),
                json_bytes(r.value.as_deref()),
                headers.join(",")
            )
        }
    }
}

/// The partition count of `topic` (auto-creating it if the broker does).
pub async fn partition_count(config: &ClientConfig, topic: &str) -> Result<i32> {
    let timeout = Duration::from_millis(
        config
            .get("request.timeout.ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(30_000),
    );
    let cluster = Cluster::new(config.bootstrap_servers()?, "gregor-cli-metadata", timeout);
    let n = cluster
        .wait_for_partitions(
            topic,
            Instant::now() + timeout,
            Duration::from_millis(100),
            timeout.as_millis() as u64,
        )
        .await
        .with_context(|| format!("cannot get metadata of topic {topic}"))?;
    Ok(n)
}

/// Builds a consumer reading `topic` from the beginning or the end: subscribed when
/// `group` is set, else assigned all partitions.
pub async fn open_consumer(
    config: &ClientConfig,
    topic: &str,
    group: bool,
    partition: Option<i32>,
    start: Start,
) -> Result<Consumer> {
    let mut consumer = Consumer::new(config)?;
    check_reachable(config).await?;
    if group {
        consumer.subscribe(vec![topic])?;
        if let Start::Timestamp(ms) = start {
            // The group assigns partitions in `poll`: join first, then seek what we got.
            let deadline = Instant::now() + request_timeout(config);
            while consumer.assignment().is_empty() {
                if Instant::now() >= deadline {
                    bail!(
                        "no partitions of topic {topic} were assigned to this group member in time"
                    );
                }
                // Records returned before the seek are dropped: nothing was printed or committed.
                consumer.poll(Duration::from_millis(100)).await?;
            }
            let partitions = consumer.assignment();
            seek_to_timestamp(config, &mut consumer, &partitions, ms).await?;
        }
        return Ok(consumer);
    }
    let count = partition_count(config, topic).await?;
    let partitions: Vec<(String, i32)> = match partition {
        Some(p) if p < 0 || p >= count => {
            bail!("partition {p} of topic {topic} does not exist ({count} partitions)")
        }
        Some(p) => vec![(topic.to_string(), p)],
        None => (0..count).map(|p| (topic.to_string(), p)).collect(),
    };
    consumer.assign(partitions.clone())?;
    match start {
        Start::Beginning => consumer.seek_to(&partitions, true).await?,
        Start::End => consumer.seek_to(&partitions, false).await?,
        Start::Offset(o) => {
            for (t, p) in &partitions {
                consumer.seek(t, *p, o)?;
            }
        }
        Start::Timestamp(ms) => seek_to_timestamp(config, &mut consumer, &partitions, ms).await?,
    }
    Ok(consumer)
}

fn request_timeout(config: &ClientConfig) -> Duration {
    Duration::from_millis(
        config
            .get("request.timeout.ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(30_000),
    )
}

/// Seeks each of `partitions` to its first offset with a timestamp >= `ms`, or to its end
/// when there is no such record.
async fn seek_to_timestamp(
    config: &ClientConfig,
    consumer: &mut Consumer,
    partitions: &[(String, i32)],
    ms: i64,
) -> Result<()> {
    // The admin client rejects consumer keys: give it only the connection settings.
    let mut admin_config = ClientConfig::new();
    for key in ["bootstrap.servers", "client.id", "request.timeout.ms"] {
        if let Some(v) = config.get(key) {
            admin_config.set(key, v.to_string());
        }
    }
    let admin = AdminClient::new(&admin_config)?;
    let requests = partitions
        .iter()
        .map(|(t, p)| (t.clone(), *p, OffsetSpec::Timestamp(ms)))
        .collect();
    let mut at_end = Vec::new();
    for (t, p, r) in admin
        .list_offsets(requests)
        .await
        .context("cannot look up offsets by timestamp")?
    {
        let (offset, _) =
            r.with_context(|| format!("cannot look up offset by timestamp of {t}-{p}"))?;
        if offset < 0 {
            at_end.push((t, p));
        } else {
            consumer.seek(&t, p, offset)?;
        }
    }
    if !at_end.is_empty() {
        consumer.seek_to(&at_end, false).await?;
    }
    Ok(())
}

/// Where an assigned consumer starts.
#[derive(Clone, Copy, Debug)]
pub enum Start {
    Beginning,
    End,
    Offset(i64),
    /// The first record with a timestamp (ms) at least this.
    Timestamp(i64),
}

/// Runs `gregor consume`.
pub async fn run(args: ConsumeArgs) -> Result<ExitCode> {
    let mut fixed = Vec::new();
    if let Some(g) = &args.group {
        fixed.push(("group.id", g.clone()));
        let reset = if args.from_beginning {
            "earliest"
        } else {
            "latest"
        };
        fixed.push(("auto.offset.reset", reset.to_string()));
    }
    let explicit_auto_commit = args.conn.props.iter().any(|p| {
        p.split_once('=')
            .is_some_and(|(k, _)| k.trim() == "enable.auto.commit")
    });
    if !explicit_auto_commit {
        // Commit exactly what was printed, not what was fetched.
        fixed.push(("enable.auto.commit", "false".to_string()));
    }
    let config = args.conn.client_config(&fixed)?;
    let start = match (args.from_beginning, args.offset, args.from_timestamp) {
        (_, Some(o), _) => Start::Offset(o),
        (_, None, Some(ms)) => Start::Timestamp(ms),
        (true, None, None) => Start::Beginning,
        (false, None, None) => Start::End,
    };
    let mut consumer = open_consumer(
        &config,
        &args.topic,
        args.group.is_some(),
        args.partition,
        start,
    )
    .await?;

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let mut to_commit: std::collections::BTreeMap<(String, i32), i64> = Default::default();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut result: Result<()> = Ok(());
    let progress = show_progress(stderr_is_terminal(), args.count);
    let mut last_progress = Instant::now();
    let mut progress_shown = false;
    'outer: loop {
        if progress && last_progress.elapsed() >= Duration::from_secs(1) {
            eprint!("\r{printed} records consumed");
            progress_shown = true;
            last_progress = Instant::now();
        }
        if args.count.is_some_and(|c| printed >= c) {
            break;
        }
        let wait = match args.timeout_ms {
            Some(t) => {
                let left = (last_record + Duration::from_millis(t))
                    .saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                left
            }
            None => Duration::from_secs(1),
        };
        let wait = if progress {
            wait.min(Duration::from_secs(1))
        } else {
            wait
        };
        let records = tokio::select! {
            r = consumer.poll(wait) => r,
            _ = &mut ctrl_c => break,
        };
        let records = match records {
            Ok(r) => r,
            Err(e) => {
                result = Err(anyhow::Error::new(e).context("consuming failed"));
                break;
            }
        };
        if records.is_empty() {
            continue;
        }
        last_record = Instant::now();
        for r in &records {
            if args.count.is_some_and(|c| printed >= c) {
                break;
            }
            let line = format_record(r, args.format, args.print_key);
            if let Err(e) = writeln!(out, "{line}") {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    result = Err(anyhow::Error::new(e).context("cannot write to stdout"));
                }
                break 'outer;
            }
            printed += 1;
            to_commit.insert((r.topic.clone(), r.partition), r.offset + 1);
        }
        if let Err(e) = out.flush() {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                result = Err(anyhow::Error::new(e).context("cannot write to stdout"));
            }
            break;
        }
        if args.group.is_some() && !explicit_auto_commit {
            let offsets: Vec<_> = to_commit
                .iter()
                .map(|((t, p), o)| (t.clone(), *p, *o))
                .collect();
            if let Err(e) = consumer.commit_sync(&offsets).await {
                result = Err(anyhow::Error::new(e).context("committing offsets failed"));
                break;
            }
        }
    }
    let _ = out.flush();
    drop(out);
    if progress_shown {
        eprintln!("\r{printed} records consumed");
    }
    let closed = consumer.close().await;
    result?;
    closed.context("closing the consumer")?;
    Ok(ExitCode::SUCCESS)
}

/// Progress goes to stderr only on a terminal, and only for long runs (no --count, or
/// more than 10,000 records).
fn show_progress(stderr_terminal: bool, count: Option<u64>) -> bool {
    stderr_terminal && count.is_none_or(|c| c > 10_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_only_on_a_terminal_for_long_runs() {
        assert!(show_progress(true, None));
        assert!(show_progress(true, Some(10_001)));
        assert!(!show_progress(true, Some(10_000)));
        assert!(!show_progress(false, None));
        assert!(!show_progress(false, Some(50_000)));
    }
    use bytes::Bytes;

    #[test]
    fn formats_text_and_json() {
        let r = ConsumerRecord {
            topic: "t".into(),
            partition: 1,
            offset: 7,
            timestamp: 42,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(&[0xff, 0x00])),
            headers: vec![
                ("h".into(), Some(Bytes::from_static(b"v"))),
                ("n".into(), None),
            ],
            producer_id: -1,
        };
        assert_eq!(format_record(&r, Format::Text, true), "k\t\u{fffd}\u{0}");
        assert_eq!(
            format_record(&r, Format::Json, false),
            r#"{"topic":"t","partition":1,"offset":7,"timestamp":42,"key":"k","value":"/wA=","headers":{"h":"v","n":null}}"#
        );
    }
}
