//! The executor actor: queues a model's requests, forms batches and runs
//! one batch at a time, so requests that arrive while a batch runs join the
//! next one.

use std::sync::{Arc, PoisonError};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::time::Instant;

use crate::env::Clock;
use crate::executor::batch::{BatchPolicy, BatchQueue, QueueFull};
use crate::executor::validate::{batch_key, join_inputs, split_outputs, validate_request};
use crate::executor::{InferError, InferRequest, InferResponse, ServedModel};

/// Serves one model.
pub(crate) struct ExecutorActor;

/// What the executor needs; kept by the supervisor for restarts.
#[derive(Clone)]
pub(crate) struct ExecutorArgs {
    pub(crate) model: Arc<ServedModel>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Join requests along axis 0 (the spec allows it and the model's inputs do).
    pub(crate) batching: bool,
}

/// The reply to one inference request.
pub(crate) type InferReply = RpcReplyPort<Result<InferResponse, InferError>>;

/// Messages of the executor actor.
pub(crate) enum ExecutorMsg {
    Infer(InferRequest, InferReply),
    /// The oldest queued request has waited long enough.
    Wake,
    /// The running batch has finished.
    BatchDone,
}

impl ractor::Message for ExecutorMsg {}

struct Job {
    request: InferRequest,
    rows: usize,
    reply: InferReply,
}

/// Mutable state, built in `pre_start`.
pub(crate) struct ExecutorState {
    args: ExecutorArgs,
    queue: BatchQueue<Job>,
    busy: bool,
    wake_at: Option<Instant>,
}

impl Actor for ExecutorActor {
    type Msg = ExecutorMsg;
    type State = ExecutorState;
    type Arguments = ExecutorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let policy = if args.batching {
            args.model.spec.batch
        } else {
            BatchPolicy { max_batch_size: 1, ..args.model.spec.batch }
        };
        *args.model.executor.write().unwrap_or_else(PoisonError::into_inner) = Some(myself);
        Ok(ExecutorState { args, queue: BatchQueue::new(policy), busy: false, wake_at: None })
    }

    async fn post_stop(&self, myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        let mut slot = state.args.model.executor.write().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(|current| current.get_id() == myself.get_id()) {
            *slot = None;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ExecutorMsg::Infer(request, reply) => enqueue(state, request, reply),
            ExecutorMsg::Wake => state.wake_at = None,
            ExecutorMsg::BatchDone => {
                state.busy = false;
                state.args.model.stats.set_inflight(0);
            }
        }
        dispatch(&myself, state);
        Ok(())
    }
}

fn enqueue(state: &mut ExecutorState, mut request: InferRequest, reply: InferReply) {
    let model = &state.args.model;
    let synthetic = model.metadata.platform == "synthetic";
    let rows = match validate_request(&model.spec, &model.metadata, synthetic, state.args.batching, &mut request) {
        Ok(rows) => rows,
        Err(error) => {
            let _ = reply.send(Err(error));
            return;
        }
    };
    let priority = request.priority;
    let now = state.args.clock.now();
    if let Err(QueueFull(job)) = state.queue.push(Job { request, rows, reply }, rows, priority, now) {
        let retry_after_ms = (model.stats.service_ms_per_item() * state.queue.len() as f64).ceil().max(1.0) as u64;
        let _ = job.reply.send(Err(InferError::QueueFull {
            model: model.spec.name.clone(),
            queued: state.queue.len(),
            retry_after_ms,
        }));
    }
    model.stats.set_queue_depth(state.queue.len());
}

fn dispatch(myself: &ActorRef<ExecutorMsg>, state: &mut ExecutorState) {
    if state.busy {
        return;
    }
    let now = state.args.clock.now();
    if let Some(batch) = state.queue.pop_ready(now) {
        state.busy = true;
        let model = state.args.model.clone();
        model.stats.set_queue_depth(state.queue.len());
        model.stats.set_inflight(batch.len());
        let myself = myself.clone();
        tokio::spawn(async move {
            run_batch(&model, batch).await;
            let _ = myself.cast(ExecutorMsg::BatchDone);
        });
    } else if let Some(deadline) = state.queue.next_deadline()
        && state.wake_at.is_none_or(|wake| deadline < wake)
    {
        state.wake_at = Some(deadline);
        myself.send_after(deadline.saturating_duration_since(now), || ExecutorMsg::Wake);
    }
}

/// Runs a batch: requests whose shapes can be joined run together, others
/// in their own group; every request gets its reply.
async fn run_batch(model: &ServedModel, batch: Vec<(Job, std::time::Duration)>) {
    let requests = batch.len();
    let mut groups: Vec<(Vec<_>, Vec<(Job, std::time::Duration)>)> = Vec::new();
    for (job, queued) in batch {
        let key = batch_key(&job.request.inputs);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, jobs)) => jobs.push((job, queued)),
            None => groups.push((key, vec![(job, queued)])),
        }
    }
    for (_, mut jobs) in groups {
        let rows: Vec<usize> = jobs.iter().map(|(job, _)| job.rows).collect();
        let inputs = if jobs.len() == 1 {
            Ok(std::mem::take(&mut jobs[0].0.request.inputs))
        } else {
            let parts: Vec<&[crate::tensor::Tensor]> =
                jobs.iter().map(|(job, _)| job.request.inputs.as_slice()).collect();
            join_inputs(&parts)
        };
        let result = match inputs {
            Ok(inputs) => model.runner.run(inputs).await,
            Err(error) => Err(error),
        };
        let split = result.and_then(|(outputs, compute)| {
            let per_request = if jobs.len() == 1 { vec![outputs] } else { split_outputs(&outputs, &rows)? };
            Ok((per_request, compute))
        });
        match split {
            Ok((per_request, compute)) => {
                model.stats.record_batch(jobs.len(), rows.iter().sum(), compute);
                model.stats.record_latencies(jobs.iter().map(|(_, queued)| *queued + compute));
                for ((job, queued), mut outputs) in jobs.into_iter().zip(per_request) {
                    if !job.request.outputs.is_empty() {
                        outputs.retain(|output| job.request.outputs.contains(&output.name));
                    }
                    let _ = job.reply.send(Ok(InferResponse {
                        outputs,
                        device: model.device.clone(),
                        queue_time: queued,
                        compute_time: compute,
                        batch_size: requests,
                    }));
                }
            }
            Err(error) => {
                tracing::warn!(model = %model.spec.name, %error, "batch failed");
                for (job, _) in jobs {
                    let _ = job.reply.send(Err(error.clone()));
                }
            }
        }
    }
}
