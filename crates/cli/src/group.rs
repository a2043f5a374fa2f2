//! `gregor group ...`: list, describe, delete consumer groups and reset their offsets.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use clap::{ArgGroup, Args, Subcommand};
use gregor_client::{AdminClient, GroupDescription, OffsetSpec};
use serde_json::json;

use crate::common::{
    admin_client, kafka_error_name, partition_list, print_json, table, ConnArgs, FormatArg,
    OutputFormat,
};
use crate::topic::{describe_topic, log_offsets};

#[derive(Subcommand)]
pub enum GroupCommand {
    /// List consumer groups.
    List(ListArgs),
    /// Show a group's state, members and committed offsets with lag.
    Describe(DescribeArgs),
    /// Delete a group (it must have no members).
    Delete(DeleteArgs),
    /// Reset a group's committed offsets for a topic (dry run unless --execute).
    ResetOffsets(ResetArgs),
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Args)]
pub struct DescribeArgs {
    /// Group id.
    group: String,
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Args)]
pub struct DeleteArgs {
    /// Group id.
    group: String,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Args)]
#[command(group(ArgGroup::new("target").required(true).args(["to_earliest", "to_latest", "to_offset", "to_timestamp"])))]
pub struct ResetArgs {
    /// Group id.
    group: String,
    /// The topic whose partitions are reset (all of them).
    #[arg(long)]
    topic: String,
    /// Reset to the log start offset.
    #[arg(long)]
    to_earliest: bool,
    /// Reset to the log end offset.
    #[arg(long)]
    to_latest: bool,
    /// Reset to this offset (clamped to the log start and end).
    #[arg(long, value_name = "N")]
    to_offset: Option<i64>,
    /// Reset to the first offset whose timestamp is at least MS (else the log end).
    #[arg(long, value_name = "MS")]
    to_timestamp: Option<i64>,
    /// Apply the plan (without it only the plan is printed).
    #[arg(long)]
    execute: bool,
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Rewords a client error about `group` so that it names the cause.
fn group_error(group: &str, e: anyhow::Error) -> anyhow::Error {
    match kafka_error_name(&e).as_deref() {
        Some("GROUP_ID_NOT_FOUND") => anyhow!("group '{group}' does not exist"),
        Some("NON_EMPTY_GROUP") => {
            anyhow!("group '{group}' has active members: stop its consumers first")
        }
        Some("UNKNOWN_MEMBER_ID") | Some("ILLEGAL_GENERATION") | Some("REBALANCE_IN_PROGRESS") => {
            anyhow!(
                "group '{group}' has active members: the broker refuses to change its offsets; stop its consumers first"
            )
        }
        Some("INVALID_GROUP_ID") => anyhow!("invalid group id '{group}'"),
        _ => e.context(format!("group '{group}'")),
    }
}

pub async fn run(command: GroupCommand) -> Result<ExitCode> {
    match command {
        GroupCommand::List(a) => list(a).await,
        GroupCommand::Describe(a) => describe(a).await,
        GroupCommand::Delete(a) => delete(a).await,
        GroupCommand::ResetOffsets(a) => reset(a).await,
    }
}

async fn list(a: ListArgs) -> Result<ExitCode> {
    let admin = admin_client(&a.conn).await?;
    let groups = admin.list_groups().await?;
    match a.format.format {
        OutputFormat::Json => print_json(&json!(groups
            .iter()
            .map(|g| json!({
                "group": g.group_id,
                "state": g.state,
                "protocol_type": g.protocol_type,
            }))
            .collect::<Vec<_>>())),
        OutputFormat::Text => {
            let rows: Vec<Vec<String>> = groups
                .iter()
                .map(|g| vec![g.group_id.clone(), g.state.clone(), g.protocol_type.clone()])
                .collect();
            print!("{}", table(&["GROUP", "STATE", "PROTOCOL-TYPE"], &rows));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Describes `group`, failing with "group 'g' does not exist" when it is unknown.
async fn describe_group(admin: &AdminClient, group: &str) -> Result<GroupDescription> {
    let results = admin.describe_groups(vec![group.to_string()]).await?;
    match results.into_iter().next() {
        Some((_, Ok(d))) => Ok(d),
        Some((_, Err(e))) => Err(group_error(group, e.into())),
        None => bail!("group '{group}' does not exist"),
    }
}

/// One committed offset with its log end offset.
struct Committed {
    topic: String,
    partition: i32,
    offset: i64,
    log_end: Option<i64>,
}

impl Committed {
    fn lag(&self) -> Option<i64> {
        self.log_end.map(|e| (e - self.offset).max(0))
    }
}

async fn describe(a: DescribeArgs) -> Result<ExitCode> {
    let admin = admin_client(&a.conn).await?;
    let d = describe_group(&admin, &a.group).await?;
    let offsets = admin
        .list_consumer_group_offsets(&a.group)
        .await
        .map_err(|e| group_error(&a.group, e.into()))?;
    let ends = if offsets.is_empty() {
        Vec::new()
    } else {
        admin
            .list_offsets(
                offsets
                    .iter()
                    .map(|(t, p, _, _)| (t.clone(), *p, OffsetSpec::Latest))
                    .collect(),
            )
            .await?
    };
    let committed: Vec<Committed> = offsets
        .iter()
        .map(|(t, p, o, _)| Committed {
            topic: t.clone(),
            partition: *p,
            offset: *o,
            log_end: ends
                .iter()
                .find(|(et, ep, _)| et == t && ep == p)
                .and_then(|(_, _, r)| r.as_ref().ok().map(|x| x.0)),
        })
        .collect();
    // Which member owns each partition.
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    for m in &d.members {
        for (t, p) in &m.assignment {
            owner.insert((t.clone(), *p), m.client_id.clone());
        }
    }
    match a.format.format {
        OutputFormat::Json => {
            let members: Vec<serde_json::Value> = d
                .members
                .iter()
                .map(|m| {
                    json!({
                        "member_id": m.member_id,
                        "group_instance_id": m.group_instance_id,
                        "client_id": m.client_id,
                        "host": m.client_host,
                        "assignment": m.assignment.iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let offsets: Vec<serde_json::Value> = committed
                .iter()
                .map(|c| {
                    json!({
                        "topic": c.topic,
                        "partition": c.partition,
                        "committed_offset": c.offset,
                        "log_end_offset": c.log_end,
                        "lag": c.lag(),
                    })
                })
                .collect();
            print_json(&json!({
                "group": d.group_id,
                "state": d.state,
                "protocol_type": d.protocol_type,
                "protocol": d.protocol,
                "members": members,
                "offsets": offsets,
            }));
        }
        OutputFormat::Text => {
            println!("Group: {}", d.group_id);
            println!("State: {}", d.state);
            println!(
                "Protocol: {}",
                match (d.protocol_type.as_str(), d.protocol.as_str()) {
                    ("", "") => "-".to_string(),
                    (t, "") => t.to_string(),
                    (t, p) => format!("{t}/{p}"),
                }
            );
            println!();
            if d.members.is_empty() {
                println!("Members: (none)");
            } else {
                println!("Members:");
                let rows: Vec<Vec<String>> = d
                    .members
                    .iter()
                    .map(|m| {
                        vec![
                            m.member_id.clone(),
                            m.client_id.clone(),
                            m.client_host.clone(),
                            partition_list(&m.assignment),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["MEMBER-ID", "CLIENT-ID", "HOST", "ASSIGNMENT"], &rows)
                );
            }
            println!();
            if committed.is_empty() {
                println!("Offsets: (none committed)");
            } else {
                println!("Offsets:");
                let opt = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
                let rows: Vec<Vec<String>> = committed
                    .iter()
                    .map(|c| {
                        vec![
                            c.topic.clone(),
                            c.partition.to_string(),
                            c.offset.to_string(),
                            opt(c.log_end),
                            opt(c.lag()),
                            owner
                                .get(&(c.topic.clone(), c.partition))
                                .cloned()
                                .unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &[
                            "TOPIC",
                            "PARTITION",
                            "COMMITTED",
                            "LOG-END",
                            "LAG",
                            "CONSUMER"
                        ],
                        &rows
                    )
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn delete(a: DeleteArgs) -> Result<ExitCode> {
    let admin = admin_client(&a.conn).await?;
    let results = admin.delete_groups(vec![a.group.clone()]).await?;
    for (_, r) in results {
        r.map_err(|e| group_error(&a.group, e.into()))?;
    }
    println!("deleted group '{}'", a.group);
    Ok(ExitCode::SUCCESS)
}

async fn reset(a: ResetArgs) -> Result<ExitCode> {
    let admin = admin_client(&a.conn).await?;
    let topic = describe_topic(&admin, &a.topic).await?;
    let partitions: Vec<i32> = topic.partitions.iter().map(|p| p.partition).collect();
    let bounds = log_offsets(&admin, &a.topic, &partitions).await?;
    let current: Vec<(String, i32, i64, Option<String>)> = admin
        .list_consumer_group_offsets(&a.group)
        .await
        .map_err(|e| group_error(&a.group, e.into()))?;
    let by_time = match a.to_timestamp {
        Some(ms) => Some(
            admin
                .list_offsets(
                    partitions
                        .iter()
                        .map(|&p| (a.topic.clone(), p, OffsetSpec::Timestamp(ms)))
                        .collect(),
                )
                .await?,
        ),
        None => None,
    };
    // (partition, current, new)
    let mut plan: Vec<(i32, Option<i64>, i64)> = Vec::new();
    for (i, &p) in partitions.iter().enumerate() {
        let (start, end) = bounds[i];
        let cur = current
            .iter()
            .find(|(t, cp, _, _)| *t == a.topic && *cp == p)
            .map(|c| c.2);
        let new = if a.to_earliest {
            start
        } else if a.to_latest {
            end
        } else if let Some(n) = a.to_offset {
            n.clamp(start.max(0), end.max(0))
        } else if let Some(results) = &by_time {
            match &results[i].2 {
                Ok((o, _)) if *o >= 0 => *o,
                Ok(_) => end,
                Err(e) => bail!("cannot look up offsets by timestamp: {e}"),
            }
        } else {
            unreachable!("clap requires one target")
        };
        plan.push((p, cur, new));
    }
    if a.execute {
        let d = describe_group(&admin, &a.group).await.ok();
        if let Some(d) = d.filter(|d| !d.members.is_empty()) {
            bail!(
                "group '{}' has {} active member(s) (state {}): the broker refuses to reset its offsets; stop its consumers first",
                a.group,
                d.members.len(),
                d.state
            );
        }
        let results = admin
            .alter_consumer_group_offsets(
                &a.group,
                plan.iter()
                    .map(|(p, _, n)| (a.topic.clone(), *p, *n))
                    .collect(),
            )
            .await
            .map_err(|e| group_error(&a.group, e.into()))?;
        for (_, _, r) in results {
            r.map_err(|e| group_error(&a.group, e.into()))?;
        }
    }
    let opt = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
    match a.format.format {
        OutputFormat::Json => print_json(&json!({
            "group": a.group,
            "topic": a.topic,
            "executed": a.execute,
            "partitions": plan.iter().map(|(p, c, n)| json!({
                "partition": p,
                "current_offset": c,
                "new_offset": n,
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Text => {
            let rows: Vec<Vec<String>> = plan
                .iter()
                .map(|(p, c, n)| vec![a.topic.clone(), p.to_string(), opt(*c), n.to_string()])
                .collect();
            print!(
                "{}",
                table(&["TOPIC", "PARTITION", "CURRENT", "NEW"], &rows)
            );
            if a.execute {
                println!("offsets of group '{}' reset", a.group);
            } else {
                println!("dry run: nothing changed (use --execute to apply)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
