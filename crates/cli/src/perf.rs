//! `gregor perf produce` and `gregor perf consume`: throughput (records/s, MB/s) and, for
//! produce, per-record send-to-acknowledgement latency percentiles. Progress goes to stderr
//! once a second when stderr is a terminal; the summary goes to stdout (text or `--json`).

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use clap::{Args, Subcommand};
use gregor_client::{Producer, ProducerRecord};

use crate::common::{check_reachable, stderr_is_terminal, ConnArgs};
use crate::consume::{open_consumer, Start};

/// `gregor perf` subcommands.
#[derive(Subcommand)]
pub enum PerfCommand {
    /// Produce N records of B bytes and report throughput and latency.
    Produce(PerfProduceArgs),
    /// Consume N records and report throughput.
    Consume(PerfConsumeArgs),
}

/// Arguments of `gregor perf produce`.
#[derive(Args)]
pub struct PerfProduceArgs {
    /// The topic (must exist or be auto-created by the broker).
    #[arg(long)]
    topic: String,
    /// Number of records to send.
    #[arg(long, value_name = "N")]
    records: u64,
    /// Value size in bytes.
    #[arg(long, value_name = "B")]
    record_size: usize,
    /// Acknowledgements required: 0, 1 or all.
    #[arg(long, value_parser = ["0", "1", "all", "-1"])]
    acks: Option<String>,
    /// `linger.ms`.
    #[arg(long)]
    linger_ms: Option<u64>,
    /// `batch.size` in bytes.
    #[arg(long)]
    batch_size: Option<u64>,
    /// Batch compression.
    #[arg(long, value_parser = ["none", "gzip", "snappy", "lz4", "zstd"])]
    compression: Option<String>,
    /// Cap on records per second (default: as fast as possible).
    #[arg(long, value_name = "RECORDS_PER_S")]
    throughput: Option<f64>,
    /// Produce inside transactions of this `transactional.id`, committing every
    /// `--commit-interval-ms`.
    #[arg(long, value_name = "ID")]
    transactional_id: Option<String>,
    /// With `--transactional-id`: how often the open transaction is committed.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    commit_interval_ms: u64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Arguments of `gregor perf consume`.
#[derive(Args)]
pub struct PerfConsumeArgs {
    /// The topic to read from the beginning.
    #[arg(long)]
    topic: String,
    /// Number of records to read.
    #[arg(long, value_name = "N")]
    records: u64,
    /// Consumer group (subscribe; default: assign all partitions).
    #[arg(long)]
    group: Option<String>,
    /// Give up after T ms without a record.
    #[arg(long, value_name = "T", default_value_t = 10_000)]
    timeout_ms: u64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Runs a `gregor perf` subcommand.
pub async fn run(command: PerfCommand) -> Result<ExitCode> {
    match command {
        PerfCommand::Produce(a) => produce(a).await,
        PerfCommand::Consume(a) => consume(a).await,
    }
}

/// Latency percentiles in ms of sorted microsecond samples.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Latency {
    pub avg: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    /// `samples` are microseconds, sorted ascending.
    pub fn from_sorted_us(samples: &[u64]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        let at = |q: f64| {
            let i = ((samples.len() as f64) * q).ceil() as usize;
            ms(samples[i.saturating_sub(1).min(samples.len() - 1)])
        };
        Latency {
            avg: samples.iter().sum::<u64>() as f64 / samples.len() as f64 / 1000.0,
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            p999: at(0.999),
            max: ms(*samples.last().expect("non-empty")),
        }
    }
}

fn rates(records: u64, bytes: u64, elapsed: Duration) -> (f64, f64) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    (
        records as f64 / secs,
        bytes as f64 / (1024.0 * 1024.0) / secs,
    )
}

/// A task printing `what` progress lines once a second while stderr is a terminal.
fn progress(
    done: Arc<AtomicU64>,
    bytes_per_record: Arc<AtomicU64>,
    what: &'static str,
) -> Option<tokio::task::JoinHandle<()>> {
    if !stderr_is_terminal() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut last = 0u64;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = done.load(Ordering::Relaxed);
            let n = now - last;
            last = now;
            let bytes = n * bytes_per_record.load(Ordering::Relaxed);
            eprintln!(
                "{now} records {what}, {n} records/s ({:.2} MB/s)",
                bytes as f64 / (1024.0 * 1024.0)
            );
        }
    }))
}

fn payload(size: usize) -> Bytes {
    // Printable pseudo-random bytes (xorshift), the same for every record.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'A' + (x % 26) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

async fn produce(args: PerfProduceArgs) -> Result<ExitCode> {
    let mut fixed = Vec::new();
    if let Some(a) = &args.acks {
        fixed.push(("acks", a.clone()));
    }
    if let Some(c) = &args.compression {
        fixed.push(("compression.type", c.clone()));
    }
    if let Some(l) = args.linger_ms {
        fixed.push(("linger.ms", l.to_string()));
    }
    if let Some(b) = args.batch_size {
        fixed.push(("batch.size", b.to_string()));
    }
    if let Some(id) = &args.transactional_id {
        fixed.push(("transactional.id", id.clone()));
    }
    let config = args.conn.client_config(&fixed)?;
    let producer = Producer::new(&config)?;
    check_reachable(&config).await?;
    let txn_timeout = Duration::from_secs(30);
    let commit_every = Duration::from_millis(args.commit_interval_ms.max(1));
    let mut commits = 0u64;
    if args.transactional_id.is_some() {
        producer.init_transactions(txn_timeout).await?;
        producer.begin_transaction()?;
    }
    let mut last_commit = Instant::now();
    let value = payload(args.record_size);
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(args.records as usize)));
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let ticker = progress(
        acked.clone(),
        Arc::new(AtomicU64::new(args.record_size as u64)),
        "sent",
    );
    // Keep unacknowledged records well under buffer.memory: the producer then never has
    // to block for buffer space (and a full buffer is not what this tool measures).
    let per_record = args.record_size + 128;
    let window = (producer.config().buffer_memory / 2 / per_record).max(1);
    let window = Arc::new(tokio::sync::Semaphore::new(window));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    let rate = args.throughput.filter(|t| *t > 0.0);
    for i in 0..args.records {
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let permit = window.clone().acquire_owned().await?;
        let sent_at = Instant::now();
        let fut = match producer
            .send(ProducerRecord::new(args.topic.clone(), value.clone()))
            .await
        {
            Ok(f) => f,
            Err(e) => {
                if let Some(t) = ticker {
                    t.abort();
                }
                bail!("send failed after {i} records: {e}");
            }
        };
        let (latencies, acked, failed, first_error) = (
            latencies.clone(),
            acked.clone(),
            failed.clone(),
            first_error.clone(),
        );
        tasks.spawn(async move {
            let _permit = permit;
            match fut.await {
                Ok(_) => {
                    let us = sent_at.elapsed().as_micros() as u64;
                    latencies.lock().unwrap().push(us);
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    first_error.lock().unwrap().get_or_insert(e.to_string());
                }
            }
        });
        // Reap finished tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
        if args.transactional_id.is_some() && last_commit.elapsed() >= commit_every {
            producer.commit_transaction(txn_timeout).await?;
            producer.begin_transaction()?;
            commits += 1;
            last_commit = Instant::now();
        }
    }
    if args.transactional_id.is_some() {
        producer.commit_transaction(txn_timeout).await?;
        commits += 1;
    }
    let close_timeout = producer.config().delivery_timeout + Duration::from_secs(5);
    let closed = producer.close(close_timeout).await;
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    if let Some(t) = ticker {
        t.abort();
    }
    closed?;
    let mut samples = std::mem::take(&mut *latencies.lock().unwrap());
    samples.sort_unstable();
    let ok = samples.len() as u64;
    let lat = Latency::from_sorted_us(&samples);
    let (rps, mbps) = rates(ok, ok * args.record_size as u64, elapsed);
    let failed = failed.load(Ordering::Relaxed);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "records": ok,
                "failed": failed,
                "elapsed_ms": elapsed.as_secs_f64() * 1000.0,
                "records_per_sec": rps,
                "mb_per_sec": mbps,
                "latency_avg_ms": lat.avg,
                "latency_p50_ms": lat.p50,
                "latency_p95_ms": lat.p95,
                "latency_p99_ms": lat.p99,
                "latency_p999_ms": lat.p999,
                "latency_max_ms": lat.max,
                "transactions_committed": commits,
            })
        );
    } else {
        println!(
            "{ok} records sent, {rps:.1} records/sec ({mbps:.2} MB/sec), latency ms: avg {:.2}, p50 {:.2}, p95 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2}",
            lat.avg, lat.p50, lat.p95, lat.p99, lat.p999, lat.max
        );
        if commits > 0 {
            println!("{commits} transactions committed");
        }
    }
    if failed > 0 {
        eprintln!(
            "gregor: error: {failed} record(s) failed; first: {}",
            first_error.lock().unwrap().clone().unwrap_or_default()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn consume(args: PerfConsumeArgs) -> Result<ExitCode> {
    let mut fixed = Vec::new();
    if let Some(g) = &args.group {
        fixed.push(("group.id", g.clone()));
        fixed.push(("auto.offset.reset", "earliest".to_string()));
    }
    let config = args.conn.client_config(&fixed)?;
    let mut consumer = open_consumer(
        &config,
        &args.topic,
        args.group.is_some(),
        None,
        Start::Beginning,
    )
    .await?;
    let done = Arc::new(AtomicU64::new(0));
    let avg_size = Arc::new(AtomicU64::new(0));
    let ticker = progress(done.clone(), avg_size.clone(), "consumed");
    let start = Instant::now();
    let mut last_record = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut result = Ok(());
    while records < args.records {
        let left = (last_record + Duration::from_millis(args.timeout_ms))
            .saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let batch = match consumer.poll(left).await {
            Ok(b) => b,
            Err(e) => {
                result = Err(anyhow::Error::new(e).context("consuming failed"));
                break;
            }
        };
        if batch.is_empty() {
            continue;
        }
        last_record = Instant::now();
        for r in batch.iter().take((args.records - records) as usize) {
            records += 1;
            bytes += r.key.as_ref().map_or(0, |k| k.len() as u64)
                + r.value.as_ref().map_or(0, |v| v.len() as u64);
        }
        done.store(records, Ordering::Relaxed);
        avg_size.store(bytes / records.max(1), Ordering::Relaxed);
    }
    let elapsed = start.elapsed();
    if let Some(t) = ticker {
        t.abort();
    }
    let closed = consumer.close().await;
    result?;
    closed?;
    let (rps, mbps) = rates(records, bytes, elapsed);
    let mb = bytes as f64 / (1024.0 * 1024.0);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "records": records,
                "bytes": bytes,
                "elapsed_ms": elapsed.as_secs_f64() * 1000.0,
                "records_per_sec": rps,
                "mb_per_sec": mbps,
            })
        );
    } else {
        println!("{records} records consumed, {mb:.2} MB, {rps:.1} records/sec ({mbps:.2} MB/sec)");
    }
    if records < args.records {
        eprintln!(
            "gregor: error: only {records} of {} records arrived (no record for {} ms)",
            args.records, args.timeout_ms
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_sorted_samples() {
        let samples: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let l = Latency::from_sorted_us(&samples);
        assert_eq!(l.p50, 500.0);
        assert_eq!(l.p95, 950.0);
        assert_eq!(l.p99, 990.0);
        assert_eq!(l.p999, 999.0);
        assert_eq!(l.max, 1000.0);
        assert!((l.avg - 500.5).abs() < 1e-9);
        assert_eq!(Latency::from_sorted_us(&[]), Latency::default());
    }
}
