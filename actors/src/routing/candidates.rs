//! Candidates for a request, from the gossiped view (pure).

use std::collections::HashMap;

use gpumesh_membership::{ClusterView, Member, MemberStatus};
use tokio::time::Instant;

use crate::routing::policy::{Candidate, GpuInfo};

/// This node's own copy of the model: fresher than its gossip.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalModel {
    pub device: String,
    /// The model's engine answers its health check (always, but for
    /// language models whose engine is down).
    pub ready: bool,
    pub queue_depth: u32,
    pub inflight: u32,
    pub service_ms_per_item: f64,
}

/// Nodes a forward recently failed to reach, and until when they are
/// skipped (gossip liveness is not reachability, FIELD-NOTES).
#[derive(Debug, Default)]
pub struct Reachability {
    unreachable_until: HashMap<String, Instant>,
}

impl Reachability {
    pub fn mark_unreachable(&mut self, node: &str, until: Instant) {
        self.unreachable_until.insert(node.to_string(), until);
    }

    pub fn mark_reachable(&mut self, node: &str) {
        self.unreachable_until.remove(node);
    }

    pub fn is_reachable(&self, node: &str, now: Instant) -> bool {
        self.unreachable_until.get(node).is_none_or(|until| now >= *until)
    }
}

/// True when some trusted member's gossip lists `model` (so a request for
/// it is "no node can serve it now", not "unknown model").
pub fn known_anywhere(view: &ClusterView, model: &str) -> bool {
    view.members.iter().any(|member| {
        member.trusted && member.load.as_ref().is_some_and(|load| load.models.iter().any(|m| m.name == model))
    })
}

fn candidate(member: &Member, model: &str, local: Option<&LocalModel>, reachable: bool, network_ms: f64) -> Candidate {
    let load = member.load.as_ref();
    let gossiped = load.and_then(|load| load.models.iter().find(|m| m.name == model));
    let (model_device, queue_depth, inflight, service_ms_per_item, ready) = match (member.is_self, local, gossiped) {
        (true, Some(local), _) => {
            (Some(local.device.clone()), local.queue_depth, local.inflight, local.service_ms_per_item, local.ready)
        }
        (true, None, _) => (None, 0, 0, 0.0, true),
        (false, _, Some(m)) => {
            let ready = m.llm.as_ref().is_none_or(|llm| llm.ready);
            (Some(m.device.clone()), m.queue_depth, m.inflight, m.service_ms_per_item, ready)
        }
        (false, _, None) => (None, 0, 0, 0.0, true),
    };
    Candidate {
        node: member.name.clone(),
        is_self: member.is_self,
        live: member.status != MemberStatus::Dead,
        trusted: member.trusted,
        draining: member.info.as_ref().is_some_and(|info| info.draining),
        reachable: member.is_self || reachable,
        avoided: false,
        engine_down: !ready,
        age_ms: member.age_ms,
        load_seq: member.load_seq,
        model_device,
        gpus: load
            .map(|load| {
                load.gpus
                    .iter()
                    .map(|g| GpuInfo {
                        name: g.name.clone(),
                        memory_free_mb: g.memory_free_mb,
                        utilization_pct: g.utilization_pct,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        queue_depth,
        inflight,
        service_ms_per_item,
        network_ms: if member.is_self { 0.0 } else { network_ms },
        prompt: None,
    }
}

/// Every member of the view as a candidate for a request for `model`.
pub fn candidates(
    view: &ClusterView,
    model: &str,
    local: Option<&LocalModel>,
    reachability: &Reachability,
    network_ms: f64,
    now: Instant,
) -> Vec<Candidate> {
    view.members
        .iter()
        .map(|member| candidate(member, model, local, reachability.is_reachable(&member.name, now), network_ms))
        .collect()
}
