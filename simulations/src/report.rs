//! The report of a run (SPEC section 8).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ledger::StreamCounts;

/// Job counters.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub(crate) struct JobCounts {
    pub(crate) accepted: u64,
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) lost: u64,
    pub(crate) duplicate_visible: u64,
    /// Idempotency keys that got a second job after their home moved.
    #[serde(default)]
    pub(crate) moved_keys: u64,
}

/// Membership measurements.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub(crate) struct MembershipReport {
    pub(crate) formation_ms: Option<u64>,
    pub(crate) detect_ms_max: u64,
    pub(crate) converge_ms_max: u64,
}

/// One run's outcome.
#[derive(Debug, Serialize, serde::Deserialize)]
pub(crate) struct Report {
    pub(crate) seed: u64,
    pub(crate) scenario: String,
    #[serde(skip)]
    pub(crate) description: String,
    pub(crate) verdict: String,
    pub(crate) trace_sha256: String,
    pub(crate) trace_events: usize,
    pub(crate) sim_seconds: f64,
    pub(crate) wall_seconds: f64,
    pub(crate) jobs: JobCounts,
    pub(crate) membership: MembershipReport,
    /// Synchronous request latency per routing policy (for a
    /// language-model workload: time to first token).
    pub(crate) policies: BTreeMap<String, PolicyLatency>,
    /// Language-model streams per routing policy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) streams: BTreeMap<String, StreamCounts>,
    pub(crate) failures: Vec<String>,
}

/// Latency of synchronous requests under one policy.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub(crate) struct PolicyLatency {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

impl PolicyLatency {
    pub(crate) fn new(mut latencies_ms: Vec<f64>, errors: u64) -> Self {
        latencies_ms.sort_by(f64::total_cmp);
        let at = |fraction: f64| {
            if latencies_ms.is_empty() {
                return 0.0;
            }
            let index = ((latencies_ms.len() as f64 * fraction).ceil() as usize).clamp(1, latencies_ms.len()) - 1;
            latencies_ms[index]
        };
        Self {
            requests: latencies_ms.len() as u64 + errors,
            errors,
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

impl Report {
    /// The readable summary printed without `--json`.
    pub(crate) fn summary(&self) -> String {
        let mut out = format!(
            "scenario {} seed {}: {}\n  {}\n  simulated {:.1} s in {:.2} s of wall time ({:.0}x)\n",
            self.scenario,
            self.seed,
            self.verdict.to_uppercase(),
            self.description,
            self.sim_seconds,
            self.wall_seconds,
            self.sim_seconds / self.wall_seconds.max(1e-9),
        );
        let formation = self.membership.formation_ms.map_or_else(|| "never".to_string(), |ms| format!("{ms} ms"));
        out.push_str(&format!(
            "  membership: formed in {formation}, detection max {} ms, convergence max {} ms\n",
            self.membership.detect_ms_max, self.membership.converge_ms_max
        ));
        let jobs = &self.jobs;
        out.push_str(&format!(
            "  jobs: {} accepted, {} completed, {} failed, {} lost, {} with a second result visible, {} keys moved home\n",
            jobs.accepted, jobs.completed, jobs.failed, jobs.lost, jobs.duplicate_visible, jobs.moved_keys
        ));
        for (policy, latency) in &self.policies {
            out.push_str(&format!(
                "  policy {policy}: {} requests, {} errors, p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n",
                latency.requests, latency.errors, latency.p50_ms, latency.p90_ms, latency.p99_ms, latency.max_ms
            ));
        }
        for (policy, streams) in &self.streams {
            let cached = streams.cached_tokens as f64 / streams.prompt_tokens.max(1) as f64 * 100.0;
            out.push_str(&format!(
                "  streams {policy}: {} started, {} completed token for token, {} ended with an error event, {} refused, {} moves, {cached:.1} % of prompt tokens cached\n",
                streams.started, streams.completed, streams.errors, streams.refused, streams.failovers
            ));
        }
        out.push_str(&format!("  trace: {} events, sha256 {}\n", self.trace_events, self.trace_sha256));
        for failure in &self.failures {
            out.push_str(&format!("  FAILED: {failure}\n"));
        }
        if !self.failures.is_empty() {
            out.push_str(&format!(
                "  replay with: gpumesh-sim simulations/scenarios/{}.toml --seed {}\n",
                self.scenario, self.seed
            ));
        }
        out
    }
}
