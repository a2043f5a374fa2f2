//! `gregor cluster info`: cluster id, controller, brokers and versions (this CLI's and the
//! API version ranges each broker advertises); `gregor cluster quorum`: the metadata quorum
//! (DescribeQuorum at the active controller); `gregor cluster elect-leaders`: a preferred or
//! unclean election (ElectLeaders) for a partition, a topic or everything.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};
use gregor_client::connection::Connection;
use kafka_protocol::messages::describe_quorum_response::ReplicaState;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use crate::common::{admin_client, print_json, table, ConnArgs, FormatArg, OutputFormat};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster id, the controller, the brokers and versions.
    Info(InfoArgs),
    /// Show the metadata quorum: leader, epoch, and each voter's log end and lag.
    Quorum(InfoArgs),
    /// Elect leaders: give partitions back to their preferred replica, or (unclean) give a
    /// partition without a leader any live replica.
    ElectLeaders(ElectArgs),
    /// One screen of cluster health: nodes down, the controller, leaderless,
    /// under-replicated and under-min-ISR partitions, preferred-leader imbalance; exits 1
    /// when unhealthy.
    Health(InfoArgs),
}

#[derive(Args)]
pub struct ElectArgs {
    /// `preferred`: the first replica of the assignment, when live and in sync;
    /// `unclean`: for a partition without a leader, any live replica (records it lacks are
    /// lost).
    #[arg(long = "type", value_enum, default_value = "preferred")]
    kind: ElectionType,
    /// Only this topic's partitions (default: every partition).
    #[arg(long)]
    topic: Option<String>,
    /// Only this partition of the topic.
    #[arg(long, requires = "topic")]
    partition: Option<i32>,
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ElectionType {
    Preferred,
    Unclean,
}

#[derive(Args)]
pub struct InfoArgs {
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    conn: ConnArgs,
}

/// One API a broker advertises: `(name, min, max)`.
type ApiRange = (String, i16, i16);

/// The API name of a key (`Produce`), or `Unknown(N)`.
fn api_name(key: i16) -> String {
    match ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}"),
        Err(()) => format!("Unknown({key})"),
    }
}

/// The API version ranges the broker at `addr` advertises, sorted by API key. The client's
/// connection keeps only the negotiated versions, so this sends its own ApiVersions
/// request (v3, else v0) through a fresh connection.
async fn api_versions(addr: &str, timeout: Duration) -> Result<Vec<ApiRange>> {
    let conn = Connection::connect(addr, "gregor-cli", timeout).await?;
    let request = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("gregor-cli"))
        .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
    let mut last_error = None;
    for version in [3i16, 0] {
        let kind = RequestKind::ApiVersions(request.clone());
        match conn
            .send_versioned(ApiKey::ApiVersions, version, &kind)?
            .await
        {
            Ok(ResponseKind::ApiVersions(r)) if r.error_code == 0 => {
                let mut keys: Vec<_> = r
                    .api_keys
                    .iter()
                    .map(|k| (k.api_key, k.min_version, k.max_version))
                    .collect();
                keys.sort();
                return Ok(keys
                    .into_iter()
                    .map(|(k, lo, hi)| (api_name(k), lo, hi))
                    .collect());
            }
            Ok(ResponseKind::ApiVersions(r)) => {
                last_error = Some(anyhow!("ApiVersions error code {}", r.error_code))
            }
            Ok(_) => last_error = Some(anyhow!("unexpected response to ApiVersions")),
            Err(e) => last_error = Some(e.into()),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow!("no ApiVersions response")))
}

fn ranges_json(r: &Result<Vec<ApiRange>>) -> serde_json::Value {
    match r {
        Ok(v) => json!(v
            .iter()
            .map(|(name, min, max)| json!({"api": name, "min": min, "max": max}))
            .collect::<Vec<_>>()),
        Err(_) => serde_json::Value::Null,
    }
}

pub async fn run(command: ClusterCommand) -> Result<ExitCode> {
    let a = match command {
        ClusterCommand::Info(a) => a,
        ClusterCommand::Quorum(a) => return quorum(a).await,
        ClusterCommand::ElectLeaders(a) => return elect_leaders(a).await,
        ClusterCommand::Health(a) => return crate::health::run(a.format, a.conn).await,
    };
    let admin = admin_client(&a.conn).await?;
    let c = admin.describe_cluster().await?;
    let timeout = admin.config().request_timeout;
    let mut versions = Vec::new();
    for (_, host, port) in &c.brokers {
        versions.push(api_versions(&format!("{host}:{port}"), timeout).await);
    }
    let controller = c.brokers.iter().position(|b| b.0 == c.controller_id);
    match a.format.format {
        OutputFormat::Json => print_json(&json!({
            "cluster_id": c.cluster_id,
            "controller": c.controller_id,
            "gregor_version": env!("CARGO_PKG_VERSION"),
            "brokers": c.brokers.iter().zip(&versions).map(|((id, host, port), v)| json!({
                "id": id,
                "host": host,
                "port": port,
                "api_versions": ranges_json(v),
            })).collect::<Vec<_>>(),
            "api_versions": controller.map_or(serde_json::Value::Null, |i| ranges_json(&versions[i])),
        })),
        OutputFormat::Text => {
            println!("Cluster id: {}", c.cluster_id);
            println!("Controller: {}", c.controller_id);
            println!("Gregor CLI version: {}", env!("CARGO_PKG_VERSION"));
            println!();
            let rows: Vec<Vec<String>> = c
                .brokers
                .iter()
                .map(|(id, host, port)| {
                    vec![
                        id.to_string(),
                        format!("{host}:{port}"),
                        if *id == c.controller_id { "yes" } else { "" }.to_string(),
                    ]
                })
                .collect();
            print!("{}", table(&["ID", "ADDRESS", "CONTROLLER"], &rows));
            println!();
            match controller.map(|i| &versions[i]) {
                Some(Ok(ranges)) => {
                    println!("API versions (broker {}):", c.controller_id);
                    let rows: Vec<Vec<String>> = ranges
                        .iter()
                        .map(|(name, min, max)| {
                            vec![name.clone(), min.to_string(), max.to_string()]
                        })
                        .collect();
                    print!("{}", table(&["API", "MIN", "MAX"], &rows));
                }
                Some(Err(e)) => println!("API versions: unavailable ({e:#})"),
                None => println!("API versions: unavailable (controller not among the brokers)"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `gregor cluster quorum`: DescribeQuorum at the active controller.
/// The metadata quorum as its leader reports it (DescribeQuorum at the active controller).
pub async fn describe_quorum(
    admin: &gregor_client::AdminClient,
) -> Result<kafka_protocol::messages::describe_quorum_response::PartitionData> {
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    use kafka_protocol::messages::{DescribeQuorumRequest, TopicName};
    let c = admin.describe_cluster().await?;
    let timeout = admin.config().request_timeout;
    let (_, host, port) = c
        .brokers
        .iter()
        .find(|b| b.0 == c.controller_id)
        .ok_or_else(|| {
            anyhow!(
                "the controller {} is not among the brokers",
                c.controller_id
            )
        })?;
    let conn = Connection::connect(&format!("{host}:{port}"), "gregor-cli", timeout).await?;
    let request = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
        .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
    let kind = RequestKind::DescribeQuorum(request);
    let response = match conn
        .send_versioned(ApiKey::DescribeQuorum, 1, &kind)?
        .await?
    {
        ResponseKind::DescribeQuorum(r) => r,
        _ => return Err(anyhow!("unexpected response to DescribeQuorum")),
    };
    let p = response
        .topics
        .into_iter()
        .next()
        .and_then(|t| t.partitions.into_iter().next())
        .ok_or_else(|| anyhow!("DescribeQuorum answered no partition"))?;
    if p.error_code != 0 {
        return Err(anyhow!(
            "DescribeQuorum at broker {} failed: error code {}",
            c.controller_id,
            p.error_code
        ));
    }
    Ok(p)
}

async fn quorum(a: InfoArgs) -> Result<ExitCode> {
    let admin = admin_client(&a.conn).await?;
    let p = &describe_quorum(&admin).await?;
    let leader_end = p
        .current_voters
        .iter()
        .find(|v| v.replica_id == p.leader_id)
        .map_or(-1, |v| v.log_end_offset);
    let progress = |replicas: &[ReplicaState]| -> Vec<(i32, i64, i64)> {
        replicas
            .iter()
            .map(|v| {
                let lag = if v.log_end_offset < 0 {
                    -1
                } else {
                    leader_end - v.log_end_offset
                };
                (v.replica_id.0, v.log_end_offset, lag)
            })
            .collect()
    };
    let voters = progress(&p.current_voters);
    let observers = progress(&p.observers);
    let as_json = |rows: &[(i32, i64, i64)]| {
        rows.iter()
            .map(|(id, end, lag)| json!({"id": id, "log_end_offset": end, "lag": lag}))
            .collect::<Vec<_>>()
    };
    match a.format.format {
        OutputFormat::Json => print_json(&json!({
            "leader": p.leader_id.0,
            "epoch": p.leader_epoch,
            "high_watermark": p.high_watermark,
            "voters": as_json(&voters),
            "observers": as_json(&observers),
        })),
        OutputFormat::Text => {
            println!("Leader: {}", p.leader_id.0);
            println!("Epoch: {}", p.leader_epoch);
            println!("High watermark: {}", p.high_watermark);
            println!();
            let row = |(id, end, lag): &(i32, i64, i64), status: &str| {
                vec![
                    id.to_string(),
                    end.to_string(),
                    lag.to_string(),
                    status.to_string(),
                ]
            };
            let rows: Vec<Vec<String>> = voters
                .iter()
                .map(|v| {
                    row(
                        v,
                        if v.0 == p.leader_id.0 {
                            "leader"
                        } else {
                            "follower"
                        },
                    )
                })
                .chain(observers.iter().map(|o| row(o, "observer")))
                .collect();
            print!("{}", table(&["ID", "LOG-END", "LAG", "STATUS"], &rows));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `gregor cluster elect-leaders`: one line per partition with its outcome; fails (exit 1)
/// when a partition could not get the leader asked for (ELECTION_NOT_NEEDED is success).
async fn elect_leaders(a: ElectArgs) -> Result<ExitCode> {
    let admin = admin_client(&a.conn).await?;
    let partitions = match (&a.topic, a.partition) {
        (None, _) => None,
        (Some(t), Some(p)) => Some(vec![(t.clone(), p)]),
        (Some(t), None) => {
            let d = crate::topic::describe_topic(&admin, t).await?;
            Some(
                d.partitions
                    .iter()
                    .map(|p| (t.clone(), p.partition))
                    .collect(),
            )
        }
    };
    let unclean = matches!(a.kind, ElectionType::Unclean);
    let results = admin.elect_leaders(unclean, partitions).await?;
    let outcome = |r: &gregor_client::ItemResult<()>| match r {
        Ok(()) => ("ELECTED".to_string(), String::new()),
        Err(e) => (e.name.clone(), e.message.clone().unwrap_or_default()),
    };
    let failed = results
        .iter()
        .any(|(_, _, r)| matches!(r, Err(e) if e.name != "ELECTION_NOT_NEEDED"));
    match a.format.format {
        OutputFormat::Json => print_json(&json!(results
            .iter()
            .map(|(t, p, r)| {
                let (result, message) = outcome(r);
                json!({"topic": t, "partition": p, "result": result, "message": message})
            })
            .collect::<Vec<_>>())),
        OutputFormat::Text => {
            if results.is_empty() {
                println!("No partition needed an election.");
            } else {
                let rows: Vec<Vec<String>> = results
                    .iter()
                    .map(|(t, p, r)| {
                        let (result, message) = outcome(r);
                        vec![t.clone(), p.to_string(), result, message]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["TOPIC", "PARTITION", "RESULT", "MESSAGE"], &rows)
                );
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
