//! The executor actor: queues a model's requests, forms batches and runs
//! one batch at a time, so requests that arrive while a batch runs join the
//! next one.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures_util::FutureExt as _;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::executor::batch::{BatchPolicy, BatchQueue, QueueFull, group_by_key};
use crate::executor::validate::{batch_key, join_inputs, split_outputs, validate_request};
use crate::executor::{InferError, InferRequest, InferResponse, ServedModel, Started};
use crate::tensor::Tensor;

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
    /// Run a request; the sender fires when its batch starts.
    Infer(InferRequest, Option<Started>, InferReply),
    /// The oldest queued request has waited long enough.
    Wake,
    /// The running batch has finished.
    BatchDone,
}

impl ractor::Message for ExecutorMsg {}

struct Job {
    request: InferRequest,
    rows: usize,
    started: Option<Started>,
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
            ExecutorMsg::Infer(request, started, reply) => enqueue(state, request, started, reply),
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

fn enqueue(state: &mut ExecutorState, mut request: InferRequest, started: Option<Started>, reply: InferReply) {
    let model = &state.args.model;
    let synthetic = model.spec.kind.is_synthetic();
    let rows = match validate_request(&model.spec, &model.metadata, synthetic, state.args.batching, &mut request) {
        Ok(rows) => rows,
        Err(error) => {
            model.stats.counters.record_failures(1, Duration::ZERO);
            let _ = reply.send(Err(error));
            return;
        }
    };
    let priority = request.priority;
    let now = state.args.clock.now();
    if let Err(QueueFull(job)) = state.queue.push(Job { request, rows, started, reply }, rows, priority, now) {
        let retry_after_ms = (model.stats.service_ms_per_item() * state.queue.len() as f64).ceil().max(1.0) as u64;
        model.stats.counters.record_failures(1, Duration::ZERO);
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
        let (model, clock) = (state.args.model.clone(), state.args.clock.clone());
        model.stats.set_queue_depth(state.queue.len());
        model.stats.set_inflight(batch.len());
        let myself = myself.clone();
        tokio::spawn(async move {
            run_batch(&model, &clock, batch).await;
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
/// in their own group; every request gets its reply. A panic while running
/// it (a bug, or a library's) fails the requests still unanswered with an
/// error of their own and is counted; the executor goes on with the next
/// batch, so one bad batch cannot leave the model busy forever.
async fn run_batch(model: &ServedModel, clock: &Arc<dyn Clock>, batch: Vec<(Job, Duration)>) {
    let requests = batch.len();
    let mut replies = Vec::with_capacity(requests);
    let mut work = Vec::with_capacity(requests);
    for (index, (job, queued)) in batch.into_iter().enumerate() {
        if let Some(started) = job.started {
            let _ = started.send(());
        }
        replies.push(Some(job.reply));
        work.push(Work { index, request: job.request, rows: job.rows, queued });
    }
    let groups = group_by_key(work, |work| batch_key(&work.request.inputs));
    let ran = AssertUnwindSafe(async {
        for group in groups {
            run_group(model, clock, group, requests, &mut replies).await;
        }
    })
    .catch_unwind()
    .await;
    if ran.is_err() {
        model.stats.record_panic();
        tracing::error!(model = %model.spec.name, panics = model.stats.panics(), "a batch panicked; its requests failed");
        let error = format!("model {} panicked while running this batch; retry, or report it", model.spec.name);
        let unanswered = replies.iter().flatten().count();
        model.stats.counters.record_failures(unanswered, Duration::ZERO);
        for reply in replies.into_iter().flatten() {
            let _ = reply.send(Err(InferError::Failed(error.clone())));
        }
    }
}

/// One request of a batch, its place in the batch and its queue time.
struct Work {
    index: usize,
    request: InferRequest,
    rows: usize,
    queued: Duration,
}

/// Runs requests whose inputs join along axis 0 as one run; answers each
/// (taking its reply out of `replies`). `requests`: the whole batch's.
async fn run_group(
    model: &ServedModel,
    clock: &Arc<dyn Clock>,
    mut group: Vec<Work>,
    requests: usize,
    replies: &mut [Option<InferReply>],
) {
    let rows: Vec<usize> = group.iter().map(|work| work.rows).collect();
    let inputs = if group.len() == 1 {
        Ok(std::mem::take(&mut group[0].request.inputs))
    } else {
        let parts: Vec<&[Tensor]> = group.iter().map(|work| work.request.inputs.as_slice()).collect();
        join_inputs(&parts)
    };
    let result = match inputs {
        Ok(inputs) => model.runner.run(inputs, clock).await,
        Err(error) => Err(error),
    };
    let split = result.and_then(|(outputs, compute)| {
        let per_request = if group.len() == 1 { vec![outputs] } else { split_outputs(&outputs, &rows)? };
        Ok((per_request, compute))
    });
    let (per_request, compute) = match split {
        Ok(split) => split,
        Err(error) => {
            tracing::warn!(model = %model.spec.name, %error, "batch failed");
            model.stats.counters.record_failures(group.len(), group.iter().map(|work| work.queued).sum());
            for work in group {
                if let Some(reply) = replies[work.index].take() {
                    let _ = reply.send(Err(error.clone()));
                }
            }
            return;
        }
    };
    model.stats.record_batch(group.len(), rows.iter().sum(), compute);
    model.stats.record_latencies(group.iter().map(|work| work.queued + compute));
    let waited = group.iter().map(|work| work.queued).sum();
    model.stats.counters.record_run(rows.iter().sum(), group.len(), waited, compute, clock.unix_ms());
    for (work, mut outputs) in group.into_iter().zip(per_request) {
        if !work.request.outputs.is_empty() {
            outputs.retain(|output| work.request.outputs.contains(&output.name));
        }
        let response = InferResponse {
            outputs,
            device: model.device.clone(),
            queue_time: work.queued,
            compute_time: compute,
            batch_size: requests,
        };
        if let Some(reply) = replies[work.index].take() {
            let _ = reply.send(Ok(response));
        }
    }
}
