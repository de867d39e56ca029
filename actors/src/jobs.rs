//! The owner side of durable jobs: a job accepted here is stored (flushed,
//! with group commit) before it is acknowledged, then dispatched through the
//! router; every change goes through the job state machine. A restarted
//! owner resumes every job that was not final.
//!
//! A job id is `<owner>.<generation>-<seq>` in hex: node names never contain
//! `.`, so any node can tell the owner from the id.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gpumesh_storage::jobs::{DurableJobs, Inserted, JobEvent, JobRecord, Retention, StateFilter, TransitionError};

use crate::env::Clock;

use crate::executor::{InferError, InferRequest};
use crate::forward::{ForwardReply, ForwardRequest};
use crate::node::NodeHandle;
use crate::routing::policy::Requirements;
use gpumesh_membership::MemberStatus;

/// Dispatches of one job before it fails.
pub const MAX_JOB_ATTEMPTS: u32 = 3;
/// Wait before asking the router again when no node can take the job.
const NO_NODE_BACKOFF: Duration = Duration::from_millis(500);
/// How many times a job waits for a node before it fails.
const NO_NODE_WAITS: u32 = 20;
/// How long a restarted owner tries to reach the node a job was running on
/// for the result it holds, before running the job again elsewhere.
const HELD_RESULT_WAIT: Duration = Duration::from_secs(3);
const HELD_RESULT_POLL: Duration = Duration::from_millis(100);

/// The node whose store holds `job_id`.
pub fn owner_of(job_id: &str) -> Option<&str> {
    job_id.split_once('.').map(|(owner, _)| owner).filter(|owner| !owner.is_empty())
}

/// Jobs owned by this node.
pub struct JobService {
    pub(crate) store: DurableJobs,
    prefix: String,
    next_seq: AtomicU64,
    /// Drops finished jobs and stale held results; stops with the service.
    _pruner: tokio_util::task::AbortOnDropHandle<()>,
}

/// How often retention runs: every minute, or more often for short limits.
fn prune_interval(retention: Retention) -> Duration {
    Duration::from_millis(retention.max_age_ms / 2).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

impl JobService {
    pub(crate) fn new(
        store: DurableJobs,
        owner: &str,
        generation: u64,
        retention: Retention,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let pruner = tokio::spawn(prune_periodically(store.clone(), retention, clock));
        Self {
            store,
            prefix: format!("{owner}.{generation:x}-"),
            next_seq: AtomicU64::new(1),
            _pruner: tokio_util::task::AbortOnDropHandle::new(pruner),
        }
    }

    fn new_id(&self) -> String {
        format!("{}{:x}", self.prefix, self.next_seq.fetch_add(1, Ordering::Relaxed))
    }
}

async fn prune_periodically(jobs: DurableJobs, retention: Retention, clock: Arc<dyn Clock>) {
    let mut ticks = tokio::time::interval(prune_interval(retention));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match jobs.prune(clock.unix_ms(), retention).await {
            Ok(0) => {}
            Ok(dropped) => tracing::info!(dropped, "retention dropped old finished jobs and held results"),
            Err(error) => tracing::warn!(%error, "retention failed; it runs again later"),
        }
    }
}

/// The request stored with a job, and the model it is for.
fn decode_request(job: &JobRecord) -> Option<(String, InferRequest)> {
    match ForwardRequest::decode(&job.request) {
        ForwardRequest::Valid { model, request, .. } => Some((model, request)),
        ForwardRequest::Invalid(_) => None,
    }
}

/// The outputs of a completed job: the node that ran it and its response.
pub fn job_outputs(job: &JobRecord) -> Option<(String, crate::executor::InferResponse)> {
    match ForwardReply::decode(job.outputs.as_deref()?) {
        ForwardReply::Done { node, response } => Some((node, response)),
        ForwardReply::Refused(_) => None,
    }
}

fn storage_error(error: gpumesh_storage::Error) -> InferError {
    InferError::Unavailable(format!("the job store failed: {error}"))
}

impl NodeHandle {
    /// Accepts a job: returns once it is on disk (a new job, or the one
    /// already stored under `idempotency_key`), and dispatches a new one.
    /// A model no node of the cluster lists is refused before anything is
    /// stored.
    pub async fn submit_job(
        self: &Arc<Self>,
        model: &str,
        request: InferRequest,
        idempotency_key: Option<String>,
    ) -> Result<JobRecord, InferError> {
        if self.model(model).is_none() && !crate::routing::candidates::known_anywhere(&self.view(), model) {
            return Err(InferError::UnknownModel(model.to_string()));
        }
        let jobs = &self.jobs;
        let payload =
            ForwardRequest::Valid { model: model.to_string(), route: Vec::new(), job: None, request }.encode();
        let job = JobRecord::accepted(jobs.new_id(), model.to_string(), payload, idempotency_key, self.clock.unix_ms());
        match jobs.store.submit(job).await.map_err(storage_error)? {
            Inserted::New(job) => {
                tokio::spawn(dispatch(self.clone(), job.clone()));
                Ok(job)
            }
            Inserted::Existing(job) => Ok(job),
        }
    }

    /// A job this node owns, as it is on disk: a reader never sees a state
    /// a crash could take back.
    pub async fn job(&self, id: &str) -> Result<Option<JobRecord>, InferError> {
        self.jobs.store.wait_durable().await.map_err(storage_error)?;
        self.jobs.store.store().get(id).map_err(storage_error)
    }

    /// Any job of the cluster: from this node's store when it owns it, else
    /// from its owner over the node link. `Ok(None)`: no such job, which
    /// includes an id naming a node that is no trusted member (a known
    /// owner that cannot be asked now is an error: the job may exist).
    pub async fn find_job(&self, id: &str) -> Result<Option<JobRecord>, InferError> {
        match owner_of(id) {
            Some(owner) if owner == self.name().as_str() => self.job(id).await,
            Some(owner) if self.view().members.iter().any(|m| m.trusted && m.name == owner) => {
                self.router.remote_job(owner, id).await
            }
            Some(_) | None => Ok(None),
        }
    }

    /// Jobs this node owns, oldest first.
    pub async fn jobs(&self, filter: StateFilter, limit: usize) -> Result<Vec<JobRecord>, InferError> {
        self.jobs.store.wait_durable().await.map_err(storage_error)?;
        self.jobs.store.store().list(filter, limit).map_err(storage_error)
    }

    /// The `limit` jobs this node created most recently, newest first.
    pub async fn recent_jobs(&self, limit: usize) -> Result<Vec<JobRecord>, InferError> {
        self.jobs.store.wait_durable().await.map_err(storage_error)?;
        self.jobs.store.store().recent(limit).map_err(storage_error)
    }

    /// Resumes every job that was not final when this node last stopped.
    pub fn resume_jobs(self: &Arc<Self>) -> Result<usize, InferError> {
        let pending = self.jobs.store.store().recover().map_err(storage_error)?;
        let count = pending.len();
        for job in pending {
            tokio::spawn(dispatch(self.clone(), job));
        }
        if count > 0 {
            tracing::info!(jobs = count, "resuming jobs accepted before the restart");
        }
        Ok(count)
    }

    /// Records `event` (durable at the next flush; readers wait for it).
    fn apply_job(&self, id: &str, event: JobEvent) -> Option<JobRecord> {
        match self.jobs.store.record(id, event, self.clock.unix_ms(), MAX_JOB_ATTEMPTS) {
            Ok(Ok(job)) => Some(job),
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

    /// The completion of a job whose owner restarted while `job.node` ran
    /// it: that node keeps the result until the owner has it. `None` when
    /// it holds none or cannot be reached within [`HELD_RESULT_WAIT`].
    async fn held_completion(&self, job: &JobRecord) -> Option<JobEvent> {
        let target = job.node.as_deref().filter(|target| *target != self.name().as_str())?;
        let deadline = self.clock.now() + HELD_RESULT_WAIT;
        loop {
            match self.router.held_result(target, &job.id).await {
                Ok(Some(bytes)) => {
                    return match ForwardReply::decode(&bytes) {
                        ForwardReply::Done { node, .. } => {
                            tracing::info!(job = %job.id, node = %node, "collected a result held through the restart");
                            Some(JobEvent::Completed { node, outputs: bytes })
                        }
                        ForwardReply::Refused(_) => None,
                    };
                }
                Ok(None) => return None,
                Err(_) if self.clock.now() >= deadline => return None,
                Err(_) => {
                    let gone = self.view().member(target).is_some_and(|m| m.status == MemberStatus::Dead);
                    if gone {
                        return None;
                    }
                    tokio::time::sleep(HELD_RESULT_POLL).await;
                }
            }
        }
    }

    /// Every other node that ran an attempt of `job` may hold its result:
    /// once the completion is on disk, they can drop it.
    async fn release_results(&self, job: &JobRecord) {
        let mut nodes: Vec<&str> = job
            .history
            .iter()
            .filter_map(|step| step.node.as_deref())
            .filter(|target| *target != self.name().as_str())
            .collect();
        if nodes.is_empty() {
            return;
        }
        if let Err(error) = self.jobs.store.wait_durable().await {
            tracing::warn!(job = %job.id, %error, "completion not on disk; held results stay until retention");
            return;
        }
        nodes.sort_unstable();
        nodes.dedup();
        for target in nodes {
            self.router.release_result(target, &job.id).await;
        }
    }
}

/// Runs a job to a final state: choose a node, record the dispatch, run it
/// there, record the outcome; a lost or failed attempt goes to the next.
async fn dispatch(node: Arc<NodeHandle>, job: JobRecord) {
    let Some((model, request)) = decode_request(&job) else {
        let failed = JobEvent::Failed { reason: "the stored request is unreadable".into(), retryable: false };
        node.apply_job(&job.id, failed);
        return;
    };
    let requirements = Requirements { priority: request.priority, ..Requirements::default() };
    let mut job = job;
    if job.state != gpumesh_storage::jobs::JobState::Accepted {
        // The owner stopped during this attempt: the node running it keeps
        // the result; without one, the attempt is lost.
        if let Some(completed) = node.held_completion(&job).await {
            if let Some(done) = node.apply_job(&job.id, completed) {
                node.release_results(&done).await;
            }
            return;
        }
        let lost =
            JobEvent::Failed { reason: format!("owner restarted during attempt {}", job.attempts), retryable: true };
        let Some(next) = node.apply_job(&job.id, lost) else { return };
        job = next;
    }
    let mut waits = 0;
    let mut last_error = None;
    while !job.state.is_final() {
        // Nodes that already ran an attempt of this job are tried last.
        let tried: Vec<String> = job.history.iter().filter_map(|step| step.node.clone()).collect();
        let target = match node.choose(&model, &requirements, job.attempts as usize + 1, last_error.as_ref(), &tried) {
            Ok(target) => target,
            Err(error @ InferError::BadRequest(_)) => {
                node.apply_job(&job.id, JobEvent::Failed { reason: error.to_string(), retryable: false });
                return;
            }
            // Right after a start, gossip may not show the model's nodes
            // yet: an unknown model waits like an unavailable one.
            Err(error) if waits < NO_NODE_WAITS => {
                waits += 1;
                last_error = Some(error);
                tokio::time::sleep(NO_NODE_BACKOFF).await;
                continue;
            }
            Err(error) => {
                node.apply_job(&job.id, JobEvent::Failed { reason: error.to_string(), retryable: false });
                return;
            }
        };
        let Some(dispatched) = node.apply_job(&job.id, JobEvent::Dispatched { node: target.clone() }) else {
            return;
        };
        job = dispatched;
        // A restarted owner collects the result from the node the disk says
        // ran the job; run here, the result would go down with this node.
        if target != node.name().as_str()
            && let Err(error) = node.jobs.store.wait_durable().await
        {
            tracing::error!(job = %job.id, %error, "the job store cannot flush; the job resumes at the next start");
            return;
        }
        let event = match node.run_on(&target, &model, Some(&job.id), request.clone()).await {
            Ok((executed_on, response)) => {
                let outputs = ForwardReply::Done { node: executed_on.clone(), response }.encode();
                JobEvent::Completed { node: executed_on, outputs }
            }
            Err(InferError::BadRequest(reason)) => JobEvent::Failed { reason, retryable: false },
            Err(error) => {
                last_error = Some(error.clone());
                JobEvent::Failed { reason: error.to_string(), retryable: true }
            }
        };
        let Some(next) = node.apply_job(&job.id, event) else { return };
        job = next;
    }
    if job.state == gpumesh_storage::jobs::JobState::Completed {
        node.release_results(&job).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_owner_is_named_by_the_id() {
        assert_eq!(super::owner_of("n-1_b.18f3a-2a"), Some("n-1_b"));
        assert_eq!(super::owner_of("nodots"), None);
        assert_eq!(super::owner_of(".x"), None);
    }
}
