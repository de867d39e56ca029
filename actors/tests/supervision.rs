//! The supervisor restarts a crashed actor with growing delays, and the
//! node keeps working meanwhile. In-process node on loopback UDP.
#![allow(clippy::disallowed_methods, reason = "tests time real processes and connections on the wall clock")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gpumesh_actors::{HardwareProbe, HardwareSample, NodeConfig, NodeEnv, start_node};
use gpumesh_membership::CpuStats;
use tokio::time::Instant;

mod common;

/// Reports 7 cores, then panics on its second reading (the start-up
/// hardware check takes only one).
struct FlakyProbe {
    samples: u32,
}

impl HardwareProbe for FlakyProbe {
    fn sample(&mut self) -> HardwareSample {
        self.samples += 1;
        assert!(self.samples < 2, "simulated probe crash");
        HardwareSample { gpus: Vec::new(), cpu: CpuStats { cores: 7, utilization_pct: 1, memory_free_mb: 1 } }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_metrics_actor_is_restarted_with_growing_backoff() {
    let probes_made: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let made = probes_made.clone();
    let env = NodeEnv {
        probe: Arc::new(move || {
            made.lock().expect("lock").push(Instant::now());
            Box::new(FlakyProbe { samples: 0 }) as Box<dyn HardwareProbe>
        }),
        links: None,
        ..NodeEnv::production()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = NodeConfig {
        gossip_interval: Duration::from_millis(50),
        metrics_interval: Duration::from_millis(20),
        ..common::loopback_config("solo", dir.path(), Vec::new())
    };
    let node = start_node(config, env).await.expect("node starts");
    let deadline = Instant::now() + Duration::from_secs(5);
    // The first probe is start_node's own hardware check; the metrics actor
    // makes the second and one more at each restart.
    while probes_made.lock().expect("lock").len() < 5 {
        assert!(Instant::now() < deadline, "metrics actor was not restarted 3 times");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let starts = probes_made.lock().expect("lock").clone();
    let gaps: Vec<Duration> = starts[1..].windows(2).map(|pair| pair[1] - pair[0]).collect();
    // Restart k waits at least 100 ms * 2^k less 20 % jitter, whenever the
    // probe happened to crash; a constant backoff fails the third bound.
    for (k, gap) in gaps.iter().enumerate() {
        let minimum = Duration::from_millis(80) * (1 << k);
        assert!(*gap >= minimum, "restart {k} came after {gap:?}, before its backoff of {minimum:?}: {gaps:?}");
    }
    assert!(gaps[2] < Duration::from_secs(2), "backoff far beyond its schedule: {gaps:?}");
    let text = node.prometheus_text();
    let restarts = text
        .lines()
        .find_map(|line| line.strip_prefix("gpumesh_actor_restarts_total{actor=\"metrics\",model=\"\"}"))
        .and_then(|count| count.trim().parse::<u64>().ok());
    assert!(restarts.is_some_and(|count| count >= 3), "restarts not counted in /metrics: {restarts:?}");
    let view = node.view();
    let me = view.member("solo").expect("self in view");
    assert_eq!(me.load.as_ref().map(|load| load.cpu.cores), Some(7), "load published between crashes");
    node.shutdown().await;
}
