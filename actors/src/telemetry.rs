//! Prometheus metrics of a node (`GET /metrics`), named `gpumesh_*` with
//! units in the names. Counters and the request-latency histogram are
//! recorded on the request path; gauges, job counts and the executors'
//! histograms are read from live state at each scrape by [`NodeCollector`],
//! so they always agree with `GET /cluster`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use gpumesh_membership::{ClusterView, MemberStatus};
use gpumesh_storage::jobs::{DurableJobs, JobState};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::watch;

use crate::executor::{InferError, ServedModel};
use crate::llm::LlmModel;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    model: String,
    /// `ok`, or the error kind.
    outcome: String,
    /// The node that executed it; `none` when no node did.
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    target: String,
    reason: String,
}

/// Counts the supervisor's restarts of each actor, by actor and (for an
/// executor) model: `gpumesh_actor_restarts_total`. An ordered map: no
/// hashing state, so counting draws no randomness a simulation replays.
#[derive(Clone, Debug, Default)]
pub(crate) struct RestartCounter(Arc<std::sync::Mutex<std::collections::BTreeMap<(String, String), u64>>>);

impl RestartCounter {
    /// One restart of `actor` (serving `model`, for an executor).
    pub(crate) fn record(&self, actor: &str, model: Option<&str>) {
        let mut counts = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *counts.entry((actor.to_string(), model.unwrap_or_default().to_string())).or_default() += 1;
    }

    fn counts(&self) -> Vec<((String, String), u64)> {
        let counts = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.iter().map(|(labels, count)| (labels.clone(), *count)).collect()
    }
}

/// The metrics registry of one node.
pub struct Telemetry {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<ModelLabels, Histogram>,
    forwarded: Family<TargetLabels, Counter>,
    forward_failures: Family<FailureLabels, Counter>,
    failovers: Failovers,
}

/// Streams whose source failed, by model and outcome. Kept in an ordered
/// map rather than a `Family`: a `Family` is a `HashMap`, and every new
/// `RandomState` moves the keys of the ones made after it, which would
/// change the simulator's traces for a metric it never records.
#[derive(Clone, Debug, Default)]
struct Failovers(Arc<Mutex<BTreeMap<(String, &'static str), u64>>>);

impl Collector for Failovers {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let help = "Streams accepted here whose source failed after their first token, by model and outcome \
                    (continued on another node, finished here, failed)";
        let mut family = encoder.encode_descriptor("llm_stream_failovers", help, None, MetricType::Counter)?;
        let counts = self.0.lock().map(|counts| counts.clone()).unwrap_or_default();
        for ((model, outcome), count) in counts {
            let labels = [("model", model), ("outcome", outcome.to_string())];
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The outcome label of an inference: `ok` without an error.
pub fn outcome(error: Option<&InferError>) -> &'static str {
    match error {
        None => "ok",
        Some(InferError::BadRequest(_)) => "bad_request",
        Some(InferError::UnknownModel(_)) => "unknown_model",
        Some(InferError::QueueFull { .. }) => "queue_full",
        Some(InferError::TooManyJobs { .. }) => "too_many_jobs",
        Some(InferError::Unavailable(_)) => "unavailable",
        Some(InferError::Failed(_)) => "failed",
    }
}

/// A labelled family that is declared (`# TYPE`) even before its first
/// series: the registry leaves empty families out, and dashboards and
/// alerts should find every family on every node.
#[derive(Debug)]
struct Declared<M> {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    metric: M,
}

impl<M: EncodeMetric + std::fmt::Debug + Send + Sync + 'static> Collector for Declared<M> {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let family = encoder.encode_descriptor(self.name, self.help, self.unit.as_ref(), self.metric.metric_type())?;
        self.metric.encode(family)
    }
}

fn declare<M>(registry: &mut Registry, name: &'static str, help: &'static str, unit: Option<Unit>, metric: &M)
where
    M: EncodeMetric + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    registry.register_collector(Box::new(Declared { name, help, unit, metric: metric.clone() }));
}

impl Telemetry {
    pub(crate) fn new(collector: NodeCollector) -> Self {
        let mut registry = Registry::with_prefix("gpumesh");
        let requests = Family::<RequestLabels, Counter>::default();
        let help = "Inference requests received here, by outcome and executing node";
        declare(&mut registry, "requests", help, None, &requests);
        let request_seconds = Family::<ModelLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.000_1, 2.5, 16))) as fn() -> Histogram,
        );
        let help = "Time from receiving an inference request to its answer, wherever it ran";
        declare(&mut registry, "request_duration", help, Some(Unit::Seconds), &request_seconds);
        let forwarded = Family::<TargetLabels, Counter>::default();
        let help = "Requests forwarded to another node, by target";
        declare(&mut registry, "forwarded_requests", help, None, &forwarded);
        let forward_failures = Family::<FailureLabels, Counter>::default();
        let help = "Forwards that failed (the request was retried elsewhere or failed), by target and reason";
        declare(&mut registry, "forward_failures", help, None, &forward_failures);
        let failovers = Failovers::default();
        registry.register_collector(Box::new(failovers.clone()));
        registry.register_collector(Box::new(collector));
        Self { registry, requests, request_seconds, forwarded, forward_failures, failovers }
    }

    /// Records one inference request received here.
    pub fn request(&self, model: &str, outcome: &str, node: Option<&str>, seconds: f64) {
        let labels = RequestLabels {
            model: model.to_string(),
            outcome: outcome.to_string(),
            node: node.unwrap_or("none").to_string(),
        };
        self.requests.get_or_create(&labels).inc();
        self.request_seconds.get_or_create(&ModelLabels { model: model.to_string() }).observe(seconds);
    }

    /// Records a forward to `target` and, if it failed, why.
    pub fn forwarded(&self, target: &str, failure: Option<&str>) {
        self.forwarded.get_or_create(&TargetLabels { target: target.to_string() }).inc();
        if let Some(reason) = failure {
            let labels = FailureLabels { target: target.to_string(), reason: reason.to_string() };
            self.forward_failures.get_or_create(&labels).inc();
        }
    }

    /// Records a stream of `model` whose source failed, and what came of it.
    pub fn failover(&self, model: &str, outcome: &'static str) {
        if let Ok(mut counts) = self.failovers.0.lock() {
            *counts.entry((model.to_string(), outcome)).or_default() += 1;
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(%error, "encoding metrics failed");
        }
        text
    }
}

/// Reads live state at each scrape.
pub(crate) struct NodeCollector {
    pub(crate) models: Arc<Vec<Arc<ServedModel>>>,
    pub(crate) view: watch::Receiver<Arc<ClusterView>>,
    pub(crate) jobs: DurableJobs,
    pub(crate) restarts: RestartCounter,
    pub(crate) llms: Arc<Vec<Arc<LlmModel>>>,
}

impl std::fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCollector").field("models", &self.models.len()).finish_non_exhaustive()
    }
}

fn gauge<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    values: impl IntoIterator<Item = (L, f64)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, value) in values {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let model = |m: &Arc<ServedModel>| [("model", m.spec.name.clone())];
        let models = self.models.as_slice();
        let info = models.iter().map(|m| ([("model", m.spec.name.clone()), ("device", m.device.clone())], 1.0));
        gauge(&mut encoder, "model_info", "Models served here and the execution provider that runs each", None, info)?;
        let queued = models.iter().map(|m| (model(m), f64::from(m.stats.queue_depth())));
        gauge(&mut encoder, "queue_depth", "Requests queued per model on this node", None, queued)?;
        let inflight = models.iter().map(|m| (model(m), f64::from(m.stats.inflight())));
        gauge(&mut encoder, "inflight_requests", "Requests executing per model on this node", None, inflight)?;
        {
            let help = "Requests executed per model on this node, wherever they were received";
            let mut family = encoder.encode_descriptor("executed_requests", help, None, MetricType::Counter)?;
            for m in models {
                ConstCounter::new(m.stats.completed()).encode(family.encode_family(&model(m))?)?;
            }
        }
        {
            let help = "Compute time of each batch per model on this node";
            let mut family =
                encoder.encode_descriptor("compute_duration", help, Some(&Unit::Seconds), MetricType::Histogram)?;
            for m in models {
                m.stats.compute_seconds.encode(family.encode_family(&model(m))?)?;
            }
            let help = "Requests per batch per model on this node";
            let mut family = encoder.encode_descriptor("batch_size", help, None, MetricType::Histogram)?;
            for m in models {
                m.stats.batch_size.encode(family.encode_family(&model(m))?)?;
            }
            let help = "Batches that panicked per model on this node (their requests failed; the executor went on)";
            let mut family = encoder.encode_descriptor("batch_panics", help, None, MetricType::Counter)?;
            for m in models {
                ConstCounter::new(m.stats.panics()).encode(family.encode_family(&model(m))?)?;
            }
            let help = "Actors the supervisor restarted after they stopped or crashed, by actor and model";
            let mut family = encoder.encode_descriptor("actor_restarts", help, None, MetricType::Counter)?;
            for ((actor, model), count) in self.restarts.counts() {
                let labels = [("actor", actor), ("model", model)];
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }
        self.encode_llms(&mut encoder)?;
        let view = self.view.borrow().clone();
        self.encode_gpus(&mut encoder, &view)?;
        self.encode_members(&mut encoder, &view)?;
        let states =
            [JobState::Accepted, JobState::Dispatched, JobState::Running, JobState::Completed, JobState::Failed];
        let counts = states.iter().filter_map(|state| match self.jobs.store().count(*state) {
            Ok(count) => Some(([("state", state.as_str())], count as f64)),
            Err(error) => {
                tracing::warn!(%error, "counting jobs for /metrics failed");
                None
            }
        });
        gauge(&mut encoder, "jobs", "Jobs owned by this node, by state", None, counts)
    }
}

impl NodeCollector {
    /// The language models served here: their engines' load, what was
    /// measured of their streams, and their tokens (`gpumesh_llm_*`).
    fn encode_llms(&self, encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let llms = self.llms.as_slice();
        let model = |m: &Arc<LlmModel>| [("model", m.spec.name.clone())];
        let each = |f: fn(&LlmModel) -> f64| llms.iter().map(move |m| (model(m), f(m)));
        gauge(
            encoder,
            "llm_ready",
            "1 while the model's engine answers its health check",
            None,
            each(|m| f64::from(u8::from(m.stats.ready()))),
        )?;
        let running = |m: &LlmModel| f64::from(m.stats.running_now());
        gauge(encoder, "llm_running", "Sequences the model's engine is generating", None, each(running))?;
        let waiting = |m: &LlmModel| f64::from(m.stats.waiting_now());
        gauge(encoder, "llm_waiting", "Requests waiting for the model's engine, here and in it", None, each(waiting))?;
        let kv = llms.iter().filter_map(|m| Some((model(m), m.stats.engine()?.kv_cache_use?)));
        gauge(
            encoder,
            "llm_kv_cache_use",
            "KV-cache use of the model's engine, where it reports it",
            Some(&Unit::Other("ratio".into())),
            kv,
        )?;
        type Count = fn(&LlmModel) -> u64;
        let counters: [(&str, &str, Count); 4] = [
            ("llm_requests", "Language-model requests the engine here served", |m| m.stats.requests()),
            ("llm_prompt_tokens", "Prompt tokens the engine here processed (where it reported usage)", |m| {
                m.stats.tokens().0
            }),
            ("llm_completion_tokens", "Tokens the engine here generated (where it reported usage)", |m| {
                m.stats.tokens().1
            }),
            ("llm_cached_tokens", "Prompt tokens the engine here served from its cache", |m| m.stats.tokens().2),
        ];
        for (name, help, count) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for m in llms {
                ConstCounter::new(count(m)).encode(family.encode_family(&model(m))?)?;
            }
        }
        type Of = fn(&LlmModel) -> &Histogram;
        let histograms: [(&str, &str, Of); 2] = [
            ("llm_time_to_first_token", "Time from starting a request in the engine to its first token", |m| {
                &m.stats.ttft_seconds
            }),
            ("llm_inter_token", "Time between the tokens of a stream", |m| &m.stats.inter_token_seconds),
        ];
        for (name, help, histogram) in histograms {
            let mut family = encoder.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
            for m in llms {
                histogram(m).encode(family.encode_family(&model(m))?)?;
            }
        }
        Ok(())
    }

    /// This node's GPUs as its metrics actor last published them.
    fn encode_gpus(&self, encoder: &mut DescriptorEncoder<'_>, view: &ClusterView) -> std::fmt::Result {
        let gpus = view.members.iter().find(|m| m.is_self).and_then(|m| m.load.as_ref()).map(|l| l.gpus.clone());
        let gpus = gpus.unwrap_or_default();
        let labels = |g: &gpumesh_membership::GpuStats| [("gpu", g.index.to_string()), ("name", g.name.clone())];
        const MB: f64 = 1024.0 * 1024.0;
        let per_gpu = |f: fn(&gpumesh_membership::GpuStats) -> f64| gpus.iter().map(move |g| (labels(g), f(g)));
        let bytes = Some(&Unit::Bytes);
        gauge(encoder, "gpu_memory_total", "GPU memory", bytes, per_gpu(|g| g.memory_total_mb as f64 * MB))?;
        let used = |g: &gpumesh_membership::GpuStats| g.memory_used_mb() as f64 * MB;
        gauge(encoder, "gpu_memory_used", "GPU memory in use", bytes, per_gpu(used))?;
        let utilization = |g: &gpumesh_membership::GpuStats| f64::from(g.utilization_pct) / 100.0;
        gauge(encoder, "gpu_utilization", "GPU busy time", Some(&Unit::Other("ratio".into())), per_gpu(utilization))?;
        let celsius = Some(&Unit::Celsius);
        gauge(encoder, "gpu_temperature", "GPU temperature", celsius, per_gpu(|g| f64::from(g.temperature_c)))?;
        gauge(
            encoder,
            "gpu_power",
            "GPU power draw",
            Some(&Unit::Other("watts".into())),
            per_gpu(|g| f64::from(g.power_w)),
        )
    }

    /// Members by status and trust, as `GET /cluster` lists them.
    fn encode_members(&self, encoder: &mut DescriptorEncoder<'_>, view: &ClusterView) -> std::fmt::Result {
        let mut counts = Vec::new();
        for status in [MemberStatus::Alive, MemberStatus::Suspect, MemberStatus::Dead] {
            for trusted in [true, false] {
                let count = view.members.iter().filter(|m| m.status == status && m.trusted == trusted).count();
                counts.push((
                    [("status", status.as_str()), ("trusted", if trusted { "true" } else { "false" })],
                    count as f64,
                ));
            }
        }
        gauge(encoder, "members", "Members this node knows, by status and trust", None, counts)
    }
}
