//! One simulated node: the real node code started through
//! `gpumesh_actors::start_node` with simulated clock, randomness, network
//! and hardware.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gpumesh_actors::{Clock, HardwareProbe, HardwareSample, JobStorage, NodeConfig, NodeEnv, start_node};
use gpumesh_membership::{ClusterSecret, ClusterView, CpuStats, GpuStats};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::watch;

use crate::ledger::Ledger;
use crate::llmload::LLM_MODEL;
use crate::net::{Mailbox, SimTransport};
use crate::peers::{CLUSTER_PORT, SimLinks, SimPeers, WorkLog};
use crate::scenario::{NodeSpec, Workload};
use crate::store::SimJobStore;
use crate::trace::TraceLog;
use crate::workload::{Client, Load, MODEL};

pub(crate) const GOSSIP_PORT: u16 = 7946;
const HTTP_PORT: u16 = 8080;
const METRICS_INTERVAL_MS: u64 = 1_000;
/// Every simulated node shares this secret.
const SIM_SECRET: [u8; 32] = [0x5A; 32];

/// What the driver can see of a running node.
#[derive(Clone)]
pub(crate) struct Observed {
    pub(crate) generation: u64,
    pub(crate) view: watch::Receiver<Arc<ClusterView>>,
}

/// Running nodes by name, filled in by the hosts as they start.
pub(crate) type Registry = Arc<Mutex<BTreeMap<String, Observed>>>;

/// Time inside a turmoil host: tokio's paused clock and turmoil's epoch.
struct SimClock;

impl Clock for SimClock {
    #[allow(clippy::disallowed_methods, reason = "the simulator's clock: tokio's, which turmoil pauses and drives")]
    fn now(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }

    fn unix_ms(&self) -> u64 {
        turmoil::since_epoch().map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Hardware readings of a simulated node, from its profile.
struct SimProbe {
    spec: NodeSpec,
}

impl HardwareProbe for SimProbe {
    fn sample(&mut self) -> HardwareSample {
        let gpus = self
            .spec
            .gpu
            .iter()
            .map(|name| GpuStats {
                index: 0,
                name: name.clone(),
                memory_total_mb: self.spec.vram_mb,
                memory_free_mb: self.spec.vram_mb.saturating_sub(512),
                memory_reserved_mb: 0,
                utilization_pct: 0,
                temperature_c: 35,
                power_w: 50,
            })
            .collect();
        HardwareSample { gpus, cpu: CpuStats { cores: 16, utilization_pct: 5, memory_free_mb: 64_000 } }
    }
}

/// Everything a host needs to start (and restart) its node.
#[derive(Clone)]
pub(crate) struct HostSetup {
    pub(crate) spec: NodeSpec,
    pub(crate) peers: Vec<String>,
    pub(crate) data_dir: PathBuf,
    pub(crate) gossip_interval: Duration,
    /// Run ractor_cluster links (the scenario's `links`).
    pub(crate) links: bool,
    pub(crate) seed: u64,
    pub(crate) starts: Arc<AtomicU64>,
    pub(crate) mailbox: Mailbox,
    pub(crate) registry: Registry,
    pub(crate) trace: TraceLog,
    pub(crate) work: WorkLog,
    /// The node's job store: it outlives the node's crashes, minus what was not flushed.
    pub(crate) store: SimJobStore,
    pub(crate) gpu: Arc<gpumesh_actors::executor::GpuFaults>,
    pub(crate) flush_latency: Duration,
    /// The deliberately broken build: acknowledge jobs before their flush.
    pub(crate) ack_before_flush: bool,
    pub(crate) policy: gpumesh_actors::Policy,
    /// `eta` credits the prefix caches (`--prefix-affinity`).
    pub(crate) affinity: bool,
    /// The deliberately broken build: a continued stream forgets what was sent.
    pub(crate) forget_sent_tokens: bool,
    /// This node's client and its rate, if it has one.
    pub(crate) client: Option<(Workload, Load)>,
    pub(crate) index: u32,
    pub(crate) ledger: Ledger,
}

/// The models a node serves: an echo with the node's service times, and a
/// `synthetic-llm` with its engine's.
fn models(spec: &NodeSpec) -> anyhow::Result<Vec<gpumesh_actors::ModelSpec>> {
    let mut text = String::new();
    if let Some(service_ms) = spec.service_ms {
        text.push_str(&format!(
            "[[model]]\nname = \"{MODEL}\"\nkind = \"synthetic\"\nservice_time_ms = {service_ms}\n\
             service_time_per_item_ms = {}\nmax_batch_size = {}\nmax_queue_size = 100000\n",
            spec.service_per_item_ms, spec.max_batch_size
        ));
    }
    if let Some(llm) = &spec.llm {
        text.push_str(&format!(
            "[[model]]\nname = \"{LLM_MODEL}\"\nkind = \"synthetic-llm\"\nprefill_ms_per_token = {}\n\
             decode_ms_per_token = {}\nmax_sequences = {}\nkv_cache_tokens = {}\nmax_queue_size = 100000\n",
            llm.prefill_ms_per_token, llm.decode_ms_per_token, llm.max_sequences, llm.kv_cache_tokens
        ));
    }
    if text.is_empty() {
        return Ok(Vec::new());
    }
    Ok(gpumesh_actors::parse_registry(&text, std::path::Path::new("."))?)
}

fn mix(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl HostSetup {
    fn env(&self, host_ip: IpAddr) -> NodeEnv {
        let start = self.starts.fetch_add(1, Ordering::SeqCst);
        let base = mix(self.seed ^ mix(self.spec.name.bytes().fold(start, |h, b| mix(h ^ u64::from(b)))));
        let draws = Arc::new(AtomicU64::new(0));
        let spec = self.spec.clone();
        let (name, trace, work) = (self.spec.name.clone(), self.trace.clone(), self.work.clone());
        NodeEnv {
            clock: Arc::new(SimClock),
            rng: Arc::new(move || StdRng::seed_from_u64(mix(base ^ draws.fetch_add(1, Ordering::SeqCst)))),
            gossip_transport: Arc::new(SimTransport {
                mailbox: self.mailbox.clone(),
                trace: self.trace.clone(),
                host_ip,
            }),
            probe: Arc::new(move || Box::new(SimProbe { spec: spec.clone() }) as Box<dyn HardwareProbe>),
            links: self.links.then(|| {
                Arc::new(SimLinks { name: self.spec.name.clone(), trace: self.trace.clone() })
                    as Arc<dyn gpumesh_actors::link_net::LinkNet>
            }),
            peer_layer: Some(Arc::new(move |inner| {
                Arc::new(SimPeers { inner, name: name.clone(), trace: trace.clone(), work: work.clone() })
                    as Arc<dyn gpumesh_actors::forward::peers::PeerNet>
            })),
            gpu_faults: self.gpu.clone(),
            forget_sent_tokens: self.forget_sent_tokens,
            job_storage: JobStorage::Simulated {
                store: Arc::new(self.store.clone()),
                flush_latency: self.flush_latency,
                ack_before_flush: self.ack_before_flush,
            },
        }
    }

    /// The host's software: start the node and keep it until the host is
    /// crashed (which drops everything it owns, as `kill -9` would).
    pub(crate) async fn run(self) -> turmoil::Result {
        let ip = turmoil::lookup(self.spec.name.as_str());
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let config = NodeConfig {
            requested_name: Some(self.spec.name.clone()),
            data_dir: self.data_dir.clone(),
            http_advertise: SocketAddr::new(ip, HTTP_PORT),
            gossip_listen: SocketAddr::new(any, GOSSIP_PORT),
            gossip_advertise: SocketAddr::new(ip, GOSSIP_PORT),
            cluster_listen: SocketAddr::new(any, CLUSTER_PORT),
            cluster_advertise: SocketAddr::new(ip, CLUSTER_PORT),
            seeds: self.peers.iter().map(|peer| format!("{}:{GOSSIP_PORT}", turmoil::lookup(peer.as_str()))).collect(),
            gossip_interval: self.gossip_interval,
            metrics_interval: Duration::from_millis(METRICS_INTERVAL_MS),
            secret: ClusterSecret::from_bytes(SIM_SECRET),
            models: models(&self.spec)?,
            ort_library_candidates: Vec::new(),
            infer_timeout: Duration::from_secs(30),
            policy: self.policy,
            forward_timeout: Duration::from_secs(10),
            job_retention: gpumesh_storage::jobs::Retention::default(),
            history_interval: None,
            max_forward_attempts: gpumesh_actors::DEFAULT_MAX_FORWARD_ATTEMPTS,
            prefix_affinity: self.affinity,
            cluster_tls: None,
            max_active_jobs: gpumesh_actors::DEFAULT_MAX_ACTIVE_JOBS,
        };
        let env = self.env(ip);
        let client_rng = env.fork_rng();
        let node = Arc::new(start_node(config, env).await?);
        node.resume_jobs()?;
        let observed = Observed { generation: node.generation(), view: node.subscribe_view() };
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(self.spec.name.clone(), observed);
        if let Some((workload, load)) = self.client.clone() {
            let client = Client {
                node: node.clone(),
                index: self.index,
                workload,
                load,
                rng: client_rng,
                ledger: self.ledger.clone(),
                trace: self.trace.clone(),
            };
            tokio::spawn(client.run());
        }
        std::future::pending::<()>().await;
        drop(node);
        Ok(())
    }
}
