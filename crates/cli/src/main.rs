//! The `gregor` binary. `gregor broker` starts a single-node broker with embedded defaults;
//! `--config FILE` reads a Kafka-style server.properties and `--override key=value` wins over
//! both.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use gregor_broker::config::parse_properties;
use gregor_broker::BrokerConfig;

#[derive(Parser)]
#[command(
    name = "gregor",
    version,
    about = "Gregor: a Kafka-compatible event-streaming platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a single-node broker (node.id 1, its own controller) on 127.0.0.1:9092.
    Broker {
        /// A Kafka-style server.properties file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// A Kafka broker property, `key=value`; repeatable; wins over the file.
        #[arg(long = "override", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GREGOR_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Broker { config, overrides } => run_broker(config, overrides),
    }
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

fn run_broker(file: Option<PathBuf>, overrides: Vec<String>) -> Result<()> {
    let config = broker_config(file, overrides)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gregor")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let data_dir = config.log_dir();
        let handle = gregor_broker::start(config).await?;
        let data_dir = std::fs::canonicalize(&data_dir).unwrap_or(data_dir);
        println!(
            "Gregor broker {} listening on {} (node.id {}), data in {}",
            env!("CARGO_PKG_VERSION"),
            handle.local_addr,
            handle.broker.node_id,
            data_dir.display()
        );
        let trigger = handle.shutdown_trigger();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received");
            let _ = trigger.send(true);
        });
        handle.wait().await?;
        Ok::<_, anyhow::Error>(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
