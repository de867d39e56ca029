//! The driver: builds the turmoil simulation from a scenario, steps it,
//! applies faults on schedule and records what every node sees.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use gpumesh_actors::executor::GpuFaults;
use gpumesh_membership::{ClusterView, diff_views};

use crate::checks::Checker;
use crate::host::{HostSetup, Registry};
use crate::jobcheck::{JobChecker, late_work};
use crate::ledger::Ledger;
use crate::net::Mailbox;
use crate::peers::WorkLog;
use crate::report::JobCounts;
use crate::scenario::{FaultAction, Scenario};
use crate::store::SimJobStore;
use crate::trace::TraceLog;
use crate::workload::Load;

/// The simulated wall clock starts here, whatever the real date.
const EPOCH_SECS: u64 = 1_790_000_000;
/// Upper bound on message latency between healthy hosts (a LAN).
const DEFAULT_MAX_LATENCY: Duration = Duration::from_millis(2);

/// What a run produced, before it becomes a report.
pub(crate) struct RunOutput {
    pub(crate) checker: Checker,
    pub(crate) sim_ms: u64,
    pub(crate) jobs: JobCounts,
    pub(crate) failures: Vec<String>,
    /// Latencies of synchronous requests (ms) and their errors; for a
    /// language-model workload, times to first token and refusals.
    pub(crate) latencies_ms: Vec<f64>,
    pub(crate) sync_errors: u64,
    /// What became of language-model streams.
    pub(crate) streams: crate::ledger::StreamCounts,
}

/// How to run a scenario beyond its file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunOptions {
    pub(crate) seed: u64,
    pub(crate) policy: crate::scenario::RunPolicy,
    /// The deliberately broken build: acknowledge jobs before their flush.
    pub(crate) ack_before_flush: bool,
    /// The deliberately broken build: a continued stream forgets what was sent.
    pub(crate) forget_sent_tokens: bool,
}

struct Observer {
    generation: u64,
    last: Arc<ClusterView>,
}

/// Simulated TCP segments a socket (or a listener's backlog) holds, per node.
const TCP_CAPACITY_PER_NODE: usize = 64;
/// Simulated disk latency of one flush.
const FLUSH_LATENCY: Duration = Duration::from_millis(5);

/// What the driver shares with every host, made once per run.
struct Shared {
    registry: Registry,
    mailbox: Mailbox,
    work: WorkLog,
    ledger: Ledger,
    names: Vec<String>,
    stores: BTreeMap<String, SimJobStore>,
    /// A node's GPU keeps its faults across the node's restarts.
    gpus: BTreeMap<String, Arc<GpuFaults>>,
}

/// What the driver learns from the faults it applies.
#[derive(Default)]
struct Outages {
    observers: BTreeMap<String, Observer>,
    /// Per node, the spans it was down (the last one open while it is).
    downtimes: BTreeMap<String, Vec<(u64, u64)>>,
    /// Nodes restarted without their disk.
    wiped: std::collections::BTreeSet<String>,
}

/// Runs `scenario` to its end, recording events in `trace`.
pub(crate) fn run(scenario: &Scenario, options: RunOptions, trace: &TraceLog) -> anyhow::Result<RunOutput> {
    let data = tempfile::tempdir().context("cannot create a temporary dir for the nodes' data")?;
    // The order things are made in is part of the run: keep it.
    let registry: Registry = Arc::new(Mutex::new(BTreeMap::new()));
    let mailbox = Mailbox::new(options.seed);
    let (work, ledger) = (WorkLog::default(), Ledger::default());
    let mut sim = build_sim(scenario, options.seed);
    let names: Vec<String> = scenario.nodes.iter().map(|node| node.name.clone()).collect();
    let stores = names.iter().map(|name| (name.clone(), SimJobStore::default())).collect();
    let gpus = names.iter().map(|name| (name.clone(), Arc::default())).collect();
    let shared = Shared { registry, mailbox, work, ledger, names, stores, gpus };
    add_hosts(&mut sim, scenario, options, &shared, data.path(), trace);
    let (faults, calm_from) = schedule_faults(scenario, options.seed);
    let mut faults = faults.into_iter().peekable();
    let mut checker = Checker::new(scenario.bounds, shared.names.clone());
    let mut jobs = JobChecker::default();
    let mut outages = Outages::default();
    let mut now_ms = 0;
    while now_ms < scenario.duration_ms {
        while let Some(fault) = faults.next_if(|fault| fault.at_ms <= now_ms) {
            trace.record_at(now_ms, format_args!("fault {:?}", fault.action));
            apply_fault(&mut sim, &fault.action, &shared.names, &shared.mailbox, &shared.gpus)?;
            outages.after(&fault.action, now_ms, &shared, data.path())?;
            checker.on_fault(now_ms, &fault.action);
        }
        sim.step().map_err(|error| anyhow::anyhow!("simulation stopped at {now_ms} ms: {error}"))?;
        now_ms = u64::try_from(sim.elapsed().as_millis()).unwrap_or(u64::MAX);
        observe(&shared.registry, &mut outages.observers, &mut checker, trace, now_ms);
        checker.evaluate(now_ms);
        jobs.observe(&shared.stores);
    }
    checker.finish();
    let deadline_unix_ms = EPOCH_SECS * 1000 + calm_from + scenario.bounds.jobs_ms;
    let ledger = shared.ledger.lock();
    let counts = jobs.finish(&ledger, &shared.stores, deadline_unix_ms, &outages.wiped);
    let mut failures = std::mem::take(&mut jobs.failures);
    failures.extend(ledger.failures.iter().cloned());
    let sent = shared.work.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    failures.extend(late_work(&sent, &outages.downtimes, scenario.bounds.detect_ms));
    if ledger.streams.open > 0 {
        failures.push(format!("{} language-model streams had not ended when the run did", ledger.streams.open));
    }
    let llm = scenario.workload.as_ref().is_some_and(|workload| workload.llm.is_some());
    Ok(RunOutput {
        checker,
        sim_ms: now_ms,
        jobs: counts,
        failures,
        latencies_ms: if llm { ledger.ttft_ms.clone() } else { ledger.sync_latencies_ms.clone() },
        sync_errors: if llm { ledger.streams.refused } else { ledger.sync_errors },
        streams: ledger.streams.clone(),
    })
}

/// The turmoil simulation of `scenario`, without hosts.
fn build_sim(scenario: &Scenario, seed: u64) -> turmoil::Sim<'static> {
    let mut sim_builder = turmoil::Builder::new();
    sim_builder
        .simulation_duration(Duration::from_millis(scenario.duration_ms + 60_000))
        .tick_duration(Duration::from_millis(scenario.tick_ms))
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
        .rng_seed(seed)
        .min_message_latency(Duration::ZERO)
        .max_message_latency(DEFAULT_MAX_LATENCY)
        // Every node dials every other at start: room for all their handshakes.
        .tcp_capacity(TCP_CAPACITY_PER_NODE * scenario.nodes.len().max(1));
    if scenario.links {
        // ractor_cluster's node servers bind a (real, unused) listener.
        sim_builder.enable_tokio_io();
    }
    sim_builder.build()
}

/// One host per node of `scenario`; the nodes not kept quiet run the
/// workload's clients, sharing its rate.
fn add_hosts(
    sim: &mut turmoil::Sim<'static>,
    scenario: &Scenario,
    options: RunOptions,
    shared: &Shared,
    data: &std::path::Path,
    trace: &TraceLog,
) {
    let names = &shared.names;
    let clients: Vec<&String> = match &scenario.workload {
        Some(workload) => names.iter().filter(|name| !workload.quiet_nodes.contains(name)).collect(),
        None => Vec::new(),
    };
    for (index, spec) in scenario.nodes.iter().enumerate() {
        let client = scenario.workload.as_ref().filter(|_| clients.contains(&&spec.name)).map(|workload| {
            let load = match workload.rate_per_s {
                Some(rate) => Load::Rate(rate / clients.len() as f64),
                None => Load::Concurrency(workload.concurrency.unwrap_or(1)),
            };
            (workload.clone(), load)
        });
        let setup = HostSetup {
            spec: spec.clone(),
            peers: names.iter().filter(|name| **name != spec.name).cloned().collect(),
            data_dir: data.join(&spec.name),
            gossip_interval: Duration::from_millis(scenario.gossip_interval_ms),
            links: scenario.links,
            seed: options.seed,
            starts: Arc::new(AtomicU64::new(0)),
            mailbox: shared.mailbox.clone(),
            registry: shared.registry.clone(),
            trace: trace.clone(),
            work: shared.work.clone(),
            store: shared.stores[&spec.name].clone(),
            gpu: shared.gpus[&spec.name].clone(),
            flush_latency: FLUSH_LATENCY,
            ack_before_flush: options.ack_before_flush,
            policy: options.policy.policy,
            affinity: options.policy.affinity,
            forget_sent_tokens: options.forget_sent_tokens,
            client,
            index: u32::try_from(index).unwrap_or(u32::MAX),
            ledger: shared.ledger.clone(),
        };
        sim.host(spec.name.as_str(), move || setup.clone().run());
    }
}

/// The faults in time order, each range drawn from the seed (once per
/// run), and when the last fault or the workload ends (calm from then on).
fn schedule_faults(scenario: &Scenario, seed: u64) -> (Vec<crate::scenario::Fault>, u64) {
    let mut times = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed ^ 0x0FA0_17ED);
    let mut faults = scenario.faults.clone();
    for fault in &mut faults {
        fault.at_ms = fault.draw(&mut times);
    }
    faults.sort_by_key(|fault| fault.at_ms);
    let calm_from = faults
        .iter()
        .map(|fault| fault.at_ms)
        .chain(scenario.workload.as_ref().map(|workload| workload.stop_ms))
        .max()
        .unwrap_or(0);
    (faults, calm_from)
}

impl Outages {
    /// Books a crash or a restart (wiping the disk where the fault says).
    fn after(
        &mut self,
        action: &FaultAction,
        now_ms: u64,
        shared: &Shared,
        data: &std::path::Path,
    ) -> anyhow::Result<()> {
        match action {
            FaultAction::Crash { node } => {
                shared.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(node);
                shared.stores[node].crash();
                self.observers.remove(node);
                self.downtimes.entry(node.clone()).or_default().push((now_ms, u64::MAX));
            }
            FaultAction::Restart { node, keep_disk } => {
                if !keep_disk {
                    wipe(data, node, &shared.stores[node])?;
                    self.wiped.insert(node.clone());
                }
                if let Some(span) = self.downtimes.get_mut(node).and_then(|spans| spans.last_mut()) {
                    span.1 = now_ms;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A restart without its disk: the data dir and the job store start empty.
fn wipe(data: &std::path::Path, node: &str, store: &SimJobStore) -> anyhow::Result<()> {
    let dir = data.join(node);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot wipe {}", dir.display()))?;
    }
    store.wipe();
    Ok(())
}

fn apply_fault(
    sim: &mut turmoil::Sim<'_>,
    action: &FaultAction,
    names: &[String],
    mailbox: &Mailbox,
    gpus: &BTreeMap<String, Arc<GpuFaults>>,
) -> anyhow::Result<()> {
    let each_pair = |a: &[String], b: &[String], f: &mut dyn FnMut(&str, &str)| {
        for x in a {
            for y in b.iter().filter(|y| *y != x) {
                f(x, y);
            }
        }
    };
    match action {
        FaultAction::Crash { node } => sim.crash(node.as_str()),
        FaultAction::Restart { node, .. } => sim.bounce(node.as_str()),
        FaultAction::Partition { a, b } => each_pair(a, b, &mut |x, y| sim.partition(x, y)),
        FaultAction::PartitionOneway { from, to } => each_pair(from, to, &mut |x, y| sim.partition_oneway(x, y)),
        FaultAction::Heal => {
            mailbox.set_loss_rate(0.0);
            each_pair(names, names, &mut |x, y| {
                sim.repair(x, y);
                sim.release(x, y);
                sim.set_link_latency(x, y, Duration::ZERO);
                sim.set_link_max_message_latency(x, y, DEFAULT_MAX_LATENCY);
            });
        }
        FaultAction::Loss { rate } => mailbox.set_loss_rate(*rate),
        FaultAction::Latency { ms, jitter_ms } => each_pair(names, names, &mut |x, y| {
            sim.set_link_latency(x, y, Duration::from_millis(*ms));
            sim.set_link_max_message_latency(x, y, Duration::from_millis(ms + jitter_ms));
        }),
        FaultAction::Pause { node } => {
            each_pair(std::slice::from_ref(node), names, &mut |x, y| sim.hold(x, y));
        }
        FaultAction::Resume { node } => {
            each_pair(std::slice::from_ref(node), names, &mut |x, y| sim.release(x, y));
        }
        FaultAction::SlowGpu { node, factor } => gpus[node].set_slowdown(*factor),
        FaultAction::GpuOom { node } => gpus[node].set_out_of_memory(true),
        FaultAction::GpuOk { node } => {
            gpus[node].set_out_of_memory(false);
            gpus[node].set_slowdown(1.0);
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
