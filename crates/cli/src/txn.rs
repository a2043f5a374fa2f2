//! `gregor txn ...`: list and describe transactions, and show the producers of a topic's
//! partitions, with the admin client (ListTransactions, DescribeTransactions,
//! DescribeProducers).

use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use gregor_client::{ListTransactionsFilter, ProducerStateDescription, TransactionDescription};
use serde_json::json;

use crate::common::{
    admin_client, partition_list, print_json, table, ConnArgs, FormatArg, OutputFormat,
};
use crate::topic::{describe_topic, topic_error};

#[derive(Subcommand)]
pub enum TxnCommand {
    /// List transactions (every broker is asked).
    List(ListArgs),
    /// Show transactional ids: state, producer id and epoch, timeout, start, partitions.
    Describe(DescribeArgs),
    /// Show the active producers of a topic's partitions (idempotent and transactional).
    Producers(ProducersArgs),
}

#[derive(Args)]
pub struct ListArgs {
    /// Only transactions in this state (e.g. Ongoing, CompleteCommit); repeatable.
    #[arg(long = "state", value_name = "STATE")]
    states: Vec<String>,
    /// Only transactions of this producer id; repeatable.
    #[arg(long = "producer-id", value_name = "N")]
    producer_ids: Vec<i64>,
    /// Only ongoing transactions running for at least MS milliseconds.
    #[arg(long, value_name = "MS")]
    min_duration_ms: Option<i64>,
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Args)]
pub struct DescribeArgs {
    /// Transactional ids.
    #[arg(required = true, value_name = "ID")]
    ids: Vec<String>,
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Args)]
pub struct ProducersArgs {
    /// Topic name.
    topic: String,
    /// Only this partition (default: every partition).
    #[arg(long, value_name = "P")]
    partition: Option<i32>,
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    conn: ConnArgs,
}

pub async fn run(command: TxnCommand) -> Result<ExitCode> {
    match command {
        TxnCommand::List(a) => list(a).await,
        TxnCommand::Describe(a) => describe(a).await,
        TxnCommand::Producers(a) => producers(a).await,
    }
}

fn now_ms() -> i64 {
    use gregor_broker::clock::Clock;
    gregor_broker::clock::SystemClock.now_ms()
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

async fn list(a: ListArgs) -> Result<ExitCode> {
    if a.min_duration_ms.is_some_and(|ms| ms < 0) {
        bail!("--min-duration-ms must not be negative");
    }
    let admin = admin_client(&a.conn).await?;
    let listed = admin
        .list_transactions(ListTransactionsFilter {
            states: a.states.clone(),
            producer_ids: a.producer_ids.clone(),
            min_duration_ms: a.min_duration_ms,
        })
        .await?;
    if !listed.unknown_state_filters.is_empty() {
        bail!(
            "unknown transaction state {} (known: Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort, PrepareEpochFence, Dead)",
            listed
                .unknown_state_filters
                .iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    match a.format.format {
        OutputFormat::Json => print_json(&json!(listed
            .transactions
            .iter()
            .map(|t| json!({
                "transactional_id": t.transactional_id,
                "producer_id": t.producer_id,
                "state": t.state,
            }))
            .collect::<Vec<_>>())),
        OutputFormat::Text => {
            let rows: Vec<Vec<String>> = listed
                .transactions
                .iter()
                .map(|t| {
                    vec![
                        t.transactional_id.clone(),
                        t.producer_id.to_string(),
                        t.state.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["TRANSACTIONAL-ID", "PRODUCER-ID", "STATE"], &rows)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How long the transaction has been open, for states with one in progress.
fn duration_ms(d: &TransactionDescription, now: i64) -> Option<i64> {
    let open = matches!(
        d.state.as_str(),
        "Ongoing" | "PrepareCommit" | "PrepareAbort"
    );
    d.start_time_ms.filter(|_| open).map(|s| (now - s).max(0))
}

async fn describe(a: DescribeArgs) -> Result<ExitCode> {
    let admin = admin_client(&a.conn).await?;
    let results = admin.describe_transactions(a.ids.clone()).await?;
    let now = now_ms();
    let mut found: Vec<TransactionDescription> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for (id, r) in results {
        match r {
            Ok(d) => found.push(d),
            Err(e) if e.name == "TRANSACTIONAL_ID_NOT_FOUND" => {
                errors.push(format!("transactional id '{id}' does not exist"))
            }
            Err(e) => errors.push(format!("transactional id '{id}': {e}")),
        }
    }
    match a.format.format {
        OutputFormat::Json => {
            if !found.is_empty() || errors.is_empty() {
                print_json(&json!(found
                    .iter()
                    .map(|d| json!({
                        "transactional_id": d.transactional_id,
                        "state": d.state,
                        "producer_id": d.producer_id,
                        "producer_epoch": d.producer_epoch,
                        "timeout_ms": d.timeout_ms,
                        "start_time_ms": d.start_time_ms,
                        "duration_ms": duration_ms(d, now),
                        "partitions": d.partitions.iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect::<Vec<_>>(),
                    }))
                    .collect::<Vec<_>>()));
            }
        }
        OutputFormat::Text => {
            if !found.is_empty() {
                let rows: Vec<Vec<String>> = found
                    .iter()
                    .map(|d| {
                        vec![
                            d.transactional_id.clone(),
                            d.state.clone(),
                            d.producer_id.to_string(),
                            d.producer_epoch.to_string(),
                            d.timeout_ms.to_string(),
                            opt(d.start_time_ms),
                            opt(duration_ms(d, now)),
                            partition_list(&d.partitions),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &[
                            "TRANSACTIONAL-ID",
                            "STATE",
                            "PRODUCER-ID",
                            "EPOCH",
                            "TIMEOUT-MS",
                            "START-TIME-MS",
                            "DURATION-MS",
                            "PARTITIONS",
                        ],
                        &rows
                    )
                );
            }
        }
    }
    if !errors.is_empty() {
        return Err(anyhow!("{}", errors.join("; ")));
    }
    Ok(ExitCode::SUCCESS)
}

async fn producers(a: ProducersArgs) -> Result<ExitCode> {
    let admin = admin_client(&a.conn).await?;
    let topic = describe_topic(&admin, &a.topic).await?;
    let partitions: Vec<i32> = match a.partition {
        Some(p) if topic.partitions.iter().any(|d| d.partition == p) => vec![p],
        Some(p) => bail!(
            "topic '{}' has no partition {p} (it has {})",
            a.topic,
            topic.partitions.len()
        ),
        None => topic.partitions.iter().map(|d| d.partition).collect(),
    };
    let results = admin
        .describe_producers(partitions.iter().map(|&p| (a.topic.clone(), p)).collect())
        .await?;
    let mut per_partition: Vec<(i32, Vec<ProducerStateDescription>)> = Vec::new();
    for (_, p, r) in results {
        let producers = r.map_err(|e| topic_error(&a.topic, e.into()))?;
        per_partition.push((p, producers));
    }
    match a.format.format {
        OutputFormat::Json => print_json(&json!({
            "topic": a.topic,
            "partitions": per_partition.iter().map(|(p, ps)| json!({
                "partition": p,
                "producers": ps.iter().map(|s| json!({
                    "producer_id": s.producer_id,
                    "producer_epoch": s.producer_epoch,
                    "last_sequence": s.last_sequence,
                    "last_timestamp": s.last_timestamp,
                    "coordinator_epoch": s.coordinator_epoch,
                    "current_txn_start_offset": s.current_txn_start_offset,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Text => {
            let rows: Vec<Vec<String>> = per_partition
                .iter()
                .flat_map(|(p, ps)| {
                    ps.iter().map(move |s| {
                        vec![
                            p.to_string(),
                            s.producer_id.to_string(),
                            s.producer_epoch.to_string(),
                            s.last_sequence.to_string(),
                            s.last_timestamp.to_string(),
                            opt(s.coordinator_epoch),
                            opt(s.current_txn_start_offset),
                        ]
                    })
                })
                .collect();
            if rows.is_empty() {
                println!("no active producers on topic '{}'", a.topic);
            } else {
                print!(
                    "{}",
                    table(
                        &[
                            "PARTITION",
                            "PRODUCER-ID",
                            "EPOCH",
                            "LAST-SEQUENCE",
                            "LAST-TIMESTAMP",
                            "COORDINATOR-EPOCH",
                            "TXN-START-OFFSET",
                        ],
                        &rows
                    )
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
