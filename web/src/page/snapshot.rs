//! What the status page shows, as one JSON document: this node, the cluster
//! view, recent decisions and jobs, and the newest history sample. `/events`
//! sends one every tick.

use gpumesh_actors::NodeHandle;
use gpumesh_storage::HistorySample;
use serde::Serialize;

use crate::cluster::{ClusterResponse, cluster_response, decisions_json};

/// Rows of the decisions and jobs tables.
const RECENT_ROWS: usize = 12;

#[derive(Serialize)]
pub(crate) struct Snapshot {
    pub(crate) unix_ms: u64,
    pub(crate) node: SelfInfo,
    pub(crate) cluster: ClusterResponse,
    pub(crate) decisions: Vec<serde_json::Value>,
    pub(crate) jobs: Vec<JobRow>,
    pub(crate) sample: Option<HistorySample>,
}

#[derive(Serialize)]
pub(crate) struct SelfInfo {
    name: String,
    generation: u64,
    version: String,
    http_addr: String,
    cluster_addr: String,
    gossip_addr: Option<String>,
    started_unix_ms: u64,
    policy: &'static str,
    draining: bool,
    models: Vec<LocalModel>,
    llms: Vec<LocalLlm>,
}

/// A language model served here, read live from its engine's counts.
#[derive(Serialize)]
struct LocalLlm {
    name: String,
    engine: &'static str,
    ready: bool,
    running: u32,
    waiting: u32,
    ttft_p50_ms: Option<f64>,
    ttft_p99_ms: Option<f64>,
    decode_tokens_per_s: Option<f64>,
    kv_cache_use: Option<f64>,
    cached_ratio: Option<f64>,
    requests: u64,
}

/// A model served here, read live from its executor.
#[derive(Serialize)]
struct LocalModel {
    name: String,
    device: String,
    max_batch_size: usize,
    queue_depth: u32,
    inflight: u32,
    completed: u64,
    service_ms_per_item: f64,
}

#[derive(Serialize)]
pub(crate) struct JobRow {
    id: String,
    model: String,
    state: &'static str,
    node: Option<String>,
    attempts: u32,
    updated_ms: u64,
}

/// The page's view of `node` now.
pub(crate) async fn snapshot(node: &NodeHandle) -> Snapshot {
    let view = node.view();
    let info = node.info().await;
    let unix_ms = node.unix_ms();
    let models = node
        .models()
        .iter()
        .map(|m| LocalModel {
            name: m.spec.name.clone(),
            device: m.device.clone(),
            max_batch_size: m.spec.batch.max_batch_size,
            queue_depth: m.stats.queue_depth(),
            inflight: m.stats.inflight(),
            completed: m.stats.completed(),
            service_ms_per_item: m.stats.service_ms_per_item(),
        })
        .collect();
    let llms = local_llms(node);
    let jobs = match node.recent_jobs(RECENT_ROWS).await {
        Ok(jobs) => jobs
            .into_iter()
            .map(|job| JobRow {
                id: job.id,
                model: job.model,
                state: job.state.as_str(),
                node: job.node,
                attempts: job.attempts,
                updated_ms: job.updated_ms,
            })
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "reading recent jobs for the status page failed");
            Vec::new()
        }
    };
    Snapshot {
        unix_ms,
        node: SelfInfo {
            name: node.name().to_string(),
            generation: node.generation(),
            version: info.version,
            http_addr: info.http_addr.to_string(),
            cluster_addr: info.cluster_addr.to_string(),
            gossip_addr: view.members.iter().find(|m| m.is_self).map(|m| m.gossip_addr.to_string()),
            started_unix_ms: info.started_unix_ms,
            policy: node.policy().as_str(),
            draining: info.draining,
            models,
            llms,
        },
        cluster: cluster_response(&view, &node.connected()),
        decisions: decisions_json(&node.decisions(), RECENT_ROWS),
        jobs,
        sample: node.latest_history().filter(|sample| unix_ms.saturating_sub(sample.unix_ms) <= HISTORY_FRESH_MS),
    }
}

/// The language models served here, read live from their engines' counts.
fn local_llms(node: &NodeHandle) -> Vec<LocalLlm> {
    node.llm()
        .models()
        .iter()
        .map(|m| {
            let stats = &m.stats;
            let engine = stats.engine();
            let (prompt, _, cached) = stats.tokens();
            let percentiles = stats.ttft_percentiles();
            LocalLlm {
                name: m.spec.name.clone(),
                engine: m.device(),
                ready: stats.ready(),
                running: stats.running_now(),
                waiting: stats.waiting_now(),
                ttft_p50_ms: percentiles.map(|(p50, _)| p50),
                ttft_p99_ms: percentiles.map(|(_, p99)| p99),
                decode_tokens_per_s: Some(stats.decode_tokens_per_s()).filter(|v| *v > 0.0),
                kv_cache_use: engine.and_then(|load| load.kv_cache_use),
                cached_ratio: (prompt > 0).then(|| cached as f64 / prompt as f64),
                requests: stats.requests(),
            }
        })
        .collect()
}

/// The newest history sample is sent when it is at most this old.
const HISTORY_FRESH_MS: u64 = 10_000;
