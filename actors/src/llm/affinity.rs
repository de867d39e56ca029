//! What a prompt costs on each node before its first token (pure): its
//! prefill at the node's measured rate, and the part of it the node's
//! prefix sketch predicts its engine has cached. `eta` weighs these
//! against the requests ahead (the imbalance rule is in `routing::policy`).

use std::collections::BTreeMap;

use gpumesh_membership::{ClusterView, LlmLoad};

use crate::llm::model::DEFAULT_PROMPT_BYTES_PER_TOKEN;
use crate::llm::prefix::Prefixes;
use crate::routing::policy::PromptCost;

/// This node's own measurements of the model, fresher than its gossip.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LocalPrefill {
    pub prefill_tokens_per_s: f64,
    pub ttft_ms: f64,
    pub prompt_bytes_per_token: f64,
    /// Bytes of the prompt's longest prefix this node's engine holds.
    pub held_bytes: usize,
    /// Sequences its engine runs at once.
    pub slots: u32,
}

/// The measurements a cost is made of.
struct Prefill {
    tokens_per_s: f64,
    ttft_ms: f64,
    bytes_per_token: f64,
    held_bytes: usize,
    slots: u32,
}

impl Prefill {
    fn gossiped(llm: &LlmLoad, prefixes: &Prefixes) -> Self {
        Self {
            tokens_per_s: llm.prefill_tokens_per_s.unwrap_or(0.0),
            ttft_ms: llm.ttft_ms.unwrap_or(0.0),
            bytes_per_token: llm.prompt_bytes_per_token.unwrap_or(0.0),
            held_bytes: prefixes.longest_held(|hash| llm.prefixes.contains(hash)),
            slots: llm.max_concurrency.unwrap_or(1),
        }
    }

    /// This prompt's whole prefill at the node's measured rate (or, before
    /// it has counted prompt tokens, its time to first token); `None`
    /// before the node has measured anything.
    fn prefill_ms(&self, prefixes: &Prefixes) -> Option<f64> {
        let per_token = if self.bytes_per_token > 0.0 { self.bytes_per_token } else { DEFAULT_PROMPT_BYTES_PER_TOKEN };
        if self.tokens_per_s > 0.0 {
            Some(prefixes.bytes() as f64 / per_token / self.tokens_per_s * 1000.0)
        } else if self.ttft_ms > 0.0 {
            Some(self.ttft_ms)
        } else {
            None
        }
    }

    /// The prompt's cost with its prefill at `prefill_ms`.
    fn cost(&self, prefill_ms: f64, prefixes: &Prefixes, affinity: bool) -> PromptCost {
        let share = if affinity && prefixes.bytes() > 0 {
            self.held_bytes.min(prefixes.bytes()) as f64 / prefixes.bytes() as f64
        } else {
            0.0
        };
        PromptCost { prefill_ms, cached_ms: prefill_ms * share, slots: self.slots.max(1) }
    }
}

/// The cost of a prompt with `prefixes` for `model` on every trusted live
/// node that serves it, by name; `local` is this node's own copy, if it
/// serves the model; `sent` says how much of the prompt this node itself
/// sent a node lately (gossip tells others' sends a few hundred
/// milliseconds later). Without `affinity`, nothing counts as cached.
pub fn prompt_costs(
    view: &ClusterView,
    model: &str,
    prefixes: &Prefixes,
    local: Option<LocalPrefill>,
    sent: &dyn Fn(&str) -> usize,
    affinity: bool,
) -> BTreeMap<String, PromptCost> {
    let mut serving = Vec::new();
    for member in view.members.iter().filter(|member| member.is_trusted_live()) {
        let prefill = if member.is_self {
            local.map(|local| Prefill {
                tokens_per_s: local.prefill_tokens_per_s,
                ttft_ms: local.ttft_ms,
                bytes_per_token: local.prompt_bytes_per_token,
                held_bytes: local.held_bytes,
                slots: local.slots,
            })
        } else {
            let load = member.load.as_ref();
            let llm = load.and_then(|load| load.models.iter().find(|m| m.name == model)?.llm.as_ref());
            llm.map(|llm| Prefill::gossiped(llm, prefixes))
        };
        if let Some(prefill) = prefill {
            let held_bytes = prefill.held_bytes.max(sent(&member.name));
            let measured = prefill.prefill_ms(prefixes);
            serving.push((member.name.clone(), Prefill { held_bytes, ..prefill }, measured));
        }
    }
    let slowest = serving.iter().filter_map(|(_, _, measured)| *measured).reduce(f64::max);
    serving
        .into_iter()
        .filter_map(|(name, prefill, measured)| {
            let prefill_ms = measured.or(slowest)?;
            Some((name, prefill.cost(prefill_ms, prefixes, affinity)))
        })
        .collect()
}

#[cfg(test)]
mod tests;
