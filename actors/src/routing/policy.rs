//! The routing policies of SPEC section 6 and the explainable decision.
//!
//! A decision first filters (alive, trusted, not draining, reachable, linked, model
//! loaded, requirements met, gossip fresh enough), then ranks what is left:
//!
//! - `eta`: lowest estimated completion time: (requests ahead, plus one)
//!   times service time per item, plus network cost. Requests ahead are the
//!   target's last load report corrected by what this node sent there and
//!   saw finish since, and at least what it still has outstanding there. Power-of-two choices among near-ties, so
//!   nodes reading the same stale gossip do not all pick the same target;
//!   local when local is best; priority 8-10 takes the lowest estimate
//!   without randomisation.
//!   For a language model the requests ahead share the engine's sequences
//!   (they count divided by how many it runs at once), and the "plus one"
//!   is this prompt's own prefill at the candidate's measured rate, less
//!   what its prefix sketch predicts its engine has cached
//!   ([`PromptCost`]), unless the candidate is
//!   overloaded: more than [`OVERLOAD_FACTOR`] times the requests ahead of
//!   the least loaded candidate plus [`OVERLOAD_SLACK`]; then load wins and
//!   its cache counts for nothing.
//! - `least-queue`: fewest requests ahead (as above).
//! - `round-robin`, `random`.
//! - `weighted-score`: the seed design's `VRAM_free*100 - queue*10 -
//!   latency*10 - util*50`, weighted random.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use rand::{Rng, RngExt};

/// Candidates within this factor of the best estimate count as near-ties.
const NEAR_TIE_FACTOR: f64 = 1.10;
/// A candidate with more requests ahead than this many times the least
/// loaded one's, plus [`OVERLOAD_SLACK`], gets no credit for its cache.
pub const OVERLOAD_FACTOR: f64 = 2.0;
pub const OVERLOAD_SLACK: f64 = 4.0;
/// Requests of this priority or higher are placed without randomisation.
const URGENT_PRIORITY: u8 = 8;
/// Service time assumed for a node that has not reported one yet when no
/// node has; otherwise the slowest reported one is assumed, so an unmeasured
/// node is tried when the measured ones are busy, not before them (assuming
/// it fast sent it requests until its first report and made the tail).
const UNKNOWN_SERVICE_MS: f64 = 1.0;

/// A routing policy (`--policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    Eta,
    LeastQueue,
    RoundRobin,
    Random,
    WeightedScore,
}

impl Policy {
    pub const ALL: [Policy; 5] =
        [Policy::Eta, Policy::LeastQueue, Policy::RoundRobin, Policy::Random, Policy::WeightedScore];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eta => "eta",
            Self::LeastQueue => "least-queue",
            Self::RoundRobin => "round-robin",
            Self::Random => "random",
            Self::WeightedScore => "weighted-score",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|policy| policy.as_str() == text).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|p| p.as_str()).collect();
            format!("unknown policy {text:?}: use one of {}", names.join(", "))
        })
    }
}

/// Where a request may run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeviceRequirement {
    #[default]
    Any,
    Gpu,
    Cpu,
}

/// What a request asks of its executing node.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Requirements {
    pub device: DeviceRequirement,
    pub min_free_vram_mb: u64,
    /// Case-insensitive part of a GPU's name, such as "H100".
    pub gpu_type: Option<String>,
    pub priority: u8,
}

/// One GPU of a candidate.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuInfo {
    pub name: String,
    pub memory_free_mb: u64,
    pub utilization_pct: u32,
}

/// What a language-model prompt costs on a candidate before its first
/// token.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PromptCost {
    /// Prefill of the whole prompt at the candidate's measured rate (its
    /// time to first token when it has not measured one).
    pub prefill_ms: f64,
    /// The part of it the candidate's engine likely has cached.
    pub cached_ms: f64,
    /// Sequences the candidate's engine runs at once (at least 1).
    pub slots: u32,
}

/// One node that might run the request, as this node sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Candidate {
    pub node: String,
    pub is_self: bool,
    /// Alive or suspect in gossip.
    pub live: bool,
    pub trusted: bool,
    pub draining: bool,
    /// Not recently failed to answer a forward (gossip liveness is not reachability).
    pub reachable: bool,
    /// This node's link to it is up (always true of this node itself): a
    /// request sent to a node without one would only wait for the link.
    pub linked: bool,
    /// Already failed this request, and another node could serve it (see `retry`).
    pub avoided: bool,
    /// The model's engine is not answering its health check (language models).
    pub engine_down: bool,
    /// Age of the node's gossiped load.
    pub age_ms: u64,
    /// Sequence number of the node's gossiped load; a new one resets what
    /// this node has sent there since.
    pub load_seq: u64,
    /// The model is loaded there, with this execution provider.
    pub model_device: Option<String>,
    pub gpus: Vec<GpuInfo>,
    pub queue_depth: u32,
    pub inflight: u32,
    pub service_ms_per_item: f64,
    /// Estimated cost of getting the request there and back.
    pub network_ms: f64,
    /// A language-model prompt's cost there; `None` for tensors.
    pub prompt: Option<PromptCost>,
}

impl Candidate {
    fn free_vram_mb(&self) -> u64 {
        self.gpus.iter().map(|g| g.memory_free_mb).max().unwrap_or(0)
    }

    fn runs_on_gpu(&self) -> bool {
        match self.model_device.as_deref() {
            Some(device) if device.starts_with("cuda") => true,
            Some("cpu") | None => false,
            // Synthetic models stand in for the node's hardware, and
            // language-model engines run on it.
            Some(_) => !self.gpus.is_empty(),
        }
    }
}

/// Tuning of decisions.
#[derive(Clone, Copy, Debug)]
pub struct RouteParams {
    /// Candidates whose load is older than this are skipped (not this node).
    pub stale_after_ms: u64,
}

/// What this node remembers between decisions.
#[derive(Debug, Default)]
pub struct RouterState {
    /// Per node: the load report (sequence number) the correction applies
    /// to, and requests sent there minus requests finished there since it.
    since_report: HashMap<String, (u64, i64)>,
    /// Per node: requests sent there that have not finished.
    outstanding: HashMap<String, u32>,
    next_round_robin: usize,
}

impl RouterState {
    /// Requests ahead at `candidate` by this node's reckoning: its last
    /// load report corrected by what this node sent and saw finish since,
    /// and never less than what this node still has outstanding there.
    fn ahead(&self, candidate: &Candidate) -> f64 {
        let reported = i64::from(candidate.queue_depth) + i64::from(candidate.inflight);
        let correction = match self.since_report.get(&candidate.node) {
            Some((seq, delta)) if *seq == candidate.load_seq => *delta,
            _ => 0,
        };
        let outstanding = i64::from(self.outstanding.get(&candidate.node).copied().unwrap_or(0));
        (reported + correction).max(outstanding).max(0) as f64
    }

    /// Starts a new correction when `candidate` has sent a new load report,
    /// so what finishes from now on counts against the report in use.
    fn observe(&mut self, candidate: &Candidate) {
        let entry = self.since_report.entry(candidate.node.clone()).or_insert((candidate.load_seq, 0));
        if entry.0 != candidate.load_seq {
            *entry = (candidate.load_seq, 0);
        }
    }

    /// Records that a request went to `candidate`.
    pub fn record_send(&mut self, candidate: &Candidate) {
        self.observe(candidate);
        if let Some(entry) = self.since_report.get_mut(&candidate.node) {
            entry.1 += 1;
        }
        *self.outstanding.entry(candidate.node.clone()).or_insert(0) += 1;
    }

    /// Records that a request sent to `node` has finished.
    pub fn record_done(&mut self, node: &str) {
        if let Some(entry) = self.since_report.get_mut(node) {
            entry.1 -= 1;
        }
        if let Some(count) = self.outstanding.get_mut(node) {
            *count = count.saturating_sub(1);
        }
    }
}

/// One candidate as the decision saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    pub node: String,
    /// Policy score; lower is better for `eta` and `least-queue`.
    pub score: Option<f64>,
    /// Why the candidate was left out.
    pub excluded: Option<&'static str>,
}

/// The outcome of one routing decision, kept for `/cluster/decisions`.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub policy: Policy,
    pub chosen: Option<String>,
    pub candidates: Vec<Scored>,
}

/// The candidate passes every filter of a decision.
pub(crate) fn is_eligible(candidate: &Candidate, requirements: &Requirements, params: RouteParams) -> bool {
    exclusion(candidate, requirements, params).is_none()
}

fn exclusion(candidate: &Candidate, requirements: &Requirements, params: RouteParams) -> Option<&'static str> {
    if !candidate.live {
        return Some("dead");
    }
    if !candidate.trusted {
        return Some("untrusted");
    }
    if candidate.draining {
        return Some("draining");
    }
    if !candidate.reachable {
        return Some("unreachable");
    }
    if !candidate.linked {
        return Some("no link yet");
    }
    if candidate.avoided {
        return Some("failed this request");
    }
    if candidate.model_device.is_none() {
        return Some("model not loaded");
    }
    if candidate.engine_down {
        return Some("engine not ready");
    }
    if !candidate.is_self && candidate.age_ms > params.stale_after_ms {
        return Some("stale load data");
    }
    match requirements.device {
        DeviceRequirement::Gpu if !candidate.runs_on_gpu() => return Some("not a gpu"),
        DeviceRequirement::Cpu if candidate.runs_on_gpu() => return Some("not a cpu"),
        _ => {}
    }
    if candidate.free_vram_mb() < requirements.min_free_vram_mb {
        return Some("not enough free vram");
    }
    if let Some(wanted) = &requirements.gpu_type {
        let wanted = wanted.to_lowercase();
        if !candidate.gpus.iter().any(|gpu| gpu.name.to_lowercase().contains(&wanted)) {
            return Some("other gpu type");
        }
    }
    None
}

fn eta_ms(candidate: &Candidate, ahead: f64, least_ahead: f64, unknown_service_ms: f64) -> f64 {
    let service = if candidate.service_ms_per_item > 0.0 { candidate.service_ms_per_item } else { unknown_service_ms };
    match candidate.prompt {
        None => (ahead + 1.0) * service + candidate.network_ms,
        Some(prompt) => {
            let credit = if is_overloaded(ahead, least_ahead) { 0.0 } else { prompt.cached_ms };
            ahead / f64::from(prompt.slots.max(1)) * service
                + (prompt.prefill_ms - credit).max(0.0)
                + candidate.network_ms
        }
    }
}

/// The imbalance rule: a candidate this far behind the least loaded one
/// gets no credit for what it has cached.
pub fn is_overloaded(ahead: f64, least_ahead: f64) -> bool {
    ahead > OVERLOAD_FACTOR * least_ahead + OVERLOAD_SLACK
}

fn weighted_score(candidate: &Candidate) -> f64 {
    let utilization = candidate.gpus.iter().map(|g| f64::from(g.utilization_pct)).fold(0.0, f64::max) / 100.0;
    let latency_ms = candidate.service_ms_per_item + candidate.network_ms;
    candidate.free_vram_mb() as f64 / 1024.0 * 100.0
        - f64::from(candidate.queue_depth) * 10.0
        - latency_ms * 10.0
        - utilization * 50.0
}

/// Picks the node that runs a request.
pub fn decide(
    policy: Policy,
    candidates: &[Candidate],
    requirements: &Requirements,
    params: RouteParams,
    state: &mut RouterState,
    rng: &mut impl Rng,
) -> Decision {
    let mut scored: Vec<Scored> = Vec::with_capacity(candidates.len());
    let mut eligible: Vec<(usize, f64)> = Vec::new();
    let unknown_service_ms =
        candidates.iter().filter(|c| c.model_device.is_some()).map(|c| c.service_ms_per_item).fold(0.0, f64::max);
    let unknown_service_ms = if unknown_service_ms > 0.0 { unknown_service_ms } else { UNKNOWN_SERVICE_MS };
    for candidate in candidates {
        state.observe(candidate);
    }
    let least_ahead = candidates
        .iter()
        .filter(|c| c.prompt.is_some() && exclusion(c, requirements, params).is_none())
        .map(|c| state.ahead(c))
        .fold(f64::INFINITY, f64::min);
    for (index, candidate) in candidates.iter().enumerate() {
        let excluded = exclusion(candidate, requirements, params);
        let ahead = state.ahead(candidate);
        let score = excluded.is_none().then(|| match policy {
            Policy::Eta => eta_ms(candidate, ahead, least_ahead, unknown_service_ms),
            Policy::LeastQueue => ahead,
            Policy::WeightedScore => weighted_score(candidate),
            Policy::RoundRobin | Policy::Random => 0.0,
        });
        if let Some(score) = score {
            eligible.push((index, score));
        }
        scored.push(Scored { node: candidate.node.clone(), score, excluded });
    }
    let chosen = choose(policy, candidates, &eligible, requirements, state, rng);
    if let Some(index) = chosen {
        state.record_send(&candidates[index]);
    }
    Decision { policy, chosen: chosen.map(|index| candidates[index].node.clone()), candidates: scored }
}

fn choose(
    policy: Policy,
    candidates: &[Candidate],
    eligible: &[(usize, f64)],
    requirements: &Requirements,
    state: &mut RouterState,
    rng: &mut impl Rng,
) -> Option<usize> {
    if eligible.is_empty() {
        return None;
    }
    // Lower score wins; on equal scores the local node, then the name.
    let better = |a: &(usize, f64), b: &(usize, f64)| {
        a.1.total_cmp(&b.1)
            .then_with(|| candidates[b.0].is_self.cmp(&candidates[a.0].is_self))
            .then_with(|| candidates[a.0].node.cmp(&candidates[b.0].node))
    };
    match policy {
        Policy::Eta => {
            let best = *eligible.iter().min_by(|a, b| better(a, b))?;
            // Running here when here is best cannot herd anyone onto a
            // target; urgent requests take the best estimate as it stands.
            if requirements.priority >= URGENT_PRIORITY || candidates[best.0].is_self {
                return Some(best.0);
            }
            let ties: Vec<&(usize, f64)> =
                eligible.iter().filter(|(_, eta)| *eta <= best.1 * NEAR_TIE_FACTOR).collect();
            if ties.len() < 2 {
                return Some(best.0);
            }
            let first = ties[rng.random_range(0..ties.len())];
            let second = ties[rng.random_range(0..ties.len())];
            Some(if better(first, second).is_le() { first.0 } else { second.0 })
        }
        Policy::LeastQueue => eligible.iter().min_by(|a, b| better(a, b)).map(|e| e.0),
        Policy::RoundRobin => {
            let mut sorted: Vec<usize> = eligible.iter().map(|e| e.0).collect();
            sorted.sort_by(|a, b| candidates[*a].node.cmp(&candidates[*b].node));
            let pick = sorted[state.next_round_robin % sorted.len()];
            state.next_round_robin = state.next_round_robin.wrapping_add(1);
            Some(pick)
        }
        Policy::Random => Some(eligible[rng.random_range(0..eligible.len())].0),
        Policy::WeightedScore => {
            let lowest = eligible.iter().map(|e| e.1).fold(f64::INFINITY, f64::min);
            let weights: Vec<f64> = eligible.iter().map(|e| e.1 - lowest + 1.0).collect();
            let total: f64 = weights.iter().sum();
            let mut ticket = rng.random_range(0.0..total);
            for (entry, weight) in eligible.iter().zip(&weights) {
                if ticket < *weight {
                    return Some(entry.0);
                }
                ticket -= weight;
            }
            eligible.last().map(|e| e.0)
        }
    }
}

#[cfg(test)]
mod tests;
