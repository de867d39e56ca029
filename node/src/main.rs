//! `gpumesh`: the one binary of a gpumesh cluster.
//!
//! Layout: `settings` (flags, env, config file), `models` (registry and
//! ONNX Runtime discovery), `node_cmd` (`gpumesh node`), `demo`, `status`,
//! `infer_cmd` and `bench` (clients, sharing `client`), `net` (address
//! checks). Only this crate has `main`, clap, config files,
//! signal handling and the log subscriber.
//!
//! May depend on every workspace crate but gpumesh-sim; it wires them
//! together and owns no decision of its own.

mod bench;
mod bench_llm;
mod client;
mod demo;
mod infer_cmd;
mod jobs_cmd;
mod models;
mod net;
mod node_cmd;
mod settings;
mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gpumesh_actors::NodeEnv;
use gpumesh_membership::{ClusterSecret, SECRET_LEN};
use rand::Rng as _;

/// A peer-to-peer GPU inference cluster: every node runs this binary.
#[derive(Parser, Debug)]
#[command(name = "gpumesh", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node.
    Node(Box<settings::NodeArgs>),
    /// Start several local nodes and keep them running until Ctrl-C.
    Demo(demo::DemoArgs),
    /// Show the cluster as one node sees it.
    Status(status::StatusArgs),
    /// Send inference requests and show where they ran.
    Infer(infer_cmd::InferArgs),
    /// Load generator: throughput, latency percentiles, per-node counts.
    Bench(bench::BenchArgs),
    /// Durable jobs: submit, get, list.
    Jobs(jobs_cmd::JobsArgs),
    /// Print a new cluster secret for --secret-file.
    Keygen,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GPUMESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ractor=warn,ractor_cluster=warn,chitchat=warn"));
    // Colours only on a terminal: logs sent to files and journald stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

fn keygen() -> String {
    let mut bytes = [0u8; SECRET_LEN];
    NodeEnv::production().fork_rng().fill_bytes(&mut bytes);
    ClusterSecret::from_bytes(bytes).to_hex()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Keygen = cli.command {
        println!("{}", keygen());
        return ExitCode::SUCCESS;
    }
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Node(args) => node_cmd::run(args.resolve().map_err(node_cmd::usage)?).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Status(args) => status::run(args).await,
            Command::Infer(args) => infer_cmd::run(args).await,
            Command::Bench(args) if args.openai => bench_llm::run(&args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Jobs(args) => jobs_cmd::run(args).await,
            Command::Keygen => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            let usage = error.downcast_ref::<node_cmd::UsageError>().is_some();
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keygen_makes_distinct_parseable_secrets() {
        let (a, b) = (super::keygen(), super::keygen());
        assert_ne!(a, b);
        assert!(gpumesh_membership::ClusterSecret::parse(&a).is_ok());
    }
}
