use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

const PARAMS: RouteParams = RouteParams { stale_after_ms: 5_000 };

fn node(name: &str) -> Candidate {
    Candidate {
        node: name.into(),
        is_self: false,
        live: true,
        trusted: true,
        draining: false,
        reachable: true,
        linked: true,
        avoided: false,
        engine_down: false,
        age_ms: 100,
        load_seq: 1,
        model_device: Some("cpu".into()),
        gpus: Vec::new(),
        queue_depth: 0,
        inflight: 0,
        service_ms_per_item: 1.0,
        network_ms: 0.5,
        prompt: None,
    }
}

fn gpu_node(name: &str, gpu: &str, free_mb: u64) -> Candidate {
    Candidate {
        model_device: Some("cuda:0".into()),
        gpus: vec![GpuInfo { name: gpu.into(), memory_free_mb: free_mb, utilization_pct: 10 }],
        ..node(name)
    }
}

fn me(candidate: Candidate) -> Candidate {
    Candidate { is_self: true, network_ms: 0.0, ..candidate }
}

fn pick(policy: Policy, candidates: &[Candidate], requirements: &Requirements) -> Decision {
    decide(policy, candidates, requirements, PARAMS, &mut RouterState::default(), &mut StdRng::seed_from_u64(1))
}

#[test]
fn policies_parse_and_print() {
    for policy in Policy::ALL {
        assert_eq!(policy.as_str().parse::<Policy>(), Ok(policy));
    }
    assert!("fastest".parse::<Policy>().is_err_and(|e| e.contains("least-queue")));
}

#[test]
fn every_filter_excludes_with_its_reason() {
    let cases: Vec<(Candidate, Requirements, &str)> = vec![
        (Candidate { live: false, ..node("x") }, Requirements::default(), "dead"),
        (Candidate { trusted: false, ..node("x") }, Requirements::default(), "untrusted"),
        (Candidate { draining: true, ..node("x") }, Requirements::default(), "draining"),
        (Candidate { reachable: false, ..node("x") }, Requirements::default(), "unreachable"),
        (Candidate { linked: false, ..node("x") }, Requirements::default(), "no link yet"),
        (Candidate { model_device: None, ..node("x") }, Requirements::default(), "model not loaded"),
        (Candidate { age_ms: 6_000, ..node("x") }, Requirements::default(), "stale load data"),
        (node("x"), Requirements { device: DeviceRequirement::Gpu, ..Requirements::default() }, "not a gpu"),
        (
            gpu_node("x", "H100", 1000),
            Requirements { device: DeviceRequirement::Cpu, ..Requirements::default() },
            "not a cpu",
        ),
        (
            gpu_node("x", "T4", 1000),
            Requirements { min_free_vram_mb: 2000, ..Requirements::default() },
            "not enough free vram",
        ),
        (
            gpu_node("x", "NVIDIA T4", 9000),
            Requirements { gpu_type: Some("h100".into()), ..Requirements::default() },
            "other gpu type",
        ),
    ];
    for (candidate, requirements, reason) in cases {
        let decision = pick(Policy::Eta, &[candidate], &requirements);
        assert_eq!(decision.chosen, None, "{reason}");
        assert_eq!(decision.candidates[0].excluded, Some(reason));
    }
}

#[test]
fn requirements_that_fit_are_met() {
    let candidates =
        [node("cpu"), gpu_node("t4", "NVIDIA T4", 15_000), gpu_node("h100", "NVIDIA H100 80GB HBM3", 79_000)];
    let chosen = |requirements: Requirements| pick(Policy::Eta, &candidates, &requirements).chosen;
    let gpu = Requirements { device: DeviceRequirement::Gpu, priority: 9, ..Requirements::default() };
    assert_ne!(chosen(gpu.clone()).as_deref(), Some("cpu"));
    assert_eq!(chosen(Requirements { min_free_vram_mb: 20_000, ..gpu.clone() }).as_deref(), Some("h100"));
    assert_eq!(chosen(Requirements { gpu_type: Some("T4".into()), ..gpu }).as_deref(), Some("t4"));
    let cpu = Requirements { device: DeviceRequirement::Cpu, ..Requirements::default() };
    assert_eq!(chosen(cpu).as_deref(), Some("cpu"));
}

#[test]
fn eta_prefers_the_idle_fast_node() {
    let busy_self = me(Candidate { queue_depth: 10, service_ms_per_item: 5.0, ..node("a") });
    let idle_fast = Candidate { service_ms_per_item: 1.0, ..node("b") };
    let busy_fast = Candidate { queue_depth: 40, service_ms_per_item: 1.0, ..node("c") };
    let decision = pick(Policy::Eta, &[busy_self, idle_fast, busy_fast], &Requirements::default());
    assert_eq!(decision.chosen.as_deref(), Some("b"));
    let scores: Vec<f64> = decision.candidates.iter().map(|c| c.score.expect("eligible")).collect();
    assert_eq!(scores, vec![55.0, 1.5, 41.5]);
}

#[test]
fn eta_credits_the_cached_prefix_until_its_node_is_overloaded() {
    // A 100 ms prompt; b's engine holds 80 ms of it.
    let cost = |cached_ms| Some(PromptCost { prefill_ms: 100.0, cached_ms, slots: 1 });
    let holder = |queue_depth| Candidate { queue_depth, service_ms_per_item: 20.0, prompt: cost(80.0), ..node("b") };
    let other = Candidate { service_ms_per_item: 20.0, prompt: cost(0.0), ..node("c") };
    let scores = |decision: &Decision| -> Vec<f64> { decision.candidates.iter().filter_map(|c| c.score).collect() };

    // Idle both: the holder saves 80 ms of prefill.
    let decision = pick(Policy::Eta, &[holder(0), other.clone()], &Requirements::default());
    assert_eq!(decision.chosen.as_deref(), Some("b"));
    assert_eq!(scores(&decision), vec![20.5, 100.5]);
    // Three ahead at the holder still beat a full prefill elsewhere.
    let decision = pick(Policy::Eta, &[holder(3), other.clone()], &Requirements::default());
    assert_eq!(decision.chosen.as_deref(), Some("b"));
    assert_eq!(scores(&decision), vec![80.5, 100.5]);
    // Overloaded (more than twice the least loaded's plus 4): no credit.
    assert!(is_overloaded(5.0, 0.0) && !is_overloaded(4.0, 0.0) && !is_overloaded(12.0, 4.0));
    let decision = pick(Policy::Eta, &[holder(5), other.clone()], &Requirements::default());
    assert_eq!(decision.chosen.as_deref(), Some("c"), "load wins");
    assert_eq!(scores(&decision), vec![200.5, 100.5]);
    // The rule is relative: with the other node busy too, the cache counts.
    let busy_other = Candidate { queue_depth: 4, ..other };
    let decision = pick(Policy::Eta, &[holder(5), busy_other], &Requirements::default());
    assert_eq!(decision.chosen.as_deref(), Some("b"));
    assert_eq!(scores(&decision), vec![120.5, 180.5]);
    // Requests ahead share an engine's sequences: 4 ahead on 8 slots
    // delay the first token by half a time to first token.
    let wide =
        Candidate { queue_depth: 4, prompt: Some(PromptCost { slots: 8, ..cost(0.0).expect("a cost") }), ..node("d") };
    let decision = pick(Policy::Eta, std::slice::from_ref(&wide), &Requirements::default());
    assert_eq!(scores(&decision), vec![0.5 + 100.0 + 0.5]);
}

#[test]
fn an_unmeasured_node_is_assumed_as_slow_as_the_slowest_measured_one() {
    let fast = Candidate { service_ms_per_item: 2.0, ..node("fast") };
    let slow = Candidate { service_ms_per_item: 20.0, ..node("slow") };
    let unmeasured = Candidate { service_ms_per_item: 0.0, ..node("new") };
    let decision = pick(Policy::Eta, &[fast.clone(), slow, unmeasured.clone()], &Requirements::default());
    assert_eq!(decision.chosen.as_deref(), Some("fast"), "an idle measured node beats an unknown one");
    let new_score = decision.candidates.iter().find(|c| c.node == "new").and_then(|c| c.score);
    assert_eq!(new_score, Some(20.5));
    let busy_fast = Candidate { queue_depth: 30, ..fast };
    let decision = pick(Policy::Eta, &[busy_fast, unmeasured], &Requirements::default());
    assert_eq!(decision.chosen.as_deref(), Some("new"), "it is tried once the measured ones are busy");
}

#[test]
fn local_wins_when_it_is_best_or_tied() {
    let local = me(node("z"));
    let remote = Candidate { network_ms: 0.0, ..node("a") };
    for seed in 0..50 {
        let mut rng = StdRng::seed_from_u64(seed);
        let decision = decide(
            Policy::Eta,
            &[remote.clone(), local.clone()],
            &Requirements::default(),
            PARAMS,
            &mut RouterState::default(),
            &mut rng,
        );
        assert_eq!(decision.chosen.as_deref(), Some("z"), "seed {seed}");
    }
}

#[test]
fn urgent_requests_take_the_lowest_estimate_every_time() {
    let a = Candidate { service_ms_per_item: 1.00, network_ms: 0.0, ..node("a") };
    let b = Candidate { service_ms_per_item: 1.05, network_ms: 0.0, ..node("b") };
    let urgent = Requirements { priority: 9, ..Requirements::default() };
    let normal = Requirements::default();
    let mut normal_picks_b = 0;
    for seed in 0..200 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut state = RouterState::default();
        let choice = decide(Policy::Eta, &[a.clone(), b.clone()], &urgent, PARAMS, &mut state, &mut rng).chosen;
        assert_eq!(choice.as_deref(), Some("a"));
        let choice =
            decide(Policy::Eta, &[a.clone(), b.clone()], &normal, PARAMS, &mut RouterState::default(), &mut rng).chosen;
        normal_picks_b += usize::from(choice.as_deref() == Some("b"));
    }
    assert!(normal_picks_b > 10, "near-ties are spread without urgency: {normal_picks_b}");
}

#[test]
fn in_flight_correction_spreads_a_burst_over_stale_gossip() {
    // Gossip says both idle and never updates during the burst.
    let candidates = [node("b"), node("c")];
    let mut state = RouterState::default();
    let mut rng = StdRng::seed_from_u64(5);
    let urgent = Requirements { priority: 9, ..Requirements::default() };
    let mut counts = HashMap::new();
    for _ in 0..20 {
        let decision = decide(Policy::Eta, &candidates, &urgent, PARAMS, &mut state, &mut rng);
        *counts.entry(decision.chosen.expect("chosen")).or_insert(0) += 1;
    }
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("c"), Some(&10), "{counts:?}");
    // A new load report resets what was counted for that node.
    let refreshed = Candidate { load_seq: 2, ..node("b") };
    let decision = decide(Policy::Eta, &[refreshed, node("c")], &urgent, PARAMS, &mut state, &mut rng);
    assert_eq!(decision.chosen.as_deref(), Some("b"));
}

#[test]
fn finished_requests_make_a_stale_busy_report_look_free() {
    let urgent = Requirements { priority: 9, ..Requirements::default() };
    let mut state = RouterState::default();
    let mut rng = StdRng::seed_from_u64(2);
    // b reported 6 requests ahead; c reported 2 and is twice as slow.
    let b = Candidate { queue_depth: 6, load_seq: 7, ..node("b") };
    let c = Candidate { queue_depth: 2, service_ms_per_item: 2.0, ..node("c") };
    let first = decide(Policy::Eta, &[b.clone(), c.clone()], &urgent, PARAMS, &mut state, &mut rng);
    assert_eq!(first.chosen.as_deref(), Some("c"), "{first:?}");
    // Six of b's requests were this node's and have finished since that report.
    for _ in 0..6 {
        state.record_done("b");
    }
    let second = decide(Policy::Eta, &[b, c], &urgent, PARAMS, &mut state, &mut rng);
    assert_eq!(second.chosen.as_deref(), Some("b"), "{second:?}");
    assert_eq!(second.candidates[0].score, Some(1.5));
}

#[test]
fn round_robin_cycles_and_least_queue_takes_the_shortest() {
    let candidates = [node("c"), node("a"), Candidate { queue_depth: 3, ..node("b") }];
    let mut state = RouterState::default();
    let mut rng = StdRng::seed_from_u64(1);
    let order: Vec<String> = (0..4)
        .map(|_| {
            decide(Policy::RoundRobin, &candidates, &Requirements::default(), PARAMS, &mut state, &mut rng)
                .chosen
                .expect("chosen")
        })
        .collect();
    assert_eq!(order, vec!["a", "b", "c", "a"]);
    let decision =
        pick(Policy::LeastQueue, &[Candidate { queue_depth: 2, ..node("a") }, node("b")], &Requirements::default());
    assert_eq!(decision.chosen.as_deref(), Some("b"));
}

#[test]
fn weighted_score_favours_free_vram() {
    let big = gpu_node("big", "A100", 80_000);
    let small = gpu_node("small", "T4", 2_000);
    let mut rng = StdRng::seed_from_u64(3);
    let mut big_wins = 0;
    for _ in 0..1000 {
        let decision = decide(
            Policy::WeightedScore,
            &[big.clone(), small.clone()],
            &Requirements::default(),
            PARAMS,
            &mut RouterState::default(),
            &mut rng,
        );
        big_wins += usize::from(decision.chosen.as_deref() == Some("big"));
    }
    assert!(big_wins > 900, "{big_wins}");
}

fn arbitrary_candidate() -> impl Strategy<Value = Candidate> {
    (
        "[a-e]",
        any::<[bool; 7]>(),
        0u64..8_000,
        0u32..50,
        0u32..8,
        0.0f64..20.0,
        prop_oneof![Just(None), Just(Some("cpu".to_string())), Just(Some("cuda:0".to_string()))],
        proptest::option::of(("(T4|H100|A10G)", 0u64..90_000)),
    )
        .prop_map(|(name, flags, age_ms, queue_depth, inflight, service_ms_per_item, model_device, gpu)| {
            Candidate {
                node: name,
                is_self: flags[0],
                live: flags[1],
                trusted: flags[2],
                draining: flags[3],
                reachable: flags[4],
                linked: flags[6],
                avoided: false,
                engine_down: false,
                age_ms,
                load_seq: u64::from(flags[5]),
                model_device,
                gpus: gpu
                    .map(|(name, free)| vec![GpuInfo { name, memory_free_mb: free, utilization_pct: 50 }])
                    .unwrap_or_default(),
                queue_depth,
                inflight,
                service_ms_per_item,
                network_ms: 0.5,
                prompt: None,
            }
        })
}

fn arbitrary_requirements() -> impl Strategy<Value = Requirements> {
    (
        prop_oneof![Just(DeviceRequirement::Any), Just(DeviceRequirement::Gpu), Just(DeviceRequirement::Cpu)],
        prop_oneof![Just(0u64), 0u64..100_000],
        proptest::option::of("(T4|H100)"),
        0u8..=10,
    )
        .prop_map(|(device, min_free_vram_mb, gpu_type, priority)| Requirements {
            device,
            min_free_vram_mb,
            gpu_type,
            priority,
        })
}

proptest! {
    /// No policy picks a dead, untrusted, draining, unreachable, unlinked, stale or
    /// filtered node, and each picks some node whenever one is eligible.
    #[test]
    fn never_picks_an_excluded_node(
        candidates in proptest::collection::vec(arbitrary_candidate(), 0..8),
        requirements in arbitrary_requirements(),
        policy_index in 0usize..5,
        seed in any::<u64>(),
    ) {
        let policy = Policy::ALL[policy_index];
        let mut rng = StdRng::seed_from_u64(seed);
        let decision = decide(policy, &candidates, &requirements, PARAMS, &mut RouterState::default(), &mut rng);
        prop_assert_eq!(decision.candidates.len(), candidates.len());
        let eligible: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| exclusion(c, &requirements, PARAMS).is_none())
            .collect();
        match &decision.chosen {
            None => prop_assert!(eligible.is_empty()),
            Some(chosen) => {
                prop_assert!(eligible.iter().any(|c| &c.node == chosen));
                let picked = candidates.iter().find(|c| &c.node == chosen && exclusion(c, &requirements, PARAMS).is_none());
                let picked = picked.expect("the chosen node is eligible");
                prop_assert!(picked.live && picked.trusted && !picked.draining && picked.reachable && picked.linked);
                prop_assert!(picked.model_device.is_some());
            }
        }
    }
}
