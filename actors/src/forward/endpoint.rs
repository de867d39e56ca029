//! The forward actor: this node's endpoint for calls from its peers. It
//! runs forwarded requests (keeping a job's result until its owner has it,
//! and telling the owner when the job starts running), and answers for the
//! models and jobs of this node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use gpumesh_storage::jobs::JobEvent;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::clock::Clock;
use crate::executor::{InferError, ServedModel, infer};
use crate::forward::client::PeerClient;
use crate::forward::messages::{ForwardMsg, group_of};
use crate::forward::wire::{ForwardReply, ForwardRequest, STILL_RUNNING};
use crate::job_owner::{JobDoor, MAX_JOB_ATTEMPTS, owner_of};
use crate::llm::relay::Relay;

/// This node's endpoint for forwarded requests.
pub(crate) struct ForwardActor;

/// What the forward actor needs; kept by the supervisor for restarts.
#[derive(Clone)]
pub(crate) struct ForwardArgs {
    pub(crate) node: String,
    pub(crate) models: Arc<Vec<Arc<ServedModel>>>,
    pub(crate) infer_timeout: Duration,
    pub(crate) jobs: gpumesh_storage::jobs::DurableJobs,
    pub(crate) clock: Arc<dyn Clock>,
    /// Tells owners that their jobs started running here.
    pub(crate) peers: PeerClient,
    /// Language-model streams this node serves or reads.
    pub(crate) relay: Arc<Relay>,
    /// The job service, for keyed submits whose home is this node.
    pub(crate) jobs_door: JobDoor,
    /// Jobs whose attempt runs or waits here now.
    pub(crate) running: Arc<Running>,
}

/// The ids of the jobs whose attempt runs or waits here, so that an owner
/// back from a restart waits for their results instead of running them
/// again; with how many attempts of each (an owner may send a job again
/// while an earlier attempt still runs here: the id stays until both end).
#[derive(Debug, Default)]
pub(crate) struct Running(Mutex<HashMap<String, usize>>);

impl Running {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn contains(&self, job: &str) -> bool {
        self.lock().contains_key(job)
    }

    /// Marks `job` as running here until the returned guard drops.
    fn enter<'a>(&'a self, job: &str) -> RunningGuard<'a> {
        *self.lock().entry(job.to_string()).or_default() += 1;
        RunningGuard { running: self, job: job.to_string() }
    }
}

struct RunningGuard<'a> {
    running: &'a Running,
    job: String,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        let mut running = self.running.lock();
        if let Some(count) = running.get_mut(&self.job) {
            *count -= 1;
            if *count == 0 {
                running.remove(&self.job);
            }
        }
    }
}

impl Actor for ForwardActor {
    type Msg = ForwardMsg;
    type State = ForwardArgs;
    type Arguments = ForwardArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(group_of(&args.node), vec![myself.get_cell()]);
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ForwardMsg::Metadata(model, reply) => {
                let doc = state.models.iter().find(|m| m.spec.name == model).map(|m| m.metadata_doc(&state.node));
                let _ = reply.send(doc.and_then(|doc| serde_json::to_string(&doc).ok()).unwrap_or_default());
            }
            ForwardMsg::Statistics(model, reply) => {
                let docs: Vec<_> = state
                    .models
                    .iter()
                    .filter(|m| model.is_empty() || m.spec.name == model)
                    .map(|m| m.statistics_doc())
                    .collect();
                let _ = reply.send(serde_json::to_string(&docs).unwrap_or_default());
            }
            ForwardMsg::JobStatus(id, reply) => {
                let jobs = state.jobs.clone();
                // Only what is on disk is shown, so no reader sees a state a
                // crash could take back.
                tokio::spawn(async move {
                    let job = match jobs.wait_durable().await {
                        Ok(()) => jobs.store().get(&id).ok().flatten(),
                        Err(_) => None,
                    };
                    let _ = reply.send(job.and_then(|job| serde_json::to_string(&job).ok()).unwrap_or_default());
                });
            }
            ForwardMsg::HeldResult(id, reply) => {
                let held = state.jobs.store().held_result(&id).ok().flatten();
                let answer = match held {
                    Some(bytes) => bytes,
                    None if state.running.contains(&id) => STILL_RUNNING.to_vec(),
                    None => Vec::new(),
                };
                let _ = reply.send(answer);
            }
            ForwardMsg::ReleaseResult(id) => {
                if let Err(error) = state.jobs.store().release_result(&id) {
                    tracing::warn!(job = %id, %error, "could not drop a held result; retention drops it later");
                }
            }
            ForwardMsg::LlmOpen(open, reply) => {
                let _ = reply.send(state.relay.serve(&open));
            }
            ForwardMsg::LlmFrame(frame) => state.relay.frame(&frame),
            ForwardMsg::SubmitJob(submit, reply) => {
                let door = state.jobs_door.clone();
                // Storing waits for a flush: not on the endpoint's turn.
                tokio::spawn(async move {
                    let _ = reply.send(door.take(&submit).await);
                });
            }
            ForwardMsg::JobStarted(id, node) => {
                // Late or stale news (the attempt already ended, or another
                // one runs) is refused by the state machine, as it should be.
                let started = JobEvent::Started { node };
                match state.jobs.record(&id, started, state.clock.unix_ms(), MAX_JOB_ATTEMPTS) {
                    Ok(Ok(_)) => {}
                    Ok(Err(refused)) => tracing::debug!(job = %id, %refused, "start of a job not recorded"),
                    Err(error) => tracing::warn!(job = %id, %error, "recording the start of a job failed"),
                }
            }
            ForwardMsg::Infer(request, reply) => {
                let args = state.clone();
                // Each forwarded request waits for its result on its own task
                // so the endpoint keeps taking requests meanwhile.
                tokio::spawn(async move {
                    let _ = reply.send(serve(&args, request).await);
                });
            }
        }
        Ok(())
    }
}

async fn serve(args: &ForwardArgs, request: ForwardRequest) -> ForwardReply {
    let (model, route, job, request) = match request {
        ForwardRequest::Valid { model, route, job, request } => (model, route, job, request),
        ForwardRequest::Invalid(reason) => {
            tracing::warn!(%reason, "refused a malformed forwarded request");
            return ForwardReply::Refused(InferError::BadRequest(format!("malformed forwarded request: {reason}")));
        }
    };
    let Some(served) = args.models.iter().find(|m| m.spec.name == model) else {
        return ForwardReply::Refused(InferError::Unavailable(format!("model {model} is not loaded on {}", args.node)));
    };
    tracing::debug!(model = %model, from = ?route.last(), job = ?job, "serving a forwarded request");
    let Some(job) = job else {
        return match infer(served, request, args.infer_timeout, None).await {
            Ok(response) => ForwardReply::Done { node: args.node.clone(), response },
            Err(error) => ForwardReply::Refused(error),
        };
    };
    // A job sent here again (its owner lost the reply) gets the result
    // already computed.
    if let Ok(Some(held)) = args.jobs.store().held_result(&job) {
        return ForwardReply::decode(&held);
    }
    // Until its result is held (or the attempt failed), a restarted owner
    // asking for it hears that it still runs here.
    let _running = args.running.enter(&job);
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let tell_owner = async {
        if started_rx.await.is_ok()
            && let Some(owner) = owner_of(&job)
        {
            args.peers.job_started(owner, &job, &args.node).await;
        }
    };
    let (result, ()) = tokio::join!(infer(served, request, args.infer_timeout, Some(started_tx)), tell_owner);
    let response = match result {
        Ok(response) => response,
        Err(error) => return ForwardReply::Refused(error),
    };
    let reply = ForwardReply::Done { node: args.node.clone(), response };
    if let Err(error) = args.jobs.hold_result(&job, args.clock.unix_ms(), &reply.encode()).await {
        tracing::warn!(job = %job, %error, "could not keep a job result until its owner has it");
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::Running;

    #[test]
    fn a_job_runs_here_until_its_last_attempt_here_ends() {
        let running = Running::default();
        let first = running.enter("j");
        let second = running.enter("j");
        drop(first);
        assert!(running.contains("j"), "the second attempt still runs");
        drop(second);
        assert!(!running.contains("j"));
        drop(running.enter("k"));
        assert!(running.lock().is_empty(), "nothing left behind");
    }
}
