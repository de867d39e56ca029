//! Invariants and measurements of a run, evaluated after every step.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gpumesh_membership::{ClusterView, MemberStatus};

use crate::scenario::{Bounds, FaultAction};

struct Detection {
    node: String,
    since_ms: u64,
    waiting: BTreeSet<String>,
}

/// Watches the views of the running nodes and records what the scenario
/// checks: formation, detection of crashes and convergence after restarts.
pub(crate) struct Checker {
    bounds: Bounds,
    nodes: Vec<String>,
    running: BTreeSet<String>,
    generations: BTreeMap<String, u64>,
    /// What each running node sees of each member: status, trust, generation.
    views: BTreeMap<String, BTreeMap<String, (MemberStatus, bool, u64)>>,
    /// `agreed()` as of the last change to views or running nodes.
    agreed_cache: Option<bool>,
    formation_ms: Option<u64>,
    detections: Vec<Detection>,
    converging_since_ms: Option<u64>,
    /// A partition, loss, latency or pause is in force: nodes may disagree.
    network_faulted: bool,
    pub(crate) detect_ms_max: u64,
    pub(crate) converge_ms_max: u64,
    pub(crate) failures: Vec<String>,
}

impl Checker {
    pub(crate) fn new(bounds: Bounds, nodes: Vec<String>) -> Self {
        Self {
            bounds,
            running: nodes.iter().cloned().collect(),
            nodes,
            generations: BTreeMap::new(),
            views: BTreeMap::new(),
            agreed_cache: None,
            formation_ms: None,
            detections: Vec::new(),
            converging_since_ms: None,
            network_faulted: false,
            detect_ms_max: 0,
            converge_ms_max: 0,
            failures: Vec::new(),
        }
    }

    pub(crate) fn formation_ms(&self) -> Option<u64> {
        self.formation_ms
    }

    pub(crate) fn on_fault(&mut self, now_ms: u64, action: &FaultAction) {
        self.agreed_cache = None;
        match action {
            FaultAction::Crash { node } => {
                self.running.remove(node);
                self.views.remove(node);
                self.detections.push(Detection { node: node.clone(), since_ms: now_ms, waiting: self.running.clone() });
            }
            FaultAction::Restart { node, .. } => {
                self.running.insert(node.clone());
                self.converging_since_ms = Some(now_ms);
            }
            FaultAction::Heal => {
                self.network_faulted = false;
                self.converging_since_ms = Some(now_ms);
            }
            FaultAction::Resume { .. } => self.converging_since_ms = Some(now_ms),
            FaultAction::SlowGpu { .. } | FaultAction::GpuOom { .. } | FaultAction::GpuOk { .. } => {}
            _ => {
                self.network_faulted = true;
                self.converging_since_ms = None;
            }
        }
    }

    pub(crate) fn on_view(&mut self, observer: &str, generation: u64, view: Arc<ClusterView>) {
        if let Some(previous) = self.generations.insert(observer.to_string(), generation)
            && generation < previous
        {
            self.failures.push(format!("{observer} restarted with generation {generation}, lower than {previous}"));
        }
        let seen = view.members.iter().map(|m| (m.name.to_string(), (m.status, m.trusted, m.generation))).collect();
        self.views.insert(observer.to_string(), seen);
        self.agreed_cache = None;
    }

    /// Every running node sees every running node alive, trusted and at its
    /// current generation, and every stopped node dead or gone.
    fn agreed(&mut self) -> bool {
        if let Some(agreed) = self.agreed_cache {
            return agreed;
        }
        let agreed = self.running.iter().all(|observer| {
            let Some(view) = self.views.get(observer) else { return false };
            self.nodes.iter().all(|node| {
                let member = view.get(node);
                if self.running.contains(node) {
                    member.is_some_and(|&(status, trusted, generation)| {
                        status == MemberStatus::Alive && trusted && Some(&generation) == self.generations.get(node)
                    })
                } else {
                    member.is_none_or(|&(status, _, _)| status == MemberStatus::Dead)
                }
            })
        });
        self.agreed_cache = Some(agreed);
        agreed
    }

    pub(crate) fn evaluate(&mut self, now_ms: u64) {
        let agreed = self.agreed();
        if self.formation_ms.is_none() && agreed {
            self.formation_ms = Some(now_ms);
        }
        let views = &self.views;
        let running = &self.running;
        for detection in &mut self.detections {
            detection.waiting.retain(|observer| {
                running.contains(observer)
                    && views
                        .get(observer)
                        .and_then(|v| v.get(&detection.node))
                        .is_some_and(|&(status, _, _)| status != MemberStatus::Dead)
            });
        }
        let bounds = self.bounds;
        let mut failures = Vec::new();
        self.detections.retain(|detection| {
            let elapsed = now_ms - detection.since_ms;
            if detection.waiting.is_empty() {
                self.detect_ms_max = self.detect_ms_max.max(elapsed);
                if elapsed > bounds.detect_ms {
                    failures.push(format!(
                        "{} seen dead by every node only {elapsed} ms after its crash, bound {} ms",
                        detection.node, bounds.detect_ms
                    ));
                }
                return false;
            }
            if elapsed > bounds.detect_ms {
                failures.push(format!(
                    "{} not seen dead by {:?} within {} ms of its crash",
                    detection.node, detection.waiting, bounds.detect_ms
                ));
                return false;
            }
            true
        });
        self.failures.extend(failures);
        if let Some(since) = self.converging_since_ms.filter(|_| !self.network_faulted) {
            if agreed {
                self.converge_ms_max = self.converge_ms_max.max(now_ms - since);
                self.converging_since_ms = None;
                if now_ms - since > self.bounds.converge_ms {
                    self.failures.push(format!(
                        "membership converged {} ms after a restart or heal, bound {} ms",
                        now_ms - since,
                        self.bounds.converge_ms
                    ));
                }
            } else if now_ms - since > self.bounds.converge_ms {
                self.failures
                    .push(format!("membership did not converge within {} ms of a restart", self.bounds.converge_ms));
                self.converging_since_ms = None;
            }
        }
    }

    pub(crate) fn finish(&mut self) {
        match self.formation_ms {
            Some(ms) if ms > self.bounds.formation_ms => {
                self.failures.push(format!("cluster formed after {ms} ms, bound {} ms", self.bounds.formation_ms));
            }
            Some(_) => {}
            None => self.failures.push("cluster never formed".into()),
        }
        for detection in &self.detections {
            self.failures.push(format!("{} not seen dead by {:?} before the end", detection.node, detection.waiting));
        }
        if self.converging_since_ms.is_some() || !self.agreed() {
            self.failures.push("nodes do not agree on the membership at the end of the run".into());
        }
    }
}
