//! Samples the cluster view into the metrics history (see
//! `gpumesh_storage::MetricsHistory`): what every member executed, how fast,
//! how busy its GPUs and queues were. The sampling is pure; the task that
//! runs it every interval lives on the node handle.

use std::collections::HashMap;

use gpumesh_membership::{ClusterView, GpuStats, Member};
use gpumesh_storage::{HistorySample, NodeSample};

/// How long the history keeps samples: the page charts the last 10 minutes.
pub const HISTORY_KEEP_MS: u64 = 12 * 60_000;

/// Turns successive views into samples; remembers each member's executed
/// request count to turn it into a rate.
#[derive(Debug, Default)]
pub struct Sampler {
    /// Member name → (generation, executed requests, when).
    previous: HashMap<String, (u64, u64, u64)>,
}

impl Sampler {
    /// The sample of `view` at `unix_ms`. Untrusted members are left out:
    /// their numbers are unverified.
    pub fn sample(&mut self, view: &ClusterView, unix_ms: u64) -> HistorySample {
        let nodes: Vec<NodeSample> = view.members.iter().filter(|m| m.trusted).map(|m| self.node(m, unix_ms)).collect();
        self.previous.retain(|name, _| view.members.iter().any(|m| &m.name == name));
        HistorySample { unix_ms, nodes }
    }

    fn node(&mut self, member: &Member, unix_ms: u64) -> NodeSample {
        let load = member.load.as_ref();
        let executed: u64 = load.map_or(0, |l| l.models.iter().map(|m| m.completed).sum());
        let requests_per_s = match self.previous.insert(member.name.clone(), (member.generation, executed, unix_ms)) {
            // A restart (new generation) starts the count again.
            Some((generation, before, at)) if generation == member.generation && unix_ms > at => {
                executed.saturating_sub(before) as f64 * 1000.0 / (unix_ms - at) as f64
            }
            _ => 0.0,
        };
        let worst = |pick: fn(&gpumesh_membership::ModelLoad) -> Option<f64>| {
            load.and_then(|l| l.models.iter().filter_map(pick).reduce(f64::max))
        };
        let gpus = load.map(|l| l.gpus.as_slice()).unwrap_or_default();
        let gpu_utilization_pct = (!gpus.is_empty())
            .then(|| gpus.iter().map(|g| f64::from(g.utilization_pct)).sum::<f64>() / gpus.len() as f64);
        NodeSample {
            name: member.name.clone(),
            status: member.status.as_str().to_string(),
            requests_per_s: (requests_per_s * 100.0).round() / 100.0,
            p50_ms: worst(|m| m.p50_ms),
            p99_ms: worst(|m| m.p99_ms),
            gpu_utilization_pct,
            vram_used_mb: gpus.iter().map(GpuStats::memory_used_mb).sum(),
            vram_total_mb: gpus.iter().map(|g| g.memory_total_mb).sum(),
            queue_depth: load.map_or(0, |l| l.queue_depth),
            inflight: load.map_or(0, |l| l.inflight),
        }
    }
}

/// Samples `view` into `history` every `interval` until dropped.
pub(crate) fn spawn_sampler(
    history: gpumesh_storage::MetricsHistory,
    view: tokio::sync::watch::Receiver<std::sync::Arc<ClusterView>>,
    clock: std::sync::Arc<dyn crate::clock::Clock>,
    interval: std::time::Duration,
) -> tokio_util::task::AbortOnDropHandle<()> {
    tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        let mut sampler = Sampler::default();
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let sample = sampler.sample(&view.borrow().clone(), clock.unix_ms());
            let history = history.clone();
            // sled may block on its page cache; keep that off the runtime threads.
            let written = tokio::task::spawn_blocking(move || history.append(&sample)).await;
            if let Ok(Err(error)) = written {
                tracing::warn!(%error, "writing the metrics history failed");
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use gpumesh_membership::{LoadSummary, MemberStatus, ModelLoad};

    use super::*;

    fn member(name: &str, generation: u64, completed: u64, trusted: bool) -> Member {
        Member {
            name: name.into(),
            generation,
            gossip_addr: "127.0.0.1:1".parse().expect("addr"),
            status: MemberStatus::Alive,
            age_ms: 0,
            trusted,
            forged: false,
            is_self: false,
            info: None,
            load: Some(LoadSummary {
                gpus: vec![
                    GpuStats { utilization_pct: 20, memory_total_mb: 1000, memory_free_mb: 400, ..GpuStats::default() },
                    GpuStats {
                        utilization_pct: 60,
                        memory_total_mb: 1000,
                        memory_free_mb: 1000,
                        ..GpuStats::default()
                    },
                ],
                queue_depth: 3,
                models: vec![
                    ModelLoad { completed, p50_ms: Some(2.0), p99_ms: Some(9.0), ..ModelLoad::default() },
                    ModelLoad { completed: 0, p50_ms: Some(4.0), p99_ms: None, ..ModelLoad::default() },
                ],
                ..LoadSummary::default()
            }),
            load_seq: 0,
        }
    }

    fn view(members: Vec<Member>) -> ClusterView {
        ClusterView { self_name: "a".into(), members }
    }

    #[test]
    fn rates_come_from_executed_counts_and_restart_with_a_new_generation() {
        let mut sampler = Sampler::default();
        let first = sampler.sample(&view(vec![member("a", 1, 100, true)]), 10_000);
        assert_eq!(first.nodes[0].requests_per_s, 0.0, "no rate without an earlier sample");
        let second = sampler.sample(&view(vec![member("a", 1, 150, true)]), 12_000);
        assert_eq!(second.nodes[0].requests_per_s, 25.0);
        let restarted = sampler.sample(&view(vec![member("a", 2, 10, true)]), 14_000);
        assert_eq!(restarted.nodes[0].requests_per_s, 0.0, "a restarted node's count starts again");
    }

    #[test]
    fn gpus_and_models_are_summed_untrusted_members_left_out() {
        let mut sampler = Sampler::default();
        let sample = sampler.sample(&view(vec![member("a", 1, 0, true), member("x", 1, 0, false)]), 1_000);
        assert_eq!(sample.nodes.len(), 1);
        let node = &sample.nodes[0];
        assert_eq!((node.vram_used_mb, node.vram_total_mb), (600, 2000));
        assert_eq!(node.gpu_utilization_pct, Some(40.0));
        assert_eq!((node.p50_ms, node.p99_ms), (Some(4.0), Some(9.0)), "the worst model's percentiles");
        assert_eq!((node.status.as_str(), node.queue_depth), ("alive", 3));
    }
}
