//! `gpumesh bench --openai`: streamed chat completions against one or more
//! nodes (or any OpenAI-compatible server), closed or open loop, with
//! shared-prefix workloads; reports time to first token, inter-token
//! latency, end-to-end latency, tokens per second, the cached-token ratio
//! and where the requests ran.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::Eventsource as _;
use futures_util::StreamExt as _;
use gpumesh_actors::{Clock as _, SystemClock};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::bench::{BenchArgs, percentile, progress};

/// What one streamed request measured.
#[derive(Default)]
struct Measured {
    ok: bool,
    status: String,
    node: Option<String>,
    ttft_us: Option<u64>,
    gaps_us: Vec<u64>,
    total_us: u64,
    completion_tokens: u64,
    prompt_tokens: u64,
    cached_tokens: u64,
}

#[derive(Default)]
struct Tally {
    ttft_us: Vec<u64>,
    gaps_us: Vec<u64>,
    total_us: Vec<u64>,
    completion_tokens: u64,
    prompt_tokens: u64,
    cached_tokens: u64,
    statuses: BTreeMap<String, u64>,
    by_node: BTreeMap<String, u64>,
}

impl Tally {
    fn record(&mut self, measured: Measured) {
        *self.statuses.entry(measured.status).or_default() += 1;
        if !measured.ok {
            return;
        }
        self.ttft_us.extend(measured.ttft_us);
        self.gaps_us.extend(measured.gaps_us);
        self.total_us.push(measured.total_us);
        self.completion_tokens += measured.completion_tokens;
        self.prompt_tokens += measured.prompt_tokens;
        self.cached_tokens += measured.cached_tokens;
        *self.by_node.entry(measured.node.unwrap_or_else(|| "unknown".into())).or_default() += 1;
    }
}

/// Percentiles of one measure, milliseconds.
#[derive(Serialize)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

fn percentiles(mut values: Vec<u64>) -> Percentiles {
    values.sort_unstable();
    Percentiles {
        p50: percentile(&values, 0.50),
        p90: percentile(&values, 0.90),
        p99: percentile(&values, 0.99),
        max: percentile(&values, 1.0),
    }
}

#[derive(Serialize)]
struct Report {
    model: String,
    mode: &'static str,
    concurrency: Option<usize>,
    rate_rps: Option<f64>,
    prompt_tokens: usize,
    shared_prefix_tokens: usize,
    prefix_groups: usize,
    max_tokens: u32,
    duration_s: f64,
    requests: u64,
    errors: u64,
    ttft_ms: Percentiles,
    inter_token_ms: Percentiles,
    end_to_end_ms: Percentiles,
    completion_tokens_per_s: f64,
    cached_token_ratio: f64,
    status_counts: BTreeMap<String, u64>,
    by_node: BTreeMap<String, u64>,
}

/// The prompt of request `index` of run `run`: its group's shared prefix,
/// then words of its own, `prompt_tokens` words in all. The run's number
/// keeps engines from serving one run's prompts from an earlier run's cache.
fn prompt(args: &BenchArgs, run: u64, index: u64) -> String {
    let group = index % args.prefix_groups.max(1) as u64;
    let shared = args.shared_prefix_tokens.min(args.prompt_tokens);
    let mut words: Vec<String> = (0..shared).map(|i| format!("x{}g{group}w{i}", base36(run))).collect();
    words.extend((shared..args.prompt_tokens).map(|i| format!("x{}r{index}w{i}", base36(run))));
    words.join(" ")
}

fn base36(mut value: u64) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(std::char::from_digit((value % 36) as u32, 36).unwrap_or('0'));
        value /= 36;
        if value == 0 {
            return digits.iter().rev().collect();
        }
    }
}

async fn one(client: &reqwest::Client, base: &str, args: &BenchArgs, run: u64, index: u64) -> Measured {
    let body = json!({
        "model": args.model,
        "messages": [{"role": "user", "content": prompt(args, run, index)}],
        "max_tokens": args.max_tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
        "ignore_eos": true,
    });
    let started = SystemClock.now();
    let url = format!("{}/v1/chat/completions", base.trim_end_matches('/'));
    let response = match client.post(url).json(&body).send().await {
        Ok(response) => response,
        Err(_) => return Measured { status: "transport_error".into(), ..Measured::default() },
    };
    let status = response.status().as_u16();
    let node = response.headers().get("x-gpumesh-node").and_then(|v| v.to_str().ok()).map(String::from);
    let mut measured = Measured { status: status.to_string(), node, ..Measured::default() };
    if status != 200 {
        return measured;
    }
    let mut events = response.bytes_stream().eventsource();
    let mut last: Option<Instant> = None;
    while let Some(event) = events.next().await {
        let Ok(event) = event else { return Measured { status: "broken_stream".into(), ..measured } };
        if event.data == "[DONE]" {
            measured.ok = true;
            break;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&event.data) else { continue };
        if chunk.get("error").is_some() {
            return Measured { status: "stream_error".into(), ..measured };
        }
        if chunk["choices"][0]["delta"]["content"].as_str().is_some_and(|text| !text.is_empty()) {
            let now = SystemClock.now();
            match last {
                None => measured.ttft_us = Some(micros(now - started)),
                Some(previous) => measured.gaps_us.push(micros(now - previous)),
            }
            last = Some(now);
        }
        if let Some(usage) = chunk.get("usage").filter(|usage| usage.is_object()) {
            measured.completion_tokens = usage["completion_tokens"].as_u64().unwrap_or(0);
            measured.prompt_tokens = usage["prompt_tokens"].as_u64().unwrap_or(0);
            measured.cached_tokens = usage["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0);
        }
    }
    measured.total_us = micros(SystemClock.now() - started);
    measured
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Runs the load and prints the report.
pub(crate) async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    crate::bench::check(args)?;
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let bar = progress(args.duration);
    let started = SystemClock.now();
    let deadline = started + args.duration;
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Three base-36 digits: short, so prompts stay the size asked for.
    let run = SystemClock.unix_ms() % 46_656;
    let mut handles = Vec::new();
    match args.rate {
        None => {
            for _ in 0..args.concurrency.max(1) {
                let (client, tally, next, args) = (client.clone(), tally.clone(), next.clone(), args.clone());
                handles.push(tokio::spawn(async move {
                    while SystemClock.now() < deadline {
                        let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let node = &args.node[index as usize % args.node.len()];
                        tally.lock().await.record(one(&client, node, &args, run, index).await);
                    }
                }));
            }
        }
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate);
            for index in 0u64.. {
                let scheduled = started + interval.mul_f64(index as f64);
                if scheduled >= deadline {
                    break;
                }
                tokio::time::sleep_until(scheduled).await;
                let (client, tally, args) = (client.clone(), tally.clone(), args.clone());
                handles.push(tokio::spawn(async move {
                    let node = &args.node[index as usize % args.node.len()];
                    tally.lock().await.record(one(&client, node, &args, run, index).await);
                }));
                bar.set_position(started.elapsed().as_secs());
            }
        }
    }
    while SystemClock.now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let done: u64 = tally.lock().await.statuses.values().sum();
        bar.set_position(started.elapsed().as_secs());
        bar.set_message(format!("{done} requests"));
    }
    for handle in handles {
        let _ = handle.await;
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let tally = std::mem::take(&mut *tally.lock().await);
    let report = report(args, tally, elapsed);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn report(args: &BenchArgs, tally: Tally, elapsed: Duration) -> Report {
    let requests: u64 = tally.statuses.values().sum();
    let ok = tally.total_us.len() as u64;
    let seconds = elapsed.as_secs_f64().max(1e-9);
    Report {
        model: args.model.clone(),
        mode: if args.rate.is_some() { "open" } else { "closed" },
        concurrency: args.rate.is_none().then_some(args.concurrency),
        rate_rps: args.rate,
        prompt_tokens: args.prompt_tokens,
        shared_prefix_tokens: args.shared_prefix_tokens,
        prefix_groups: args.prefix_groups,
        max_tokens: args.max_tokens,
        duration_s: seconds,
        requests,
        errors: requests - ok,
        ttft_ms: percentiles(tally.ttft_us),
        inter_token_ms: percentiles(tally.gaps_us),
        end_to_end_ms: percentiles(tally.total_us),
        completion_tokens_per_s: tally.completion_tokens as f64 / seconds,
        cached_token_ratio: tally.cached_tokens as f64 / tally.prompt_tokens.max(1) as f64,
        status_counts: tally.statuses,
        by_node: tally.by_node,
    }
}

fn print_report(report: &Report) {
    let load = match (report.concurrency, report.rate_rps) {
        (Some(c), _) => format!("closed loop, {c} in flight"),
        (_, Some(r)) => format!("open loop, {r} req/s offered"),
        _ => String::new(),
    };
    println!(
        "{} ({load}; {} prompt words, {} shared in {} groups, {} tokens), {:.1} s",
        report.model,
        report.prompt_tokens,
        report.shared_prefix_tokens,
        report.prefix_groups,
        report.max_tokens,
        report.duration_s
    );
    println!("  requests   {} ({} errors)", report.requests, report.errors);
    let show = |name: &str, p: &Percentiles| {
        println!("  {name:<10} p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3} ms", p.p50, p.p90, p.p99, p.max);
    };
    show("ttft", &report.ttft_ms);
    show("inter-tok", &report.inter_token_ms);
    show("end-to-end", &report.end_to_end_ms);
    println!("  tokens/s   {:.1} generated", report.completion_tokens_per_s);
    println!("  cached     {:.1} % of prompt tokens", report.cached_token_ratio * 100.0);
    println!("  statuses   {:?}", report.status_counts);
    println!("  ran on     {:?}", report.by_node);
}
