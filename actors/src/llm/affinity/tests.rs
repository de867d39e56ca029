use gpumesh_membership::{LoadSummary, Member, MemberStatus, ModelLoad, PrefixSketch};

use super::*;
use crate::llm::prefix::{BLOCK_BYTES, Sketch};

/// A 64-block prompt: 48 blocks of a shared system prompt, then its own.
fn prompt(own: &str) -> String {
    "s".repeat(48 * BLOCK_BYTES) + &own.repeat(16 * BLOCK_BYTES / own.len())
}

fn member(name: &str, llm: Option<LlmLoad>) -> Member {
    Member {
        name: name.into(),
        generation: 1,
        gossip_addr: "127.0.0.1:1".parse().expect("addr"),
        status: MemberStatus::Alive,
        age_ms: 0,
        trusted: true,
        forged: false,
        is_self: name == "n1",
        info: None,
        load: Some(LoadSummary {
            models: vec![ModelLoad { name: "chat".into(), llm, ..ModelLoad::default() }],
            ..LoadSummary::default()
        }),
        load_seq: 1,
    }
}

fn measured(prefixes: PrefixSketch) -> LlmLoad {
    LlmLoad {
        ready: true,
        ttft_ms: Some(50.0),
        prefill_tokens_per_s: Some(1024.0),
        prompt_bytes_per_token: Some(4.0),
        max_concurrency: Some(8),
        prefixes,
        ..LlmLoad::default()
    }
}

#[test]
fn the_node_holding_the_shared_prefix_is_credited_with_it() {
    let mut sketch = Sketch::new(1 << 20);
    sketch.record(&Prefixes::of(&prompt("a")));
    let view = ClusterView {
        self_name: "n1".into(),
        members: vec![
            member("n1", None),
            member("n2", Some(measured(sketch.published()))),
            member("n3", Some(measured(PrefixSketch::default()))),
            member("n4", Some(LlmLoad { ready: true, ..LlmLoad::default() })),
        ],
    };
    let prefixes = Prefixes::of(&prompt("b"));
    let costs = prompt_costs(&view, "chat", &prefixes, None, &|_| 0, true);
    // 4096 bytes, 4 a token, 1024 tokens a second: 1 s.
    assert_eq!(costs["n3"], PromptCost { prefill_ms: 1000.0, cached_ms: 0.0, slots: 8 });
    // The 48 shared blocks of 64 (48 is a checkpoint).
    assert_eq!(costs["n2"], PromptCost { prefill_ms: 1000.0, cached_ms: 750.0, slots: 8 });
    assert_eq!(
        costs["n4"],
        PromptCost { prefill_ms: 1000.0, cached_ms: 0.0, slots: 1 },
        "a node that measured nothing yet prefills as slowly as the slowest measured one"
    );
    assert!(!costs.contains_key("n1"), "this node does not serve the model");

    let without = prompt_costs(&view, "chat", &prefixes, None, &|_| 0, false);
    assert_eq!(without["n2"], PromptCost { prefill_ms: 1000.0, cached_ms: 0.0, slots: 8 }, "affinity off");
}

#[test]
fn this_node_uses_its_own_measurements_and_an_unmeasured_rate_falls_back_to_ttft() {
    let view = ClusterView {
        self_name: "n1".into(),
        members: vec![member("n1", None), member("n2", Some(LlmLoad { ttft_ms: Some(80.0), ..LlmLoad::default() }))],
    };
    let prefixes = Prefixes::of(&prompt("c"));
    let local = LocalPrefill {
        prefill_tokens_per_s: 2048.0,
        ttft_ms: 10.0,
        prompt_bytes_per_token: 1.0,
        held_bytes: prefixes.bytes() / 4,
        slots: 2,
    };
    let costs = prompt_costs(&view, "chat", &prefixes, Some(local), &|_| 0, true);
    assert_eq!(costs["n1"], PromptCost { prefill_ms: 2000.0, cached_ms: 500.0, slots: 2 });
    assert_eq!(costs["n2"], PromptCost { prefill_ms: 80.0, cached_ms: 0.0, slots: 1 });
    // What this node sent n2 a moment ago counts before gossip says it.
    let sent = |node: &str| if node == "n2" { prefixes.bytes() / 2 } else { 0 };
    let costs = prompt_costs(&view, "chat", &prefixes, Some(local), &sent, true);
    assert_eq!(costs["n2"], PromptCost { prefill_ms: 80.0, cached_ms: 40.0, slots: 1 });
}

#[test]
fn what_an_unmeasured_node_holds_counts_at_the_slowest_measured_rate() {
    let view = ClusterView {
        self_name: "n1".into(),
        members: vec![
            member("n1", None),
            member("n2", Some(LlmLoad { ttft_ms: Some(80.0), ..LlmLoad::default() })),
            member("n3", Some(LlmLoad { ttft_ms: Some(120.0), ..LlmLoad::default() })),
            member("n4", Some(LlmLoad { max_concurrency: Some(4), ..LlmLoad::default() })),
        ],
    };
    let prefixes = Prefixes::of(&prompt("d"));
    // This node sent n4 the whole prompt; n4's gossip does not say so yet.
    let sent = |node: &str| if node == "n4" { prefixes.bytes() } else { 0 };
    let costs = prompt_costs(&view, "chat", &prefixes, None, &sent, true);
    assert_eq!(costs["n4"], PromptCost { prefill_ms: 120.0, cached_ms: 120.0, slots: 4 });

    let unmeasured = ClusterView {
        self_name: "n1".into(),
        members: vec![member("n1", None), member("n4", Some(LlmLoad::default()))],
    };
    assert!(prompt_costs(&unmeasured, "chat", &prefixes, None, &sent, true).is_empty(), "nothing measured: no costs");
}
