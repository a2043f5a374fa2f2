//! The `gregor` binary.
//!
//! * `gregor broker`: a single-node broker ([`broker_cmd`]).
//! * `gregor produce` / `gregor consume`: console producer and consumer ([`produce`],
//!   [`consume`]).
//! * `gregor perf produce` / `gregor perf consume`: throughput and latency tests ([`perf`]).
//!
//! Client commands take `--brokers` (or `GREGOR_BROKERS`) and `-X key=value` client
//! properties ([`common`]); errors are printed as one line and exit with code 1.

mod broker_cmd;
mod common;
mod consume;
mod perf;
mod produce;

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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Broker(args) => {
            init_logging("info");
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
