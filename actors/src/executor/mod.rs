//! Model execution: one executor actor per model, with dynamic batching.
//!
//! - `batch`: the batching queue (pure).
//! - `validate`: checking a request against the model, grouping, joining
//!   and splitting batches (pure).
//! - `onnx`: ONNX Runtime loading and sessions.
//! - `runner`: what runs a batch (ONNX session or synthetic).
//! - `statistics`: Triton's inference statistics, kept per model.
//! - `actor`: the executor actor.

mod actor;
pub mod batch;
pub mod onnx;
mod runner;
pub mod statistics;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::ActorRef;

pub(crate) use actor::{ExecutorActor, ExecutorArgs, ExecutorMsg};
pub use runner::{GpuFaults, Runner};

use crate::registry::{ModelKind, ModelSpec};
use crate::tensor::{DataType, Tensor};

/// A model's metadata as OIP v2 `GET /v2/models/{model}` shows it; also
/// what a node answers when a peer asks about one of its models.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MetadataDoc {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorDoc>,
    pub outputs: Vec<TensorDoc>,
    pub parameters: MetadataParameters,
}

/// One input or output in [`MetadataDoc`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TensorDoc {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

/// gpumesh's additions to the OIP model metadata.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MetadataParameters {
    pub gpumesh_device: String,
    pub gpumesh_node: String,
    pub max_batch_size: usize,
    /// Longest a request waits for others to join its batch.
    #[serde(default)]
    pub max_queue_delay_us: u64,
}

impl ServedModel {
    /// The model's metadata document, as served by `node`.
    pub fn metadata_doc(&self, node: &str) -> MetadataDoc {
        let doc = |t: &TensorMeta| TensorDoc {
            name: t.name.clone(),
            datatype: t.datatype.as_str().into(),
            shape: t.shape.clone(),
        };
        MetadataDoc {
            name: self.spec.name.clone(),
            versions: vec!["1".into()],
            platform: self.metadata.platform.into(),
            inputs: self.metadata.inputs.iter().map(doc).collect(),
            outputs: self.metadata.outputs.iter().map(doc).collect(),
            parameters: MetadataParameters {
                gpumesh_device: self.device.clone(),
                gpumesh_node: node.to_string(),
                max_batch_size: self.spec.batch.max_batch_size,
                max_queue_delay_us: u64::try_from(self.spec.batch.max_queue_delay.as_micros()).unwrap_or(u64::MAX),
            },
        }
    }
}

/// Name, datatype and shape (-1 for a dynamic dimension) of a model input
/// or output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorMeta {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

/// What a model takes and returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelMetadata {
    pub name: String,
    /// `onnxruntime_onnx` or `synthetic` ([`ModelKind::SYNTHETIC`]).
    pub platform: &'static str,
    pub inputs: Vec<TensorMeta>,
    pub outputs: Vec<TensorMeta>,
}

/// One inference request for one model.
#[derive(Clone, Debug, PartialEq)]
pub struct InferRequest {
    pub inputs: Vec<Tensor>,
    /// Outputs to return; empty returns every output.
    pub outputs: Vec<String>,
    /// 0 to 10, higher first.
    pub priority: u8,
}

/// The result of one request, with where and how it ran.
#[derive(Clone, Debug, PartialEq)]
pub struct InferResponse {
    pub outputs: Vec<Tensor>,
    /// The execution provider that ran it: `cuda:N`, `cpu` or `synthetic`.
    pub device: String,
    pub queue_time: Duration,
    pub compute_time: Duration,
    /// Requests in the batch this one ran in.
    pub batch_size: usize,
}

/// Why a request was not served; each maps to one HTTP status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InferError {
    #[error("{0}")]
    BadRequest(String),
    #[error("unknown model {0:?}: no node of the cluster serves it; GET /cluster lists the models each node serves")]
    UnknownModel(String),
    #[error("model {model} has {queued} requests queued, its limit; retry after {retry_after_ms} ms")]
    QueueFull { model: String, queued: usize, retry_after_ms: u64 },
    #[error("{0}")]
    Unavailable(String),
    #[error(
        "this node has {active} accepted jobs not yet finished, its --max-active-jobs; retry after {retry_after_ms} ms, or submit at another node"
    )]
    TooManyJobs { active: u64, retry_after_ms: u64 },
    #[error("inference failed: {0}")]
    Failed(String),
}

/// Live counters of one model, read by the metrics actor, `/metrics` and
/// the status page.
#[derive(Debug)]
pub struct ModelStats {
    queue_depth: AtomicU32,
    inflight: AtomicU32,
    /// Moving average of service time per item in ns, as f64 bits.
    service_ns_per_item: AtomicU64,
    completed: AtomicU64,
    /// Batches that panicked (their requests failed; the executor went on).
    panics: AtomicU64,
    /// Compute time of each batch, seconds (`gpumesh_compute_duration_seconds`).
    pub compute_seconds: prometheus_client::metrics::histogram::Histogram,
    /// Requests per batch (`gpumesh_batch_size`).
    pub batch_size: prometheus_client::metrics::histogram::Histogram,
    /// Queue plus compute time of the requests since the last
    /// [`ModelStats::take_latency_window`], microseconds.
    window: std::sync::Mutex<hdrhistogram::Histogram<u64>>,
    /// Triton's statistics (`/v2/models/stats`, gRPC `ModelStatistics`).
    pub(crate) counters: statistics::Counters,
}

impl Default for ModelStats {
    fn default() -> Self {
        use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
        Self {
            queue_depth: AtomicU32::default(),
            inflight: AtomicU32::default(),
            service_ns_per_item: AtomicU64::default(),
            completed: AtomicU64::default(),
            panics: AtomicU64::default(),
            // 50 us to about 100 s.
            compute_seconds: Histogram::new(exponential_buckets(0.000_05, 2.5, 17)),
            // 1 to 1024.
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            // 1 us to an hour, 2 significant figures: a few kB.
            window: std::sync::Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid bounds"),
            ),
            counters: statistics::Counters::default(),
        }
    }
}

/// Median and 99th percentile of a latency window, milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatencyWindow {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Weight of the newest batch in the service-time average.
const SERVICE_EWMA_ALPHA: f64 = 0.2;

impl ModelStats {
    pub fn queue_depth(&self) -> u32 {
        self.queue_depth.load(Ordering::Relaxed)
    }

    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Requests completed since start.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    /// Batches that panicked since start.
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    fn record_panic(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }

    pub fn service_ms_per_item(&self) -> f64 {
        f64::from_bits(self.service_ns_per_item.load(Ordering::Relaxed)) / 1e6
    }

    /// Starts the average at a known service time (a synthetic model's
    /// declared one), so routing does not take an unserved node for fast.
    fn assume_service(&self, per_item: Duration) {
        self.service_ns_per_item.store((per_item.as_nanos() as f64).to_bits(), Ordering::Relaxed);
    }

    fn set_queue_depth(&self, depth: usize) {
        self.queue_depth.store(u32::try_from(depth).unwrap_or(u32::MAX), Ordering::Relaxed);
    }

    fn set_inflight(&self, inflight: usize) {
        self.inflight.store(u32::try_from(inflight).unwrap_or(u32::MAX), Ordering::Relaxed);
    }

    /// The percentiles of the requests finished since the last call, and
    /// a fresh window; `None` when none finished.
    pub fn take_latency_window(&self) -> Option<LatencyWindow> {
        let mut window = self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if window.is_empty() {
            return None;
        }
        let at = |q: f64| window.value_at_quantile(q) as f64 / 1000.0;
        let latency = LatencyWindow { p50_ms: at(0.5), p99_ms: at(0.99) };
        window.reset();
        Some(latency)
    }

    fn record_latencies(&self, latencies: impl Iterator<Item = Duration>) {
        let mut window = self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for latency in latencies {
            window.saturating_record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1));
        }
    }

    fn record_batch(&self, requests: usize, rows: usize, compute: Duration) {
        self.compute_seconds.observe(compute.as_secs_f64());
        self.batch_size.observe(requests as f64);
        let per_item = compute.as_nanos() as f64 / rows.max(1) as f64;
        let old = f64::from_bits(self.service_ns_per_item.load(Ordering::Relaxed));
        let new = if old == 0.0 { per_item } else { old + SERVICE_EWMA_ALPHA * (per_item - old) };
        self.service_ns_per_item.store(new.to_bits(), Ordering::Relaxed);
        self.completed.fetch_add(requests as u64, Ordering::Relaxed);
    }
}

/// A served model: its spec, metadata, runner, live counters and the
/// executor actor currently serving it (replaced when it restarts).
pub struct ServedModel {
    pub spec: ModelSpec,
    pub metadata: ModelMetadata,
    pub device: String,
    pub stats: ModelStats,
    pub(crate) runner: Runner,
    pub(crate) executor: RwLock<Option<ActorRef<ExecutorMsg>>>,
}

impl ServedModel {
    /// This node's Triton statistics of the model.
    pub fn statistics_doc(&self) -> statistics::ModelStatisticsDoc {
        self.stats.counters.doc(&self.spec.name)
    }

    /// An executor actor is serving the model (false while it restarts).
    pub fn executor_running(&self) -> bool {
        self.executor.read().unwrap_or_else(std::sync::PoisonError::into_inner).is_some()
    }
}

/// Every model this node serves, by name.
pub type ModelTable = BTreeMap<String, Arc<ServedModel>>;

/// A model ready to serve and whether its requests are batched.
pub(crate) struct LoadedModel {
    pub(crate) model: Arc<ServedModel>,
    pub(crate) batching: bool,
}

fn synthetic_metadata(name: &str) -> ModelMetadata {
    let x = TensorMeta { name: "x".into(), datatype: DataType::Fp32, shape: vec![-1, -1] };
    ModelMetadata { name: name.to_string(), platform: ModelKind::SYNTHETIC, inputs: vec![x.clone()], outputs: vec![x] }
}

/// Loads every model of the registry. ONNX Runtime is loaded only when an
/// ONNX model is listed; sessions are built on a blocking thread. A model
/// that needs a GPU is skipped on a node without one.
pub(crate) async fn load_models(
    specs: &[ModelSpec],
    ort_candidates: &[std::path::PathBuf],
    has_gpu: bool,
    gpu_faults: &Arc<runner::GpuFaults>,
) -> Result<Vec<LoadedModel>, String> {
    use crate::registry::DevicePreference;
    let mut loaded = Vec::new();
    for spec in specs {
        let (metadata, device, runner) = match &spec.kind {
            ModelKind::Synthetic { service_time_ms, service_time_per_item_ms, panic_on_input } => (
                synthetic_metadata(&spec.name),
                ModelKind::SYNTHETIC.to_string(),
                Runner::Synthetic {
                    fixed: Duration::from_secs_f64(service_time_ms / 1000.0),
                    per_item: Duration::from_secs_f64(service_time_per_item_ms / 1000.0),
                    gpu: gpu_faults.clone(),
                    panic_on: *panic_on_input,
                },
            ),
            // Language models are served by `llm`, not by executors.
            ModelKind::Llm(_) => continue,
            ModelKind::Onnx { path } => {
                if spec.device == DevicePreference::Gpu && !has_gpu {
                    tracing::info!(model = %spec.name, "model needs a gpu; not served on this cpu node");
                    continue;
                }
                let environment = onnx::load_runtime(ort_candidates)?;
                let cuda = (spec.device != DevicePreference::Cpu && has_gpu).then_some(0);
                let (name, file) = (spec.name.clone(), path.clone());
                let model = tokio::task::spawn_blocking(move || onnx::OnnxModel::load(environment, &name, &file, cuda))
                    .await
                    .map_err(|error| format!("loading model {} crashed: {error}", spec.name))?
                    .map_err(|error| format!("model {}: cannot load {}: {error}", spec.name, path.display()))?;
                let (metadata, device) = (model.metadata.clone(), model.device.clone());
                (metadata, device, Runner::Onnx(Arc::new(std::sync::Mutex::new(model))))
            }
        };
        let batching = spec.batching() && (spec.kind.is_synthetic() || validate::batchable(&metadata));
        if spec.batching() && !batching {
            tracing::warn!(model = %spec.name, "batching off: not every input has a dynamic leading dimension");
        }
        tracing::info!(model = %spec.name, device = %device, batching, "model loaded");
        let stats = ModelStats::default();
        if let Runner::Synthetic { fixed, per_item, .. } = &runner {
            stats.assume_service(*fixed + *per_item);
        }
        let model = ServedModel { spec: spec.clone(), metadata, device, stats, runner, executor: RwLock::new(None) };
        loaded.push(LoadedModel { model: Arc::new(model), batching });
    }
    Ok(loaded)
}

/// Fires when the batch a request runs in starts running.
pub type Started = tokio::sync::oneshot::Sender<()>;

/// Sends `request` to the model's executor and waits up to `timeout`;
/// `started` fires when its batch starts (dropped unfired if it never does).
pub(crate) async fn infer(
    model: &ServedModel,
    request: InferRequest,
    timeout: Duration,
    started: Option<Started>,
) -> Result<InferResponse, InferError> {
    let executor = model.executor.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let Some(executor) = executor else {
        return Err(InferError::Unavailable(format!("model {} is restarting; retry in a moment", model.spec.name)));
    };
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    match executor.call(|reply| ExecutorMsg::Infer(request, started, reply), Some(timeout)).await {
        Ok(ractor::rpc::CallResult::Success(result)) => result,
        Ok(ractor::rpc::CallResult::Timeout) => {
            Err(InferError::Unavailable(format!("model {} did not answer within {timeout_ms} ms", model.spec.name)))
        }
        Ok(ractor::rpc::CallResult::SenderError) | Err(_) => {
            Err(InferError::Unavailable(format!("model {} stopped while serving the request; retry", model.spec.name)))
        }
    }
}
