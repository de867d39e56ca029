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

/// What this node knows of reaching a member.
#[derive(Clone, Copy)]
struct Reach {
    /// Not in a cooldown after a failed forward.
    reachable: bool,
    /// Its link from this node is up.
    linked: bool,
}

fn candidate(member: &Member, model: &str, local: Option<&LocalModel>, reach: Reach, network_ms: f64) -> Candidate {
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
        reachable: member.is_self || reach.reachable,
        linked: member.is_self || reach.linked,
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

/// Every member of the view as a candidate for a request for `model`;
/// `linked` tells whether this node's link to a member is up.
pub fn candidates(
    view: &ClusterView,
    model: &str,
    local: Option<&LocalModel>,
    reachability: &Reachability,
    linked: impl Fn(&str) -> bool,
    network_ms: f64,
    now: Instant,
) -> Vec<Candidate> {
    view.members
        .iter()
        .map(|member| {
            let reach = Reach { reachable: reachability.is_reachable(&member.name, now), linked: linked(&member.name) };
            candidate(member, model, local, reach, network_ms)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "a test picks any instant as its now")]
mod tests {
    use gpumesh_membership::MemberStatus;

    use super::*;
    use crate::test_members::member;

    /// A member gossip lists as alive but whose link is not up yet (a
    /// restarted node that just read the view, say) is no candidate: a
    /// request sent there would only wait for the link and fail.
    #[test]
    fn members_without_a_link_are_marked_unlinked_but_this_node_never_is() {
        let view = ClusterView {
            self_name: "a".into(),
            members: vec![
                member("a", MemberStatus::Alive, true, true),
                member("b", MemberStatus::Alive, true, false),
                member("c", MemberStatus::Alive, true, false),
            ],
        };
        let list = candidates(&view, "m", None, &Reachability::default(), |node| node == "c", 0.5, Instant::now());
        let linked: Vec<(&str, bool)> = list.iter().map(|c| (c.node.as_str(), c.linked)).collect();
        assert_eq!(linked, [("a", true), ("b", false), ("c", true)]);
    }
}
