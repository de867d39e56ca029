//! The report of a run (SPEC section 8).

use serde::Serialize;

/// Job counters; the job protocol enters the simulator in a later issue.
#[derive(Debug, Default, Serialize)]
pub(crate) struct JobCounts {
    pub(crate) accepted: u64,
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) lost: u64,
    pub(crate) duplicate_visible: u64,
}

/// Membership measurements.
#[derive(Debug, Default, Serialize)]
pub(crate) struct MembershipReport {
    pub(crate) formation_ms: Option<u64>,
    pub(crate) detect_ms_max: u64,
    pub(crate) converge_ms_max: u64,
}

/// One run's outcome.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) seed: u64,
    pub(crate) scenario: String,
    #[serde(skip)]
    pub(crate) description: String,
    pub(crate) verdict: &'static str,
    pub(crate) trace_sha256: String,
    pub(crate) trace_events: usize,
    pub(crate) sim_seconds: f64,
    pub(crate) wall_seconds: f64,
    pub(crate) jobs: JobCounts,
    pub(crate) membership: MembershipReport,
    pub(crate) failures: Vec<String>,
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
        out.push_str(&format!("  trace: {} events, sha256 {}\n", self.trace_events, self.trace_sha256));
        for failure in &self.failures {
            out.push_str(&format!("  FAILED: {failure}\n"));
        }
        if !self.failures.is_empty() {
            out.push_str(&format!("  replay with: gpumesh-sim {}.toml --seed {}\n", self.scenario, self.seed));
        }
        out
    }
}
