//! The routing service: the one home of the request path. For a request it
//! chooses a node with the policy (`policy`, over `candidates` from the
//! view), runs the request here or forwards it over the node link
//! (`forward::client`), and after a failure follows the rules of `retry`:
//! another node or the client's answer, the avoid list, the cooldowns.
//! The job owner runs job attempts through [`RoutingService::choose`] and
//! [`RoutingService::run_on`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use gpumesh_membership::ClusterView;
use rand::rngs::StdRng;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::executor::{InferError, InferRequest, InferResponse, ServedModel, Started};
use crate::forward::client::PeerClient;
use crate::routing::candidates::{LocalModel, Reachability, candidates, known_anywhere};
use crate::routing::policy::{Decision, Policy, PromptCost, Requirements, RouteParams, RouterState, decide};
use crate::routing::retry::{Failure, Next, Tried, apply_avoid, cooldown, next_attempt};
use crate::telemetry::Telemetry;
use crate::view::until_dead;

/// Most nodes one request is tried on, unless configured otherwise.
pub const DEFAULT_MAX_FORWARD_ATTEMPTS: usize = 3;
/// Decisions kept for `/cluster/decisions`.
pub const DECISIONS_KEPT: usize = 100;
/// Estimated cost of sending a request to another node and back.
const NETWORK_MS: f64 = 0.5;

/// A decision as `/cluster/decisions` shows it.
#[derive(Clone, Debug)]
pub struct DecisionRecord {
    pub unix_ms: u64,
    pub model: String,
    pub attempt: usize,
    pub decision: Decision,
}

/// Where a request ran.
#[derive(Clone, Debug)]
pub struct Routed {
    pub response: InferResponse,
    /// The node that executed it.
    pub node: String,
    /// Node names hop by hop, this node first.
    pub route: Vec<String>,
}

/// What the routing service is built from.
pub(crate) struct RoutingArgs {
    pub(crate) me: String,
    pub(crate) policy: Policy,
    pub(crate) params: RouteParams,
    pub(crate) peers: PeerClient,
    pub(crate) view: watch::Receiver<Arc<ClusterView>>,
    pub(crate) models: Arc<Vec<Arc<ServedModel>>>,
    /// Longest a request may wait for its result here.
    pub(crate) infer_timeout: Duration,
    /// Most nodes one request is tried on.
    pub(crate) max_attempts: usize,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) telemetry: Arc<Telemetry>,
}

/// Routes the requests this node receives.
pub struct RoutingService {
    args: RoutingArgs,
    state: Mutex<RouterState>,
    rng: Mutex<StdRng>,
    reachability: Mutex<Reachability>,
    decisions: Mutex<VecDeque<DecisionRecord>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RoutingService {
    /// A service that draws its random choices from `rng`.
    pub(crate) fn new(args: RoutingArgs, rng: StdRng) -> Self {
        Self {
            args,
            state: Mutex::default(),
            rng: Mutex::new(rng),
            reachability: Mutex::default(),
            decisions: Mutex::default(),
        }
    }

    /// The models this node serves.
    pub fn models(&self) -> &[Arc<ServedModel>] {
        &self.args.models
    }

    /// The served model called `name`.
    pub fn model(&self, name: &str) -> Option<&Arc<ServedModel>> {
        self.args.models.iter().find(|model| model.spec.name == name)
    }

    /// This node serves `model` or a trusted member's gossip lists it.
    pub fn knows(&self, model: &str) -> bool {
        self.model(model).is_some() || known_anywhere(&self.args.view.borrow(), model)
    }

    /// The calls to other nodes' endpoints.
    pub fn peers(&self) -> &PeerClient {
        &self.args.peers
    }

    /// The routing policy in use.
    pub fn policy(&self) -> Policy {
        self.args.policy
    }

    /// The most recent decisions, oldest first.
    pub fn decisions(&self) -> Vec<DecisionRecord> {
        lock(&self.decisions).iter().cloned().collect()
    }

    /// Runs `request` on model `name` here.
    pub async fn infer_here(&self, name: &str, request: InferRequest) -> Result<InferResponse, InferError> {
        self.infer_local(name, request, None).await
    }

    async fn infer_local(
        &self,
        name: &str,
        request: InferRequest,
        started: Option<Started>,
    ) -> Result<InferResponse, InferError> {
        let model = self.model(name).ok_or_else(|| InferError::UnknownModel(name.to_string()))?;
        crate::executor::infer(model, request, self.args.infer_timeout, started).await
    }

    /// Runs `request` on the node the policy picks: here, or forwarded over
    /// the node link, trying the next best node when an attempt fails.
    pub async fn route(
        &self,
        model: &str,
        requirements: &Requirements,
        request: InferRequest,
    ) -> Result<Routed, InferError> {
        let started = self.args.clock.now();
        let result = self.attempts(model, requirements, request).await;
        let seconds = self.args.clock.now().saturating_duration_since(started).as_secs_f64();
        let node = result.as_ref().ok().map(|routed| routed.node.as_str());
        let outcome = crate::telemetry::outcome(result.as_ref().err());
        // A name no node serves comes from the client: one label for all of
        // them, so random names cannot grow the metrics without bound.
        let label = if matches!(result, Err(InferError::UnknownModel(_))) { "(unknown)" } else { model };
        self.args.telemetry.request(label, outcome, node, seconds);
        result
    }

    async fn attempts(
        &self,
        model: &str,
        requirements: &Requirements,
        request: InferRequest,
    ) -> Result<Routed, InferError> {
        let me = self.args.me.as_str();
        let mut tried = Tried::new(self.args.max_attempts);
        loop {
            tried.attempts += 1;
            let target = self.choose(model, requirements, tried.attempts, tried.last_error.as_ref(), &tried.avoid)?;
            let error = match self.run_on(&target, model, None, request.clone(), None).await {
                Ok((node, response)) => {
                    let route = if node == me { vec![node.clone()] } else { vec![me.to_string(), node.clone()] };
                    return Ok(Routed { response, route, node });
                }
                Err(error) => error,
            };
            let here = target == me;
            let failure = Failure { target, here, error: error.clone() };
            match next_attempt(failure, &mut tried) {
                Next::GiveUp(error) => return Err(error),
                Next::Retry if here => {
                    tracing::warn!(model, attempt = tried.attempts, %error, "inference failed here; trying another node");
                }
                Next::Retry => {
                    tracing::warn!(model, attempt = tried.attempts, %error, "forward failed; trying the next best node");
                }
            }
        }
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
    ) -> Result<String, InferError> {
        let local = self.model(model).map(|m| LocalModel {
            device: m.device.clone(),
            ready: true,
            queue_depth: m.stats.queue_depth(),
            inflight: m.stats.inflight(),
            service_ms_per_item: m.stats.service_ms_per_item(),
        });
        self.choose_with(model, local, &BTreeMap::new(), requirements, attempt, last_error, avoid)
    }

    /// [`Self::choose`] with this node's copy of the model described by the
    /// caller (a language model's, say; `None`: this node does not serve
    /// it), and what the prompt costs on each node (language models).
    #[allow(clippy::too_many_arguments, reason = "one decision's inputs, each named")]
    pub fn choose_with(
        &self,
        model: &str,
        local: Option<LocalModel>,
        costs: &BTreeMap<String, PromptCost>,
        requirements: &Requirements,
        attempt: usize,
        last_error: Option<&InferError>,
        avoid: &[String],
    ) -> Result<String, InferError> {
        let view = self.args.view.borrow().clone();
        if local.is_none() && !known_anywhere(&view, model) {
            return Err(InferError::UnknownModel(model.to_string()));
        }
        let now = self.args.clock.now();
        let linked = |node: &str| self.args.peers.linked(node);
        let mut list = candidates(&view, model, local.as_ref(), &lock(&self.reachability), linked, NETWORK_MS, now);
        for candidate in &mut list {
            candidate.prompt = costs.get(&candidate.node).copied();
        }
        apply_avoid(&mut list, avoid, requirements, self.args.params);
        let decision = decide(
            self.args.policy,
            &list,
            requirements,
            self.args.params,
            &mut lock(&self.state),
            &mut *lock(&self.rng),
        );
        let record = DecisionRecord {
            unix_ms: self.args.clock.unix_ms(),
            model: model.to_string(),
            attempt,
            decision: decision.clone(),
        };
        {
            let mut decisions = lock(&self.decisions);
            if decisions.len() >= DECISIONS_KEPT {
                decisions.pop_front();
            }
            decisions.push_back(record);
        }
        decision.chosen.clone().ok_or_else(|| {
            let mut message = no_node_can(model, &decision);
            if let Some(error) = last_error {
                message.push_str(&format!("; last try: {error}"));
            }
            InferError::Unavailable(message)
        })
    }

    /// Runs `request` on `target` (here, or forwarded); returns the node that
    /// executed it. A failed forward puts the target in a cooldown (see
    /// `retry`). `job` names the job it runs for: a remote target keeps the
    /// result until the owner has it, and tells the owner when the job
    /// starts; here, `started` fires then.
    pub async fn run_on(
        &self,
        target: &str,
        model: &str,
        job: Option<&str>,
        request: InferRequest,
        started: Option<Started>,
    ) -> Result<(String, InferResponse), InferError> {
        let me = self.args.me.as_str();
        let here = target == me;
        let result = if here {
            self.infer_local(model, request, started).await.map(|response| (me.to_string(), response))
        } else {
            // A target that stops answering without closing its link (a
            // partition, a paused process) is given up on as soon as
            // membership declares it dead, not only at the forward timeout.
            tokio::select! {
                result = self.args.peers.forward(me, target, model, job, request) => result,
                () = until_dead(self.args.view.clone(), target.to_string()) => Err(InferError::Unavailable(format!(
                    "node {target} was declared dead while serving the request"
                ))),
            }
        };
        if !here {
            let failure = result.as_ref().err().map(|error| crate::telemetry::outcome(Some(error)));
            self.args.telemetry.forwarded(target, failure);
        }
        self.settle(target, result.as_ref().err());
        result
    }

    /// Books the end of an attempt on `target`: it no longer counts as
    /// outstanding there, and a failed forward puts the target in a
    /// cooldown (see `retry`).
    pub fn settle(&self, target: &str, error: Option<&InferError>) {
        if let Some(cooldown) = cooldown(target == self.args.me, error) {
            lock(&self.reachability).mark_unreachable(target, self.args.clock.now() + cooldown);
        }
        self.finished(target);
    }

    /// Books that a request sent to `target` no longer runs there (a
    /// stream, at its end).
    pub fn finished(&self, target: &str) {
        lock(&self.state).record_done(target);
    }

    /// This node's name.
    pub fn me(&self) -> &str {
        &self.args.me
    }

    /// The latest cluster view.
    pub fn view(&self) -> Arc<ClusterView> {
        self.args.view.borrow().clone()
    }
}

fn no_node_can(model: &str, decision: &Decision) -> String {
    let reasons: Vec<String> =
        decision.candidates.iter().filter_map(|c| c.excluded.map(|reason| format!("{}: {reason}", c.node))).collect();
    format!("no node can serve model {model} now ({})", reasons.join(", "))
}
