//! `gpumesh infer`: send one request (or a few) and show what came back and
//! where it ran.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Map, Value, json};

use crate::client::{Prepared, model_info, random_request, send};

/// Flags of `gpumesh infer`.
#[derive(Args, Debug)]
pub(crate) struct InferArgs {
    /// Any node's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    node: String,
    /// Model name.
    #[arg(long)]
    model: String,
    /// Requests to send, one after another.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Rows per request along the batch dimension (random inputs).
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Where the request may run.
    #[arg(long, value_parser = ["gpu", "cpu", "any"])]
    device: Option<String>,
    /// Only nodes with at least this much free GPU memory.
    #[arg(long)]
    min_free_vram_mb: Option<u64>,
    /// A JSON inference request (OIP v2) to send instead of random inputs.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Send and receive tensors with the binary extension.
    #[arg(long)]
    binary: bool,
    /// Print each raw response.
    #[arg(long)]
    json: bool,
}

fn parameters(args: &InferArgs) -> Map<String, Value> {
    let mut parameters = Map::new();
    if let Some(device) = &args.device {
        parameters.insert("device".into(), json!(device));
    }
    if let Some(vram) = args.min_free_vram_mb {
        parameters.insert("min_free_vram_mb".into(), json!(vram));
    }
    parameters
}

fn from_file(path: &PathBuf, extra: Map<String, Value>) -> anyhow::Result<Prepared> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut request: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON: give an OIP v2 inference request", path.display()))?;
    if let Some(object) = request.as_object_mut() {
        let params = object.entry("parameters").or_insert_with(|| json!({}));
        if let Some(params) = params.as_object_mut() {
            params.extend(extra);
        }
    }
    Ok(Prepared { body: serde_json::to_vec(&request)?.into(), header_len: None, as_job: false })
}

fn summary(outcome: &crate::client::Outcome) -> String {
    let header = |name: &str| outcome.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
    format!(
        "{} in {:.2} ms  node={} device={} route={} queue={}ms compute={}ms batch={}",
        outcome.status.map_or_else(|| "no response".to_string(), |s| s.to_string()),
        outcome.latency.as_secs_f64() * 1000.0,
        header("x-gpumesh-node"),
        header("x-gpumesh-device"),
        header("x-gpumesh-route"),
        header("x-gpumesh-queue-ms"),
        header("x-gpumesh-compute-ms"),
        header("x-gpumesh-batch-size"),
    )
}

fn show_outputs(outcome: &crate::client::Outcome) {
    let header_len = outcome
        .headers
        .get("inference-header-content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(outcome.body.len());
    let Ok(response) = serde_json::from_slice::<Value>(&outcome.body[..header_len.min(outcome.body.len())]) else {
        return;
    };
    if let Some(error) = response["error"].as_str() {
        println!("  error: {error}");
    }
    for output in response["outputs"].as_array().into_iter().flatten() {
        let preview = match output["data"].as_array() {
            Some(data) => {
                let shown: Vec<String> = data.iter().take(8).map(ToString::to_string).collect();
                format!("[{}{}]", shown.join(", "), if data.len() > 8 { ", ..." } else { "" })
            }
            None => format!("{} bytes binary", output["parameters"]["binary_data_size"]),
        };
        println!(
            "  {} {} {}: {preview}",
            output["name"].as_str().unwrap_or("?"),
            output["datatype"].as_str().unwrap_or("?"),
            output["shape"]
        );
    }
}

pub(crate) async fn run(args: InferArgs) -> anyhow::Result<()> {
    let client = crate::client::http_client()?;
    let prepared = match &args.input {
        Some(path) => from_file(path, parameters(&args))?,
        None => {
            let info = model_info(&client, &args.node, &args.model).await?;
            random_request(&info, args.batch_size, args.binary, parameters(&args), 1)?
        }
    };
    let mut failures = 0;
    for index in 1..=args.count.max(1) {
        let outcome = send(&client, &args.node, &args.model, &prepared).await;
        if let Some(error) = &outcome.transport_error {
            bail!("request to {} failed: {error}; is the node running?", args.node);
        }
        println!("request {index}: {}", summary(&outcome));
        if args.json {
            println!("{}", String::from_utf8_lossy(&outcome.body));
        } else {
            show_outputs(&outcome);
        }
        failures += u32::from(outcome.status != Some(200));
    }
    if failures > 0 {
        bail!("{failures} of {} requests failed", args.count.max(1));
    }
    Ok(())
}
