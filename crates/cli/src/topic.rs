//! `gregor topic ...`: create, list, describe, alter-config, add-partitions and delete
//! topics with the admin client.

use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use gregor_client::{
    AdminClient, AlterConfigOp, ConfigEntry, ConfigResource, ConfigSource, NewTopic, OffsetSpec,
    TopicDescription,
};
use serde_json::json;

use crate::common::{
    admin_client, id_list, kafka_error_name, parse_kv, print_json, table, ConnArgs, FormatArg,
    OutputFormat,
};

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List topic names.
    List(ListArgs),
    /// Show partitions (leader, replicas, ISR, eligible leader replicas, offsets, status)
    /// and non-default configs of a topic.
    Describe(DescribeArgs),
    /// Set or delete topic configs.
    AlterConfig(AlterConfigArgs),
    /// Grow a topic to a total number of partitions.
    AddPartitions(AddPartitionsArgs),
    /// Delete a topic.
    Delete(DeleteArgs),
    /// Move partitions' replicas between brokers (like kafka-reassign-partitions.sh):
    /// --generate a plan, --execute it, --verify it, --cancel it, --list what is moving.
    Reassign(crate::reassign::ReassignArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// Topic name.
    name: String,
    /// Number of partitions (default: the broker's num.partitions).
    #[arg(long, value_name = "N")]
    partitions: Option<i32>,
    /// Replication factor (default: the broker's default.replication.factor).
    #[arg(long, value_name = "R")]
    replication_factor: Option<i16>,
    /// A topic config, `key=value`; repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    configs: Vec<String>,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Args)]
pub struct ListArgs {
    /// Include internal topics such as __consumer_offsets.
    #[arg(long)]
    internal: bool,
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Args)]
pub struct DescribeArgs {
    /// Topic name.
    name: String,
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Args)]
pub struct AlterConfigArgs {
    /// Topic name.
    name: String,
    /// Set a config, `key=value`; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Remove a config override (back to the default); repeatable.
    #[arg(long = "delete", value_name = "KEY")]
    delete: Vec<String>,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Args)]
pub struct AddPartitionsArgs {
    /// Topic name.
    name: String,
    /// The new total number of partitions.
    #[arg(long, value_name = "N")]
    total: i32,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Args)]
pub struct DeleteArgs {
    /// Topic name.
    name: String,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Rewords a client error about `topic` so that it names the cause.
pub fn topic_error(topic: &str, e: anyhow::Error) -> anyhow::Error {
    match kafka_error_name(&e).as_deref() {
        Some("UNKNOWN_TOPIC_OR_PARTITION") | Some("UNKNOWN_TOPIC_ID") => {
            anyhow!("topic '{topic}' does not exist")
        }
        Some("TOPIC_ALREADY_EXISTS") => anyhow!("topic '{topic}' already exists"),
        Some("INVALID_TOPIC_EXCEPTION") => anyhow!("topic '{topic}': invalid topic name ({e})"),
        Some("INVALID_PARTITIONS") => anyhow!("topic '{topic}': invalid partition count ({e})"),
        Some("INVALID_REPLICATION_FACTOR") => {
            anyhow!("topic '{topic}': invalid replication factor ({e})")
        }
        Some("INVALID_CONFIG") => anyhow!("topic '{topic}': invalid config ({e})"),
        _ => e.context(format!("topic '{topic}'")),
    }
}

pub async fn run(command: TopicCommand) -> Result<ExitCode> {
    match command {
        TopicCommand::Create(a) => create(a).await,
        TopicCommand::List(a) => list(a).await,
        TopicCommand::Describe(a) => describe(a).await,
        TopicCommand::AlterConfig(a) => alter_config(a).await,
        TopicCommand::AddPartitions(a) => add_partitions(a).await,
        TopicCommand::Delete(a) => delete(a).await,
        TopicCommand::Reassign(a) => crate::reassign::run(a).await,
    }
}

async fn create(a: CreateArgs) -> Result<ExitCode> {
    let mut topic = NewTopic::new(
        a.name.clone(),
        a.partitions.unwrap_or(-1),
        a.replication_factor.unwrap_or(-1),
    );
    for c in &a.configs {
        let (k, v) = parse_kv("--config", c)?;
        topic = topic.with_config(k, v);
    }
    let admin = admin_client(&a.conn).await?;
    let results = admin.create_topics(vec![topic], false).await?;
    for (_, r) in results {
        r.map_err(|e| topic_error(&a.name, e.into()))?;
    }
    println!("created topic '{}'", a.name);
    Ok(ExitCode::SUCCESS)
}

async fn list(a: ListArgs) -> Result<ExitCode> {
    let admin = admin_client(&a.conn).await?;
    let names = admin.list_topics(a.internal).await?;
    match a.format.format {
        OutputFormat::Json => print_json(&json!(names)),
        OutputFormat::Text => {
            for n in names {
                println!("{n}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Describes one topic, failing with "topic 'x' does not exist" when it is unknown.
pub async fn describe_topic(admin: &AdminClient, name: &str) -> Result<TopicDescription> {
    let results = admin.describe_topics(vec![name.to_string()]).await?;
    match results.into_iter().next() {
        Some((_, Ok(d))) => Ok(d),
        Some((_, Err(e))) => Err(topic_error(name, e.into())),
        None => bail!("topic '{name}' does not exist"),
    }
}

/// `(earliest, latest)` offsets per partition of `topic`, in `partitions` order; -1 when
/// the broker could not answer for a partition.
pub async fn log_offsets(
    admin: &AdminClient,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<(i64, i64)>> {
    let mut requests = Vec::new();
    for &p in partitions {
        requests.push((topic.to_string(), p, OffsetSpec::Earliest));
    }
    let earliest = admin.list_offsets(requests).await?;
    let requests = partitions
        .iter()
        .map(|&p| (topic.to_string(), p, OffsetSpec::Latest))
        .collect();
    let latest = admin.list_offsets(requests).await?;
    Ok(earliest
        .iter()
        .zip(&latest)
        .map(|(e, l)| {
            (
                e.2.as_ref().map(|x| x.0).unwrap_or(-1),
                l.2.as_ref().map(|x| x.0).unwrap_or(-1),
            )
        })
        .collect())
}

/// Whether a config entry is set for the topic itself (not a broker or built-in default).
fn is_override(e: &ConfigEntry) -> bool {
    !e.is_default && matches!(e.source, ConfigSource::DynamicTopic | ConfigSource::Unknown)
}

/// What is wrong with a partition, as `topic describe` shows it: `offline` (no leader),
/// `non-preferred-leader` (led by another replica than the first of its assignment),
/// `under-replicated` (fewer in sync than assigned); empty when nothing is.
fn partition_status(p: &gregor_client::PartitionDescription) -> Vec<&'static str> {
    let mut status = Vec::new();
    if p.leader == -1 {
        status.push("offline");
    } else if p.replicas.first() != Some(&p.leader) {
        status.push("non-preferred-leader");
    }
    if p.isr.len() < p.replicas.len() {
        status.push("under-replicated");
    }
    status
}

async fn describe(a: DescribeArgs) -> Result<ExitCode> {
    let admin = admin_client(&a.conn).await?;
    let d = describe_topic(&admin, &a.name).await?;
    let ids: Vec<i32> = d.partitions.iter().map(|p| p.partition).collect();
    let offsets = log_offsets(&admin, &a.name, &ids).await?;
    let mut configs: Vec<ConfigEntry> = admin
        .describe_configs(ConfigResource::Topic(a.name.clone()))
        .await
        .map_err(|e| topic_error(&a.name, e.into()))?
        .into_iter()
        .filter(is_override)
        .collect();
    configs.sort_by(|x, y| x.name.cmp(&y.name));
    match a.format.format {
        OutputFormat::Json => {
            let partitions: Vec<serde_json::Value> = d
                .partitions
                .iter()
                .zip(&offsets)
                .map(|(p, (start, end))| {
                    json!({
                        "partition": p.partition,
                        "leader": p.leader,
                        "replicas": p.replicas,
                        "isr": p.isr,
                        "eligible_leader_replicas": p.elr,
                        "offline_replicas": p.offline,
                        "log_start_offset": start,
                        "log_end_offset": end,
                        "preferred_leader": p.replicas.first(),
                        "under_replicated": p.isr.len() < p.replicas.len(),
                        "status": partition_status(p),
                    })
                })
                .collect();
            let cfg: serde_json::Map<String, serde_json::Value> = configs
                .iter()
                .map(|c| (c.name.clone(), json!(c.value)))
                .collect();
            print_json(&json!({
                "name": d.name,
                "topic_id": d.topic_id,
                "internal": d.internal,
                "partition_count": d.partitions.len(),
                "partitions": partitions,
                "configs": cfg,
            }));
        }
        OutputFormat::Text => {
            println!("Topic: {}", d.name);
            println!("Topic id: {}", d.topic_id);
            println!("Partitions: {}", d.partitions.len());
            if d.internal {
                println!("Internal: true");
            }
            println!();
            let rows: Vec<Vec<String>> = d
                .partitions
                .iter()
                .zip(&offsets)
                .map(|(p, (start, end))| {
                    vec![
                        p.partition.to_string(),
                        p.leader.to_string(),
                        id_list(&p.replicas),
                        id_list(&p.isr),
                        id_list(&p.elr),
                        start.to_string(),
                        end.to_string(),
                        partition_status(p).join(","),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "PARTITION",
                        "LEADER",
                        "REPLICAS",
                        "ISR",
                        "ELR",
                        "LOG-START",
                        "LOG-END",
                        "STATUS"
                    ],
                    &rows
                )
            );
            println!();
            if configs.is_empty() {
                println!("Configs: (none set)");
            } else {
                println!("Configs:");
                let rows: Vec<Vec<String>> = configs
                    .iter()
                    .map(|c| {
                        vec![
                            c.name.clone(),
                            c.value.clone().unwrap_or_else(|| "(sensitive)".into()),
                        ]
                    })
                    .collect();
                print!("{}", table(&["NAME", "VALUE"], &rows));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn alter_config(a: AlterConfigArgs) -> Result<ExitCode> {
    if a.set.is_empty() && a.delete.is_empty() {
        bail!("nothing to change: give --set key=value and/or --delete key");
    }
    let mut ops = Vec::new();
    for s in &a.set {
        let (k, v) = parse_kv("--set", s)?;
        ops.push(AlterConfigOp::Set(k, v));
    }
    for k in &a.delete {
        ops.push(AlterConfigOp::Delete(k.clone()));
    }
    let admin = admin_client(&a.conn).await?;
    // Name a missing topic clearly rather than with the broker's config error.
    describe_topic(&admin, &a.name).await?;
    admin
        .alter_configs_incremental(ConfigResource::Topic(a.name.clone()), ops)
        .await
        .map_err(|e| topic_error(&a.name, e.into()))?;
    println!("altered configs of topic '{}'", a.name);
    Ok(ExitCode::SUCCESS)
}

async fn add_partitions(a: AddPartitionsArgs) -> Result<ExitCode> {
    let admin = admin_client(&a.conn).await?;
    let d = describe_topic(&admin, &a.name).await?;
    let current = d.partitions.len() as i32;
    if a.total <= current {
        bail!(
            "topic '{}' has {current} partitions: --total must be greater than that, not {}",
            a.name,
            a.total
        );
    }
    admin
        .create_partitions(&a.name, a.total)
        .await
        .map_err(|e| topic_error(&a.name, e.into()))?;
    println!(
        "topic '{}' now has {} partitions (was {current})",
        a.name, a.total
    );
    Ok(ExitCode::SUCCESS)
}

async fn delete(a: DeleteArgs) -> Result<ExitCode> {
    let admin = admin_client(&a.conn).await?;
    let results = admin.delete_topics(vec![a.name.clone()]).await?;
    for (_, r) in results {
        r.map_err(|e| topic_error(&a.name, e.into()))?;
    }
    println!("deleted topic '{}'", a.name);
    Ok(ExitCode::SUCCESS)
}
