//! Simulated clients: each node's client sends synchronous requests and
//! durable jobs to its node on an open-loop schedule drawn from the seed,
//! and records in the ledger what the node acknowledged and answered.

use std::sync::Arc;
use std::time::Duration;

use gpumesh_actors::{InferRequest, NodeHandle, Requirements, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

use crate::ledger::{Accepted, Ledger, home_candidates, now_ms};
use crate::llmload::{Chat, LlmDraws};
use crate::scenario::Workload;
use crate::trace::TraceLog;

/// The model every serving node runs.
pub(crate) const MODEL: &str = "model";

fn request(value: f32, priority: u8) -> Option<InferRequest> {
    let input = Tensor::new("x", vec![1, 1], TensorData::Fp32(vec![value])).ok()?;
    Some(InferRequest { inputs: vec![input], outputs: Vec::new(), priority })
}

/// The value an echo response carries.
pub(crate) fn echoed(response: &gpumesh_actors::InferResponse) -> Option<f32> {
    match &response.outputs.first()?.data {
        TensorData::Fp32(values) => values.first().copied(),
        _ => None,
    }
}

/// How a client loads its node.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Load {
    /// Open loop: this many requests per second, on schedule.
    Rate(f64),
    /// Closed loop: this many requests in flight, each sent when one ends.
    Concurrency(u32),
}

/// One node's client.
pub(crate) struct Client {
    pub(crate) node: Arc<NodeHandle>,
    /// This node's index: values are `count * 128 + index`, unique and exact in f32.
    pub(crate) index: u32,
    pub(crate) workload: Workload,
    pub(crate) load: Load,
    pub(crate) rng: StdRng,
    pub(crate) ledger: Ledger,
    pub(crate) trace: TraceLog,
}

/// One request a client sends.
enum Send {
    Job {
        request: InferRequest,
        key: String,
        value: f32,
    },
    Infer {
        request: InferRequest,
        value: f32,
    },
    /// A streamed chat (its body).
    Stream(Vec<u8>),
    /// A chat submitted as a durable job.
    LlmJob {
        body: Vec<u8>,
        key: String,
    },
}

/// Draws what a client (or one closed-loop worker) sends next.
struct Draws {
    rng: StdRng,
    name: String,
    index: u32,
    workload: Workload,
    ledger: Ledger,
    /// Chats instead of tensors, for a language-model workload.
    llm: Option<LlmDraws>,
}

impl Draws {
    fn next(&mut self) -> Option<Send> {
        if let Some(llm) = &mut self.llm {
            return Some(match llm.next(&mut self.rng) {
                Chat::Stream(body) => Send::Stream(body),
                // Keys stay unique across the node's restarts: a key sent
                // again must carry the same request.
                Chat::Job(body) => {
                    let key = format!("{}-chat{}", self.name, self.ledger.next_value(self.index));
                    Send::LlmJob { body, key }
                }
            });
        }
        let value = self.ledger.next_value(self.index);
        let priority = if self.rng.random_bool(self.workload.high_priority_fraction) { 9 } else { 5 };
        if !self.rng.random_bool(self.workload.async_fraction) {
            return Some(Send::Infer { request: request(value, priority)?, value });
        }
        // Duplicates come from the keys of every client, with the request
        // first sent under the key (as a client's retry would): one key
        // enters at several nodes, and must find one job.
        let mut ledger = self.ledger.lock();
        let duplicate = !ledger.pool.is_empty() && self.rng.random_bool(self.workload.duplicate_fraction);
        let (key, value) = if duplicate {
            ledger.pool[self.rng.random_range(0..ledger.pool.len())].clone()
        } else {
            let key = format!("{}-{value}", self.name);
            ledger.pool.push((key.clone(), value));
            (key, value)
        };
        drop(ledger);
        let request = request(value, priority)?;
        Some(Send::Job { request, key, value })
    }
}

impl Client {
    async fn send(node: Arc<NodeHandle>, send: Send, ledger: Ledger, trace: TraceLog) {
        match send {
            Send::Job { request, key, value } => submit(node, request, key, value, ledger, trace).await,
            Send::Infer { request, value } => infer(node, request, value, ledger).await,
            Send::Stream(body) => crate::llmload::stream(node, body, ledger, trace).await,
            Send::LlmJob { body, key } => crate::llmload::submit(node, body, key, ledger, trace).await,
        }
    }

    /// Sends requests until the workload stops.
    pub(crate) async fn run(mut self) {
        let now = now_ms();
        if now < self.workload.start_ms {
            tokio::time::sleep(Duration::from_millis(self.workload.start_ms - now)).await;
        }
        let draws = |rng: StdRng| Draws {
            rng,
            name: self.node.name().to_string(),
            index: self.index,
            workload: self.workload.clone(),
            ledger: self.ledger.clone(),
            llm: self.workload.llm.clone().map(|traffic| LlmDraws {
                traffic,
                name: self.node.name().to_string(),
                count: 0,
            }),
        };
        match self.load {
            Load::Rate(rate_per_s) => {
                let gap = Duration::from_secs_f64(1.0 / rate_per_s);
                let mut jitter = StdRng::from_rng(&mut self.rng);
                let mut draws = draws(StdRng::from_rng(&mut self.rng));
                while now_ms() < self.workload.stop_ms {
                    // Open loop: the next send is on schedule whatever this one does.
                    tokio::time::sleep(gap.mul_f64(jitter.random_range(0.5..1.5))).await;
                    let Some(send) = draws.next() else { continue };
                    tokio::spawn(Self::send(self.node.clone(), send, self.ledger.clone(), self.trace.clone()));
                }
            }
            Load::Concurrency(workers) => {
                let mut running = Vec::new();
                for _ in 0..workers {
                    let mut draws = draws(StdRng::from_rng(&mut self.rng));
                    let (node, ledger, trace, stop_ms) =
                        (self.node.clone(), self.ledger.clone(), self.trace.clone(), self.workload.stop_ms);
                    running.push(tokio::spawn(async move {
                        while now_ms() < stop_ms {
                            let Some(send) = draws.next() else { continue };
                            Self::send(node.clone(), send, ledger.clone(), trace.clone()).await;
                        }
                    }));
                }
                for worker in running {
                    let _ = worker.await;
                }
            }
        }
    }
}

async fn submit(
    node: Arc<NodeHandle>,
    request: InferRequest,
    key: String,
    value: f32,
    ledger: Ledger,
    trace: TraceLog,
) {
    // The node computes the key's home from this view before its first await.
    let members = home_candidates(&node.view());
    let Ok(job) = node.submit_job(MODEL, request, Some(key.clone())).await else { return };
    trace.record(format_args!("client {} accepted {} key {key}", node.name(), job.id));
    ledger.acknowledged(key, job.id, Accepted::Tensor { value }, members);
}

async fn infer(node: Arc<NodeHandle>, request: InferRequest, value: f32, ledger: Ledger) {
    let requirements = Requirements { priority: request.priority, ..Requirements::default() };
    let started = now_ms();
    let outcome = node.route_infer(MODEL, &requirements, request).await;
    let mut ledger = ledger.lock();
    match outcome {
        Ok(routed) if echoed(&routed.response) == Some(value) => {
            ledger.sync_latencies_ms.push((now_ms() - started) as f64);
        }
        Ok(routed) => {
            let failure = format!("request {value} answered with another request's result by {}", routed.node);
            ledger.failures.push(failure);
        }
        Err(_) => ledger.sync_errors += 1,
    }
}
