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

use gpumesh_storage::jobs::{DurableJobs, Inserted, JobEvent, JobRecord, JobStore, StateFilter, TransitionError};

use crate::executor::{InferError, InferRequest};
use crate::forward::{ForwardReply, ForwardRequest};
use crate::node::NodeHandle;
use crate::routing::policy::Requirements;

/// Dispatches of one job before it fails.
pub const MAX_JOB_ATTEMPTS: u32 = 3;
/// Wait before asking the router again when no node can take the job.
const NO_NODE_BACKOFF: Duration = Duration::from_millis(500);
/// How many times a job waits for a node before it fails.
const NO_NODE_WAITS: u32 = 20;

/// The node whose store holds `job_id`.
pub fn owner_of(job_id: &str) -> Option<&str> {
    job_id.split_once('.').map(|(owner, _)| owner).filter(|owner| !owner.is_empty())
}

/// Jobs owned by this node.
pub struct JobService {
    pub(crate) store: DurableJobs,
    prefix: String,
    next_seq: AtomicU64,
}

impl JobService {
    pub(crate) fn new(store: DurableJobs, owner: &str, generation: u64) -> Self {
        Self { store, prefix: format!("{owner}.{generation:x}-"), next_seq: AtomicU64::new(1) }
    }

    fn new_id(&self) -> String {
        format!("{}{:x}", self.prefix, self.next_seq.fetch_add(1, Ordering::Relaxed))
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
        let payload = ForwardRequest::Valid { model: model.to_string(), route: Vec::new(), request }.encode();
        let job = JobRecord::accepted(jobs.new_id(), model.to_string(), payload, idempotency_key, self.clock.unix_ms());
        match jobs.store.submit(job).await.map_err(storage_error)? {
            Inserted::New(job) => {
                tokio::spawn(dispatch(self.clone(), job.clone()));
                Ok(job)
            }
            Inserted::Existing(job) => Ok(job),
        }
    }

    /// A job this node owns.
    pub fn job(&self, id: &str) -> Result<Option<JobRecord>, InferError> {
        self.jobs.store.store().get(id).map_err(storage_error)
    }

    /// Any job of the cluster: from this node's store when it owns it, else
    /// from its owner over the node link. `Ok(None)`: no such job.
    pub async fn find_job(&self, id: &str) -> Result<Option<JobRecord>, InferError> {
        match owner_of(id) {
            Some(owner) if owner == self.name().as_str() => self.job(id),
            Some(owner) => self.router.remote_job(owner, id).await,
            None => Ok(None),
        }
    }

    /// Jobs this node owns, oldest first.
    pub fn jobs(&self, filter: StateFilter, limit: usize) -> Result<Vec<JobRecord>, InferError> {
        self.jobs.store.store().list(filter, limit).map_err(storage_error)
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

    async fn apply_job(&self, id: &str, event: JobEvent) -> Option<JobRecord> {
        let store = self.jobs.store.store().clone();
        let (id, now) = (id.to_string(), self.clock.unix_ms());
        let outcome = tokio::task::spawn_blocking(move || store.update(&id, event, now, MAX_JOB_ATTEMPTS)).await;
        match outcome {
            Ok(Ok(Ok(job))) => Some(job),
            Ok(Ok(Err(TransitionError::Final(_)))) => None,
            Ok(Ok(Err(refused))) => {
                tracing::warn!(%refused, "job event refused");
                None
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "job store update failed; the job resumes at the next start");
                None
            }
            Err(error) => {
                tracing::error!(%error, "job store task failed");
                None
            }
        }
    }
}

/// Runs a job to a final state: choose a node, record the dispatch, run it
/// there, record the outcome; a lost or failed attempt goes to the next.
async fn dispatch(node: Arc<NodeHandle>, job: JobRecord) {
    let Some((model, request)) = decode_request(&job) else {
        let failed = JobEvent::Failed { reason: "the stored request is unreadable".into(), retryable: false };
        node.apply_job(&job.id, failed).await;
        return;
    };
    let requirements = Requirements { priority: request.priority, ..Requirements::default() };
    let mut job = job;
    if job.state != gpumesh_storage::jobs::JobState::Accepted {
        // The owner stopped during this attempt: its result never arrived.
        let lost =
            JobEvent::Failed { reason: format!("owner restarted during attempt {}", job.attempts), retryable: true };
        let Some(next) = node.apply_job(&job.id, lost).await else { return };
        job = next;
    }
    let mut waits = 0;
    let mut last_error = None;
    while !job.state.is_final() {
        let target = match node.choose(&model, &requirements, job.attempts as usize + 1, last_error.as_ref()) {
            Ok(target) => target,
            Err(error @ InferError::BadRequest(_)) => {
                node.apply_job(&job.id, JobEvent::Failed { reason: error.to_string(), retryable: false }).await;
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
                node.apply_job(&job.id, JobEvent::Failed { reason: error.to_string(), retryable: false }).await;
                return;
            }
        };
        let Some(dispatched) = node.apply_job(&job.id, JobEvent::Dispatched { node: target.clone() }).await else {
            return;
        };
        job = dispatched;
        let event = match node.run_on(&target, &model, request.clone()).await {
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
        let Some(next) = node.apply_job(&job.id, event).await else { return };
        job = next;
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
