//! `gregor cluster info`: cluster id, controller and brokers.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::common::{admin_client, print_json, table, ConnArgs, FormatArg, OutputFormat};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster id, the controller and the brokers.
    Info(InfoArgs),
}

#[derive(Args)]
pub struct InfoArgs {
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    conn: ConnArgs,
}

pub async fn run(command: ClusterCommand) -> Result<ExitCode> {
    let ClusterCommand::Info(a) = command;
    let admin = admin_client(&a.conn).await?;
    let c = admin.describe_cluster().await?;
    match a.format.format {
        OutputFormat::Json => print_json(&json!({
            "cluster_id": c.cluster_id,
            "controller": c.controller_id,
            "brokers": c.brokers.iter().map(|(id, host, port)| json!({
                "id": id,
                "host": host,
                "port": port,
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Text => {
            println!("Cluster id: {}", c.cluster_id);
            println!("Controller: {}", c.controller_id);
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
        }
    }
    Ok(ExitCode::SUCCESS)
}
