//! `--seeds A..B`: every seed in its own process (a process's randomness is
//! seeded once, before anything draws from it), two at a time, with a
//! progress bar and a summary of failing seeds.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::report::Report;

/// The outcome of one seed.
struct SeedRun {
    seed: u64,
    report: Option<Report>,
    error: Option<String>,
}

/// The summary `--json` prints.
#[derive(Serialize)]
struct Summary {
    scenario: String,
    seeds: usize,
    passed: usize,
    failed: Vec<u64>,
    distinct_traces: usize,
    wall_seconds: f64,
    seeds_per_minute: f64,
    sim_seconds_per_wall_second: f64,
    detect_ms_max: u64,
    converge_ms_max: u64,
    jobs_accepted: u64,
    jobs_lost: u64,
    /// Idempotency keys that got a second job after their home moved.
    moved_keys: u64,
}

fn parse_range(range: &str) -> anyhow::Result<(u64, u64)> {
    let parsed = range.split_once("..").and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
    match parsed {
        Some((first, last)) if first <= last => Ok((first, last)),
        _ => bail!("--seeds {range:?}: give a range such as 1..200 (both ends included)"),
    }
}

fn run_seed(exe: &Path, scenario: &Path, seed: u64, extra: &[String]) -> SeedRun {
    let output = Command::new(exe).arg(scenario).args(["--seed", &seed.to_string(), "--json"]).args(extra).output();
    match output {
        Ok(output) => match serde_json::from_slice::<Report>(&output.stdout) {
            Ok(report) => SeedRun { seed, report: Some(report), error: None },
            Err(_) => SeedRun {
                seed,
                report: None,
                error: Some(String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or("no report").to_string()),
            },
        },
        Err(error) => SeedRun { seed, report: None, error: Some(error.to_string()) },
    }
}

#[allow(clippy::disallowed_methods, reason = "the sweep reports its wall time")]
fn wall_clock() -> std::time::Instant {
    std::time::Instant::now()
}

/// Runs every seed of `range`; `Ok(true)` when all pass.
pub(crate) fn run(scenario: &Path, range: &str, extra: &[String], json: bool) -> anyhow::Result<bool> {
    let (first, last) = parse_range(range)?;
    let exe = std::env::current_exe().context("cannot find this program to run each seed")?;
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get).min(4);
    let seeds: Arc<Mutex<std::ops::RangeInclusive<u64>>> = Arc::new(Mutex::new(first..=last));
    let results: Arc<Mutex<Vec<SeedRun>>> = Arc::default();
    let bar = ProgressBar::new(last - first + 1);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} seeds  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = wall_clock();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let Some(seed) = seeds.lock().unwrap_or_else(PoisonError::into_inner).next() else { return };
                    let run = run_seed(&exe, scenario, seed, extra);
                    let failed = run.report.as_ref().is_none_or(|report| report.verdict != "pass");
                    let mut results = results.lock().unwrap_or_else(PoisonError::into_inner);
                    results.push(run);
                    let failures = results
                        .iter()
                        .filter(|r| r.report.as_ref().is_none_or(|report| report.verdict != "pass"))
                        .count();
                    bar.set_message(format!(
                        "{failures} failing{}",
                        if failed { format!(", last {seed}") } else { String::new() }
                    ));
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    let wall_seconds = started.elapsed().as_secs_f64();
    let mut results = std::mem::take(&mut *results.lock().unwrap_or_else(PoisonError::into_inner));
    results.sort_by_key(|run| run.seed);
    let reports: Vec<&Report> = results.iter().filter_map(|run| run.report.as_ref()).collect();
    let failed: Vec<u64> = results
        .iter()
        .filter(|r| r.report.as_ref().is_none_or(|report| report.verdict != "pass"))
        .map(|r| r.seed)
        .collect();
    let mut hashes: Vec<&str> = reports.iter().map(|report| report.trace_sha256.as_str()).collect();
    hashes.sort_unstable();
    hashes.dedup();
    let sim_seconds: f64 = reports.iter().map(|report| report.sim_seconds).sum();
    let busy_seconds: f64 = reports.iter().map(|report| report.wall_seconds).sum();
    let summary = Summary {
        scenario: scenario.display().to_string(),
        seeds: results.len(),
        passed: results.len() - failed.len(),
        failed: failed.clone(),
        distinct_traces: hashes.len(),
        wall_seconds,
        seeds_per_minute: results.len() as f64 / wall_seconds.max(1e-9) * 60.0,
        sim_seconds_per_wall_second: sim_seconds / busy_seconds.max(1e-9),
        detect_ms_max: reports.iter().map(|report| report.membership.detect_ms_max).max().unwrap_or(0),
        converge_ms_max: reports.iter().map(|report| report.membership.converge_ms_max).max().unwrap_or(0),
        jobs_accepted: reports.iter().map(|report| report.jobs.accepted).sum(),
        jobs_lost: reports.iter().map(|report| report.jobs.lost).sum(),
        moved_keys: reports.iter().map(|report| report.jobs.moved_keys).sum(),
    };
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{}: {}/{} seeds passed in {:.1} s ({:.0} seeds/min, {:.0}x real time per run), {} distinct traces",
            summary.scenario,
            summary.passed,
            summary.seeds,
            wall_seconds,
            summary.seeds_per_minute,
            summary.sim_seconds_per_wall_second,
            summary.distinct_traces
        );
        println!(
            "  detection max {} ms, convergence max {} ms, jobs accepted {}, lost {}, keys moved home {}",
            summary.detect_ms_max,
            summary.converge_ms_max,
            summary.jobs_accepted,
            summary.jobs_lost,
            summary.moved_keys
        );
        for run in results.iter().filter(|run| failed.contains(&run.seed)) {
            let first = run
                .report
                .as_ref()
                .and_then(|report| report.failures.first().cloned())
                .or_else(|| run.error.clone())
                .unwrap_or_default();
            println!("  seed {} FAILED: {first}", run.seed);
            println!("    replay with: gpumesh-sim {} --seed {} {}", scenario.display(), run.seed, extra.join(" "));
        }
    }
    Ok(failed.is_empty())
}
