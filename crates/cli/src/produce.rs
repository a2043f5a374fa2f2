//! `gregor produce TOPIC`: one record per input line (stdin or `--file`), optional key
//! split on the first `--key-separator`, fixed `--header`s. Silent on success unless
//! `--verbose`; exits non-zero if any record failed.

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Args;
use gregor_client::{DeliveryFuture, Producer, ProducerRecord};

use crate::common::{check_reachable, parse_header, ConnArgs};

/// Arguments of `gregor produce`.
#[derive(Args)]
pub struct ProduceArgs {
    /// The topic to write to.
    topic: String,
    /// Read lines from this file instead of stdin.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Split each line into key and value on the first occurrence of SEP.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// A header added to every record, `key=value`; repeatable.
    #[arg(long = "header", value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// Write every record to this partition (default: the partitioner picks).
    #[arg(long)]
    partition: Option<i32>,
    /// Acknowledgements required: 0, 1 or all.
    #[arg(long, value_parser = ["0", "1", "all", "-1"])]
    acks: Option<String>,
    /// Batch compression.
    #[arg(long, value_parser = ["none", "gzip", "snappy", "lz4", "zstd"])]
    compression: Option<String>,
    /// Print `partition<TAB>offset` of every acknowledged record.
    #[arg(long, short)]
    verbose: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Splits `line` into (key, value) on the first `sep`; `None` if `sep` is absent.
pub fn split_key<'a>(line: &'a [u8], sep: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    if sep.is_empty() {
        return None;
    }
    let i = line.windows(sep.len()).position(|w| w == sep)?;
    Some((&line[..i], &line[i + sep.len()..]))
}

struct Outcome {
    failed: u64,
    first_error: Option<String>,
}

impl Outcome {
    fn fail(&mut self, what: String) {
        self.failed += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }
}

async fn settle(line: u64, fut: DeliveryFuture, verbose: bool, outcome: &mut Outcome) {
    match fut.await {
        Ok(md) => {
            if verbose {
                println!("{}\t{}", md.partition, md.offset);
            }
        }
        Err(e) => outcome.fail(format!("record from line {line}: {e}")),
    }
}

/// Runs `gregor produce`.
pub async fn run(args: ProduceArgs) -> Result<ExitCode> {
    let mut fixed = Vec::new();
    if let Some(a) = &args.acks {
        fixed.push(("acks", a.clone()));
    }
    if let Some(c) = &args.compression {
        fixed.push(("compression.type", c.clone()));
    }
    let config = args.conn.client_config(&fixed)?;
    let headers: Vec<(String, Option<Bytes>)> = args
        .headers
        .iter()
        .map(|h| parse_header(h).map(|(k, v)| (k, Some(Bytes::from(v)))))
        .collect::<Result<_>>()?;
    let producer = Producer::new(&config)?;
    check_reachable(&config).await?;

    // Lines are read on a plain thread so a slow stdin never blocks the runtime.
    let input: Box<dyn BufRead + Send> = match &args.file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(1024);
    std::thread::spawn(move || {
        let mut input = input;
        loop {
            let mut buf = Vec::new();
            match input.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {
                    if tx.blocking_send(Ok(buf)).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });

    let mut outcome = Outcome {
        failed: 0,
        first_error: None,
    };
    // Unacknowledged records are capped (count and estimated bytes) well under
    // buffer.memory, settling the oldest first.
    let byte_cap = producer.config().buffer_memory / 2;
    let mut pending: VecDeque<(u64, usize, DeliveryFuture)> = VecDeque::new();
    let mut pending_bytes = 0usize;
    let mut line_no = 0u64;
    let mut fatal = None;
    while let Some(line) = rx.recv().await {
        line_no += 1;
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                fatal = Some(anyhow::anyhow!("cannot read input: {e}"));
                break;
            }
        };
        let line = line.strip_suffix(b"\n").unwrap_or(&line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (key, value) = match &args.key_separator {
            Some(sep) => match split_key(line, sep.as_bytes()) {
                Some((k, v)) => (Some(Bytes::copy_from_slice(k)), v),
                None => {
                    outcome.fail(format!("line {line_no} has no key separator {sep:?}"));
                    continue;
                }
            },
            None => (None, line),
        };
        let size = key.as_ref().map_or(0, |k| k.len()) + value.len() + 128;
        while !pending.is_empty() && (pending.len() >= 4096 || pending_bytes + size > byte_cap) {
            let (n, sz, fut) = pending.pop_front().expect("non-empty");
            pending_bytes -= sz;
            settle(n, fut, args.verbose, &mut outcome).await;
        }
        let record = ProducerRecord {
            topic: args.topic.clone(),
            partition: args.partition,
            key,
            value: Some(Bytes::copy_from_slice(value)),
            headers: headers.clone(),
            timestamp: None,
        };
        match producer.send(record).await {
            Ok(fut) => {
                pending_bytes += size;
                pending.push_back((line_no, size, fut));
            }
            Err(e) => {
                // Usually not record-specific (metadata, partition, buffer): stop here.
                outcome.fail(format!("record from line {line_no}: {e}"));
                break;
            }
        }
    }
    let close_timeout = producer.config().delivery_timeout + Duration::from_secs(5);
    let closed = producer.close(close_timeout).await;
    for (n, _, fut) in pending {
        settle(n, fut, args.verbose, &mut outcome).await;
    }
    if let Some(e) = fatal {
        return Err(e);
    }
    closed.context("closing the producer")?;
    if outcome.failed > 0 {
        eprintln!(
            "gregor: error: {} record(s) failed; first: {}",
            outcome.failed,
            outcome.first_error.unwrap_or_default()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_splits_on_first_separator() {
        let s = |l: &'static str, sep: &str| {
            split_key(l.as_bytes(), sep.as_bytes())
                .map(|(k, v)| (String::from_utf8_lossy(k), String::from_utf8_lossy(v)))
        };
        assert_eq!(s("k:v:w", ":"), Some(("k".into(), "v:w".into())));
        assert_eq!(s("k::v", "::"), Some(("k".into(), "v".into())));
        assert_eq!(s("novalue", ":"), None);
        assert_eq!(s(":v", ":"), Some(("".into(), "v".into())));
    }
}
