//! `gregor cluster health`: the cluster on one screen, as `rpk cluster health` shows it:
//! which nodes are down (members of the metadata quorum that Metadata does not list as live
//! brokers), the active controller, and the partitions that are leaderless, under-replicated
//! or under `min.insync.replicas`, and those led by another replica than their preferred one.
//! Healthy means no node down, a controller, and no leaderless or under-replicated partition;
//! the exit code is 1 otherwise, so scripts can wait on it.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::Result;
use gregor_client::{ConfigResource, TopicDescription};
use serde_json::json;

use crate::common::{admin_client, print_json, ConnArgs, FormatArg, OutputFormat};

/// What the health report found.
#[derive(Debug, Default)]
struct Report {
    controller: i32,
    live: Vec<i32>,
    down: Vec<i32>,
    leaderless: Vec<String>,
    under_replicated: Vec<String>,
    under_min_isr: Vec<String>,
    not_preferred: Vec<String>,
}

impl Report {
    fn healthy(&self) -> bool {
        self.down.is_empty()
            && self.controller >= 0
            && self.leaderless.is_empty()
            && self.under_replicated.is_empty()
    }
}

pub async fn run(format: FormatArg, conn: ConnArgs) -> Result<ExitCode> {
    let admin = admin_client(&conn).await?;
    let cluster = admin.describe_cluster().await?;
    let live: BTreeSet<i32> = cluster.brokers.iter().map(|b| b.0).collect();
    // Every node the cluster knows: quorum voters and observers, and every replica.
    let mut known: BTreeSet<i32> = live.clone();
    if let Ok(q) = crate::cluster::describe_quorum(&admin).await {
        known.extend(q.current_voters.iter().map(|v| v.replica_id.0));
        known.extend(q.observers.iter().map(|v| v.replica_id.0));
    }
    let names = admin.list_topics(true).await?;
    let topics: Vec<TopicDescription> = admin
        .describe_topics(names)
        .await?
        .into_iter()
        .filter_map(|(_, r)| r.ok())
        .collect();
    let mut report = Report {
        controller: cluster.controller_id,
        ..Report::default()
    };
    for t in &topics {
        let min_isr = admin
            .describe_configs(ConfigResource::Topic(t.name.clone()))
            .await
            .ok()
            .and_then(|entries| {
                entries
                    .into_iter()
                    .find(|e| e.name == "min.insync.replicas")
                    .and_then(|e| e.value?.parse::<usize>().ok())
            })
            .unwrap_or(1);
        for p in &t.partitions {
            known.extend(&p.replicas);
            let name = format!("{}-{}", t.name, p.partition);
            if p.leader < 0 {
                report.leaderless.push(name.clone());
            } else if p.replicas.first() != Some(&p.leader) {
                report.not_preferred.push(name.clone());
            }
            if p.isr.len() < p.replicas.len() {
                report.under_replicated.push(name.clone());
            }
            if p.isr.len() < min_isr.min(p.replicas.len()) {
                report.under_min_isr.push(name);
            }
        }
    }
    report.live = live.iter().copied().collect();
    report.down = known.difference(&live).copied().collect();
    print(&report, format.format);
    Ok(if report.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print(r: &Report, format: OutputFormat) {
    match format {
        OutputFormat::Json => print_json(&json!({
            "healthy": r.healthy(),
            "controller": r.controller,
            "live_brokers": r.live,
            "down_nodes": r.down,
            "leaderless_partitions": r.leaderless,
            "under_replicated_partitions": r.under_replicated,
            "under_min_isr_partitions": r.under_min_isr,
            "non_preferred_leader_partitions": r.not_preferred,
        })),
        OutputFormat::Text => {
            let list = |v: &[String]| {
                if v.is_empty() {
                    "[]".to_string()
                } else {
                    format!("[{}]", v.join(", "))
                }
            };
            let ids = |v: &[i32]| {
                format!(
                    "[{}]",
                    v.iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            println!("CLUSTER HEALTH OVERVIEW");
            println!("=======================");
            println!("Healthy:                          {}", r.healthy());
            println!("Controller ID:                    {}", r.controller);
            println!("Live brokers:                     {}", ids(&r.live));
            println!("Nodes down:                       {}", ids(&r.down));
            println!(
                "Leaderless partitions ({}):        {}",
                r.leaderless.len(),
                list(&r.leaderless)
            );
            println!(
                "Under-replicated partitions ({}):  {}",
                r.under_replicated.len(),
                list(&r.under_replicated)
            );
            println!(
                "Under-min-ISR partitions ({}):     {}",
                r.under_min_isr.len(),
                list(&r.under_min_isr)
            );
            println!(
                "Non-preferred leaders ({}):        {}",
                r.not_preferred.len(),
                list(&r.not_preferred)
            );
        }
    }
}
