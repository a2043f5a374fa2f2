//! `gregor topic reassign`: move partitions' replicas between brokers, the way
//! `kafka-reassign-partitions.sh` does, with the same JSON in and out:
//! `--generate` proposes a balanced plan for a set of topics over a broker list,
//! `--execute` starts a plan (optionally throttled), `--verify` shows each partition's
//! progress (and clears the throttle once all are done), `--cancel` reverts a plan,
//! `--list` shows the reassignments under way.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{ArgGroup, Args};
use gregor_client::{AdminClient, AlterConfigOp, ConfigResource, TopicDescription};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::common::{admin_client, id_list, print_json, table, ConnArgs, FormatArg, OutputFormat};

#[derive(Args)]
#[command(group(ArgGroup::new("action").required(true).args(["generate", "execute", "verify", "cancel", "list"])))]
pub struct ReassignArgs {
    /// Propose a balanced assignment of `--topics` over `--broker-list` (prints the current
    /// and the proposed assignment; changes nothing).
    #[arg(long)]
    generate: bool,
    /// Start the reassignment in `--reassignment-json-file`.
    #[arg(long)]
    execute: bool,
    /// Show the progress of the reassignment in `--reassignment-json-file`; once every
    /// partition is done, remove the throttle `--execute --throttle` set.
    #[arg(long)]
    verify: bool,
    /// Cancel the reassignment in `--reassignment-json-file`: the partitions go back to
    /// their replicas from before it.
    #[arg(long)]
    cancel: bool,
    /// List the reassignments under way.
    #[arg(long)]
    list: bool,
    /// Topics to move (`--generate`), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "T1,T2")]
    topics: Vec<String>,
    /// Topics to move (`--generate`), as Kafka's JSON `{"topics":[{"topic":"t"}]}`.
    #[arg(long, value_name = "FILE")]
    topics_to_move_json_file: Option<String>,
    /// Brokers to place the replicas on (`--generate`), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "ID,ID")]
    broker_list: Vec<i32>,
    /// The plan (`--execute`, `--verify`, `--cancel`), as Kafka's JSON
    /// `{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[2,3]}]}`.
    #[arg(long, value_name = "FILE")]
    reassignment_json_file: Option<String>,
    /// With `--execute`: bound the bytes per second the moving replicas copy (the leaders'
    /// and the new followers' replication throttle), until `--verify` sees it done.
    #[arg(long, value_name = "BYTES_PER_SEC")]
    throttle: Option<u64>,
    /// With `--execute`: start even though other reassignments are under way.
    #[arg(long)]
    additional: bool,
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    conn: ConnArgs,
}

/// One partition of a plan (Kafka's reassignment JSON; `log_dirs` is accepted and ignored:
/// a broker has one log directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PlannedPartition {
    topic: String,
    partition: i32,
    replicas: Vec<i32>,
    #[serde(default, skip_serializing)]
    log_dirs: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Plan {
    #[serde(default = "one")]
    version: i32,
    partitions: Vec<PlannedPartition>,
}

fn one() -> i32 {
    1
}

#[derive(Deserialize)]
struct TopicsToMove {
    topics: Vec<TopicToMove>,
}

#[derive(Deserialize)]
struct TopicToMove {
    topic: String,
}

/// The topic configs naming the replicas a throttle applies to.
const THROTTLED_REPLICAS: [&str; 2] = [
    "leader.replication.throttled.replicas",
    "follower.replication.throttled.replicas",
];
/// The broker configs holding the throttle rates.
const THROTTLE_RATES: [&str; 2] = [
    "leader.replication.throttled.rate",
    "follower.replication.throttled.rate",
];

pub async fn run(a: ReassignArgs) -> Result<ExitCode> {
    let admin = admin_client(&a.conn).await?;
    if a.generate {
        generate(&admin, &a).await
    } else if a.execute {
        execute(&admin, &a).await
    } else if a.verify {
        verify(&admin, &a).await
    } else if a.cancel {
        cancel(&admin, &a).await
    } else {
        list(&admin, &a).await
    }
}

fn read_plan(a: &ReassignArgs) -> Result<Plan> {
    let path = a
        .reassignment_json_file
        .as_ref()
        .ok_or_else(|| anyhow!("--reassignment-json-file is required"))?;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    let plan: Plan = serde_json::from_str(&text)
        .with_context(|| format!("{path} is not a reassignment plan"))?;
    if plan.partitions.is_empty() {
        bail!("{path} names no partition");
    }
    let mut seen = BTreeSet::new();
    for p in &plan.partitions {
        if !seen.insert((&p.topic, p.partition)) {
            bail!("{path} names {}-{} twice", p.topic, p.partition);
        }
    }
    Ok(plan)
}

async fn describe_all(admin: &AdminClient, topics: Vec<String>) -> Result<Vec<TopicDescription>> {
    admin
        .describe_topics(topics)
        .await?
        .into_iter()
        .map(|(name, r)| {
            r.map_err(|e| {
                anyhow!(
                    "topic '{name}': {} {}",
                    e.name,
                    e.message.unwrap_or_default()
                )
            })
        })
        .collect()
}

/// The current assignment of `topics` as a plan.
fn current_plan(topics: &[TopicDescription]) -> Plan {
    Plan {
        version: 1,
        partitions: topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| PlannedPartition {
                    topic: t.name.clone(),
                    partition: p.partition,
                    replicas: p.replicas.clone(),
                    log_dirs: Vec::new(),
                })
            })
            .collect(),
    }
}

/// A balanced assignment: partition `i` of a topic gets the replication factor's brokers
/// from `brokers` starting at `(start + i) % n`, the start spread by topic, so leaders
/// (the first replica) and replicas fall evenly on the brokers.
fn balanced(topics: &[TopicDescription], brokers: &[i32]) -> Result<Plan> {
    let n = brokers.len();
    let mut partitions = Vec::new();
    for (k, t) in topics.iter().enumerate() {
        for p in &t.partitions {
            let rf = p.replicas.len();
            if rf > n {
                bail!(
                    "{}-{} has {rf} replicas but --broker-list names {n} brokers",
                    t.name,
                    p.partition
                );
            }
            let start = k + p.partition as usize;
            let replicas = (0..rf).map(|j| brokers[(start + j) % n]).collect();
            partitions.push(PlannedPartition {
                topic: t.name.clone(),
                partition: p.partition,
                replicas,
                log_dirs: Vec::new(),
            });
        }
    }
    Ok(Plan {
        version: 1,
        partitions,
    })
}

async fn generate(admin: &AdminClient, a: &ReassignArgs) -> Result<ExitCode> {
    let mut topics = a.topics.clone();
    if let Some(path) = &a.topics_to_move_json_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
        let parsed: TopicsToMove = serde_json::from_str(&text)
            .with_context(|| format!("{path} is not a topics-to-move file"))?;
        topics.extend(parsed.topics.into_iter().map(|t| t.topic));
    }
    if topics.is_empty() {
        bail!("--generate needs --topics or --topics-to-move-json-file");
    }
    if a.broker_list.is_empty() {
        bail!("--generate needs --broker-list");
    }
    let brokers: BTreeSet<i32> = a.broker_list.iter().copied().collect();
    if brokers.len() != a.broker_list.len() {
        bail!("--broker-list names a broker twice");
    }
    let live: BTreeSet<i32> = admin
        .describe_cluster()
        .await?
        .brokers
        .iter()
        .map(|b| b.0)
        .collect();
    if let Some(unknown) = brokers.iter().find(|b| !live.contains(b)) {
        bail!("broker {unknown} of --broker-list is not a live broker of the cluster");
    }
    let described = describe_all(admin, topics).await?;
    let current = current_plan(&described);
    let proposed = balanced(&described, &a.broker_list)?;
    match a.format.format {
        OutputFormat::Json => print_json(&json!({"current": current, "proposed": proposed})),
        OutputFormat::Text => {
            println!("Current partition replica assignment");
            println!("{}", serde_json::to_string(&current)?);
            println!();
            println!("Proposed partition reassignment configuration");
            println!("{}", serde_json::to_string(&proposed)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn execute(admin: &AdminClient, a: &ReassignArgs) -> Result<ExitCode> {
    let plan = read_plan(a)?;
    let ongoing = admin.list_partition_reassignments().await?;
    if !ongoing.is_empty() && !a.additional {
        bail!(
            "cannot execute: reassignments are under way ({}); use --additional to start this one as well",
            ongoing
                .iter()
                .map(|o| format!("{}-{}", o.topic, o.partition))
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    let topics: Vec<String> = plan
        .partitions
        .iter()
        .map(|p| p.topic.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let described = describe_all(admin, topics).await?;
    let current = current_plan(&described);
    for p in &plan.partitions {
        if !current
            .partitions
            .iter()
            .any(|c| c.topic == p.topic && c.partition == p.partition)
        {
            bail!("partition {}-{} does not exist", p.topic, p.partition);
        }
    }
    if let Some(rate) = a.throttle {
        set_throttle(admin, &plan, &current, rate).await?;
    }
    let results = admin
        .alter_partition_reassignments(
            plan.partitions
                .iter()
                .map(|p| (p.topic.clone(), p.partition, Some(p.replicas.clone())))
                .collect(),
        )
        .await?;
    report(a, "started", &current, &results)
}

async fn cancel(admin: &AdminClient, a: &ReassignArgs) -> Result<ExitCode> {
    let plan = read_plan(a)?;
    let results = admin
        .alter_partition_reassignments(
            plan.partitions
                .iter()
                .map(|p| (p.topic.clone(), p.partition, None))
                .collect(),
        )
        .await?;
    let empty = Plan {
        version: 1,
        partitions: Vec::new(),
    };
    report(a, "cancelled", &empty, &results)
}

/// Prints each partition's outcome (and, for an execute, the assignment before it, to roll
/// back with); fails when any partition was refused.
fn report(
    a: &ReassignArgs,
    what: &str,
    before: &Plan,
    results: &[(String, i32, gregor_client::ItemResult<()>)],
) -> Result<ExitCode> {
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(t, p, r)| {
            r.as_ref().err().map(|e| {
                format!(
                    "{t}-{p}: {} {}",
                    e.name,
                    e.message.clone().unwrap_or_default()
                )
            })
        })
        .collect();
    match a.format.format {
        OutputFormat::Json => print_json(&json!({
            "previous": if before.partitions.is_empty() { serde_json::Value::Null } else { json!(before) },
            "results": results.iter().map(|(t, p, r)| json!({
                "topic": t,
                "partition": p,
                "error": r.as_ref().err().map(|e| e.name.clone()),
                "message": r.as_ref().err().and_then(|e| e.message.clone()),
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Text => {
            if !before.partitions.is_empty() {
                println!("Current partition replica assignment");
                println!("{}", serde_json::to_string(before)?);
                println!();
                println!("Save this to use as the --reassignment-json-file option during rollback");
            }
            let ok: Vec<String> = results
                .iter()
                .filter(|(_, _, r)| r.is_ok())
                .map(|(t, p, _)| format!("{t}-{p}"))
                .collect();
            if !ok.is_empty() {
                println!(
                    "Successfully {what} partition reassignments for {}",
                    ok.join(",")
                );
            }
            for f in &failed {
                println!("Error: {f}");
            }
        }
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn verify(admin: &AdminClient, a: &ReassignArgs) -> Result<ExitCode> {
    let plan = read_plan(a)?;
    let ongoing = admin.list_partition_reassignments().await?;
    let topics: Vec<String> = plan
        .partitions
        .iter()
        .map(|p| p.topic.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let current = current_plan(&describe_all(admin, topics.clone()).await?);
    let status: Vec<(&PlannedPartition, &str)> = plan
        .partitions
        .iter()
        .map(|p| {
            let moving = ongoing
                .iter()
                .any(|o| o.topic == p.topic && o.partition == p.partition);
            let now = current
                .partitions
                .iter()
                .find(|c| c.topic == p.topic && c.partition == p.partition);
            let state = match now {
                _ if moving => "in progress",
                Some(c) if c.replicas == p.replicas => "complete",
                Some(_) => "failed",
                None => "unknown partition",
            };
            (p, state)
        })
        .collect();
    let done = status.iter().all(|(_, s)| *s == "complete");
    if done {
        clear_throttle(admin, &topics).await?;
    }
    match a.format.format {
        OutputFormat::Json => print_json(&json!({
            "complete": done,
            "partitions": status.iter().map(|(p, s)| json!({
                "topic": p.topic, "partition": p.partition, "replicas": p.replicas, "status": s,
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Text => {
            for (p, s) in &status {
                println!(
                    "Reassignment of partition {}-{} is {s}.",
                    p.topic, p.partition
                );
            }
            if done {
                println!("Every partition is reassigned; replication throttles are removed.");
            }
        }
    }
    Ok(
        if status
            .iter()
            .any(|(_, s)| *s == "failed" || *s == "unknown partition")
        {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        },
    )
}

async fn list(admin: &AdminClient, a: &ReassignArgs) -> Result<ExitCode> {
    let ongoing = admin.list_partition_reassignments().await?;
    match a.format.format {
        OutputFormat::Json => print_json(&json!(ongoing
            .iter()
            .map(|o| json!({
                "topic": o.topic, "partition": o.partition, "replicas": o.replicas,
                "adding": o.adding, "removing": o.removing,
            }))
            .collect::<Vec<_>>())),
        OutputFormat::Text => {
            if ongoing.is_empty() {
                println!("No partition reassignment is under way.");
            } else {
                let rows: Vec<Vec<String>> = ongoing
                    .iter()
                    .map(|o| {
                        vec![
                            o.topic.clone(),
                            o.partition.to_string(),
                            id_list(&o.replicas),
                            id_list(&o.adding),
                            id_list(&o.removing),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &["TOPIC", "PARTITION", "REPLICAS", "ADDING", "REMOVING"],
                        &rows
                    )
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Throttles the copy: the rates on every broker of the plan and of the current
/// assignment, and, per topic, which replicas count: the current ones as leaders, the new
/// ones as followers (as `kafka-reassign-partitions.sh --throttle`).
async fn set_throttle(admin: &AdminClient, plan: &Plan, current: &Plan, rate: u64) -> Result<()> {
    let mut brokers = BTreeSet::new();
    for t in plan
        .partitions
        .iter()
        .map(|p| p.topic.clone())
        .collect::<BTreeSet<_>>()
    {
        let mut leaders = Vec::new();
        let mut followers = Vec::new();
        for p in plan.partitions.iter().filter(|p| p.topic == t) {
            let now = current
                .partitions
                .iter()
                .find(|c| c.topic == t && c.partition == p.partition)
                .map(|c| c.replicas.clone())
                .unwrap_or_default();
            for b in &now {
                leaders.push(format!("{}:{b}", p.partition));
                brokers.insert(*b);
            }
            for b in p.replicas.iter().filter(|b| !now.contains(b)) {
                followers.push(format!("{}:{b}", p.partition));
                brokers.insert(*b);
            }
        }
        let ops = vec![
            AlterConfigOp::Set(THROTTLED_REPLICAS[0].to_string(), leaders.join(",")),
            AlterConfigOp::Set(THROTTLED_REPLICAS[1].to_string(), followers.join(",")),
        ];
        admin
            .alter_configs_incremental(ConfigResource::Topic(t.clone()), ops)
            .await
            .with_context(|| format!("cannot set the throttled replicas of topic '{t}'"))?;
    }
    for b in brokers {
        let ops = THROTTLE_RATES
            .iter()
            .map(|k| AlterConfigOp::Set(k.to_string(), rate.to_string()))
            .collect();
        admin
            .alter_configs_incremental(ConfigResource::Broker(b), ops)
            .await
            .with_context(|| format!("cannot set the throttle rate of broker {b}"))?;
    }
    Ok(())
}

/// Removes the throttle: the topics' throttled replicas and every live broker's rates.
async fn clear_throttle(admin: &AdminClient, topics: &[String]) -> Result<()> {
    for t in topics {
        let ops = THROTTLED_REPLICAS
            .iter()
            .map(|k| AlterConfigOp::Delete(k.to_string()))
            .collect();
        admin
            .alter_configs_incremental(ConfigResource::Topic(t.clone()), ops)
            .await?;
    }
    for (b, _, _) in admin.describe_cluster().await?.brokers {
        let ops = THROTTLE_RATES
            .iter()
            .map(|k| AlterConfigOp::Delete(k.to_string()))
            .collect();
        admin
            .alter_configs_incremental(ConfigResource::Broker(b), ops)
            .await?;
    }
    Ok(())
}
