//! The owner side of durable jobs: a job accepted here is stored (flushed,
//! with group commit) before it is acknowledged, then dispatched through the
//! routing service; every change goes through the job state machine
//! (`gpumesh_storage::jobs::state`). A restarted owner resumes every job
//! that was not final.
//!
//! - `step`: what the owner does next for a job (pure, table-tested).
//! - `payload`: what a job asks for, as stored (a tensor or a
//!   language-model request; pure).
//! - `dispatch`: the task that carries the steps out for one job.
//! - `home`: which member owns the job of an idempotency key (pure).
//! - `intake`: storing a new job here, for clients or for the node that
//!   sent its keyed submit to this node, the key's home.
//! - this module: [`JobService`], accepting, reading and resuming jobs.
//!
//! A job id is `<owner>.<generation>-<seq>` in hex: node names never contain
//! `.`, so any node can tell the owner from the id.

mod dispatch;
pub mod home;
mod intake;
pub mod payload;
pub mod step;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gpumesh_membership::ClusterView;
use gpumesh_storage::jobs::{DurableJobs, JobRecord, Retention, StateFilter};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::executor::{InferError, InferRequest, InferResponse};
use crate::forward::ForwardReply;
use crate::llm::LlmService;
use crate::llm::request::LlmRequest;
use crate::routing::service::RoutingService;
use intake::Intake;
use payload::Payload;

pub use intake::JobDoor;

pub use step::MAX_JOB_ATTEMPTS;

/// The node whose store holds `job_id`.
pub fn owner_of(job_id: &str) -> Option<&str> {
    job_id.split_once('.').map(|(owner, _)| owner).filter(|owner| !owner.is_empty())
}

/// The answer of a completed language-model job, as its JSON; `None` for a
/// tensor job.
pub fn llm_answer(job: &JobRecord) -> Option<serde_json::Value> {
    if !matches!(Payload::decode(&job.request), Payload::Llm(_)) {
        return None;
    }
    serde_json::from_slice(job.outputs.as_deref()?).ok()
}

/// The outputs of a completed job: the node that ran it and its response.
pub fn job_outputs(job: &JobRecord) -> Option<(String, InferResponse)> {
    match ForwardReply::decode(job.outputs.as_deref()?) {
        ForwardReply::Done { node, response } => Some((node, response)),
        ForwardReply::Refused(_) => None,
    }
}

fn storage_error(error: gpumesh_storage::Error) -> InferError {
    InferError::Unavailable(format!(
        "the job store failed: {error}; jobs already acknowledged are safe on disk: \
         free space in the data dir if it is full and restart this node, and meanwhile submit at another node"
    ))
}

/// What the job service works with.
pub(crate) struct JobArgs {
    /// This node's name.
    pub(crate) me: String,
    pub(crate) generation: u64,
    pub(crate) store: DurableJobs,
    pub(crate) retention: Retention,
    pub(crate) routing: Arc<RoutingService>,
    pub(crate) llm: Arc<LlmService>,
    pub(crate) view: watch::Receiver<Arc<ClusterView>>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Most jobs accepted here and not yet finished (`--max-active-jobs`).
    pub(crate) max_active: u64,
    /// Opened here, so the forward endpoint can hand keyed submits in.
    pub(crate) door: JobDoor,
}

/// The jobs this node owns.
pub struct JobService {
    owner: Arc<dispatch::Owner>,
    intake: Arc<Intake>,
    /// Drops finished jobs and stale held results; stops with the service.
    _pruner: tokio_util::task::AbortOnDropHandle<()>,
}

impl JobService {
    pub(crate) fn new(args: JobArgs) -> Self {
        let pruner = tokio::spawn(prune_periodically(args.store.clone(), args.retention, args.clock.clone()));
        let owner = Arc::new(dispatch::Owner {
            me: args.me,
            store: args.store,
            routing: args.routing,
            llm: args.llm,
            view: args.view,
            clock: args.clock,
            active: AtomicU64::new(0),
        });
        let intake = Arc::new(Intake::new(owner.clone(), args.max_active, args.generation));
        args.door.open(&intake);
        Self { owner, intake, _pruner: tokio_util::task::AbortOnDropHandle::new(pruner) }
    }

    /// Accepts a job: returns once it is on disk (a new job, or the one
    /// already stored under `idempotency_key`), and dispatches a new one.
    /// A model no node of the cluster lists is refused before anything is
    /// stored.
    pub async fn submit(
        &self,
        model: &str,
        request: InferRequest,
        idempotency_key: Option<String>,
    ) -> Result<JobRecord, InferError> {
        if !self.owner.routing.knows(model) {
            return Err(InferError::UnknownModel(model.to_string()));
        }
        self.accept(Payload::Tensor { model: model.to_string(), request }, idempotency_key).await
    }

    /// Accepts a language-model job, as [`Self::submit`] does a tensor one.
    pub async fn submit_llm(
        &self,
        request: LlmRequest,
        idempotency_key: Option<String>,
    ) -> Result<JobRecord, InferError> {
        if !self.owner.llm.knows(&request.model) {
            return Err(InferError::UnknownModel(request.model));
        }
        self.accept(Payload::Llm(request), idempotency_key).await
    }

    /// A job without a key is owned here; one with a key by the key's home
    /// (`home`), which this node asks to accept it. When the home cannot be
    /// asked the submit fails (503) rather than making a second job here:
    /// a retry reaches the home, and its key finds the job it may have
    /// stored meanwhile.
    async fn accept(&self, payload: Payload, idempotency_key: Option<String>) -> Result<JobRecord, InferError> {
        let Some(key) = idempotency_key else { return self.intake.accept(payload, None).await };
        let home = home::home(&key, &self.owner.view.borrow(), &self.owner.me);
        if home == self.owner.me {
            return self.intake.accept(payload, Some(key)).await;
        }
        tracing::debug!(key = %key, home = %home, "sending a keyed job to its home");
        self.owner.routing.peers().submit_job(&home, key, payload.encode()).await
    }

    /// Jobs accepted here and not yet finished.
    pub fn active(&self) -> u64 {
        self.owner.active.load(Ordering::Relaxed)
    }

    /// A job this node owns, as it is on disk: a reader never sees a state
    /// a crash could take back.
    pub async fn get(&self, id: &str) -> Result<Option<JobRecord>, InferError> {
        self.owner.store.wait_durable().await.map_err(storage_error)?;
        self.owner.store.store().get(id).map_err(storage_error)
    }

    /// Any job of the cluster: from this node's store when it owns it, else
    /// from its owner over the node link. `Ok(None)`: no such job, which
    /// includes an id naming a node that is no trusted member (a known
    /// owner that cannot be asked now is an error: the job may exist).
    pub async fn find(&self, id: &str) -> Result<Option<JobRecord>, InferError> {
        match owner_of(id) {
            Some(owner) if owner == self.owner.me => self.get(id).await,
            Some(owner) if self.owner.view.borrow().member(owner).is_some_and(|m| m.trusted) => {
                self.owner.routing.peers().job(owner, id).await
            }
            Some(_) | None => Ok(None),
        }
    }

    /// Jobs this node owns, oldest first.
    pub async fn list(&self, filter: StateFilter, limit: usize) -> Result<Vec<JobRecord>, InferError> {
        self.owner.store.wait_durable().await.map_err(storage_error)?;
        self.owner.store.store().list(filter, limit).map_err(storage_error)
    }

    /// The `limit` jobs this node created most recently, newest first.
    pub async fn recent(&self, limit: usize) -> Result<Vec<JobRecord>, InferError> {
        self.owner.store.wait_durable().await.map_err(storage_error)?;
        self.owner.store.store().recent(limit).map_err(storage_error)
    }

    /// Resumes every job that was not final when this node last stopped.
    pub fn resume(&self) -> Result<usize, InferError> {
        let pending = self.owner.store.store().recover().map_err(storage_error)?;
        let count = pending.len();
        self.owner.active.fetch_add(count as u64, Ordering::Relaxed);
        for job in pending {
            tokio::spawn(dispatch::run(self.owner.clone(), job));
        }
        if count > 0 {
            tracing::info!(jobs = count, "resuming jobs accepted before the restart");
        }
        Ok(count)
    }
}

/// How often retention runs: every minute, or more often for short limits.
fn prune_interval(retention: Retention) -> Duration {
    Duration::from_millis(retention.max_age_ms / 2).clamp(Duration::from_secs(1), Duration::from_secs(60))
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_owner_is_named_by_the_id() {
        assert_eq!(super::owner_of("n-1_b.18f3a-2a"), Some("n-1_b"));
        assert_eq!(super::owner_of("nodots"), None);
        assert_eq!(super::owner_of(".x"), None);
    }
}
