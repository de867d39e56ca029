//! The router: decides with the policy, then runs the request here or
//! forwards it over the node link, retrying on the next best node.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use std::sync::Arc;

use rand::rngs::StdRng;
use tokio::time::Instant;

use crate::executor::{InferError, InferRequest, InferResponse};
use crate::forward::peers::{PeerAnswer, PeerCall, PeerError, PeerNet};
use crate::forward::{ForwardReply, ForwardRequest};
use crate::routing::candidates::Reachability;
use crate::routing::policy::{Candidate, Decision, Policy, Requirements, RouteParams, RouterState, decide};

/// Most nodes one request is tried on, unless configured otherwise.
pub const DEFAULT_MAX_FORWARD_ATTEMPTS: usize = 3;
/// Decisions kept for `/cluster/decisions`.
pub const DECISIONS_KEPT: usize = 100;
/// How long a node that failed a forward is skipped.
const UNREACHABLE_COOLDOWN: Duration = Duration::from_secs(3);
/// How long a node whose queue was full is skipped.
const QUEUE_FULL_COOLDOWN: Duration = Duration::from_millis(200);

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

/// Routing state of one node.
pub struct Router {
    pub(crate) policy: Policy,
    params: RouteParams,
    state: Mutex<RouterState>,
    rng: Mutex<StdRng>,
    pub(crate) reachability: Mutex<Reachability>,
    decisions: Mutex<VecDeque<DecisionRecord>>,
    pub(crate) forward_timeout: Duration,
    peers: Arc<dyn PeerNet>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Router {
    pub(crate) fn new(
        policy: Policy,
        params: RouteParams,
        rng: StdRng,
        forward_timeout: Duration,
        peers: Arc<dyn PeerNet>,
    ) -> Self {
        Self {
            policy,
            params,
            state: Mutex::default(),
            rng: Mutex::new(rng),
            reachability: Mutex::default(),
            decisions: Mutex::default(),
            forward_timeout,
            peers,
        }
    }

    pub(crate) fn decide(
        &self,
        model: &str,
        attempt: usize,
        candidates: &[Candidate],
        requirements: &Requirements,
        unix_ms: u64,
    ) -> Decision {
        let decision =
            decide(self.policy, candidates, requirements, self.params, &mut lock(&self.state), &mut *lock(&self.rng));
        let mut decisions = lock(&self.decisions);
        if decisions.len() >= DECISIONS_KEPT {
            decisions.pop_front();
        }
        decisions.push_back(DecisionRecord { unix_ms, model: model.to_string(), attempt, decision: decision.clone() });
        decision
    }

    pub(crate) fn finished(&self, node: &str) {
        lock(&self.state).record_done(node);
    }

    pub(crate) fn failed(&self, node: &str, error: &InferError, now: Instant) {
        let cooldown = match error {
            InferError::QueueFull { .. } => QUEUE_FULL_COOLDOWN,
            _ => UNREACHABLE_COOLDOWN,
        };
        lock(&self.reachability).mark_unreachable(node, now + cooldown);
        self.finished(node);
    }

    /// The most recent decisions, oldest first.
    pub fn decisions(&self) -> Vec<DecisionRecord> {
        lock(&self.decisions).iter().cloned().collect()
    }

    /// Asks `target` for the metadata of `model`.
    pub(crate) async fn remote_metadata(&self, target: &str, model: &str) -> Option<crate::executor::MetadataDoc> {
        match self.peers.call(target, PeerCall::Metadata(model.to_string()), self.forward_timeout).await {
            Ok(PeerAnswer::Text(json)) => serde_json::from_str(&json).ok(),
            _ => None,
        }
    }

    /// Asks `owner` for a job it owns: `Ok(None)` when it has no such job.
    pub(crate) async fn remote_job(
        &self,
        owner: &str,
        id: &str,
    ) -> Result<Option<gpumesh_storage::jobs::JobRecord>, InferError> {
        match self.peers.call(owner, PeerCall::JobStatus(id.to_string()), self.forward_timeout).await {
            Ok(PeerAnswer::Text(json)) if json.is_empty() => Ok(None),
            Ok(PeerAnswer::Text(json)) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|error| InferError::Failed(format!("owner {owner} sent an unreadable job: {error}"))),
            Ok(_) => Err(InferError::Failed(format!("owner {owner} answered with something else than a job"))),
            Err(PeerError::NoLink(_)) => {
                Err(InferError::Unavailable(format!("job owner {owner} is not reachable from here")))
            }
            Err(_) => Err(InferError::Unavailable(format!("job owner {owner} did not answer"))),
        }
    }

    /// Asks `target` for the result it holds for job `id` (a
    /// [`ForwardReply`]'s bytes): `Ok(None)` when it holds none, `Err` when
    /// it cannot be asked.
    pub(crate) async fn held_result(&self, target: &str, id: &str) -> Result<Option<Vec<u8>>, InferError> {
        match self.peers.call(target, PeerCall::HeldResult(id.to_string()), self.forward_timeout).await {
            Ok(PeerAnswer::Bytes(bytes)) => Ok(Some(bytes).filter(|bytes| !bytes.is_empty())),
            Ok(_) => Err(InferError::Failed(format!("node {target} answered with something else than a result"))),
            Err(error) => Err(InferError::Unavailable(error.to_string())),
        }
    }

    /// Tells `target` that the owner has job `id`'s result (best effort:
    /// retention drops what is never released).
    pub(crate) async fn release_result(&self, target: &str, id: &str) {
        let _ = self.peers.call(target, PeerCall::ReleaseResult(id.to_string()), self.forward_timeout).await;
    }

    /// Sends `request` to `target`'s forward endpoint; `job` names the job
    /// it runs for, if any.
    pub(crate) async fn forward(
        &self,
        from: &str,
        target: &str,
        model: &str,
        job: Option<&str>,
        request: InferRequest,
    ) -> Result<(String, InferResponse), InferError> {
        let payload = ForwardRequest::Valid {
            model: model.to_string(),
            route: vec![from.to_string()],
            job: job.map(String::from),
            request,
        };
        match self.peers.call(target, PeerCall::Infer(payload), self.forward_timeout).await {
            Ok(PeerAnswer::Infer(ForwardReply::Done { node, response })) => Ok((node, response)),
            Ok(PeerAnswer::Infer(ForwardReply::Refused(error))) => Err(error),
            Ok(_) => Err(InferError::Failed(format!("node {target} answered with something else than a result"))),
            Err(error) => Err(InferError::Unavailable(error.to_string())),
        }
    }
}
