//! `gpumesh-sim`: runs a scenario of real gpumesh nodes on one thread in
//! simulated time, with every source of randomness drawn from the seed.
//!
//! Layout: `scenario` (files), `host` (one simulated node), `net` (gossip
//! over simulated UDP), `world` (the driver), `checks` (invariants and
//! measurements), `report`, `entropy` (seeded process randomness),
//! `store` (the simulated job store and its fault model), `peers` and
//! `workload`.
//!
//! May depend on gpumesh-actors, gpumesh-membership and gpumesh-storage: it
//! starts nodes through `start_node` like `gpumesh node` does, replacing
//! only the network, clock, disk and GPU service time through their seams.

mod checks;
mod entropy;
mod host;
mod jobcheck;
mod ledger;
mod llmload;
mod net;
mod peers;
mod report;
mod scenario;
mod store;
mod sweep;
mod trace;
mod workload;
mod world;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use std::collections::BTreeMap;

use crate::report::{JobCounts, MembershipReport, PolicyLatency, Report};
use crate::scenario::{RunPolicy, Scenario};
use crate::trace::TraceLog;
use crate::world::RunOptions;

/// Deterministic simulation of a gpumesh cluster.
#[derive(Parser, Debug)]
#[command(name = "gpumesh-sim", version, about)]
struct Cli {
    /// Scenario file (simulations/scenarios/*.toml).
    scenario: PathBuf,
    /// Seed of every random choice in the run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run every seed of a range such as 1..200 (inclusive), each in its own
    /// process, and print a summary.
    #[arg(long, value_name = "A..B", conflicts_with = "trace")]
    seeds: Option<String>,
    /// Routing policy of every node (overrides the scenario's `policies`).
    #[arg(long)]
    policy: Option<String>,
    /// Run a deliberately broken build to show the checks catch it:
    /// `ack-before-flush` acknowledges jobs before they are on disk;
    /// `forget-sent-tokens` continues a stream elsewhere without the tokens
    /// already sent.
    #[arg(long, value_name = "BUG")]
    inject_bug: Option<String>,
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

fn policies(cli: &Cli, scenario: &Scenario) -> anyhow::Result<Vec<RunPolicy>> {
    let names: Vec<String> = match &cli.policy {
        Some(policy) => vec![policy.clone()],
        None if scenario.policies.is_empty() => vec!["eta".into()],
        None => scenario.policies.clone(),
    };
    names.iter().map(|name| RunPolicy::parse(name).map_err(|error| anyhow::anyhow!("--policy: {error}"))).collect()
}

fn run(cli: &Cli) -> anyhow::Result<Report> {
    let scenario = Scenario::load(&cli.scenario)?;
    let (ack_before_flush, forget_sent_tokens) = match cli.inject_bug.as_deref() {
        None => (false, false),
        Some("ack-before-flush") => (true, false),
        Some("forget-sent-tokens") => (false, true),
        Some(other) => {
            anyhow::bail!("unknown --inject-bug {other:?}: use ack-before-flush or forget-sent-tokens")
        }
    };
    let policies = policies(cli, &scenario)?;
    let started = wall_clock();
    let trace = TraceLog::default();
    let mut report = Report {
        seed: cli.seed,
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        verdict: String::new(),
        trace_sha256: String::new(),
        trace_events: 0,
        sim_seconds: 0.0,
        wall_seconds: 0.0,
        jobs: JobCounts::default(),
        membership: MembershipReport::default(),
        policies: BTreeMap::new(),
        streams: BTreeMap::new(),
        failures: Vec::new(),
    };
    for policy in &policies {
        let label = policy.label();
        trace.record_at(0, format_args!("run policy {label}"));
        let options = RunOptions { seed: cli.seed, policy: *policy, ack_before_flush, forget_sent_tokens };
        let output = world::run(&scenario, options, &trace)?;
        let checker = &output.checker;
        let prefix = if policies.len() > 1 { format!("{label}: ") } else { String::new() };
        report.failures.extend(checker.failures.iter().chain(&output.failures).map(|f| format!("{prefix}{f}")));
        report.sim_seconds += output.sim_ms as f64 / 1000.0;
        let jobs = &mut report.jobs;
        jobs.accepted += output.jobs.accepted;
        jobs.completed += output.jobs.completed;
        jobs.failed += output.jobs.failed;
        jobs.lost += output.jobs.lost;
        jobs.duplicate_visible += output.jobs.duplicate_visible;
        jobs.moved_keys += output.jobs.moved_keys;
        let membership = &mut report.membership;
        membership.formation_ms = membership.formation_ms.max(checker.formation_ms());
        membership.detect_ms_max = membership.detect_ms_max.max(checker.detect_ms_max);
        membership.converge_ms_max = membership.converge_ms_max.max(checker.converge_ms_max);
        if let Some(workload) = &scenario.workload {
            if workload.llm.is_some() {
                report.streams.insert(label.clone(), output.streams);
            }
            report.policies.insert(label, PolicyLatency::new(output.latencies_ms, output.sync_errors));
        }
    }
    report.wall_seconds = started.elapsed().as_secs_f64();
    report.verdict = if report.failures.is_empty() { "pass" } else { "fail" }.into();
    report.trace_sha256 = trace.sha256();
    report.trace_events = trace.lines().len();
    if let Some(path) = &cli.trace {
        let mut file = std::fs::File::create(path)?;
        for line in trace.lines() {
            writeln!(file, "{line}")?;
        }
    }
    Ok(report)
}

/// The flags each seed's process gets besides its seed.
fn sweep_args(cli: &Cli) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(policy) = &cli.policy {
        args.extend(["--policy".to_string(), policy.clone()]);
    }
    if let Some(bug) = &cli.inject_bug {
        args.extend(["--inject-bug".to_string(), bug.clone()]);
    }
    args
}

fn main() -> ExitCode {
    entropy::seed(seed_from_args());
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("GPUMESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).without_time().init();
    if let Some(range) = &cli.seeds {
        return match sweep::run(&cli.scenario, range, &sweep_args(&cli), cli.json) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::from(2)
            }
        };
    }
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
