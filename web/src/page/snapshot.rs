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
        },
        cluster: cluster_response(&view, &node.connected()),
        decisions: decisions_json(&node.decisions(), RECENT_ROWS),
        jobs,
        sample: node.latest_history().filter(|sample| unix_ms.saturating_sub(sample.unix_ms) <= HISTORY_FRESH_MS),
    }
}

/// The newest history sample is sent when it is at most this old.
const HISTORY_FRESH_MS: u64 = 10_000;
