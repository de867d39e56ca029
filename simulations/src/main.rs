//! `gpumesh-sim`: runs a scenario of real gpumesh nodes on one thread in
//! simulated time, with every source of randomness drawn from the seed.
//!
//! Layout: `scenario` (files), `host` (one simulated node), `net` (gossip
//! over simulated UDP), `world` (the driver), `checks` (invariants and
//! measurements), `report`, `entropy` (seeded process randomness).

mod checks;
mod entropy;
mod host;
mod net;
mod report;
mod scenario;
mod trace;
mod world;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::report::{JobCounts, MembershipReport, Report};
use crate::scenario::Scenario;

/// Deterministic simulation of a gpumesh cluster.
#[derive(Parser, Debug)]
#[command(name = "gpumesh-sim", version, about)]
struct Cli {
    /// Scenario file (simulations/scenarios/*.toml).
    scenario: PathBuf,
    /// Seed of every random choice in the run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Write the event log, whose hash is trace_sha256, to this file.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
}

/// The seed must be in force before anything draws randomness, clap
/// included, so it is read from the raw arguments first.
fn seed_from_args() -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|arg| arg == "--seed")
        .and_then(|index| args.get(index + 1))
        .or_else(|| args.iter().find_map(|arg| arg.strip_prefix("--seed=").map(|_| arg)))
        .and_then(|value| value.trim_start_matches("--seed=").parse().ok())
        .unwrap_or(1)
}

#[allow(clippy::disallowed_methods, reason = "wall time of the run is reported next to simulated time")]
fn wall_clock() -> std::time::Instant {
    std::time::Instant::now()
}

fn run(cli: &Cli) -> anyhow::Result<Report> {
    let scenario = Scenario::load(&cli.scenario)?;
    let started = wall_clock();
    let output = world::run(&scenario, cli.seed)?;
    let wall_seconds = started.elapsed().as_secs_f64();
    if let Some(path) = &cli.trace {
        let mut file = std::fs::File::create(path)?;
        for line in output.trace.lines() {
            writeln!(file, "{line}")?;
        }
    }
    let checker = &output.checker;
    Ok(Report {
        seed: cli.seed,
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        verdict: if checker.failures.is_empty() { "pass" } else { "fail" },
        trace_sha256: output.trace.sha256(),
        trace_events: output.trace.lines().len(),
        sim_seconds: output.sim_ms as f64 / 1000.0,
        wall_seconds,
        jobs: JobCounts::default(),
        membership: MembershipReport {
            formation_ms: checker.formation_ms(),
            detect_ms_max: checker.detect_ms_max,
            converge_ms_max: checker.converge_ms_max,
        },
        failures: checker.failures.clone(),
    })
}

fn main() -> ExitCode {
    entropy::seed(seed_from_args());
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("GPUMESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).without_time().init();
    match run(&cli) {
        Ok(report) => {
            if cli.json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                print!("{}", report.summary());
            }
            if report.verdict == "pass" { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
