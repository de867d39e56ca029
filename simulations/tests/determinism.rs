//! The simulator replays a run from its seed: same seed, same trace byte
//! for byte; another seed, another trace; a broken bound fails the run and
//! names the seed.

use std::path::{Path, PathBuf};
use std::process::Command;

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name)
}

fn run(scenario: &Path, seed: u64, trace: &Path) -> (serde_json::Value, i32) {
    let output = Command::new(env!("CARGO_BIN_EXE_gpumesh-sim"))
        .arg(scenario)
        .args(["--seed", &seed.to_string(), "--json", "--trace"])
        .arg(trace)
        .output()
        .expect("gpumesh-sim runs");
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("report is JSON ({error}): {}", String::from_utf8_lossy(&output.stderr)));
    (report, output.status.code().expect("exit code"))
}

#[test]
fn same_seed_same_trace_other_seed_other_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = scenario("crash-restart.toml");
    let (first, first_code) = run(&path, 7, &dir.path().join("a"));
    let (second, _) = run(&path, 7, &dir.path().join("b"));
    let (other, _) = run(&path, 8, &dir.path().join("c"));
    assert_eq!(first_code, 0, "{first}");
    assert_eq!(first["verdict"], "pass", "{first}");
    assert_eq!(first["trace_sha256"], second["trace_sha256"]);
    let a = std::fs::read(dir.path().join("a")).expect("trace a");
    assert_eq!(a, std::fs::read(dir.path().join("b")).expect("trace b"), "traces differ byte for byte");
    assert!(a.len() > 1000, "the trace records the run");
    assert_ne!(first["trace_sha256"], other["trace_sha256"]);
    for key in ["seed", "scenario", "verdict", "trace_sha256", "sim_seconds", "wall_seconds", "jobs", "membership"] {
        assert!(first.get(key).is_some(), "report lacks {key}");
    }
    assert!(first["membership"]["detect_ms_max"].as_u64().is_some_and(|ms| ms > 0 && ms <= 3000), "{first}");
}

#[test]
fn a_bound_the_run_cannot_meet_fails_with_the_seed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(scenario("crash-restart.toml")).expect("scenario");
    let strict = dir.path().join("strict.toml");
    std::fs::write(&strict, text.replace("detect_ms = 3000", "detect_ms = 50")).expect("write");
    let (report, code) = run(&strict, 3, &dir.path().join("trace"));
    assert_eq!(code, 1);
    assert_eq!(report["verdict"], "fail");
    assert_eq!(report["seed"], 3);
    let failures = report["failures"].as_array().expect("failures");
    assert!(failures.iter().any(|f| f.as_str().is_some_and(|f| f.contains("not seen dead"))), "{report}");
}

/// Runs `gpumesh-sim` with `args` and returns its stdout and exit code.
fn sim(args: &[&str]) -> (String, i32) {
    let output = Command::new(env!("CARGO_BIN_EXE_gpumesh-sim")).args(args).output().expect("gpumesh-sim runs");
    (String::from_utf8_lossy(&output.stdout).into_owned(), output.status.code().expect("exit code"))
}

/// Runs `file` over the seed range: `GPUMESH_SIM_SEEDS` (default `1..6`,
/// both ends included), and only its first seed for the 100-node scenario,
/// which takes half a minute a seed.
fn passes_over_the_seed_range(file: &str) {
    let range = std::env::var("GPUMESH_SIM_SEEDS").unwrap_or_else(|_| "1..6".into());
    let first_seed = range.split_once("..").map_or("1", |(first, _)| first).to_string();
    let seeds = if file == "hundred-nodes.toml" { format!("{first_seed}..{first_seed}") } else { range };
    let path = scenario(file);
    let path = path.to_str().expect("utf-8 path");
    let (stdout, code) = sim(&[path, "--seeds", &seeds, "--json"]);
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("summary is JSON");
    assert_eq!(code, 0, "{path} failed: {summary}");
    assert_eq!(summary["failed"], serde_json::json!([]), "{summary}");
    assert_eq!(summary["distinct_traces"], summary["seeds"], "every seed gives its own trace: {summary}");
    eprintln!("{summary}");
}

/// One test per scenario, so each stays within the test timeout and a
/// failure names its scenario.
macro_rules! every_scenario {
    ($($test:ident => $file:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                passes_over_the_seed_range($file);
            }
        )*

        #[test]
        fn every_scenario_file_has_its_test() {
            let mut files: Vec<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios"))
                .expect("scenarios dir")
                .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".toml"))
                .collect();
            files.sort();
            let mut tested = vec![$($file.to_string()),*];
            tested.sort();
            assert_eq!(files, tested, "add the new scenario to every_scenario!");
        }
    };
}

every_scenario! {
    crash_restart_passes => "crash-restart.toml",
    owner_crash_passes => "owner-crash.toml",
    executor_crash_passes => "executor-crash.toml",
    partition_passes => "partition.toml",
    lossy_network_passes => "lossy-network.toml",
    gpu_faults_passes => "gpu-faults.toml",
    mixed_policies_passes => "mixed-policies.toml",
    five_nodes_passes => "five-nodes.toml",
    hundred_nodes_passes => "hundred-nodes.toml",
    llm_failover_passes => "llm-failover.toml",
    llm_affinity_passes => "llm-affinity.toml",
    llm_mixed_passes => "llm-mixed.toml",
    shared_keys_passes => "shared-keys.toml",
}

/// A job scenario replays byte for byte too: clients, jobs and the store's
/// faults all come from the seed.
#[test]
fn a_job_scenario_replays_from_its_seed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = scenario("owner-crash.toml");
    let (first, code) = run(&path, 11, &dir.path().join("a"));
    let (second, _) = run(&path, 11, &dir.path().join("b"));
    assert_eq!(code, 0, "{first}");
    assert!(first["jobs"]["accepted"].as_u64().is_some_and(|n| n > 100), "the workload ran: {first}");
    assert_eq!(first["jobs"]["accepted"], first["jobs"]["completed"], "{first}");
    assert_eq!(first["jobs"]["lost"], 0);
    assert_eq!(first["trace_sha256"], second["trace_sha256"]);
    assert_eq!(
        std::fs::read(dir.path().join("a")).expect("trace a"),
        std::fs::read(dir.path().join("b")).expect("trace b")
    );
}

/// Runs `file` with the broken build `bug` from seed 1 until a run fails
/// (within 200 seeds), checks that the seed replays the failure and that
/// the correct build passes it; the seed and the failing report.
fn broken_build_is_caught(file: &str, bug: &str) -> (u64, serde_json::Value) {
    let path = scenario(file);
    let path = path.to_str().expect("utf-8 path");
    let failing = (1..=200u64).find_map(|seed| {
        let (stdout, code) = sim(&[path, "--seed", &seed.to_string(), "--json", "--inject-bug", bug]);
        (code == 1).then(|| (seed, serde_json::from_str::<serde_json::Value>(&stdout).expect("report")))
    });
    let (seed, report) = failing.expect("a run with the broken build fails within 200 seeds");
    let (again, code) = sim(&[path, "--seed", &seed.to_string(), "--json", "--inject-bug", bug]);
    let again: serde_json::Value = serde_json::from_str(&again).expect("report");
    assert_eq!(code, 1, "seed {seed} replays the failure");
    assert_eq!(again["trace_sha256"], report["trace_sha256"]);
    assert_eq!(again["failures"], report["failures"]);
    let (_, healthy) = sim(&[path, "--seed", &seed.to_string(), "--json"]);
    assert_eq!(healthy, 0, "the same seed passes with the correct build");
    eprintln!("measured: the broken build {bug} failed first at seed {seed}");
    (seed, report)
}

/// The deliberately broken build (jobs acknowledged before their flush) is
/// caught within 200 seeds, and the failing seed replays the failure.
#[test]
fn acknowledging_before_the_flush_is_caught_and_the_seed_replays_it() {
    let (_, report) = broken_build_is_caught("owner-crash.toml", "ack-before-flush");
    let failures = report["failures"].as_array().expect("failures");
    assert!(failures.iter().any(|f| f.as_str().is_some_and(|f| f.contains("lost"))), "{report}");
    assert!(report["jobs"]["lost"].as_u64().is_some_and(|lost| lost > 0), "{report}");
}

/// A build that continues a stream elsewhere without the tokens already
/// sent is caught: the client's text differs from an uninterrupted run.
#[test]
fn forgetting_the_sent_tokens_on_failover_is_caught_and_the_seed_replays_it() {
    let (_, report) = broken_build_is_caught("llm-failover.toml", "forget-sent-tokens");
    let failures = report["failures"].as_array().expect("failures");
    let differs = |f: &serde_json::Value| f.as_str().is_some_and(|f| f.contains("differs from an uninterrupted run"));
    assert!(failures.iter().any(differs), "{report}");
    // Chat jobs go on the same way, and their answers are checked too.
    let job_differs =
        |f: &serde_json::Value| f.as_str().is_some_and(|f| f.starts_with("job ") && f.contains("differs"));
    assert!(failures.iter().any(job_differs), "{report}");
}

/// Chat jobs are durable like any other: one acknowledged before its flush
/// by the engine node that then crashes is caught as lost.
#[test]
fn a_chat_job_acknowledged_before_its_flush_is_caught_lost() {
    let (_, report) = broken_build_is_caught("llm-failover.toml", "ack-before-flush");
    assert!(report["jobs"]["lost"].as_u64().is_some_and(|lost| lost > 0), "{report}");
}

/// With the gossiped prefix sketches, eta finds the prompts' prefixes
/// cached far more often, and the first token sooner, than without them.
#[test]
fn prefix_affinity_caches_more_and_answers_sooner_in_the_simulator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (report, code) = run(&scenario("llm-affinity.toml"), 1, &dir.path().join("trace"));
    assert_eq!(code, 0, "{report}");
    let cached = |policy: &str| {
        let streams = &report["streams"][policy];
        streams["cached_tokens"].as_f64().expect("cached") / streams["prompt_tokens"].as_f64().expect("prompt")
    };
    let p50 = |policy: &str| report["policies"][policy]["p50_ms"].as_f64().expect("p50");
    assert!(cached("eta") > cached("eta-no-affinity") + 0.2, "{report}");
    assert!(cached("eta") > cached("least-queue") + 0.2 && cached("eta") > cached("round-robin") + 0.2, "{report}");
    assert!(p50("eta") < p50("eta-no-affinity"), "{report}");
    eprintln!(
        "measured: cached share eta {:.3}, without affinity {:.3}; TTFT p50 {} against {} ms",
        cached("eta"),
        cached("eta-no-affinity"),
        p50("eta"),
        p50("eta-no-affinity")
    );
}
