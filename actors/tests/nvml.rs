//! On a GPU machine: the metrics probe reads what `nvidia-smi` reports, and
//! a node publishes that state to its peers through gossip.
//! Needs NVIDIA's driver; run with `cargo nextest run --run-ignored only`.
#![allow(clippy::disallowed_methods, reason = "tests time real processes and connections on the wall clock")]

use std::time::Duration;

use gpumesh_actors::{HardwareProbe, NodeEnv, NodeHandle, SystemProbe, start_node};
use gpumesh_membership::{GpuStats, MemberStatus};
use tokio::time::Instant;

mod common;

/// One GPU as `nvidia-smi` reports it.
#[derive(Debug)]
struct SmiGpu {
    index: u32,
    name: String,
    total_mb: u64,
    free_mb: u64,
    used_mb: u64,
    temperature_c: u32,
    power_w: f64,
    utilization_pct: u32,
}

fn nvidia_smi() -> Vec<SmiGpu> {
    let query =
        "--query-gpu=index,name,memory.total,memory.free,memory.used,temperature.gpu,power.draw,utilization.gpu";
    let output = std::process::Command::new("nvidia-smi")
        .args([query, "--format=csv,noheader,nounits"])
        .output()
        .expect("nvidia-smi runs");
    let text = String::from_utf8(output.stdout).expect("utf8");
    let gpus: Vec<SmiGpu> = text
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            SmiGpu {
                index: fields[0].parse().expect("index"),
                name: fields[1].to_string(),
                total_mb: fields[2].parse().expect("MiB"),
                free_mb: fields[3].parse().expect("MiB"),
                used_mb: fields[4].parse().expect("MiB"),
                temperature_c: fields[5].parse().expect("degrees"),
                power_w: fields[6].parse().expect("watts"),
                utilization_pct: fields[7].parse().expect("percent"),
            }
        })
        .collect();
    assert!(!gpus.is_empty(), "nvidia-smi lists no GPU");
    gpus
}

/// `ours` (NVML through the probe) agrees with `smi` read moments apart:
/// identity exactly, the readings that drift within small margins.
fn assert_agrees(ours: &[GpuStats], smi: &[SmiGpu]) {
    assert_eq!(ours.len(), smi.len(), "ours {ours:?}, nvidia-smi {smi:?}");
    for (gpu, expected) in ours.iter().zip(smi) {
        println!("probe {gpu:?}\nsmi   {expected:?}");
        assert_eq!((gpu.index, &gpu.name, gpu.memory_total_mb), (expected.index, &expected.name, expected.total_mb));
        assert!(gpu.memory_free_mb.abs_diff(expected.free_mb) <= 256, "free memory {gpu:?} vs {expected:?}");
        assert!(gpu.memory_used_mb().abs_diff(expected.used_mb) <= 256, "used memory {gpu:?} vs {expected:?}");
        assert!(gpu.temperature_c.abs_diff(expected.temperature_c) <= 3, "temperature {gpu:?} vs {expected:?}");
        assert!((f64::from(gpu.power_w) - expected.power_w).abs() <= 30.0, "power {gpu:?} vs {expected:?}");
        assert!(gpu.utilization_pct <= 100 && expected.utilization_pct <= 100);
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU and driver"]
fn probe_matches_nvidia_smi() {
    let sample = SystemProbe::new().sample();
    assert_agrees(&sample.gpus, &nvidia_smi());
}

async fn node(name: &str, seeds: Vec<String>, dir: &std::path::Path) -> (NodeHandle, String) {
    let config = common::loopback_config(name, dir, seeds);
    let gossip = config.gossip_advertise.to_string();
    (start_node(config, NodeEnv::production()).await.expect("node starts"), gossip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an NVIDIA GPU and driver"]
async fn a_peer_sees_the_gpus_nvidia_smi_reports_through_gossip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gpu_node, seed) = node("gpu-node", Vec::new(), dir.path()).await;
    let (peer, _) = node("peer", vec![seed], dir.path()).await;
    let mut view = peer.subscribe_view();
    let deadline = Instant::now() + Duration::from_secs(10);
    let gpus = loop {
        let published = view.borrow_and_update().member("gpu-node").and_then(|member| {
            let load = member.load.as_ref().filter(|_| member.status == MemberStatus::Alive && member.trusted)?;
            Some(load.gpus.clone()).filter(|gpus| !gpus.is_empty())
        });
        if let Some(gpus) = published {
            break gpus;
        }
        assert!(Instant::now() < deadline, "the peer never saw gpu-node's GPUs: {:?}", view.borrow());
        let _ = tokio::time::timeout(Duration::from_millis(200), view.changed()).await;
    };
    assert_agrees(&gpus, &nvidia_smi());
    drop((gpu_node, peer));
}
