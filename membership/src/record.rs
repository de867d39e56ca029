//! The state each node publishes through gossip.
//!
//! Two values per node, each signed on its own (see `signed`): `info`
//! changes rarely (addresses, draining), `load` every metrics tick. Keeping
//! them apart means a load update does not resend the addresses. Both stay
//! a few hundred bytes: chitchat is known to slow down with large states.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Gossip key of the signed [`NodeInfo`].
pub(crate) const INFO_KEY: &str = "info";
/// Gossip key of the signed [`LoadSummary`].
pub(crate) const LOAD_KEY: &str = "load";

/// Addresses and lifecycle state of a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// HTTP API and status page.
    pub http_addr: SocketAddr,
    /// ractor_cluster node server.
    pub cluster_addr: SocketAddr,
    /// The gpumesh version the node runs.
    pub version: String,
    /// A draining node finishes its work and takes no new work.
    pub draining: bool,
    /// When the node started, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
}

/// Live load of a node, published by its metrics actor.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadSummary {
    pub gpus: Vec<GpuStats>,
    pub cpu: CpuStats,
    /// Requests queued on this node, all models together.
    pub queue_depth: u32,
    /// Requests executing on this node, all models together.
    pub inflight: u32,
    pub models: Vec<ModelLoad>,
}

/// One GPU as NVML reports it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuStats {
    pub index: u32,
    pub name: String,
    pub memory_total_mb: u64,
    pub memory_free_mb: u64,
    pub utilization_pct: u32,
    pub temperature_c: u32,
    pub power_w: u32,
}

/// The host's CPU and memory.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuStats {
    pub cores: u32,
    pub utilization_pct: u32,
    pub memory_free_mb: u64,
}

/// One model served by the node and its load.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelLoad {
    pub name: String,
    /// The execution provider that really runs it: `cuda:N`, `cpu` or `synthetic`.
    pub device: String,
    /// Moving average of service time per item, milliseconds.
    pub service_ms_per_item: f64,
    pub queue_depth: u32,
    pub inflight: u32,
    /// Requests the node has executed for this model since it started.
    #[serde(default)]
    pub completed: u64,
    /// Median and 99th percentile of queue plus compute time per request
    /// over the last metrics interval, milliseconds; `None` without requests.
    #[serde(default)]
    pub p50_ms: Option<f64>,
    #[serde(default)]
    pub p99_ms: Option<f64>,
}
