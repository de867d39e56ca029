//! One construction path for a node: [`start_node`] takes a [`NodeConfig`]
//! and a [`NodeEnv`] and returns a [`NodeHandle`]. `gpumesh node`, the
//! in-process tests and the simulator all start nodes through it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gpumesh_membership::{ClusterSecret, ClusterView, Membership, MembershipConfig, NodeInfo, NodeName};
use gpumesh_storage::jobs::{DurableJobs, Flusher};
use gpumesh_storage::{Identity, NodeStore};
use ractor::{Actor, ActorRef};
use rand::RngExt;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::env::NodeEnv;
use crate::executor::{ExecutorArgs, InferError, InferRequest, InferResponse, ServedModel, load_models};
use crate::forward::ForwardArgs;
use crate::forward::peers::{ClusterPeers, PeerNet};
use crate::links::{LinkedPeers, LinksArgs};
use crate::metrics::MetricsArgs;
use crate::registry::ModelSpec;
use crate::restart::RestartPolicy;
use crate::routing::candidates::{LocalModel, candidates, known_anywhere};
use crate::routing::policy::{Candidate, Decision, Policy, Requirements, RouteParams};
use crate::routing::router::{DecisionRecord, Routed, Router};
use crate::supervisor::{SupervisorActor, SupervisorArgs, SupervisorMsg};
use crate::view::ViewArgs;
use crate::{Error, Result};

/// Estimated cost of sending a request to another node and back.
const NETWORK_MS: f64 = 0.5;
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
    /// TLS for node-to-node links; `None`: plain TCP.
    pub cluster_tls: Option<crate::tls::ClusterTls>,
}

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
    models: Arc<Vec<Arc<ServedModel>>>,
    infer_timeout: Duration,
    max_forward_attempts: usize,
    pub(crate) router: Router,
    pub(crate) clock: Arc<dyn crate::env::Clock>,
    pub(crate) jobs: crate::jobs::JobService,
    telemetry: crate::telemetry::Telemetry,
    history: Option<gpumesh_storage::MetricsHistory>,
    _history_task: Option<tokio_util::task::AbortOnDropHandle<()>>,
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
    let name = NodeName::new(identity.name)?;
    let job_store = match &env.job_storage {
        crate::env::JobStorage::Sled => DurableJobs::start(Arc::new(store.jobs()?), Flusher::Thread),
        crate::env::JobStorage::Simulated { store, flush_latency, ack_before_flush } => {
            let jobs = DurableJobs::start(store.clone(), Flusher::Task { latency: *flush_latency });
            jobs.set_ack_before_flush(*ack_before_flush);
            jobs
        }
    };
    let has_gpu = !(env.probe)().sample().gpus.is_empty();
    let loaded = load_models(&config.models, &config.ort_library_candidates, has_gpu, &env.gpu_faults)
        .await
        .map_err(Error::Models)?;
    let executors: Vec<ExecutorArgs> = loaded
        .iter()
        .map(|l| ExecutorArgs { model: l.model.clone(), clock: env.clock.clone(), batching: l.batching })
        .collect();
    let models: Arc<Vec<Arc<ServedModel>>> = Arc::new(loaded.into_iter().map(|l| l.model).collect());
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
    let peers: Arc<dyn PeerNet> = Arc::new(ClusterPeers::new(connected_rx.clone()));
    let peers = match &env.peer_layer {
        Some(layer) => layer(peers),
        None => peers,
    };
    let links = env.links.clone().map(|net| LinksArgs {
        name: name.to_string(),
        cookie: config.secret.cluster_cookie(),
        listen_addr: config.cluster_listen,
        advertise_host: config.cluster_advertise.ip().to_string(),
        view_rx: view_rx.clone(),
        connected_tx,
        net,
        clock: env.clock.clone(),
        rng: env.rng.clone(),
        interval: refresh_interval,
        tls: config.cluster_tls.clone(),
    });
    let args = SupervisorArgs {
        clock: env.clock.clone(),
        rng: env.fork_rng(),
        policy: RestartPolicy::default(),
        metrics: MetricsArgs {
            membership: membership.clone(),
            probe: env.probe.clone(),
            interval: config.metrics_interval,
            models: models.clone(),
        },
        view: ViewArgs {
            membership: membership.clone(),
            clock: env.clock.clone(),
            view_tx,
            interval: refresh_interval,
        },
        forward: Some(ForwardArgs {
            node: name.to_string(),
            models: models.clone(),
            infer_timeout: config.infer_timeout,
            jobs: job_store.clone(),
            clock: env.clock.clone(),
        }),
        links,
        executors,
    };
    let stale_after_ms =
        u64::try_from((config.gossip_interval * STALE_AFTER_INTERVALS).as_millis()).unwrap_or(u64::MAX);
    let router =
        Router::new(config.policy, RouteParams { stale_after_ms }, env.fork_rng(), config.forward_timeout, peers);
    let telemetry = crate::telemetry::Telemetry::new(crate::telemetry::NodeCollector {
        models: models.clone(),
        view: view_rx.clone(),
        jobs: job_store.clone(),
    });
    let (history, history_task) = match config.history_interval {
        Some(interval) => {
            let history = match store.history(crate::history::HISTORY_KEEP_MS) {
                Ok(history) => history,
                Err(error) => {
                    membership.shutdown().await;
                    return Err(error.into());
                }
            };
            let task = crate::history::spawn_sampler(history.clone(), view_rx.clone(), env.clock.clone(), interval);
            (Some(history), Some(task))
        }
        None => (None, None),
    };
    let (supervisor, supervisor_task) = match Actor::spawn(None, SupervisorActor, args).await {
        Ok(spawned) => spawned,
        Err(error) => {
            membership.shutdown().await;
            return Err(Error::Start(format!("{error}")));
        }
    };
    let jobs = crate::jobs::JobService::new(
        job_store,
        name.as_str(),
        identity.generation,
        config.job_retention,
        env.clock.clone(),
    );
    Ok(NodeHandle {
        name,
        generation: identity.generation,
        store,
        membership,
        info: Mutex::new(info),
        view_rx,
        connected_rx,
        supervisor,
        supervisor_task: Mutex::new(Some(supervisor_task)),
        models,
        infer_timeout: config.infer_timeout,
        max_forward_attempts: config.max_forward_attempts.max(1),
        router,
        clock: env.clock.clone(),
        jobs,
        telemetry,
        history,
        _history_task: history_task,
    })
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
        &self.models
    }

    /// The served model called `name`.
    pub fn model(&self, name: &str) -> Option<&Arc<ServedModel>> {
        self.models.iter().find(|model| model.spec.name == name)
    }

    /// Runs `request` on model `name` here.
    pub async fn infer(&self, name: &str, request: InferRequest) -> std::result::Result<InferResponse, InferError> {
        let model = self.model(name).ok_or_else(|| InferError::UnknownModel(name.to_string()))?;
        crate::executor::infer(model, request, self.infer_timeout).await
    }

    /// Runs `request` on the node the policy picks: here, or forwarded over
    /// the node link, trying the next best node when a forward fails.
    pub async fn route_infer(
        &self,
        model: &str,
        requirements: &Requirements,
        request: InferRequest,
    ) -> std::result::Result<Routed, InferError> {
        let started = self.clock.now();
        let result = self.route_infer_attempts(model, requirements, request).await;
        let seconds = self.clock.now().saturating_duration_since(started).as_secs_f64();
        let node = result.as_ref().ok().map(|routed| routed.node.as_str());
        let outcome = crate::telemetry::outcome(result.as_ref().err());
        // A name no node serves comes from the client: one label for all of
        // them, so random names cannot grow the metrics without bound.
        let label = if matches!(result, Err(InferError::UnknownModel(_))) { "(unknown)" } else { model };
        self.telemetry.request(label, outcome, node, seconds);
        result
    }

    async fn route_infer_attempts(
        &self,
        model: &str,
        requirements: &Requirements,
        request: InferRequest,
    ) -> std::result::Result<Routed, InferError> {
        let me = self.name.to_string();
        let mut last_error = None;
        let mut tried = Vec::new();
        for attempt in 1..=self.max_forward_attempts {
            let target = self.choose(model, requirements, attempt, last_error.as_ref(), &tried)?;
            match self.run_on(&target, model, None, request.clone()).await {
                Ok((node, response)) => {
                    let route = if node == me { vec![me] } else { vec![me, node.clone()] };
                    return Ok(Routed { response, route, node });
                }
                Err(error @ (InferError::BadRequest(_) | InferError::UnknownModel(_))) => return Err(error),
                // This node's own device failed (out of memory, a crashed
                // session): inference is idempotent, so another node may try.
                Err(error @ InferError::Failed(_)) if target == me => {
                    tracing::warn!(model, attempt, %error, "inference failed here; trying another node");
                    tried.push(target);
                    last_error = Some(error);
                }
                Err(error) if target == me => return Err(error),
                Err(error) => {
                    tracing::warn!(model, target = %target, attempt, %error, "forward failed; trying the next best node");
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| InferError::Unavailable(format!("no node could serve model {model}"))))
    }

    /// Picks the node for one attempt at a request (recorded in the
    /// decisions); `last_error` explains an earlier failed attempt. Nodes in
    /// `avoid` (those that already failed this request) are left out while
    /// another node could serve it.
    pub fn choose(
        &self,
        model: &str,
        requirements: &Requirements,
        attempt: usize,
        last_error: Option<&InferError>,
        avoid: &[String],
    ) -> std::result::Result<String, InferError> {
        let view = self.view();
        let local = self.model(model).map(|m| LocalModel {
            device: m.device.clone(),
            queue_depth: m.stats.queue_depth(),
            inflight: m.stats.inflight(),
            service_ms_per_item: m.stats.service_ms_per_item(),
        });
        if local.is_none() && !known_anywhere(&view, model) {
            return Err(InferError::UnknownModel(model.to_string()));
        }
        let now = self.clock.now();
        let mut list = {
            let reachability = self.router.reachability.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            candidates(&view, model, local.as_ref(), &reachability, NETWORK_MS, now)
        };
        let usable = |c: &Candidate| c.live && c.trusted && !c.draining && c.reachable && c.model_device.is_some();
        if list.iter().any(|c| usable(c) && !avoid.contains(&c.node)) {
            for candidate in list.iter_mut().filter(|c| avoid.contains(&c.node)) {
                candidate.reachable = false;
            }
        }
        let decision = self.router.decide(model, attempt, &list, requirements, self.clock.unix_ms());
        decision.chosen.clone().ok_or_else(|| {
            let mut message = no_node_can(model, &decision);
            if let Some(error) = last_error {
                message.push_str(&format!("; last try: {error}"));
            }
            InferError::Unavailable(message)
        })
    }

    /// Runs `request` on `target` (here, or forwarded); returns the node that
    /// executed it. A failed forward marks the target unreachable for a while.
    /// `job` names the job it runs for: a remote target keeps the result
    /// until the owner has it.
    pub async fn run_on(
        &self,
        target: &str,
        model: &str,
        job: Option<&str>,
        request: InferRequest,
    ) -> std::result::Result<(String, InferResponse), InferError> {
        let me = self.name.as_str();
        let result = if target == me {
            self.infer(model, request).await.map(|response| (me.to_string(), response))
        } else {
            // A target that stops answering without closing its link (a
            // partition, a paused process) is given up on as soon as
            // membership declares it dead, not only at the forward timeout.
            tokio::select! {
                result = self.router.forward(me, target, model, job, request) => result,
                () = until_dead(self.subscribe_view(), target) => Err(InferError::Unavailable(format!(
                    "node {target} was declared dead while serving the request"
                ))),
            }
        };
        if target != me {
            let failure = result.as_ref().err().map(|error| crate::telemetry::outcome(Some(error)));
            self.telemetry.forwarded(target, failure);
        }
        match &result {
            Err(error) if target != me && !matches!(error, InferError::BadRequest(_)) => {
                self.router.failed(target, error, self.clock.now());
            }
            _ => self.router.finished(target),
        }
        result
    }

    /// Metadata of `model`: from this node when it serves it, else from a
    /// live trusted node whose gossip lists it.
    pub async fn model_metadata(&self, model: &str) -> Option<crate::executor::MetadataDoc> {
        if let Some(served) = self.model(model) {
            return Some(served.metadata_doc(self.name.as_str()));
        }
        let view = self.view();
        let holders = view.members.iter().filter(|m| {
            !m.is_self
                && m.trusted
                && m.status != gpumesh_membership::MemberStatus::Dead
                && m.load.as_ref().is_some_and(|load| load.models.iter().any(|lm| lm.name == model))
        });
        for holder in holders {
            if let Some(doc) = self.router.remote_metadata(&holder.name, model).await {
                return Some(doc);
            }
        }
        None
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
        self.router.decisions()
    }

    /// The routing policy in use.
    pub fn policy(&self) -> Policy {
        self.router.policy
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
        if let Err(error) = self.store.flush() {
            tracing::error!(error = %error, "final flush of the data dir failed");
        }
        tracing::info!(node = %self.name, "node stopped");
    }
}

fn no_node_can(model: &str, decision: &Decision) -> String {
    let reasons: Vec<String> =
        decision.candidates.iter().filter_map(|c| c.excluded.map(|reason| format!("{}: {reason}", c.node))).collect();
    format!("no node can serve model {model} now ({})", reasons.join(", "))
}

/// Resolves once `target` is dead or gone in the view.
async fn until_dead(mut view: watch::Receiver<Arc<ClusterView>>, target: &str) {
    loop {
        let dead = view
            .borrow_and_update()
            .member(target)
            .is_none_or(|member| member.status == gpumesh_membership::MemberStatus::Dead);
        if dead {
            return;
        }
        if view.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
