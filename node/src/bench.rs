//! `gpumesh bench`: load against one or more nodes, closed loop (fixed
//! concurrency) or open loop (fixed rate), then throughput, latency
//! percentiles, errors and where the requests ran. `--openai` streams
//! chat completions instead (`bench_llm`, which shares the flags here).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use gpumesh_actors::{Clock as _, SystemClock};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Map;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::client::{Outcome, Prepared, model_info, random_request, send};

/// Most requests an open-loop run keeps in flight before it counts drops.
const OPEN_LOOP_MAX_INFLIGHT: usize = 10_000;

/// Flags of `gpumesh bench`.
#[derive(Args, Clone, Debug)]
pub(crate) struct BenchArgs {
    /// Node HTTP addresses, comma-separated; requests are spread over them.
    #[arg(long, value_delimiter = ',', required = true)]
    pub(crate) node: Vec<String>,
    #[arg(long)]
    pub(crate) model: String,
    /// Requests kept in flight (closed loop).
    #[arg(long, default_value_t = 8, conflicts_with = "rate")]
    pub(crate) concurrency: usize,
    /// Requests per second started on schedule (open loop).
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// How long to run, such as 30s or 2m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Streamed chat completions of a language model (`/v1`) instead of
    /// tensors: time to first token, inter-token and end-to-end latency.
    #[arg(long, conflicts_with_all = ["binary", "jobs", "batch_size"])]
    pub(crate) openai: bool,
    /// Words in each prompt (`--openai`).
    #[arg(long, default_value_t = 128)]
    pub(crate) prompt_tokens: usize,
    /// Words at the start of each prompt its group shares (`--openai`).
    #[arg(long, default_value_t = 0)]
    pub(crate) shared_prefix_tokens: usize,
    /// Groups of requests sharing a prefix (`--openai`).
    #[arg(long, default_value_t = 1)]
    pub(crate) prefix_groups: usize,
    /// Tokens generated per request (`--openai`).
    #[arg(long, default_value_t = 64)]
    pub(crate) max_tokens: u32,
    /// Rows per request.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Tensors over the binary extension instead of JSON.
    #[arg(long)]
    binary: bool,
    /// Submit durable jobs (`POST /jobs`) instead of inferring: measures
    /// acknowledgements, each sent only after the job is flushed to disk.
    #[arg(long, conflicts_with = "binary")]
    jobs: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    statuses: BTreeMap<String, u64>,
    by_node: BTreeMap<String, u64>,
    dropped: u64,
}

impl Tally {
    fn record(&mut self, outcome: &Outcome) {
        let status = outcome.status.map_or_else(|| "transport_error".to_string(), |s| s.to_string());
        *self.statuses.entry(status).or_default() += 1;
        // 200 for an inference, 202 for an acknowledged job.
        if matches!(outcome.status, Some(200 | 202)) {
            self.latencies_us.push(u64::try_from(outcome.latency.as_micros()).unwrap_or(u64::MAX));
            // A job is counted on its owner, which its id names.
            let node = outcome.node.clone().or_else(|| {
                let body: serde_json::Value = serde_json::from_slice(&outcome.body).ok()?;
                Some(body["job_id"].as_str()?.split_once('.')?.0.to_string())
            });
            *self.by_node.entry(node.unwrap_or_else(|| "unknown".into())).or_default() += 1;
        }
    }
}

/// The result of a run.
#[derive(Serialize)]
struct Report {
    model: String,
    mode: &'static str,
    concurrency: Option<usize>,
    rate_rps: Option<f64>,
    batch_size: usize,
    binary: bool,
    jobs: bool,
    duration_s: f64,
    requests: u64,
    errors: u64,
    throughput_rps: f64,
    items_per_s: f64,
    latency_ms: Latency,
    status_counts: BTreeMap<String, u64>,
    by_node: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

pub(crate) fn percentile(sorted: &[u64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index] as f64 / 1000.0
}

pub(crate) fn progress(duration: Duration) -> ProgressBar {
    let bar = ProgressBar::new(duration.as_secs().max(1));
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

async fn closed_loop(
    client: &reqwest::Client,
    args: &BenchArgs,
    prepared: &Prepared,
    tally: &Arc<Mutex<Tally>>,
    bar: &ProgressBar,
) {
    let deadline = SystemClock.now() + args.duration;
    let workers = (0..args.concurrency.max(1)).map(|worker| {
        let (client, tally, prepared) = (client.clone(), tally.clone(), prepared.clone());
        let nodes = args.node.clone();
        let model = args.model.clone();
        tokio::spawn(async move {
            let mut turn = worker;
            while SystemClock.now() < deadline {
                let outcome = send(&client, &nodes[turn % nodes.len()], &model, &prepared).await;
                tally.lock().await.record(&outcome);
                turn += 1;
            }
        })
    });
    let handles: Vec<_> = workers.collect();
    watch_progress(deadline, tally.clone(), bar.clone()).await;
    for handle in handles {
        let _ = handle.await;
    }
}

async fn open_loop(
    client: &reqwest::Client,
    args: &BenchArgs,
    rate: f64,
    prepared: &Prepared,
    tally: &Arc<Mutex<Tally>>,
    bar: &ProgressBar,
) {
    let start = SystemClock.now();
    let deadline = start + args.duration;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let inflight = Arc::new(tokio::sync::Semaphore::new(OPEN_LOOP_MAX_INFLIGHT));
    let progress = tokio::spawn(watch_progress(deadline, tally.clone(), bar.clone()));
    let mut handles = Vec::new();
    let mut sent: u32 = 0;
    loop {
        let scheduled = start + interval * sent;
        if scheduled >= deadline {
            break;
        }
        tokio::time::sleep_until(scheduled).await;
        let Ok(permit) = inflight.clone().try_acquire_owned() else {
            tally.lock().await.dropped += 1;
            sent += 1;
            continue;
        };
        let (client, tally, prepared) = (client.clone(), tally.clone(), prepared.clone());
        let (node, model) = (args.node[sent as usize % args.node.len()].clone(), args.model.clone());
        handles.push(tokio::spawn(async move {
            let mut outcome = send(&client, &node, &model, &prepared).await;
            // Latency from the scheduled start, so a slow server cannot hide
            // its queueing behind a late send (coordinated omission).
            outcome.latency = scheduled.elapsed();
            tally.lock().await.record(&outcome);
            drop(permit);
        }));
        sent += 1;
    }
    for handle in handles {
        let _ = handle.await;
    }
    let _ = progress.await;
}

async fn watch_progress(deadline: Instant, tally: Arc<Mutex<Tally>>, bar: ProgressBar) {
    let start = SystemClock.now();
    while SystemClock.now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let tally = tally.lock().await;
        let done: u64 = tally.statuses.values().sum();
        let errors = done - tally.latencies_us.len() as u64;
        let elapsed = start.elapsed();
        bar.set_position(elapsed.as_secs());
        bar.set_message(format!(
            "{done} requests, {errors} errors, {:.0} req/s",
            done as f64 / elapsed.as_secs_f64().max(1e-3)
        ));
    }
    bar.finish_and_clear();
}

fn report(args: &BenchArgs, tally: Tally, elapsed: Duration) -> Report {
    let mut latencies = tally.latencies_us;
    latencies.sort_unstable();
    let ok = latencies.len() as u64;
    let requests: u64 = tally.statuses.values().sum::<u64>() + tally.dropped;
    let mut statuses = tally.statuses;
    if tally.dropped > 0 {
        statuses.insert("dropped".into(), tally.dropped);
    }
    let seconds = elapsed.as_secs_f64().max(1e-9);
    Report {
        model: args.model.clone(),
        mode: if args.rate.is_some() { "open" } else { "closed" },
        concurrency: args.rate.is_none().then_some(args.concurrency),
        rate_rps: args.rate,
        batch_size: args.batch_size,
        binary: args.binary,
        jobs: args.jobs,
        duration_s: seconds,
        requests,
        errors: requests - ok,
        throughput_rps: ok as f64 / seconds,
        items_per_s: (ok as usize * args.batch_size) as f64 / seconds,
        latency_ms: Latency {
            p50: percentile(&latencies, 0.50),
            p90: percentile(&latencies, 0.90),
            p99: percentile(&latencies, 0.99),
            max: percentile(&latencies, 1.0),
            mean: if latencies.is_empty() {
                0.0
            } else {
                latencies.iter().sum::<u64>() as f64 / latencies.len() as f64 / 1000.0
            },
        },
        status_counts: statuses,
        by_node: tally.by_node,
    }
}

fn print_report(report: &Report) {
    let load = match (report.concurrency, report.rate_rps) {
        (Some(c), _) => format!("closed loop, {c} in flight"),
        (_, Some(r)) => format!("open loop, {r} req/s offered"),
        _ => String::new(),
    };
    let format = match (report.jobs, report.binary) {
        (true, _) => "durable jobs acknowledged",
        (false, true) => "binary",
        (false, false) => "JSON",
    };
    println!("{} ({load}, batch {}, {format}), {:.1} s", report.model, report.batch_size, report.duration_s);
    println!("  requests  {} ({} errors)", report.requests, report.errors);
    println!("  throughput {:.1} req/s, {:.1} items/s", report.throughput_rps, report.items_per_s);
    let l = &report.latency_ms;
    println!(
        "  latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  mean {:.3}",
        l.p50, l.p90, l.p99, l.max, l.mean
    );
    println!("  statuses   {:?}", report.status_counts);
    println!("  {}  {:?}", if report.jobs { "owned by" } else { "ran on  " }, report.by_node);
}

/// The flags every bench run needs right.
pub(crate) fn check(args: &BenchArgs) -> anyhow::Result<()> {
    if args.node.is_empty() {
        bail!("give at least one --node URL");
    }
    if args.rate.is_some_and(|rate| !(rate > 0.0 && rate.is_finite())) {
        bail!("--rate must be a positive number of requests per second");
    }
    Ok(())
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    check(&args)?;
    let client = crate::client::http_client()?;
    let info = model_info(&client, &args.node[0], &args.model).await?;
    let mut prepared = random_request(&info, args.batch_size, args.binary, Map::new(), 7)?;
    if args.jobs {
        prepared = prepared.into_job(&args.model)?;
    }
    let tally = Arc::new(Mutex::new(Tally::default()));
    let bar = progress(args.duration);
    let started = SystemClock.now();
    match args.rate {
        Some(rate) => open_loop(&client, &args, rate, &prepared, &tally, &bar).await,
        None => closed_loop(&client, &args, &prepared, &tally, &bar).await,
    }
    let elapsed = started.elapsed();
    let tally = std::mem::take(&mut *tally.lock().await);
    let report = report(&args, tally, elapsed);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}
