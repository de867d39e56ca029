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

/// Every scenario in `scenarios/` passes over a range of seeds
/// (`GPUMESH_SIM_SEEDS`, default `1..20`, end exclusive).
#[test]
fn every_scenario_passes_over_the_seed_range() {
    let range = std::env::var("GPUMESH_SIM_SEEDS").unwrap_or_else(|_| "1..20".into());
    let (start, end) = range.split_once("..").expect("GPUMESH_SIM_SEEDS is A..B");
    let seeds = start.parse::<u64>().expect("seed")..end.parse::<u64>().expect("seed");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut scenarios: Vec<PathBuf> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios"))
        .expect("scenarios dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    scenarios.sort();
    assert!(!scenarios.is_empty());
    for path in &scenarios {
        for seed in seeds.clone() {
            let (report, code) = run(path, seed, &dir.path().join("trace"));
            assert_eq!(code, 0, "{} failed with seed {seed}: {report}", path.display());
        }
    }
}
