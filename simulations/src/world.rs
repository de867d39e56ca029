//! The driver: builds the turmoil simulation from a scenario, steps it,
//! applies faults on schedule and records what every node sees.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use gpumesh_membership::{ClusterView, diff_views};

use crate::checks::Checker;
use crate::host::{HostSetup, Registry};
use crate::net::Mailbox;
use crate::scenario::{FaultAction, Scenario};
use crate::trace::TraceLog;

/// Simulated time per step.
const TICK_MS: u64 = 1;
/// The simulated wall clock starts here, whatever the real date.
const EPOCH_SECS: u64 = 1_790_000_000;

/// What a run produced, before it becomes a report.
pub(crate) struct RunOutput {
    pub(crate) trace: TraceLog,
    pub(crate) checker: Checker,
    pub(crate) sim_ms: u64,
}

struct Observer {
    generation: u64,
    last: Arc<ClusterView>,
}

/// Runs `scenario` with `seed` to its end.
pub(crate) fn run(scenario: &Scenario, seed: u64) -> anyhow::Result<RunOutput> {
    let data = tempfile::tempdir().context("cannot create a temporary dir for the nodes' data")?;
    let registry: Registry = Arc::new(Mutex::new(BTreeMap::new()));
    let mailbox = Mailbox::default();
    let trace = TraceLog::default();
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_millis(scenario.duration_ms + 60_000))
        .tick_duration(Duration::from_millis(TICK_MS))
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
        .rng_seed(seed)
        .build();
    let names: Vec<String> = scenario.nodes.iter().map(|node| node.name.clone()).collect();
    for spec in &scenario.nodes {
        let setup = HostSetup {
            spec: spec.clone(),
            peers: names.iter().filter(|name| **name != spec.name).cloned().collect(),
            data_dir: data.path().join(&spec.name),
            gossip_interval: Duration::from_millis(scenario.gossip_interval_ms),
            seed,
            starts: Arc::new(AtomicU64::new(0)),
            mailbox: mailbox.clone(),
            registry: registry.clone(),
            trace: trace.clone(),
        };
        sim.host(spec.name.as_str(), move || setup.clone().run());
    }
    let mut faults = scenario.faults.clone();
    faults.sort_by_key(|fault| fault.at_ms);
    let mut faults = faults.into_iter().peekable();
    let mut checker = Checker::new(scenario.bounds, names.clone());
    let mut observers: BTreeMap<String, Observer> = BTreeMap::new();
    let mut now_ms = 0;
    while now_ms < scenario.duration_ms {
        while let Some(fault) = faults.next_if(|fault| fault.at_ms <= now_ms) {
            trace.record_at(now_ms, format_args!("fault {:?}", fault.action));
            apply_fault(&mut sim, &fault.action, &registry, data.path())?;
            if let FaultAction::Crash { node } = &fault.action {
                observers.remove(node);
            }
            checker.on_fault(now_ms, &fault.action);
        }
        sim.step().map_err(|error| anyhow::anyhow!("simulation stopped at {now_ms} ms: {error}"))?;
        now_ms = u64::try_from(sim.elapsed().as_millis()).unwrap_or(u64::MAX);
        observe(&registry, &mut observers, &mut checker, &trace, now_ms);
        checker.evaluate(now_ms);
    }
    checker.finish();
    Ok(RunOutput { trace, checker, sim_ms: now_ms })
}

fn apply_fault(
    sim: &mut turmoil::Sim<'_>,
    action: &FaultAction,
    registry: &Registry,
    data: &std::path::Path,
) -> anyhow::Result<()> {
    match action {
        FaultAction::Crash { node } => {
            sim.crash(node.as_str());
            registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(node);
        }
        FaultAction::Restart { node, keep_disk } => {
            if !keep_disk {
                let dir = data.join(node);
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).with_context(|| format!("cannot wipe {}", dir.display()))?;
                }
            }
            sim.bounce(node.as_str());
        }
    }
    Ok(())
}

fn observe(
    registry: &Registry,
    observers: &mut BTreeMap<String, Observer>,
    checker: &mut Checker,
    trace: &TraceLog,
    now_ms: u64,
) {
    let running: Vec<(String, u64, Arc<ClusterView>)> = registry
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(name, observed)| (name.clone(), observed.generation, observed.view.borrow().clone()))
        .collect();
    for (name, generation, view) in running {
        let observer = observers.entry(name.clone()).or_insert_with(|| Observer { generation, last: Arc::default() });
        if observer.generation != generation {
            *observer = Observer { generation, last: Arc::default() };
        }
        if Arc::ptr_eq(&observer.last, &view) {
            continue;
        }
        for event in diff_views(&observer.last, &view) {
            trace.record_at(now_ms, format_args!("{name} {event}"));
        }
        observer.last = view.clone();
        checker.on_view(&name, generation, view);
    }
}
