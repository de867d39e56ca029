//! `gpumesh status --node URL`: the cluster table in the terminal.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use gpumesh_web::ClusterResponse;

/// Upper bound on the `/cluster` request.
const STATUS_TIMEOUT_MS: u64 = 5_000;

/// Flags of `gpumesh status`.
#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    /// Any node's HTTP address, such as http://127.0.0.1:8080.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    node: String,
    /// Print the raw `/cluster` JSON.
    #[arg(long)]
    json: bool,
}

/// Fetches `/cluster` from `base` (a node URL).
pub(crate) async fn fetch_cluster(client: &reqwest::Client, base: &str) -> anyhow::Result<ClusterResponse> {
    let url = format!("{}/cluster", base.trim_end_matches('/'));
    let response = client
        .get(&url)
        .timeout(Duration::from_millis(STATUS_TIMEOUT_MS))
        .send()
        .await
        .with_context(|| format!("cannot reach {url}: is a node running there? start one with `gpumesh node`"))?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        anyhow::bail!("{url} answered 401: the node requires an API token; set GPUMESH_API_TOKEN to one of its tokens");
    }
    if !status.is_success() {
        anyhow::bail!("{url} answered {status}: check that the URL points at a gpumesh node");
    }
    response.json().await.with_context(|| format!("{url} did not answer with a cluster view: is it a gpumesh node?"))
}

pub(crate) fn render(cluster: &ClusterResponse) -> String {
    let mut out = format!(
        "{:<20} {:<8} {:>7} {:<8} {:<9} {:<8} {:>4} {:>6} {}\n",
        "NODE", "STATUS", "AGE_MS", "TRUSTED", "CONNECTED", "DRAINING", "GPUS", "QUEUE", "HTTP"
    );
    for node in &cluster.nodes {
        let marker = if node.name == cluster.self_name { "*" } else { "" };
        out.push_str(&format!(
            "{:<20} {:<8} {:>7} {:<8} {:<9} {:<8} {:>4} {:>6} {}\n",
            format!("{}{marker}", node.name),
            node.status.as_str(),
            node.age_ms,
            node.trusted,
            node.connected,
            node.draining,
            node.gpus.len(),
            node.queue_depth,
            node.http_addr.as_deref().unwrap_or("-"),
        ));
    }
    out.push_str(&render_llms(cluster));
    out.push_str(&format!(
        "{} alive, {} gpus, {} MB VRAM, queue {}, in flight {}\n",
        cluster.totals.nodes_alive,
        cluster.totals.gpus,
        cluster.totals.vram_total_mb,
        cluster.totals.queue_depth,
        cluster.totals.inflight
    ));
    out
}

/// Each language model on each node that serves it, with its engine's
/// load and what was measured; empty without language models.
fn render_llms(cluster: &ClusterResponse) -> String {
    let rows: Vec<String> = cluster
        .nodes
        .iter()
        .flat_map(|node| node.models.iter().filter_map(move |model| Some((node, model, model.llm.as_ref()?))))
        .map(|(node, model, llm)| {
            let ms = |value: Option<f64>| value.map_or_else(|| "-".into(), |v| format!("{v:.1}"));
            let ratio = |value: Option<f64>| value.map_or_else(|| "-".into(), |v| format!("{:.0}%", v * 100.0));
            format!(
                "{:<20} {:<12} {:<10} {:<5} {:>7} {:>7} {:>9} {:>9} {:>8} {:>5} {:>6}\n",
                model.name,
                node.name,
                model.device,
                llm.ready,
                llm.running,
                llm.waiting,
                ms(model.p50_ms),
                ms(model.p99_ms),
                ms(llm.decode_tokens_per_s),
                ratio(llm.kv_cache_use),
                ratio(llm.cached_ratio),
            )
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let head = format!(
        "{:<20} {:<12} {:<10} {:<5} {:>7} {:>7} {:>9} {:>9} {:>8} {:>5} {:>6}\n",
        "LANGUAGE MODEL",
        "NODE",
        "ENGINE",
        "READY",
        "RUNNING",
        "WAITING",
        "TTFT_P50",
        "TTFT_P99",
        "TOK/S",
        "KV",
        "CACHED"
    );
    head + &rows.concat()
}

pub(crate) async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let cluster = fetch_cluster(&crate::client::http_client()?, &args.node).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&cluster)?);
    } else {
        print!("{}", render(&cluster));
    }
    Ok(())
}
