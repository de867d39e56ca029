//! The state each node publishes through gossip.
//!
//! Two values per node, each signed on its own (see `signed`): `info`
//! changes rarely (addresses, draining), `load` every metrics tick. Keeping
//! them apart means a load update does not resend the addresses. Both stay
//! a few hundred bytes, but for the prefix sketch of each language model
//! (2 KB at most as published): chitchat is known to slow down with large
//! states.

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
    /// Bytes of gpumesh's rendering of a prompt per prompt token the
    /// engine counted (moving average): turns a prompt into tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_bytes_per_token: Option<f64>,
    /// Requests the node lets into the engine at once (its sequences).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// The prompt prefixes the engine holds, as the node saw it take them.
    #[serde(default, skip_serializing_if = "PrefixSketch::is_empty")]
    pub prefixes: PrefixSketch,
}

/// Most hashes a [`PrefixSketch`] may carry (a peer's longer one is refused).
pub const MAX_PREFIX_HASHES: usize = 1024;

/// Prompt prefixes an engine holds: 32-bit hashes of prompt prefixes
/// (gpumesh's `llm::prefix`), most recently used first. In JSON one hex
/// string, 8 digits a hash: 256 hashes are 2 KB.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixSketch(pub Vec<u32>);

impl PrefixSketch {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, hash: u32) -> bool {
        self.0.contains(&hash)
    }
}

impl Serialize for PrefixSketch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = self.0.iter().flat_map(|hash| hash.to_be_bytes()).collect();
        serializer.serialize_str(&hex::encode(bytes))
    }
}

impl<'de> Deserialize<'de> for PrefixSketch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        if text.len() > MAX_PREFIX_HASHES * 8 {
            return Err(serde::de::Error::custom("prefix sketch too long"));
        }
        let bytes = hex::decode(text.as_bytes()).map_err(serde::de::Error::custom)?;
        if bytes.len() % 4 != 0 {
            return Err(serde::de::Error::custom("prefix sketch is not whole 32-bit hashes"));
        }
        let hashes =
            bytes.chunks_exact(4).map(|four| u32::from_be_bytes([four[0], four[1], four[2], four[3]])).collect();
        Ok(Self(hashes))
    }
}

#[cfg(test)]
mod tests {
    use super::{GpuStats, MAX_PREFIX_HASHES, PrefixSketch};

    #[test]
    fn a_prefix_sketch_is_one_hex_string_and_a_bad_one_is_refused() {
        let sketch = PrefixSketch(vec![0xdead_beef, 7]);
        let json = serde_json::to_string(&sketch).expect("encodes");
        assert_eq!(json, "\"deadbeef00000007\"");
        assert_eq!(serde_json::from_str::<PrefixSketch>(&json).expect("decodes"), sketch);
        for bad in ["\"deadbee\"", "\"xyz0\"", "17"] {
            assert!(serde_json::from_str::<PrefixSketch>(bad).is_err(), "{bad}");
        }
        let long = format!("\"{}\"", "0".repeat(MAX_PREFIX_HASHES * 8 + 8));
        assert!(serde_json::from_str::<PrefixSketch>(&long).is_err(), "a sketch over the limit is refused");
    }

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
