//! Scenario files (`simulations/scenarios/*.toml`), see `simulations/README.md`.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

/// One simulated run: a cluster, a fault schedule and the bounds checked.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Scenario {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) description: String,
    /// Simulated time the run lasts.
    pub(crate) duration_ms: u64,
    #[serde(default = "default_gossip_interval_ms")]
    pub(crate) gossip_interval_ms: u64,
    /// Simulated time per step: the resolution of timers and latencies.
    /// turmoil's cost per step grows with the square of the node count, so
    /// large clusters use coarser steps.
    #[serde(default = "default_tick_ms")]
    pub(crate) tick_ms: u64,
    #[serde(default)]
    pub(crate) bounds: Bounds,
    pub(crate) nodes: Vec<NodeSpec>,
    #[serde(default)]
    pub(crate) faults: Vec<Fault>,
    /// Requests and jobs clients send; none: membership only.
    pub(crate) workload: Option<Workload>,
    /// Routing policies to compare on the same seed; empty: the default (eta).
    #[serde(default)]
    pub(crate) policies: Vec<String>,
    /// Link every pair of nodes with ractor_cluster, as production does.
    /// `false` runs membership only; see the README on large clusters.
    #[serde(default = "default_links")]
    pub(crate) links: bool,
}

/// Clients attached to every node that serves no one else's clients: each
/// node's client sends `rate_per_s / nodes` requests per second to it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Workload {
    pub(crate) start_ms: u64,
    pub(crate) stop_ms: u64,
    /// Requests per second over the whole cluster (open loop).
    pub(crate) rate_per_s: Option<f64>,
    /// Requests each client keeps in flight (closed loop), instead of a rate.
    pub(crate) concurrency: Option<u32>,
    /// Share of requests sent as durable jobs; the rest are synchronous.
    #[serde(default)]
    pub(crate) async_fraction: f64,
    /// Share of jobs that repeat an earlier idempotency key of the same client.
    #[serde(default)]
    pub(crate) duplicate_fraction: f64,
    /// Share of requests at priority 9 (the rest at 5).
    #[serde(default)]
    pub(crate) high_priority_fraction: f64,
    /// Nodes whose clients send nothing (for example, the ones crashed).
    #[serde(default)]
    pub(crate) quiet_nodes: Vec<String>,
    /// Language-model streams instead of tensor requests.
    pub(crate) llm: Option<LlmTraffic>,
}

/// Chats to the `synthetic-llm` model: each prompt is its prefix group's
/// shared words and words of its own, answered with a number of tokens
/// drawn from `max_tokens`; streamed, or with `async_fraction`, submitted
/// as durable jobs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LlmTraffic {
    #[serde(default = "default_prefix_groups")]
    pub(crate) prefix_groups: u32,
    /// Words every prompt of a group shares (its system prompt).
    #[serde(default)]
    pub(crate) shared_words: u32,
    /// Words of each prompt's own, drawn between the two.
    pub(crate) own_words: [u32; 2],
    /// Tokens each stream asks for, drawn between the two.
    pub(crate) max_tokens: [u32; 2],
    /// Share of chats submitted as durable jobs (`POST /jobs`), the rest
    /// streamed.
    #[serde(default)]
    pub(crate) async_fraction: f64,
}

fn default_prefix_groups() -> u32 {
    1
}

/// A node's `synthetic-llm` engine (SPEC section 10), as fast as its GPU.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LlmProfile {
    pub(crate) prefill_ms_per_token: f64,
    pub(crate) decode_ms_per_token: f64,
    #[serde(default = "default_max_sequences")]
    pub(crate) max_sequences: u32,
    #[serde(default = "default_kv_cache_tokens")]
    pub(crate) kv_cache_tokens: u32,
}

fn default_max_sequences() -> u32 {
    8
}

fn default_kv_cache_tokens() -> u32 {
    32_768
}

fn default_gossip_interval_ms() -> u64 {
    200
}

fn default_tick_ms() -> u64 {
    1
}

fn default_links() -> bool {
    true
}

/// A routing policy as a scenario names it: a policy of `--policy`, or
/// `eta-no-affinity` (eta without the prefix-cache credit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RunPolicy {
    pub(crate) policy: gpumesh_actors::Policy,
    pub(crate) affinity: bool,
}

impl RunPolicy {
    pub(crate) fn parse(name: &str) -> Result<Self, String> {
        match name {
            "eta-no-affinity" => Ok(Self { policy: gpumesh_actors::Policy::Eta, affinity: false }),
            other => Ok(Self { policy: other.parse()?, affinity: true }),
        }
    }

    pub(crate) fn label(self) -> String {
        if self.affinity { self.policy.to_string() } else { format!("{}-no-affinity", self.policy) }
    }
}

/// Limits a run must stay within to pass.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Bounds {
    /// From start until every node sees every node alive and trusted.
    pub(crate) formation_ms: u64,
    /// From a crash until every running node sees the crashed one dead.
    pub(crate) detect_ms: u64,
    /// From a restart or heal until every running node agrees on the membership.
    pub(crate) converge_ms: u64,
    /// From the end of the workload and the last fault until every accepted
    /// job is completed.
    pub(crate) jobs_ms: u64,
}

impl Default for Bounds {
    fn default() -> Self {
        Self { formation_ms: 5_000, detect_ms: 3_000, converge_ms: 5_000, jobs_ms: 20_000 }
    }
}

/// One simulated node and its hardware.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeSpec {
    pub(crate) name: String,
    /// GPU model shown in the node's load; none for a CPU node.
    pub(crate) gpu: Option<String>,
    #[serde(default)]
    pub(crate) vram_mb: u64,
    /// Service time per batch of the node's model (`model`); none: the node
    /// serves no model.
    pub(crate) service_ms: Option<f64>,
    #[serde(default)]
    pub(crate) service_per_item_ms: f64,
    #[serde(default = "default_max_batch_size")]
    pub(crate) max_batch_size: u32,
    /// The node's language-model engine (`llm`); none: it serves none.
    pub(crate) llm: Option<LlmProfile>,
}

fn default_max_batch_size() -> u32 {
    8
}

/// A scheduled fault.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "FaultEntry")]
pub(crate) struct Fault {
    /// When it happens: drawn from the seed between `earliest_ms` and this.
    pub(crate) at_ms: u64,
    pub(crate) earliest_ms: u64,
    pub(crate) action: FaultAction,
}

/// A fault's time: fixed (`at_ms = 8000`) or a range drawn from the seed
/// (`at_ms = [6000, 9000]`).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(untagged)]
enum At {
    Fixed(u64),
    Between([u64; 2]),
}

impl At {
    fn bounds(self) -> (u64, u64) {
        match self {
            Self::Fixed(ms) => (ms, ms),
            Self::Between([earliest, latest]) => (earliest, latest),
        }
    }
}

impl Fault {
    /// This run's time of the fault.
    pub(crate) fn draw(&self, rng: &mut impl rand::RngExt) -> u64 {
        if self.earliest_ms >= self.at_ms { self.at_ms } else { rng.random_range(self.earliest_ms..=self.at_ms) }
    }
}

/// What a fault does.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum FaultAction {
    /// Stop the node's software at once (as `kill -9`).
    Crash {
        node: String,
    },
    /// Start the node's software again; `keep_disk = false` wipes its data dir first.
    Restart {
        node: String,
        keep_disk: bool,
    },
    /// Cut the links between two groups of nodes, both ways.
    Partition {
        a: Vec<String>,
        b: Vec<String>,
    },
    /// Drop what `from` sends to `to`; the other way still works.
    PartitionOneway {
        from: Vec<String>,
        to: Vec<String>,
    },
    /// Restore every link.
    Heal,
    /// Lose this share of messages on every link.
    Loss {
        rate: f64,
    },
    /// Delay messages by `ms`, plus up to `jitter_ms` more, drawn from the seed.
    Latency {
        ms: u64,
        jitter_ms: u64,
    },
    /// Hold everything the node sends and receives (a stalled machine, as
    /// the network sees it) until `resume`.
    Pause {
        node: String,
    },
    Resume {
        node: String,
    },
    /// The node's GPU serves `factor` times slower (1.0 restores it).
    SlowGpu {
        node: String,
        factor: f64,
    },
    /// The node's GPU fails every batch for lack of memory until `gpu_ok`.
    GpuOom {
        node: String,
    },
    GpuOk {
        node: String,
    },
}

impl FaultAction {
    /// Nodes the fault names.
    pub(crate) fn nodes(&self) -> Vec<&String> {
        match self {
            Self::Crash { node }
            | Self::Restart { node, .. }
            | Self::Pause { node }
            | Self::Resume { node }
            | Self::SlowGpu { node, .. }
            | Self::GpuOom { node }
            | Self::GpuOk { node } => vec![node],
            Self::Partition { a, b } => a.iter().chain(b).collect(),
            Self::PartitionOneway { from, to } => from.iter().chain(to).collect(),
            Self::Heal | Self::Loss { .. } | Self::Latency { .. } => Vec::new(),
        }
    }
}

/// A `[[faults]]` table as written (serde cannot deny unknown fields
/// through `flatten`, so the time sits in each variant).
#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
enum FaultEntry {
    Crash {
        at_ms: At,
        node: String,
    },
    Restart {
        at_ms: At,
        node: String,
        #[serde(default = "keep_disk_default")]
        keep_disk: bool,
    },
    Partition {
        at_ms: At,
        a: Vec<String>,
        b: Vec<String>,
    },
    PartitionOneway {
        at_ms: At,
        from: Vec<String>,
        to: Vec<String>,
    },
    Heal {
        at_ms: At,
    },
    Loss {
        at_ms: At,
        rate: f64,
    },
    Latency {
        at_ms: At,
        ms: u64,
        #[serde(default)]
        jitter_ms: u64,
    },
    Pause {
        at_ms: At,
        node: String,
    },
    Resume {
        at_ms: At,
        node: String,
    },
    SlowGpu {
        at_ms: At,
        node: String,
        factor: f64,
    },
    GpuOom {
        at_ms: At,
        node: String,
    },
    GpuOk {
        at_ms: At,
        node: String,
    },
}

impl Fault {
    fn at(at: At, action: FaultAction) -> Self {
        let (earliest_ms, at_ms) = at.bounds();
        Self { at_ms, earliest_ms, action }
    }
}

impl From<FaultEntry> for Fault {
    fn from(entry: FaultEntry) -> Self {
        match entry {
            FaultEntry::Crash { at_ms, node } => Self::at(at_ms, FaultAction::Crash { node }),
            FaultEntry::Restart { at_ms, node, keep_disk } => Self::at(at_ms, FaultAction::Restart { node, keep_disk }),
            FaultEntry::Partition { at_ms, a, b } => Self::at(at_ms, FaultAction::Partition { a, b }),
            FaultEntry::PartitionOneway { at_ms, from, to } => {
                Self::at(at_ms, FaultAction::PartitionOneway { from, to })
            }
            FaultEntry::Heal { at_ms } => Self::at(at_ms, FaultAction::Heal),
            FaultEntry::Loss { at_ms, rate } => Self::at(at_ms, FaultAction::Loss { rate }),
            FaultEntry::Latency { at_ms, ms, jitter_ms } => Self::at(at_ms, FaultAction::Latency { ms, jitter_ms }),
            FaultEntry::Pause { at_ms, node } => Self::at(at_ms, FaultAction::Pause { node }),
            FaultEntry::Resume { at_ms, node } => Self::at(at_ms, FaultAction::Resume { node }),
            FaultEntry::SlowGpu { at_ms, node, factor } => Self::at(at_ms, FaultAction::SlowGpu { node, factor }),
            FaultEntry::GpuOom { at_ms, node } => Self::at(at_ms, FaultAction::GpuOom { node }),
            FaultEntry::GpuOk { at_ms, node } => Self::at(at_ms, FaultAction::GpuOk { node }),
        }
    }
}

fn keep_disk_default() -> bool {
    true
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read scenario {}", path.display()))?;
        let scenario: Self = toml::from_str(&text)
            .map_err(|error| anyhow::anyhow!("scenario {} is invalid: {}", path.display(), error.message().trim()))?;
        scenario.validate()?;
        Ok(scenario)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let mut names = BTreeSet::new();
        for node in &self.nodes {
            gpumesh_membership::NodeName::new(node.name.as_str())?;
            if !names.insert(node.name.as_str()) {
                bail!("node {:?} is listed twice", node.name);
            }
        }
        if self.nodes.is_empty() {
            bail!("a scenario needs at least one node");
        }
        if !self.links && self.workload.is_some() {
            bail!("a workload needs links between the nodes: remove `links = false` or the [workload]");
        }
        if self.tick_ms == 0 || self.tick_ms * 10 > self.gossip_interval_ms {
            bail!("tick_ms must be at least 1 and at most a tenth of gossip_interval_ms");
        }
        for fault in &self.faults {
            for node in fault.action.nodes() {
                if !names.contains(node.as_str()) {
                    bail!("fault at {} ms names unknown node {node:?}", fault.at_ms);
                }
            }
            if let FaultAction::Loss { rate } = fault.action
                && !(0.0..1.0).contains(&rate)
            {
                bail!("fault at {} ms: loss rate {rate} must be at least 0 and below 1", fault.at_ms);
            }
            if let FaultAction::SlowGpu { factor, .. } = fault.action
                && !(factor > 0.0 && factor <= 10_000.0)
            {
                bail!("fault at {} ms: slow_gpu factor {factor} must be above 0 and at most 10000", fault.at_ms);
            }
            if fault.earliest_ms > fault.at_ms {
                bail!("fault between {} and {} ms: the range is reversed", fault.earliest_ms, fault.at_ms);
            }
            if fault.at_ms >= self.duration_ms {
                bail!("fault at {} ms is after the end of the run ({} ms)", fault.at_ms, self.duration_ms);
            }
        }
        if let Some(workload) = &self.workload {
            let fractions = [workload.async_fraction, workload.duplicate_fraction, workload.high_priority_fraction];
            if fractions.iter().any(|f| !(0.0..=1.0).contains(f)) {
                bail!("workload fractions must be between 0 and 1");
            }
            match (workload.rate_per_s, workload.concurrency) {
                (Some(rate), None) if rate > 0.0 && rate.is_finite() => {}
                (None, Some(concurrency)) if concurrency > 0 => {}
                _ => bail!("a workload has either rate_per_s (a positive number) or concurrency (1 or more)"),
            }
            if workload.stop_ms > self.duration_ms || workload.start_ms >= workload.stop_ms {
                bail!("the workload must start before it stops, and stop within the run");
            }
            match &workload.llm {
                None if !self.nodes.iter().any(|node| node.service_ms.is_some()) => {
                    bail!("a workload needs at least one node with service_ms (a node serving the model)")
                }
                Some(_) if !self.nodes.iter().any(|node| node.llm.is_some()) => {
                    bail!("a language-model workload needs at least one node with [nodes.llm]")
                }
                Some(llm) if llm.prefix_groups == 0 || llm.own_words[0] > llm.own_words[1] => {
                    bail!("workload.llm: prefix_groups must be 1 or more and own_words a [low, high] range")
                }
                Some(llm) if llm.max_tokens[0] == 0 || llm.max_tokens[0] > llm.max_tokens[1] => {
                    bail!("workload.llm: max_tokens must be a [low, high] range from 1")
                }
                Some(llm) if !(0.0..=1.0).contains(&llm.async_fraction) => {
                    bail!("workload.llm: async_fraction must be between 0 and 1")
                }
                _ => {}
            }
        }
        for policy in &self.policies {
            RunPolicy::parse(policy).map_err(|error| anyhow::anyhow!("policies: {error}"))?;
        }
        Ok(())
    }
}
