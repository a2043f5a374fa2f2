//! The `gregor` binary.
//!
//! * `gregor broker`: a broker, by default a single node ([`broker_cmd`]).
//! * `gregor local-cluster ...`: several broker processes on this machine ([`local_cluster`]).
//! * `gregor produce` / `gregor consume`: console producer and consumer ([`produce`],
//!   [`consume`]).
//! * `gregor perf produce` / `gregor perf consume`: throughput and latency tests ([`perf`]).
//! * `gregor topic ...`, `gregor group ...`, `gregor txn ...`, `gregor cluster info`:
//!   administration with the admin client ([`topic`], [`group`], [`txn`], [`cluster`]); read
//!   commands take `--format json`.
//!
//! Client commands take `--brokers` (or `GREGOR_BROKERS`) and `-X key=value` client
//! properties ([`common`]); errors are printed as one line and exit with code 1.

mod broker_cmd;
mod cluster;
mod common;
mod consume;
mod group;
mod health;
mod local_cluster;
mod perf;
mod produce;
mod reassign;
mod topic;
mod txn;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Broker(broker_cmd::BrokerArgs),
    /// Produce records read line by line from stdin (or a file) to a topic.
    Produce(produce::ProduceArgs),
    /// Consume records from a topic and print them to stdout.
    Consume(consume::ConsumeArgs),
    /// Performance tests: producer throughput/latency and consumer throughput.
    Perf {
        #[command(subcommand)]
        command: perf::PerfCommand,
    },
    /// Topics: create, list, describe, alter-config, add-partitions, delete.
    Topic {
        #[command(subcommand)]
        command: topic::TopicCommand,
    },
    /// Consumer groups: list, describe, delete, reset-offsets.
    Group {
        #[command(subcommand)]
        command: group::GroupCommand,
    },
    /// Transactions: list, describe, producers.
    Txn {
        #[command(subcommand)]
        command: txn::TxnCommand,
    },
    /// A cluster of broker processes on this machine: up, status, stop, kill, start, down.
    LocalCluster {
        #[command(subcommand)]
        command: local_cluster::LocalClusterCommand,
    },
    /// The cluster: info.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
}

fn init_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GREGOR_LOG")
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    restore_default_sigpipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Broker(args) => {
            // The Raft library narrates every election at info: only its warnings by default.
            init_logging("info,openraft=warn");
            // Same output as returning the error from `main`.
            return match broker_cmd::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("Error: {e:?}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Produce(args) => {
            init_logging("warn");
            common::block_on(produce::run(args))
        }
        Command::Consume(args) => {
            init_logging("warn");
            common::block_on(consume::run(args))
        }
        Command::Perf { command } => {
            init_logging("warn");
            common::block_on(perf::run(command))
        }
        Command::Topic { command } => {
            init_logging("warn");
            common::block_on(topic::run(command))
        }
        Command::Group { command } => {
            init_logging("warn");
            common::block_on(group::run(command))
        }
        Command::Txn { command } => {
            init_logging("warn");
            common::block_on(txn::run(command))
        }
        Command::LocalCluster { command } => {
            init_logging("warn");
            local_cluster::run(command)
        }
        Command::Cluster { command } => {
            init_logging("warn");
            common::block_on(cluster::run(command))
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let line = format!("{e:#}").replace('\n', " ");
            eprintln!("gregor: error: {line}");
            ExitCode::FAILURE
        }
    }
}

/// Rust ignores SIGPIPE, so `gregor consume ... | head` would panic on the next write to the
/// closed pipe. Like other command-line tools, end quietly instead.
fn restore_default_sigpipe() {
    // SAFETY: called first thing in `main`, before any thread exists; it only resets the
    // disposition of one signal to the default.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
