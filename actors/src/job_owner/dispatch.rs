//! The task that runs one job to a final state: it asks `step` what to do
//! next and does it (choose a node through the routing service, record the
//! dispatch, run the job there, record the outcome, collect or release
//! held results), reporting each outcome back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gpumesh_membership::{ClusterView, MemberStatus};
use gpumesh_storage::jobs::{DurableJobs, JobEvent, JobRecord, TransitionError};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::executor::{InferError, InferRequest};
use crate::forward::ForwardReply;
use crate::forward::client::Held;
use crate::job_owner::payload::Payload;
use crate::job_owner::step::{JobSteps, MAX_JOB_ATTEMPTS, Outcome, Step};
use crate::llm::LlmService;
use crate::llm::request::LlmRequest;
use crate::routing::policy::Requirements;
use crate::routing::service::RoutingService;

/// How long a restarted owner tries to reach the node a job was running on
/// for the result it holds, before running the job again elsewhere.
const HELD_RESULT_WAIT: Duration = Duration::from_secs(3);
const HELD_RESULT_POLL: Duration = Duration::from_millis(100);

/// What every dispatch task of this node shares.
pub(super) struct Owner {
    pub(super) me: String,
    pub(super) store: DurableJobs,
    pub(super) routing: Arc<RoutingService>,
    pub(super) llm: Arc<LlmService>,
    pub(super) view: watch::Receiver<Arc<ClusterView>>,
    pub(super) clock: Arc<dyn Clock>,
    /// Jobs accepted here and not yet completed or failed.
    pub(super) active: AtomicU64,
}

/// Runs `job` to a final state (or until its store fails: it resumes at
/// the next start).
pub(super) async fn run(owner: Arc<Owner>, job: JobRecord) {
    let payload = Payload::decode(&job.request);
    let mut steps = JobSteps::new(&owner.me);
    let loaded =
        Outcome::Loaded { readable: payload != Payload::Unreadable, held: matches!(payload, Payload::Tensor { .. }) };
    let mut step = steps.next(&job, loaded);
    let mut job = job;
    loop {
        tracing::debug!(job = %job.id, ?step, "job step");
        let outcome = match step {
            Step::Stop => return,
            Step::Record(event) => match owner.record(&job.id, event) {
                Some(recorded) => {
                    job = recorded;
                    Outcome::Recorded
                }
                None => return,
            },
            Step::Choose { attempt, avoid, last_error } => {
                Outcome::Chosen(owner.choose(&payload, attempt, last_error.as_ref(), &avoid))
            }
            Step::Wait(delay) => {
                tokio::time::sleep(delay).await;
                Outcome::Waited
            }
            Step::Dispatch { target } => {
                let Some(dispatched) = owner.record(&job.id, JobEvent::Dispatched { node: target.clone() }) else {
                    return;
                };
                job = dispatched;
                let ran = match &payload {
                    Payload::Tensor { model, request } => owner.attempt(&job, &target, model, request.clone()).await,
                    Payload::Llm(request) => Some(owner.attempt_llm(&job, &target, request).await),
                    Payload::Unreadable => None,
                };
                let Some(ran) = ran else { return };
                ran
            }
            Step::Collect { from } => Outcome::Collected(owner.held_result(&job, &from).await),
            Step::Release { nodes } => {
                owner.release(&job, &nodes).await;
                return;
            }
        };
        step = steps.next(&job, outcome);
    }
}

impl Owner {
    /// Picks the node for an attempt at the job's request.
    fn choose(
        &self,
        payload: &Payload,
        attempt: usize,
        last_error: Option<&InferError>,
        avoid: &[String],
    ) -> Result<String, InferError> {
        match payload {
            Payload::Tensor { model, request } => {
                let requirements = Requirements { priority: request.priority, ..Requirements::default() };
                self.routing.choose(model, &requirements, attempt, last_error, avoid)
            }
            Payload::Llm(request) => self.llm.choose(request, attempt, last_error, avoid),
            Payload::Unreadable => Err(InferError::BadRequest("the stored request is unreadable".into())),
        }
    }

    /// Runs the dispatched language-model `job` on `target`, answered whole;
    /// it is running once the engine has taken it.
    async fn attempt_llm(&self, job: &JobRecord, target: &str, request: &LlmRequest) -> Outcome {
        let (started, on_start) = tokio::sync::oneshot::channel();
        let run = self.llm.run_whole_on(target, request, started);
        let record_start = async {
            if on_start.await.is_ok() {
                self.record(&job.id, JobEvent::Started { node: target.to_string() });
            }
        };
        let (result, ()) = tokio::join!(run, record_start);
        Outcome::Ran(result.map_err(|error| crate::llm::service::as_infer_error(&error)))
    }

    /// Records `event` (durable at the next flush; readers wait for it).
    /// `None` when the job is final or the event is refused.
    fn record(&self, id: &str, event: JobEvent) -> Option<JobRecord> {
        match self.store.record(id, event, self.clock.unix_ms(), MAX_JOB_ATTEMPTS) {
            Ok(Ok(job)) => {
                if job.state.is_final() {
                    // Only the first final event is taken: this runs once a job.
                    let _ = self.active.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
                }
                Some(job)
            }
            Ok(Err(TransitionError::Final(_))) => None,
            Ok(Err(refused)) => {
                tracing::warn!(%refused, "job event refused");
                None
            }
            Err(error) => {
                tracing::error!(%error, "job store update failed; the job resumes at the next start");
                None
            }
        }
    }

    /// Runs the dispatched `job` on `target`. `None` when the dispatch
    /// cannot be made durable first.
    async fn attempt(&self, job: &JobRecord, target: &str, model: &str, request: InferRequest) -> Option<Outcome> {
        // A restarted owner collects the result from the node the disk says
        // ran the job; run here, the result would go down with this node.
        if target != self.me
            && let Err(error) = self.store.wait_durable().await
        {
            tracing::error!(job = %job.id, %error, "the job store cannot flush; the job resumes at the next start");
            return None;
        }
        // A run here reports its start through `started`; a remote node
        // tells this owner over the link (the forward endpoint records it).
        let (started, on_start) = tokio::sync::oneshot::channel();
        let run = self.routing.run_on(target, model, Some(&job.id), request, Some(started));
        let record_start = async {
            if on_start.await.is_ok() {
                self.record(&job.id, JobEvent::Started { node: target.to_string() });
            }
        };
        let (result, ()) = tokio::join!(run, record_start);
        Some(Outcome::Ran(result.map(|(node, response)| {
            let outputs = ForwardReply::Done { node: node.clone(), response }.encode();
            (node, outputs)
        })))
    }

    /// The result `from` holds for the attempt of `job` that the owner's
    /// restart cut off: the node that ran it and its reply bytes. `None`
    /// when it holds none or cannot be reached within [`HELD_RESULT_WAIT`].
    /// While the attempt still runs there, the owner waits for it (the
    /// node's own inference timeout bounds the wait).
    async fn held_result(&self, job: &JobRecord, from: &str) -> Option<(String, Vec<u8>)> {
        let mut deadline = self.clock.now() + HELD_RESULT_WAIT;
        loop {
            match self.routing.peers().held_result(from, &job.id).await {
                Ok(Held::Running) => {
                    deadline = self.clock.now() + HELD_RESULT_WAIT;
                    tokio::time::sleep(HELD_RESULT_POLL).await;
                }
                Ok(Held::Result(bytes)) => {
                    return match ForwardReply::decode(&bytes) {
                        ForwardReply::Done { node, .. } => {
                            tracing::info!(job = %job.id, node = %node, "collected a result held through the restart");
                            Some((node, bytes))
                        }
                        ForwardReply::Refused(_) => None,
                    };
                }
                Ok(Held::Nothing) => return None,
                Err(_) if self.clock.now() >= deadline => return None,
                Err(_) => {
                    let gone = self.view.borrow().member(from).is_some_and(|m| m.status == MemberStatus::Dead);
                    if gone {
                        return None;
                    }
                    tokio::time::sleep(HELD_RESULT_POLL).await;
                }
            }
        }
    }

    /// Tells `nodes`, which ran attempts of the completed `job`, to drop
    /// the results they hold, once the completion is on disk.
    async fn release(&self, job: &JobRecord, nodes: &[String]) {
        if let Err(error) = self.store.wait_durable().await {
            tracing::warn!(job = %job.id, %error, "completion not on disk; held results stay until retention");
            return;
        }
        for target in nodes {
            self.routing.peers().release_result(target, &job.id).await;
        }
    }
}
