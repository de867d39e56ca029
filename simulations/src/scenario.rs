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
    #[serde(default)]
    pub(crate) bounds: Bounds,
    pub(crate) nodes: Vec<NodeSpec>,
    #[serde(default)]
    pub(crate) faults: Vec<Fault>,
}

fn default_gossip_interval_ms() -> u64 {
    200
}

/// Limits a run must stay within to pass.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Bounds {
    /// From start until every node sees every node alive and trusted.
    pub(crate) formation_ms: u64,
    /// From a crash until every running node sees the crashed one dead.
    pub(crate) detect_ms: u64,
    /// From a restart until every running node agrees on the membership.
    pub(crate) converge_ms: u64,
}

impl Default for Bounds {
    fn default() -> Self {
        Self { formation_ms: 5_000, detect_ms: 3_000, converge_ms: 5_000 }
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
}

/// A scheduled fault.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "FaultEntry")]
pub(crate) struct Fault {
    pub(crate) at_ms: u64,
    pub(crate) action: FaultAction,
}

/// What a fault does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FaultAction {
    /// Stop the node's software at once (as `kill -9`).
    Crash { node: String },
    /// Start the node's software again; `keep_disk = false` wipes its data dir first.
    Restart { node: String, keep_disk: bool },
}

/// A `[[faults]]` table as written (serde cannot deny unknown fields
/// through `flatten`, so the time sits in each variant).
#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
enum FaultEntry {
    Crash {
        at_ms: u64,
        node: String,
    },
    Restart {
        at_ms: u64,
        node: String,
        #[serde(default = "keep_disk_default")]
        keep_disk: bool,
    },
}

impl From<FaultEntry> for Fault {
    fn from(entry: FaultEntry) -> Self {
        match entry {
            FaultEntry::Crash { at_ms, node } => Self { at_ms, action: FaultAction::Crash { node } },
            FaultEntry::Restart { at_ms, node, keep_disk } => {
                Self { at_ms, action: FaultAction::Restart { node, keep_disk } }
            }
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
        for fault in &self.faults {
            let node = match &fault.action {
                FaultAction::Crash { node } | FaultAction::Restart { node, .. } => node,
            };
            if !names.contains(node.as_str()) {
                bail!("fault at {} ms names unknown node {node:?}", fault.at_ms);
            }
            if fault.at_ms >= self.duration_ms {
                bail!("fault at {} ms is after the end of the run ({} ms)", fault.at_ms, self.duration_ms);
            }
        }
        Ok(())
    }
}
