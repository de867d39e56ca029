//! `GET /cluster`: every member this node knows, in the JSON of SPEC section 4.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use gpumesh_membership::{ClusterView, CpuStats, GpuStats, Member, MemberStatus, ModelLoad};
use serde::{Deserialize, Serialize};

use crate::AppState;

/// The `/cluster` response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterResponse {
    #[serde(rename = "self")]
    pub self_name: String,
    pub nodes: Vec<NodeEntry>,
    pub totals: Totals,
}

/// One member in `/cluster`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeEntry {
    pub name: String,
    pub status: MemberStatus,
    pub age_ms: u64,
    pub generation: u64,
    pub http_addr: Option<String>,
    pub gossip_addr: String,
    pub cluster_addr: Option<String>,
    pub connected: bool,
    pub trusted: bool,
    pub draining: bool,
    pub version: Option<String>,
    pub gpus: Vec<GpuStats>,
    pub cpu: Option<CpuStats>,
    pub queue_depth: u32,
    pub inflight: u32,
    /// As the node gossips them (`ModelLoad`).
    pub models: Vec<ModelLoad>,
}

/// Sums over the trusted members that are not dead (`nodes_alive`: trusted and alive).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Totals {
    pub nodes_alive: usize,
    pub gpus: usize,
    pub vram_total_mb: u64,
    pub queue_depth: u64,
    pub inflight: u64,
}

fn entry(member: &Member, connected: &BTreeSet<String>) -> NodeEntry {
    let info = member.info.as_ref();
    let load = member.load.as_ref();
    NodeEntry {
        name: member.name.clone(),
        status: member.status,
        age_ms: member.age_ms,
        generation: member.generation,
        http_addr: info.map(|i| i.http_addr.to_string()),
        gossip_addr: member.gossip_addr.to_string(),
        cluster_addr: info.map(|i| i.cluster_addr.to_string()),
        // A node reaches itself without a link.
        connected: member.is_self || connected.contains(&member.name),
        trusted: member.trusted,
        draining: info.is_some_and(|i| i.draining),
        version: info.map(|i| i.version.clone()),
        gpus: load.map(|l| l.gpus.clone()).unwrap_or_default(),
        cpu: load.map(|l| l.cpu.clone()),
        queue_depth: load.map_or(0, |l| l.queue_depth),
        inflight: load.map_or(0, |l| l.inflight),
        models: load.map(|l| l.models.clone()).unwrap_or_default(),
    }
}

/// Builds the `/cluster` response from a view and the set of linked members.
pub fn cluster_response(view: &ClusterView, connected: &BTreeSet<String>) -> ClusterResponse {
    let nodes: Vec<NodeEntry> = view.members.iter().map(|member| entry(member, connected)).collect();
    let counted = view.members.iter().zip(&nodes).filter(|(member, _)| member.is_trusted_live());
    let mut totals = Totals::default();
    for (_, node) in counted {
        totals.gpus += node.gpus.len();
        totals.vram_total_mb += node.gpus.iter().map(|g| g.memory_total_mb).sum::<u64>();
        totals.queue_depth += u64::from(node.queue_depth);
        totals.inflight += u64::from(node.inflight);
    }
    totals.nodes_alive = nodes.iter().filter(|n| n.trusted && n.status == MemberStatus::Alive).count();
    ClusterResponse { self_name: view.self_name.clone(), nodes, totals }
}

pub(crate) async fn get_cluster(State(state): State<AppState>) -> Json<ClusterResponse> {
    Json(cluster_response(&state.node.view(), &state.node.connected()))
}

/// `GET /cluster/decisions`: the most recent routing decisions with every
/// candidate, its score and why it was left out.
pub(crate) async fn get_decisions(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "self": state.node.name().as_str(),
        "policy": state.node.policy().as_str(),
        "decisions": decisions_json(&state.node.decisions(), usize::MAX),
    }))
}

/// The `limit` newest decisions, newest first, as `/cluster/decisions` shows them.
pub(crate) fn decisions_json(records: &[gpumesh_actors::DecisionRecord], limit: usize) -> Vec<serde_json::Value> {
    records
        .iter()
        .rev()
        .take(limit)
        .map(|record| {
            let candidates: Vec<serde_json::Value> = record
                .decision
                .candidates
                .iter()
                .map(|c| serde_json::json!({ "node": c.node, "score": c.score, "excluded": c.excluded }))
                .collect();
            serde_json::json!({
                "unix_ms": record.unix_ms,
                "model": record.model,
                "attempt": record.attempt,
                "policy": record.decision.policy.as_str(),
                "chosen": record.decision.chosen,
                "candidates": candidates,
            })
        })
        .collect()
}
