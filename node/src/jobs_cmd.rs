//! `gpumesh jobs submit|get|list`: the durable jobs client.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use gpumesh_actors::{Clock as _, SystemClock};
use serde_json::{Value, json};

use crate::client::{REQUEST_TIMEOUT_MS, model_info, random_request};

/// How often `--wait` polls a job.
const WAIT_POLL_MS: u64 = 200;

/// Flags of `gpumesh jobs`.
#[derive(Args, Debug)]
pub(crate) struct JobsArgs {
    /// Any node's HTTP address.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    node: String,
    #[command(subcommand)]
    command: JobsCommand,
}

#[derive(Subcommand, Debug)]
enum JobsCommand {
    /// Submit a job; prints its id (and its result with --wait).
    Submit {
        #[arg(long)]
        model: String,
        /// An OIP v2 inference request (JSON) for the inputs; random inputs otherwise.
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
        /// Submitting again with the same key returns the same job.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Follow the job to its end.
        #[arg(long)]
        wait: bool,
        /// Longest --wait, such as 5m.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Show a job (any node answers for any job).
    Get {
        id: String,
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// List the jobs the node owns.
    List {
        #[arg(long, default_value = "active", value_parser = ["active", "completed", "failed"])]
        state: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

async fn request_json(builder: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
    let response = builder
        .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
        .send()
        .await
        .with_context(|| format!("{what} failed: is a gpumesh node running there?"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{what}: {status}: {}", body["error"].as_str().unwrap_or("no error message"));
    }
    Ok(body)
}

async fn submit_body(
    client: &reqwest::Client,
    node: &str,
    model: &str,
    input: Option<&PathBuf>,
) -> anyhow::Result<Value> {
    let mut body: Value = match input {
        Some(path) => serde_json::from_str(
            &std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
        )
        .with_context(|| format!("{} is not an OIP v2 inference request", path.display()))?,
        None => {
            let info = model_info(client, node, model).await?;
            serde_json::from_slice(&random_request(&info, 1, false, serde_json::Map::new(), 1)?.body)?
        }
    };
    body["model"] = json!(model);
    Ok(body)
}

async fn follow(client: &reqwest::Client, node: &str, id: &str, timeout: Duration) -> anyhow::Result<Value> {
    let deadline = SystemClock.now() + timeout;
    let url = format!("{}/jobs/{id}", node.trim_end_matches('/'));
    let mut last_state = String::new();
    loop {
        let job = request_json(client.get(&url), &format!("GET {url}")).await?;
        let state = job["state"].as_str().unwrap_or("?").to_string();
        if state != last_state {
            eprintln!("{id}: {state}{}", job["node"].as_str().map(|n| format!(" on {n}")).unwrap_or_default());
            last_state = state.clone();
        }
        if state == "completed" || state == "failed" {
            return Ok(job);
        }
        if SystemClock.now() >= deadline {
            bail!(
                "job {id} is still {state} after {}; follow it with `gpumesh jobs get {id} --wait`",
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(Duration::from_millis(WAIT_POLL_MS)).await;
    }
}

pub(crate) async fn run(args: JobsArgs) -> anyhow::Result<()> {
    let client = crate::client::http_client()?;
    let base = args.node.trim_end_matches('/').to_string();
    let job = match args.command {
        JobsCommand::Submit { model, input, idempotency_key, wait, timeout } => {
            let mut body = submit_body(&client, &base, &model, input.as_ref()).await?;
            if let Some(key) = idempotency_key {
                body["idempotency_key"] = json!(key);
            }
            let accepted = request_json(client.post(format!("{base}/jobs")).json(&body), "POST /jobs").await?;
            let id = accepted["job_id"].as_str().context("the node did not return a job id")?.to_string();
            println!("{id}");
            if !wait {
                return Ok(());
            }
            follow(&client, &base, &id, timeout).await?
        }
        JobsCommand::Get { id, wait: true, timeout } => follow(&client, &base, &id, timeout).await?,
        JobsCommand::Get { id, .. } => request_json(client.get(format!("{base}/jobs/{id}")), "GET /jobs").await?,
        JobsCommand::List { state, limit } => {
            let listed =
                request_json(client.get(format!("{base}/jobs?state={state}&limit={limit}")), "GET /jobs").await?;
            for job in listed["jobs"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:<10} {:<12} attempts={} node={}",
                    job["job_id"].as_str().unwrap_or("?"),
                    job["state"].as_str().unwrap_or("?"),
                    job["model"].as_str().unwrap_or("?"),
                    job["attempts"],
                    job["node"].as_str().unwrap_or("-")
                );
            }
            return Ok(());
        }
    };
    println!("{}", serde_json::to_string_pretty(&job)?);
    if job["state"] == "failed" {
        bail!("job {} failed: {}", job["job_id"].as_str().unwrap_or("?"), job["error"].as_str().unwrap_or("no reason"));
    }
    Ok(())
}
