//! One construction path for a node: [`start_node`] takes a [`NodeConfig`]
//! and a [`NodeEnv`] and returns a [`NodeHandle`]. `gpumesh node`, the
//! in-process tests and the simulator all start nodes through it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gpumesh_membership::{ClusterSecret, ClusterView, Membership, MembershipConfig, NodeInfo, NodeName};
use gpumesh_storage::jobs::{DurableJobs, Flusher, JobRecord, StateFilter};
use gpumesh_storage::{Identity, NodeStore};
use ractor::{Actor, ActorRef};
use rand::RngExt;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::env::{JobStorage, NodeEnv};
use crate::executor::statistics::ModelStatisticsDoc;
use crate::executor::{ExecutorArgs, InferError, InferRequest, InferResponse, MetadataDoc, ServedModel, load_models};
use crate::forward::client::PeerClient;
use crate::forward::endpoint::ForwardArgs;
use crate::forward::peers::{ClusterPeers, PeerNet};
use crate::job_owner::{JobArgs, JobDoor, JobService};
use crate::links::{LinkedPeers, LinksArgs};
use crate::llm::relay::{Relay, RelayArgs};
use crate::llm::service::LlmArgs;
use crate::llm::{LlmModel, LlmService};
use crate::metrics::MetricsArgs;
use crate::registry::ModelSpec;
use crate::restart::RestartPolicy;
use crate::routing::policy::{Policy, Requirements, RouteParams};
use crate::routing::service::{DecisionRecord, Routed, RoutingArgs, RoutingService};
use crate::supervisor::{SupervisorActor, SupervisorArgs, SupervisorMsg};
use crate::telemetry::{NodeCollector, RestartCounter, Telemetry};
use crate::view::ViewArgs;
use crate::{Error, Result};
/// A peer's load is stale after this many gossip intervals.
const STALE_AFTER_INTERVALS: u32 = 25;

/// Upper bound on stopping the node's actors at shutdown.
const SHUTDOWN_TIMEOUT_MS: u64 = 5_000;

/// How to run one node. Addresses are already validated and bound-checked.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// `--name`; `None` uses the stored name or makes one.
    pub requested_name: Option<String>,
    pub data_dir: PathBuf,
    /// The HTTP address other nodes and clients use.
    pub http_advertise: SocketAddr,
    pub gossip_listen: SocketAddr,
    pub gossip_advertise: SocketAddr,
    pub cluster_listen: SocketAddr,
    pub cluster_advertise: SocketAddr,
    pub seeds: Vec<String>,
    pub gossip_interval: Duration,
    pub metrics_interval: Duration,
    pub secret: ClusterSecret,
    /// Models to serve (validated registry).
    pub models: Vec<ModelSpec>,
    /// Where to look for libonnxruntime, in order; used only when an ONNX model is listed.
    pub ort_library_candidates: Vec<PathBuf>,
    /// Longest an inference request may wait for its result.
    pub infer_timeout: Duration,
    /// Routing policy.
    pub policy: Policy,
    /// Longest a forwarded request may take before the next node is tried.
    pub forward_timeout: Duration,
    /// How long finished jobs (and results held for other owners) are kept.
    pub job_retention: gpumesh_storage::jobs::Retention,
    /// How often the metrics history samples the view; `None` keeps none.
    pub history_interval: Option<Duration>,
    /// Most nodes one request is tried on.
    pub max_forward_attempts: usize,
    /// `eta` credits a node with the prompt prefixes its language-model
    /// engine holds (SPEC section 10).
    pub prefix_affinity: bool,
    /// TLS for node-to-node links; `None`: plain TCP.
    pub cluster_tls: Option<crate::tls::ClusterTls>,
    /// Most jobs accepted here and not yet finished; more get 429.
    pub max_active_jobs: u64,
}

/// Default of `--max-active-jobs`.
pub const DEFAULT_MAX_ACTIVE_JOBS: u64 = 100_000;

/// A running node.
pub struct NodeHandle {
    name: NodeName,
    generation: u64,
    store: NodeStore,
    membership: Arc<Membership>,
    info: Mutex<NodeInfo>,
    view_rx: watch::Receiver<Arc<ClusterView>>,
    connected_rx: watch::Receiver<Arc<LinkedPeers>>,
    supervisor: ActorRef<SupervisorMsg>,
    supervisor_task: Mutex<Option<JoinHandle<()>>>,
    routing: Arc<RoutingService>,
    jobs: JobService,
    llm: Arc<LlmService>,
    clock: Arc<dyn Clock>,
    telemetry: Arc<Telemetry>,
    history: Option<gpumesh_storage::MetricsHistory>,
    _history_task: Option<tokio_util::task::AbortOnDropHandle<()>>,
    /// Engines this node launched; dropping them stops them.
    engines: Mutex<Vec<tokio_util::task::AbortOnDropHandle<()>>>,
}

/// What the actors share with the node's services, made before they start.
struct Shared {
    name: NodeName,
    identity: Identity,
    models: Arc<Vec<Arc<ServedModel>>>,
    llms: Arc<Vec<Arc<LlmModel>>>,
    executors: Vec<ExecutorArgs>,
    job_store: DurableJobs,
    telemetry: Arc<Telemetry>,
    peers: PeerClient,
    relay: Arc<Relay>,
    jobs_door: JobDoor,
    view_rx: watch::Receiver<Arc<ClusterView>>,
    connected_rx: watch::Receiver<Arc<LinkedPeers>>,
    refresh_interval: Duration,
}

/// Starts a node: identity from the store, gossip, then the supervised actors.
pub async fn start_node(config: NodeConfig, env: NodeEnv) -> Result<NodeHandle> {
    let store = NodeStore::open(&config.data_dir)?;
    let mut rng = env.fork_rng();
    let identity: Identity = store.start_identity(
        config.requested_name.as_deref(),
        || format!("node-{:06x}", rng.random_range(0..0x100_0000u32)),
        env.clock.unix_ms(),
    )?;
    let name = NodeName::new(identity.name.clone())?;
    let job_store = open_jobs(&store, &env.job_storage)?;
    let (executors, models) = serve_models(&config, &env).await?;
    let llms = Arc::new(crate::llm::load(&config.models, &env.clock).map_err(|error| Error::Models(error.message))?);
    tracing::info!(node = %name, generation = identity.generation, new = identity.created, "node identity");
    let info = NodeInfo {
        http_addr: config.http_advertise,
        cluster_addr: config.cluster_advertise,
        version: env!("CARGO_PKG_VERSION").to_string(),
        draining: false,
        started_unix_ms: env.clock.unix_ms(),
    };
    let membership_config = MembershipConfig {
        name: name.clone(),
        generation: identity.generation,
        listen_addr: config.gossip_listen,
        advertise_addr: config.gossip_advertise,
        seeds: config.seeds.clone(),
        gossip_interval: config.gossip_interval,
        secret: config.secret.clone(),
    };
    let membership = Arc::new(Membership::start(membership_config, env.gossip_transport.as_ref(), &info).await?);
    let (view_tx, view_rx) = watch::channel(Arc::new(ClusterView::default()));
    let (connected_tx, connected_rx) = watch::channel(Arc::new(LinkedPeers::new()));
    let refresh_interval = (config.gossip_interval / 2).max(Duration::from_millis(10));
    let restarts = RestartCounter::default();
    let telemetry = Arc::new(Telemetry::new(NodeCollector {
        models: models.clone(),
        view: view_rx.clone(),
        jobs: job_store.clone(),
        restarts: restarts.clone(),
        llms: llms.clone(),
    }));
    let peers = peer_client(&env, connected_rx.clone(), config.forward_timeout);
    let relay = Arc::new(Relay::new(RelayArgs {
        me: name.to_string(),
        peers: peers.clone(),
        view: view_rx.clone(),
        links: connected_rx.clone(),
        models: llms.clone(),
        clock: env.clock.clone(),
        idle_timeout: config.infer_timeout,
        // Numbers from the start time up: a restarted node (later by far
        // more milliseconds than streams a millisecond) never reuses one.
        first_stream: env.clock.unix_ms().wrapping_shl(20),
    }));
    let shared = Shared {
        name,
        identity,
        models,
        llms,
        executors,
        job_store,
        telemetry,
        peers,
        relay,
        jobs_door: JobDoor::default(),
        view_rx,
        connected_rx,
        refresh_interval,
    };
    let args = supervisor_args(&config, &env, &shared, &membership, view_tx, connected_tx, restarts);
    match assemble(config, env, shared, store, membership.clone(), info, args).await {
        Ok(node) => Ok(node),
        Err(error) => {
            membership.shutdown().await;
            Err(error)
        }
    }
}

/// Loads the registry's models (those this node's hardware can run) and
/// the arguments of their executors.
async fn serve_models(config: &NodeConfig, env: &NodeEnv) -> Result<(Vec<ExecutorArgs>, Arc<Vec<Arc<ServedModel>>>)> {
    let has_gpu = !(env.probe)().sample().gpus.is_empty();
    let loaded = load_models(&config.models, &config.ort_library_candidates, has_gpu, &env.gpu_faults)
        .await
        .map_err(Error::Models)?;
    let executors = loaded
        .iter()
        .map(|l| ExecutorArgs { model: l.model.clone(), clock: env.clock.clone(), batching: l.batching })
        .collect();
    Ok((executors, Arc::new(loaded.into_iter().map(|l| l.model).collect())))
}

/// Calls to peers over this node's links (through the environment's layer,
/// where it has one), each bounded by `timeout`.
fn peer_client(env: &NodeEnv, links: watch::Receiver<Arc<LinkedPeers>>, timeout: Duration) -> PeerClient {
    let peers: Arc<dyn PeerNet> = Arc::new(ClusterPeers::new(links, env.clock.clone()));
    let peers = match &env.peer_layer {
        Some(layer) => layer(peers),
        None => peers,
    };
    PeerClient::new(peers, timeout)
}

fn open_jobs(store: &NodeStore, storage: &JobStorage) -> Result<DurableJobs> {
    Ok(match storage {
        JobStorage::Sled => DurableJobs::start(Arc::new(store.jobs()?), Flusher::Thread),
        JobStorage::Simulated { store, flush_latency, ack_before_flush } => {
            let jobs = DurableJobs::start(store.clone(), Flusher::Task { latency: *flush_latency });
            jobs.set_ack_before_flush(*ack_before_flush);
            jobs
        }
    })
}

/// What the supervisor needs to start (and restart) every actor.
fn supervisor_args(
    config: &NodeConfig,
    env: &NodeEnv,
    shared: &Shared,
    membership: &Arc<Membership>,
    view_tx: watch::Sender<Arc<ClusterView>>,
    connected_tx: watch::Sender<Arc<LinkedPeers>>,
    restart_counter: RestartCounter,
) -> SupervisorArgs {
    let links = env.links.clone().map(|net| LinksArgs {
        name: shared.name.to_string(),
        cookie: config.secret.cluster_cookie(),
        listen_addr: config.cluster_listen,
        advertise_host: config.cluster_advertise.ip().to_string(),
        view_rx: shared.view_rx.clone(),
        connected_tx,
        net,
        clock: env.clock.clone(),
        rng: env.rng.clone(),
        interval: shared.refresh_interval,
        tls: config.cluster_tls.clone(),
    });
    SupervisorArgs {
        clock: env.clock.clone(),
        rng: env.fork_rng(),
        policy: RestartPolicy::default(),
        restart_counter,
        metrics: MetricsArgs {
            membership: membership.clone(),
            probe: env.probe.clone(),
            interval: config.metrics_interval,
            models: shared.models.clone(),
            llms: shared.llms.clone(),
        },
        view: ViewArgs {
            membership: membership.clone(),
            clock: env.clock.clone(),
            view_tx,
            interval: shared.refresh_interval,
        },
        forward: Some(ForwardArgs {
            node: shared.name.to_string(),
            models: shared.models.clone(),
            infer_timeout: config.infer_timeout,
            jobs: shared.job_store.clone(),
            clock: env.clock.clone(),
            peers: shared.peers.clone(),
            relay: shared.relay.clone(),
            jobs_door: shared.jobs_door.clone(),
            running: Arc::default(),
        }),
        links,
        executors: shared.executors.clone(),
    }
}

/// The routing service, the telemetry, the metrics history, the actors and
/// the job service, put together into the node's handle.
async fn assemble(
    config: NodeConfig,
    env: NodeEnv,
    shared: Shared,
    store: NodeStore,
    membership: Arc<Membership>,
    info: NodeInfo,
    args: SupervisorArgs,
) -> Result<NodeHandle> {
    let stale_after_ms =
        u64::try_from((config.gossip_interval * STALE_AFTER_INTERVALS).as_millis()).unwrap_or(u64::MAX);
    let routing = Arc::new(RoutingService::new(
        RoutingArgs {
            me: shared.name.to_string(),
            policy: config.policy,
            params: RouteParams { stale_after_ms },
            peers: shared.peers.clone(),
            view: shared.view_rx.clone(),
            models: shared.models.clone(),
            infer_timeout: config.infer_timeout,
            max_attempts: config.max_forward_attempts.max(1),
            clock: env.clock.clone(),
            telemetry: shared.telemetry.clone(),
        },
        env.fork_rng(),
    ));
    let (history, history_task) = match config.history_interval {
        Some(interval) => {
            let history = store.history(crate::history::HISTORY_KEEP_MS)?;
            let task =
                crate::history::spawn_sampler(history.clone(), shared.view_rx.clone(), env.clock.clone(), interval);
            (Some(history), Some(task))
        }
        None => (None, None),
    };
    let (supervisor, supervisor_task) =
        Actor::spawn(None, SupervisorActor, args).await.map_err(|error| Error::Start(format!("{error}")))?;
    let llm = Arc::new(LlmService::new(LlmArgs {
        routing: routing.clone(),
        relay: shared.relay.clone(),
        models: shared.llms.clone(),
        max_attempts: config.max_forward_attempts.max(1),
        affinity: config.prefix_affinity,
        forget_sent_tokens: env.forget_sent_tokens,
        clock: env.clock.clone(),
        telemetry: shared.telemetry.clone(),
    }));
    let engines = launch_engines(&shared.llms, &config.data_dir, &env);
    let jobs = JobService::new(JobArgs {
        me: shared.name.to_string(),
        generation: shared.identity.generation,
        store: shared.job_store,
        retention: config.job_retention,
        routing: routing.clone(),
        llm: llm.clone(),
        view: shared.view_rx.clone(),
        clock: env.clock.clone(),
        max_active: config.max_active_jobs,
        door: shared.jobs_door,
    });
    Ok(NodeHandle {
        name: shared.name,
        generation: shared.identity.generation,
        store,
        membership,
        info: Mutex::new(info),
        view_rx: shared.view_rx,
        connected_rx: shared.connected_rx,
        supervisor,
        supervisor_task: Mutex::new(Some(supervisor_task)),
        routing,
        jobs,
        llm,
        clock: env.clock,
        telemetry: shared.telemetry,
        history,
        _history_task: history_task,
        engines: Mutex::new(engines),
    })
}

/// Starts the engines of the models whose registry entry says how.
fn launch_engines(
    llms: &[Arc<LlmModel>],
    data_dir: &std::path::Path,
    env: &NodeEnv,
) -> Vec<tokio_util::task::AbortOnDropHandle<()>> {
    llms.iter()
        .filter_map(|model| match &model.kind {
            crate::registry::LlmKind::OpenAi(engine) => engine.launch.clone().map(|argv| (model, argv)),
            crate::registry::LlmKind::Synthetic(_) => None,
        })
        .map(|(model, argv)| {
            crate::llm::launch::supervise(model.clone(), argv, data_dir, env.clock.clone(), env.fork_rng())
        })
        .collect()
}

impl NodeHandle {
    /// This node's name.
    pub fn name(&self) -> &NodeName {
        &self.name
    }

    /// This start's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The latest cluster view.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view_rx.borrow().clone()
    }

    /// A receiver that sees every new view.
    pub fn subscribe_view(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view_rx.clone()
    }

    /// Names of the members with a node-to-node link up.
    pub fn connected(&self) -> BTreeSet<String> {
        self.connected_rx.borrow().keys().cloned().collect()
    }

    /// The models this node serves.
    pub fn models(&self) -> &[Arc<ServedModel>] {
        self.routing.models()
    }

    /// The served model called `name`.
    pub fn model(&self, name: &str) -> Option<&Arc<ServedModel>> {
        self.routing.model(name)
    }

    /// Runs `request` on model `name` here.
    pub async fn infer(&self, name: &str, request: InferRequest) -> std::result::Result<InferResponse, InferError> {
        self.routing.infer_here(name, request).await
    }

    /// Runs `request` on the node the policy picks: here, or forwarded over
    /// the node link, trying the next best node when an attempt fails.
    pub async fn route_infer(
        &self,
        model: &str,
        requirements: &Requirements,
        request: InferRequest,
    ) -> std::result::Result<Routed, InferError> {
        self.routing.route(model, requirements, request).await
    }

    /// Metadata of `model`: from this node when it serves it, else from a
    /// live trusted node whose gossip lists it.
    pub async fn model_metadata(&self, model: &str) -> Option<MetadataDoc> {
        self.routing.metadata(model).await
    }

    /// Triton's statistics of `model` (every tensor model when `None`),
    /// summed over the nodes that serve it (see `routing::catalog`).
    pub async fn model_statistics(&self, model: Option<&str>) -> Vec<ModelStatisticsDoc> {
        self.routing.statistics(model).await
    }

    /// The tensor models of the cluster, by name.
    pub fn model_names(&self) -> BTreeSet<String> {
        self.routing.model_names()
    }

    /// The language models of the cluster, as this node serves them.
    pub fn llm(&self) -> &Arc<LlmService> {
        &self.llm
    }

    /// Accepts a job: returns once it is on disk (see [`JobService::submit`]).
    pub async fn submit_job(
        &self,
        model: &str,
        request: InferRequest,
        idempotency_key: Option<String>,
    ) -> std::result::Result<JobRecord, InferError> {
        self.jobs.submit(model, request, idempotency_key).await
    }

    /// A job this node owns, as it is on disk.
    pub async fn job(&self, id: &str) -> std::result::Result<Option<JobRecord>, InferError> {
        self.jobs.get(id).await
    }

    /// Accepts a language-model job: returns once it is on disk.
    pub async fn submit_llm_job(
        &self,
        request: crate::llm::LlmRequest,
        idempotency_key: Option<String>,
    ) -> std::result::Result<JobRecord, InferError> {
        self.jobs.submit_llm(request, idempotency_key).await
    }

    /// Any job of the cluster, from its owner (see [`JobService::find`]).
    pub async fn find_job(&self, id: &str) -> std::result::Result<Option<JobRecord>, InferError> {
        self.jobs.find(id).await
    }

    /// Jobs this node owns, oldest first.
    pub async fn jobs(&self, filter: StateFilter, limit: usize) -> std::result::Result<Vec<JobRecord>, InferError> {
        self.jobs.list(filter, limit).await
    }

    /// The `limit` jobs this node created most recently, newest first.
    pub async fn recent_jobs(&self, limit: usize) -> std::result::Result<Vec<JobRecord>, InferError> {
        self.jobs.recent(limit).await
    }

    /// Resumes every job that was not final when this node last stopped.
    pub fn resume_jobs(&self) -> std::result::Result<usize, InferError> {
        self.jobs.resume()
    }

    /// Every metric in the Prometheus text format.
    pub fn prometheus_text(&self) -> String {
        self.telemetry.encode()
    }

    /// The metrics history samples taken at or after `since_unix_ms`
    /// (empty when this node keeps no history).
    pub fn history_since(&self, since_unix_ms: u64) -> Vec<gpumesh_storage::HistorySample> {
        let Some(history) = &self.history else { return Vec::new() };
        history.since(since_unix_ms).unwrap_or_else(|error| {
            tracing::warn!(%error, "reading the metrics history failed");
            Vec::new()
        })
    }

    /// The newest metrics history sample, if this node keeps a history.
    pub fn latest_history(&self) -> Option<gpumesh_storage::HistorySample> {
        let history = self.history.as_ref()?;
        history.latest().unwrap_or_else(|error| {
            tracing::warn!(%error, "reading the metrics history failed");
            None
        })
    }

    /// The node's clock (the simulator's in a simulation).
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// Milliseconds since the Unix epoch on this node's clock.
    pub fn unix_ms(&self) -> u64 {
        self.clock.unix_ms()
    }

    /// The addresses and lifecycle state this node publishes.
    pub async fn info(&self) -> NodeInfo {
        self.info.lock().await.clone()
    }

    /// The most recent routing decisions, oldest first.
    pub fn decisions(&self) -> Vec<DecisionRecord> {
        self.routing.decisions()
    }

    /// The routing policy in use.
    pub fn policy(&self) -> Policy {
        self.routing.policy()
    }

    /// True once the node has published a draining state.
    pub async fn is_draining(&self) -> bool {
        self.info.lock().await.draining
    }

    /// Publishes that this node takes no new work.
    pub async fn drain(&self) -> Result<()> {
        let mut info = self.info.lock().await;
        info.draining = true;
        self.membership.publish_info(&info).await?;
        Ok(())
    }

    /// Stops the actors, then gossip, then flushes the store. Calling it
    /// again does nothing more.
    pub async fn shutdown(&self) {
        let Some(supervisor_task) = self.supervisor_task.lock().await.take() else { return };
        let stopped = ractor::call_t!(self.supervisor, SupervisorMsg::Shutdown, SHUTDOWN_TIMEOUT_MS);
        if let Err(error) = stopped {
            tracing::warn!(error = %error, "actors did not stop in time");
        }
        self.supervisor.stop(None);
        let _ = supervisor_task.await;
        self.membership.shutdown().await;
        // Stops (kills) the engines this node launched.
        self.engines.lock().await.clear();
        if let Err(error) = self.store.flush() {
            tracing::error!(error = %error, "final flush of the data dir failed");
        }
        tracing::info!(node = %self.name, "node stopped");
    }
}
