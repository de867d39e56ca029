//! The metrics history: what this node saw of every member, sampled every
//! few seconds and kept for a bounded time, for the status page's charts.
//!
//! One sled tree keyed by the sample's Unix time in milliseconds (big
//! endian, so keys sort by time); values are JSON. History is a convenience,
//! not a promise: it is not flushed on every write, and a crash may lose the
//! last seconds of it.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

const HISTORY_TREE: &str = "metrics_history";

/// What one member looked like at one sample.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeSample {
    pub name: String,
    /// `alive`, `suspect` or `dead`.
    pub status: String,
    /// Requests it executed per second since the previous sample.
    pub requests_per_s: f64,
    /// Its request latency percentiles (queue plus compute), worst model.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Mean utilisation over its GPUs; `None` without GPUs.
    pub gpu_utilization_pct: Option<f64>,
    pub vram_used_mb: u64,
    pub vram_total_mb: u64,
    pub queue_depth: u32,
    pub inflight: u32,
}

/// Every member at one instant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HistorySample {
    pub unix_ms: u64,
    pub nodes: Vec<NodeSample>,
}

/// The history tree of a node's database.
#[derive(Clone, Debug)]
pub struct MetricsHistory {
    tree: sled::Tree,
    keep_ms: u64,
}

impl MetricsHistory {
    /// Opens the history of `db`, keeping samples for `keep_ms`.
    pub(crate) fn open(db: &sled::Db, keep_ms: u64) -> Result<Self> {
        Ok(Self { tree: db.open_tree(HISTORY_TREE)?, keep_ms })
    }

    /// Appends `sample` and drops the samples older than the keep time.
    pub fn append(&self, sample: &HistorySample) -> Result<()> {
        let value = serde_json::to_vec(sample).map_err(|_| Error::Corrupt { what: "history sample" })?;
        self.tree.insert(sample.unix_ms.to_be_bytes(), value)?;
        let cutoff = sample.unix_ms.saturating_sub(self.keep_ms);
        for key in self.tree.range(..cutoff.to_be_bytes()).keys() {
            self.tree.remove(key?)?;
        }
        Ok(())
    }

    /// The samples taken at or after `since_unix_ms`, oldest first. A
    /// sample that does not decode (written by another version) is skipped.
    pub fn since(&self, since_unix_ms: u64) -> Result<Vec<HistorySample>> {
        let mut samples = Vec::new();
        for entry in self.tree.range(since_unix_ms.to_be_bytes()..) {
            let (_, value) = entry?;
            if let Ok(sample) = serde_json::from_slice(&value) {
                samples.push(sample);
            }
        }
        Ok(samples)
    }

    /// The newest sample, if any.
    pub fn latest(&self) -> Result<Option<HistorySample>> {
        Ok(self.tree.last()?.and_then(|(_, value)| serde_json::from_slice(&value).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(unix_ms: u64, queue_depth: u32) -> HistorySample {
        HistorySample { unix_ms, nodes: vec![NodeSample { name: "n1".into(), queue_depth, ..NodeSample::default() }] }
    }

    #[test]
    fn keeps_samples_in_time_order_and_drops_old_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new().path(dir.path()).open().expect("db");
        let history = MetricsHistory::open(&db, 10_000).expect("history");
        for (at, depth) in [(1_000, 1), (5_000, 2), (12_000, 3), (20_000, 4)] {
            history.append(&sample(at, depth)).expect("append");
        }
        let kept: Vec<u64> = history.since(0).expect("read").iter().map(|s| s.unix_ms).collect();
        assert_eq!(kept, vec![12_000, 20_000], "samples older than 10 s before the newest are dropped");
        assert_eq!(history.since(15_000).expect("read"), vec![sample(20_000, 4)]);
        assert_eq!(history.latest().expect("read"), Some(sample(20_000, 4)));
    }

    #[test]
    fn undecodable_samples_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new().path(dir.path()).open().expect("db");
        let history = MetricsHistory::open(&db, 60_000).expect("history");
        history.append(&sample(1_000, 1)).expect("append");
        history.tree.insert(2_000u64.to_be_bytes(), b"not json".to_vec()).expect("insert");
        assert_eq!(history.since(0).expect("read"), vec![sample(1_000, 1)]);
    }
}
