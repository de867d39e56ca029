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
    /// Memory the driver keeps for itself: neither free nor used by any
    /// process (nvidia-smi leaves it out of `memory.used`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub memory_reserved_mb: u64,
    pub utilization_pct: u32,
    pub temperature_c: u32,
    pub power_w: u32,
}

impl GpuStats {
    /// Memory in use as nvidia-smi counts it: neither free nor reserved.
    pub fn memory_used_mb(&self) -> u64 {
        self.memory_total_mb.saturating_sub(self.memory_free_mb).saturating_sub(self.memory_reserved_mb)
    }
}

fn is_zero(value: &u64) -> bool {
    *value == 0
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
    /// What a language model's engine is doing; `None` for tensor models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmLoad>,
}

/// The load of a language model's engine (SPEC section 10), compact: the
/// fields a node does not know are left out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LlmLoad {
    /// The engine answers its health check: only then does it take requests.
    pub ready: bool,
    /// Sequences being generated (the engine's count where it publishes one).
    pub running: u32,
    /// Requests waiting, at the node and in the engine.
    pub waiting: u32,
    /// KV-cache use, 0 to 1, where the engine reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache_use: Option<f64>,
    /// Measured time to first token (moving average), ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    /// Measured decode speed (moving average), tokens per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_tokens_per_s: Option<f64>,
    /// Measured prefill speed (moving average): prompt tokens not cached
    /// over the time to first token, per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill_tokens_per_s: Option<f64>,
    /// Share of prompt tokens the engine served from its cache, where it
    /// reports usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_ratio: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::GpuStats;

    #[test]
    fn used_gpu_memory_leaves_out_what_the_driver_reserves() {
        let gpu = GpuStats {
            memory_total_mb: 81_559,
            memory_free_mb: 81_079,
            memory_reserved_mb: 480,
            ..GpuStats::default()
        };
        assert_eq!(gpu.memory_used_mb(), 0, "an idle H100: nvidia-smi says 0 MiB used");
        let busy = GpuStats { memory_free_mb: 60_000, ..gpu.clone() };
        assert_eq!(busy.memory_used_mb(), 21_079);
        // Peers that do not send the field (older nodes, CPU-only probes) still parse.
        let old = r#"{"index":0,"name":"g","memory_total_mb":10,"memory_free_mb":4,"utilization_pct":0,"temperature_c":0,"power_w":0}"#;
        let parsed: GpuStats = serde_json::from_str(old).expect("parses");
        assert_eq!((parsed.memory_reserved_mb, parsed.memory_used_mb()), (0, 6));
        assert!(!serde_json::to_string(&parsed).expect("json").contains("reserved"), "zero is left out");
        assert!(serde_json::to_string(&gpu).expect("json").contains("\"memory_reserved_mb\":480"));
    }
}
