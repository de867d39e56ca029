//! The language-model request path: choose a node with the routing
//! service (the same policies, decisions and retry rules as tensors), start
//! the request there (this node's engine, or another node's through the
//! relay), and wait for its first piece. A request that fails before its
//! first piece is tried on another node; after it, the pieces are the
//! client's, wherever they come from.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt as _;

use crate::clock::Clock;
use crate::executor::InferError;
use crate::llm::affinity::{LocalPrefill, prompt_costs};
use crate::llm::assemble::Assembler;
use crate::llm::error::LlmError;
use crate::llm::failover::{Continuer, Provenance, SharedProvenance, continuing, provenance_of};
use crate::llm::model::LlmModel;
use crate::llm::piece::{Piece, Pieces};
use crate::llm::prefix::{Prefixes, Sketch};
use crate::llm::relay::Relay;
use crate::llm::request::LlmRequest;
use crate::llm::resume::Resume;
use crate::routing::candidates::LocalModel;
use crate::routing::policy::PromptCost;
use crate::routing::retry::{Failure, Next, Tried, next_attempt};
use crate::routing::service::RoutingService;
use crate::telemetry::Telemetry;

/// A request under way: where it runs, its first piece, and the rest.
pub struct Started {
    /// The node generating it.
    pub node: String,
    /// Node names hop by hop, this node first.
    pub route: Vec<String>,
    pub first: Piece,
    /// The rest; a stream's goes on on another node when its source fails.
    pub rest: Pieces,
    /// Every node that generated a part, and how often the stream moved.
    pub provenance: SharedProvenance,
}

/// What the language-model service works with.
pub(crate) struct LlmArgs {
    pub(crate) routing: Arc<RoutingService>,
    pub(crate) relay: Arc<Relay>,
    pub(crate) models: Arc<Vec<Arc<LlmModel>>>,
    pub(crate) max_attempts: usize,
    /// `eta` credits a node with the prompt prefixes its engine holds.
    pub(crate) affinity: bool,
    /// The simulator's broken build (see `NodeEnv::forget_sent_tokens`).
    pub(crate) forget_sent_tokens: bool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) telemetry: Arc<Telemetry>,
}

/// Bytes of prompt remembered per model and node as sent there from here.
const SENT_SKETCH_BYTES: usize = 256 * 1024;

/// Serves the language models of the whole cluster at this node.
pub struct LlmService {
    args: LlmArgs,
    /// Per (model, node): the prompts this node sent there lately.
    sent: std::sync::Mutex<BTreeMap<(String, String), Sketch>>,
}

/// The routing service's words for `error`, for the retry rules.
pub(crate) fn as_infer_error(error: &LlmError) -> InferError {
    let message = error.message.clone();
    match error.status {
        404 => InferError::UnknownModel(message),
        429 => InferError::QueueFull { model: String::new(), queued: 0, retry_after_ms: 1000 },
        503 => InferError::Unavailable(message),
        status if (400..500).contains(&status) => InferError::BadRequest(message),
        _ => InferError::Failed(message),
    }
}

/// The language-model words for an error choosing a node.
fn from_infer_error(model: &str, error: InferError) -> LlmError {
    match error {
        InferError::UnknownModel(_) => LlmError::model_not_found(model),
        InferError::BadRequest(message) => LlmError::invalid(None, message),
        InferError::QueueFull { queued, retry_after_ms, .. } => {
            LlmError::queue_full(model, queued, retry_after_ms.div_ceil(1000).max(1))
        }
        InferError::Unavailable(message) => LlmError::unavailable(message),
        error @ InferError::TooManyJobs { retry_after_ms, .. } => LlmError {
            retry_after_s: Some(retry_after_ms.div_ceil(1000).max(1)),
            ..LlmError::with_status(429, error.to_string())
        },
        InferError::Failed(message) => LlmError::failed(message),
    }
}

fn local_model(model: &LlmModel) -> LocalModel {
    let stats = &model.stats;
    LocalModel {
        device: model.device().to_string(),
        ready: stats.ready(),
        queue_depth: stats.waiting_now(),
        inflight: stats.running_now(),
        service_ms_per_item: stats.ttft_ms(),
    }
}

impl LlmService {
    pub(crate) fn new(args: LlmArgs) -> Self {
        Self { args, sent: std::sync::Mutex::default() }
    }

    fn sent(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Sketch>> {
        self.sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The language models this node serves.
    pub fn models(&self) -> &[Arc<LlmModel>] {
        &self.args.models
    }

    /// The language model called `name`, if this node serves it.
    pub fn model(&self, name: &str) -> Option<&Arc<LlmModel>> {
        self.args.models.iter().find(|model| model.spec.name == name)
    }

    /// Every language model the cluster serves, with the nodes that serve
    /// it (trusted, live, engine ready or not).
    pub fn catalog(&self) -> BTreeMap<String, Vec<String>> {
        let mut catalog: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let view = self.args.routing.view();
        for member in view.members.iter().filter(|member| member.is_trusted_live() && !member.is_self) {
            let models = member.load.as_ref().map(|load| load.models.as_slice()).unwrap_or_default();
            for model in models.iter().filter(|model| model.llm.is_some()) {
                catalog.entry(model.name.clone()).or_default().push(member.name.clone());
            }
        }
        for model in self.models() {
            catalog.entry(model.spec.name.clone()).or_default().push(self.args.routing.me().to_string());
        }
        for nodes in catalog.values_mut() {
            nodes.sort();
        }
        catalog
    }

    /// Starts `request` on the node the policy picks and returns once its
    /// first piece is in; the answer is then the client's. A stream goes on
    /// on another node if its source fails later (see `failover`).
    pub async fn start(self: &Arc<Self>, request: LlmRequest) -> Result<Started, LlmError> {
        let began = self.args.clock.now();
        let result = self.attempts(&request, None, &[]).await;
        let seconds = self.args.clock.now().saturating_duration_since(began).as_secs_f64();
        let known = !matches!(&result, Err(error) if error.code.as_deref() == Some("model_not_found"));
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => crate::telemetry::outcome(Some(&as_infer_error(error))),
        };
        let node = result.as_ref().ok().map(|(node, ..)| node.as_str());
        let label = if known { request.model.as_str() } else { "(unknown)" };
        self.args.telemetry.request(label, outcome, node, seconds);
        let (node, route, first, mut rest) = result?;
        let provenance = Arc::new(std::sync::Mutex::new(Provenance { nodes: vec![node.clone()], failovers: 0 }));
        if request.stream {
            let continuer: Arc<dyn Continuer> = self.clone();
            rest = continuing(continuer, request, node.clone(), &first, rest, provenance.clone());
        }
        Ok(Started { node, route, first, rest, provenance })
    }

    /// Chooses a node and starts `request` (with `resume`, its rest) there,
    /// trying the next best node while it fails before its first piece;
    /// nodes in `avoid` are tried last. The node, the route, the first
    /// piece and the rest.
    async fn attempts(
        &self,
        request: &LlmRequest,
        resume: Option<&Resume>,
        avoid: &[String],
    ) -> Result<(String, Vec<String>, Piece, Pieces), LlmError> {
        let routing = &self.args.routing;
        let me = routing.me().to_string();
        let mut tried = Tried::new(self.args.max_attempts);
        tried.avoid = avoid.to_vec();
        loop {
            tried.attempts += 1;
            let local = self.model(&request.model).map(|model| local_model(model));
            let last = tried.last_error.as_ref();
            let (prefixes, costs) = self.costs(request);
            let target = routing
                .choose_with(&request.model, local, &costs, &request.requirements, tried.attempts, last, &tried.avoid)
                .map_err(|error| from_infer_error(&request.model, error))?;
            self.sending(&request.model, &target, &prefixes);
            let here = target == me;
            let started = match self.start_on(&target, here, request, resume).await {
                Ok(pieces) => first_of(pieces, &target).await,
                Err(error) => Err(error),
            };
            let error = match started {
                Ok((first, rest)) => {
                    let route = if here { vec![me.clone()] } else { vec![me.clone(), target.clone()] };
                    // The stream counts as running there until it ends.
                    let rest = Box::pin(Running { rest, routing: routing.clone(), target: target.clone() });
                    return Ok((target, route, first, rest));
                }
                Err(error) => error,
            };
            routing.settle(&target, Some(&as_infer_error(&error)));
            let failure = Failure { target: target.clone(), here, error: as_infer_error(&error) };
            match next_attempt(failure, &mut tried) {
                Next::GiveUp(_) => return Err(error),
                Next::Retry => {
                    tracing::warn!(model = %request.model, target = %target, attempt = tried.attempts, %error, "language model request failed before its first token; trying the next best node");
                }
            }
        }
    }

    /// Starts `request` (or with `resume` its rest) on `target`: here, or
    /// through the relay.
    async fn start_on(
        &self,
        target: &str,
        here: bool,
        request: &LlmRequest,
        resume: Option<&Resume>,
    ) -> Result<Pieces, LlmError> {
        if here {
            match self.model(&request.model) {
                Some(model) => model.start(request, resume).await,
                None => Err(LlmError::unavailable(format!("model {} is not served here", request.model))),
            }
        } else {
            self.args.relay.open_remote(target, request.clone(), resume.cloned()).await
        }
    }

    /// This node serves the model or a trusted member's gossip lists it as
    /// a language model.
    pub fn knows(&self, model: &str) -> bool {
        self.model(model).is_some() || self.catalog().contains_key(model)
    }

    /// Picks the node for attempt `attempt` of a job's request.
    pub fn choose(
        &self,
        request: &LlmRequest,
        attempt: usize,
        last_error: Option<&InferError>,
        avoid: &[String],
    ) -> Result<String, InferError> {
        let local = self.model(&request.model).map(|model| local_model(model));
        let (prefixes, costs) = self.costs(request);
        let target = self.args.routing.choose_with(
            &request.model,
            local,
            &costs,
            &request.requirements,
            attempt,
            last_error,
            avoid,
        )?;
        self.sending(&request.model, &target, &prefixes);
        Ok(target)
    }

    /// What the prompt costs on each node that serves the model (see
    /// `affinity`).
    fn costs(&self, request: &LlmRequest) -> (Prefixes, BTreeMap<String, PromptCost>) {
        let prefixes = Prefixes::of(&request.prompt);
        let local = self.model(&request.model).map(|model| LocalPrefill {
            prefill_tokens_per_s: model.stats.prefill_tokens_per_s(),
            ttft_ms: model.stats.ttft_ms(),
            prompt_bytes_per_token: model.stats.prompt_bytes_per_token(),
            held_bytes: model.longest_held(&prefixes),
            slots: u32::try_from(model.kind.max_concurrency()).unwrap_or(u32::MAX),
        });
        let costs = {
            let sent = self.sent();
            let held = |node: &str| {
                let key = (request.model.clone(), node.to_string());
                sent.get(&key).map_or(0, |sketch| prefixes.longest_held(|hash| sketch.holds(hash)))
            };
            prompt_costs(&self.args.routing.view(), &request.model, &prefixes, local, &held, self.args.affinity)
        };
        (prefixes, costs)
    }

    /// Remembers that a prompt with `prefixes` goes to `target`.
    fn sending(&self, model: &str, target: &str, prefixes: &Prefixes) {
        if target != self.args.routing.me() {
            let key = (model.to_string(), target.to_string());
            self.sent().entry(key).or_insert_with(|| Sketch::new(SENT_SKETCH_BYTES)).record(prefixes);
        }
    }

    /// Runs `request` on `target` (one attempt, for a job) and answers it
    /// whole: the node that started it and the answer's JSON with its
    /// `gpumesh` field. It runs as a stream made whole (see `assemble`), so
    /// that when `target` fails mid-generation it goes on on another node
    /// from the tokens already made, as a client's stream would.
    /// `on_start` fires once the engine has taken the request.
    pub async fn run_whole_on(
        self: &Arc<Self>,
        target: &str,
        request: &LlmRequest,
        on_start: tokio::sync::oneshot::Sender<()>,
    ) -> Result<(String, Vec<u8>), LlmError> {
        let request = request.streamed()?;
        let here = target == self.args.routing.me();
        let started = match self.start_on(target, here, &request, None).await {
            Ok(pieces) => {
                let _ = on_start.send(());
                first_of(pieces, target).await
            }
            Err(error) => Err(error),
        };
        let (first, rest) = match started {
            Ok(started) => started,
            Err(error) => {
                self.args.routing.settle(target, Some(&as_infer_error(&error)));
                return Err(error);
            }
        };
        let provenance = Arc::new(std::sync::Mutex::new(Provenance { nodes: vec![target.to_string()], failovers: 0 }));
        let continuer: Arc<dyn Continuer> = self.clone();
        let mut whole = Assembler::new(request.endpoint);
        let mut pieces = continuing(continuer, request, target.to_string(), &first, rest, provenance.clone());
        whole.add(&first.data);
        let mut outcome = Ok(());
        while let Some(piece) = pieces.next().await {
            match piece {
                Ok(piece) => whole.add(&piece.data),
                Err(error) => {
                    outcome = Err(error);
                    break;
                }
            }
        }
        self.args.routing.settle(target, None);
        outcome?;
        let mut answer = whole.finish();
        let provenance = provenance_of(&provenance);
        answer["gpumesh"] = serde_json::json!({"nodes": provenance.nodes, "failovers": provenance.failovers});
        let bytes = serde_json::to_vec(&answer).map_err(|error| LlmError::failed(error.to_string()))?;
        Ok((target.to_string(), bytes))
    }
}

#[async_trait::async_trait]
impl Continuer for LlmService {
    async fn continue_elsewhere(
        &self,
        request: &LlmRequest,
        sent: &Resume,
        failed: &[String],
    ) -> Result<(String, Pieces), LlmError> {
        let forgotten = Resume::default();
        let sent = if self.args.forget_sent_tokens { &forgotten } else { sent };
        let (node, _, first, rest) = self.attempts(request, Some(sent), failed).await?;
        Ok((node, Box::pin(futures_util::stream::once(std::future::ready(Ok(first))).chain(rest))))
    }

    fn record(&self, model: &str, outcome: &'static str) {
        self.args.telemetry.failover(model, outcome);
    }
}

/// The pieces of a stream under way on `target`; when they are dropped
/// (the stream ended, or its client left), the routing service no longer
/// counts it there.
struct Running {
    rest: Pieces,
    routing: Arc<RoutingService>,
    target: String,
}

impl futures_util::Stream for Running {
    type Item = Result<Piece, LlmError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.rest.as_mut().poll_next(cx)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.routing.finished(&self.target);
    }
}

/// The first piece of `pieces` and the rest.
async fn first_of(mut pieces: Pieces, target: &str) -> Result<(Piece, Pieces), LlmError> {
    match pieces.next().await {
        Some(Ok(first)) => Ok((first, pieces)),
        Some(Err(error)) => Err(error),
        None => Err(LlmError::failed(format!("the engine on {target} answered nothing"))),
    }
}
