//! The router: decides with the policy, then runs the request here or
//! forwards it over the node link, retrying on the next best node.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use ractor::ActorRef;
use ractor::rpc::CallResult;
use rand::rngs::StdRng;
use tokio::time::Instant;

use crate::executor::{InferError, InferRequest, InferResponse};
use crate::forward::{ForwardMsg, ForwardReply, ForwardRequest, group_of};
use crate::routing::candidates::Reachability;
use crate::routing::policy::{Candidate, Decision, Policy, Requirements, RouteParams, RouterState, decide};

/// Most nodes one request is tried on.
pub const MAX_FORWARD_ATTEMPTS: usize = 3;
/// Decisions kept for `/cluster/decisions`.
pub const DECISIONS_KEPT: usize = 100;
/// How long a node that failed a forward is skipped.
const UNREACHABLE_COOLDOWN: Duration = Duration::from_secs(3);
/// Longest wait for a linked peer's forward endpoint to appear.
const ENDPOINT_WAIT: Duration = Duration::from_millis(500);
const ENDPOINT_POLL: Duration = Duration::from_millis(10);
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
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Router {
    pub(crate) fn new(policy: Policy, params: RouteParams, rng: StdRng, forward_timeout: Duration) -> Self {
        Self {
            policy,
            params,
            state: Mutex::default(),
            rng: Mutex::new(rng),
            reachability: Mutex::default(),
            decisions: Mutex::default(),
            forward_timeout,
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

    fn endpoint_now(target: &str) -> Option<ActorRef<ForwardMsg>> {
        let cell = ractor::pg::get_members(&group_of(target)).into_iter().find(|cell| !cell.get_id().is_local())?;
        Some(cell.into())
    }

    /// `target`'s forward endpoint. Process groups sync just after a link
    /// comes up, so a freshly linked peer gets a short, bounded wait.
    async fn endpoint(target: &str) -> Option<ActorRef<ForwardMsg>> {
        let deadline = Instant::now() + ENDPOINT_WAIT;
        loop {
            if let Some(endpoint) = Self::endpoint_now(target) {
                return Some(endpoint);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(ENDPOINT_POLL).await;
        }
    }

    /// Asks `target` for the metadata of `model`.
    pub(crate) async fn remote_metadata(&self, target: &str, model: &str) -> Option<crate::executor::MetadataDoc> {
        let endpoint = Self::endpoint(target).await?;
        match endpoint.call(|reply| ForwardMsg::Metadata(model.to_string(), reply), Some(self.forward_timeout)).await {
            Ok(CallResult::Success(json)) => serde_json::from_str(&json).ok(),
            _ => None,
        }
    }

    /// Asks `owner` for a job it owns: `Ok(None)` when it has no such job.
    pub(crate) async fn remote_job(
        &self,
        owner: &str,
        id: &str,
    ) -> Result<Option<gpumesh_storage::jobs::JobRecord>, InferError> {
        let Some(endpoint) = Self::endpoint(owner).await else {
            return Err(InferError::Unavailable(format!("job owner {owner} is not reachable from here")));
        };
        match endpoint.call(|reply| ForwardMsg::JobStatus(id.to_string(), reply), Some(self.forward_timeout)).await {
            Ok(CallResult::Success(json)) if json.is_empty() => Ok(None),
            Ok(CallResult::Success(json)) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|error| InferError::Failed(format!("owner {owner} sent an unreadable job: {error}"))),
            _ => Err(InferError::Unavailable(format!("job owner {owner} did not answer"))),
        }
    }

    /// Asks `target` for the result it holds for job `id` (a
    /// [`ForwardReply`]'s bytes): `Ok(None)` when it holds none, `Err` when
    /// it cannot be asked.
    pub(crate) async fn held_result(&self, target: &str, id: &str) -> Result<Option<Vec<u8>>, InferError> {
        let Some(endpoint) = Self::endpoint(target).await else {
            return Err(InferError::Unavailable(format!("no link to node {target} yet")));
        };
        match endpoint.call(|reply| ForwardMsg::HeldResult(id.to_string(), reply), Some(self.forward_timeout)).await {
            Ok(CallResult::Success(bytes)) => Ok(Some(bytes).filter(|bytes| !bytes.is_empty())),
            _ => Err(InferError::Unavailable(format!("node {target} did not answer"))),
        }
    }

    /// Tells `target` that the owner has job `id`'s result (best effort:
    /// retention drops what is never released).
    pub(crate) fn release_result(&self, target: &str, id: &str) {
        if let Some(endpoint) = Self::endpoint_now(target) {
            let _ = endpoint.cast(ForwardMsg::ReleaseResult(id.to_string()));
        }
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
        let Some(endpoint) = Self::endpoint(target).await else {
            return Err(InferError::Unavailable(format!("no link to node {target} yet")));
        };
        let payload = ForwardRequest::Valid {
            model: model.to_string(),
            route: vec![from.to_string()],
            job: job.map(String::from),
            request,
        };
        let timeout_ms = self.forward_timeout.as_millis();
        match endpoint.call(|reply| ForwardMsg::Infer(payload, reply), Some(self.forward_timeout)).await {
            Ok(CallResult::Success(ForwardReply::Done { node, response })) => Ok((node, response)),
            Ok(CallResult::Success(ForwardReply::Refused(error))) => Err(error),
            Ok(CallResult::Timeout) => {
                Err(InferError::Unavailable(format!("node {target} did not answer within {timeout_ms} ms")))
            }
            Ok(CallResult::SenderError) | Err(_) => {
                Err(InferError::Unavailable(format!("the link to node {target} failed")))
            }
        }
    }
}
