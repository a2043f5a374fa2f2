//! `gregor broker`: starts a single-node broker with embedded defaults; `--config FILE`
//! reads a Kafka-style server.properties and `--override key=value` wins over both. With
//! `process.roles=controller` the node is a controller only and serves no clients.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use gregor_broker::config::parse_properties;
use gregor_broker::BrokerConfig;

/// Arguments of `gregor broker`.
#[derive(Args)]
pub struct BrokerArgs {
    /// A Kafka-style server.properties file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A Kafka broker property, `key=value`; repeatable; wins over the file.
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

fn broker_config(file: Option<PathBuf>, overrides: Vec<String>) -> Result<BrokerConfig> {
    let mut pairs = Vec::new();
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        pairs.extend(parse_properties(&text));
    }
    for o in overrides {
        let Some((k, v)) = o.split_once('=') else {
            bail!("--override '{o}' is not of the form key=value");
        };
        pairs.push((k.trim().to_string(), v.trim().to_string()));
    }
    let config = BrokerConfig::from_pairs(pairs)?;
    for key in &config.unknown_keys {
        tracing::warn!(key = %key, "unknown config key ignored");
    }
    Ok(config)
}

/// Runs the broker until SIGINT or SIGTERM.
pub fn run(args: BrokerArgs) -> Result<()> {
    let config = broker_config(args.config, args.overrides)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gregor")
        .build()
        .context("cannot start the async runtime")?;
    if !config.is_broker() {
        return runtime.block_on(run_controller(config));
    }
    runtime.block_on(async move {
        let data_dir = config.log_dir();
        let handle = gregor_broker::start(config).await?;
        announce(
            "broker",
            &handle.local_addr.to_string(),
            handle.broker.node_id,
            "",
            data_dir,
        );
        stop_on_signal(handle.shutdown_trigger());
        handle.wait().await?;
        Ok::<_, anyhow::Error>(())
    })
}

/// The one line a started node prints (tests and `gregor local-cluster` wait for it).
fn announce(what: &str, addr: &str, node_id: i32, role_note: &str, data_dir: PathBuf) {
    let data_dir = std::fs::canonicalize(&data_dir).unwrap_or(data_dir);
    println!(
        "Gregor {what} {} listening on {addr} (node.id {node_id}{role_note}), data in {}",
        env!("CARGO_PKG_VERSION"),
        data_dir.display()
    );
}

/// Flips `trigger` at SIGINT or SIGTERM.
fn stop_on_signal(trigger: tokio::sync::watch::Sender<bool>) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        let _ = trigger.send(true);
    });
}

/// Runs a controller-only node until SIGINT or SIGTERM.
async fn run_controller(config: BrokerConfig) -> Result<()> {
    let data_dir = config.log_dir();
    let handle = gregor_broker::controller_node::start_controller(config).await?;
    let addr = handle.controller_addr.to_string();
    announce(
        "controller",
        &addr,
        handle.node_id,
        ", controller only",
        data_dir,
    );
    stop_on_signal(handle.shutdown_trigger());
    handle.wait().await?;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
