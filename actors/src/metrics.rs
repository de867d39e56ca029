//! The metrics actor: samples the hardware, asks each language model's
//! engine whether it is healthy and what load it publishes, and publishes
//! the node's load through gossip.

use std::sync::Arc;
use std::time::Duration;

use gpumesh_membership::{LlmLoad, LoadSummary, Membership, ModelLoad};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::env::ProbeFactory;
use crate::executor::ServedModel;
use crate::hardware::HardwareProbe;
use crate::llm::LlmModel;

/// Samples hardware every `interval` and publishes a [`LoadSummary`].
pub(crate) struct MetricsActor;

/// What the metrics actor needs; kept by the supervisor for restarts.
#[derive(Clone)]
pub(crate) struct MetricsArgs {
    pub(crate) membership: Arc<Membership>,
    pub(crate) probe: ProbeFactory,
    pub(crate) interval: Duration,
    pub(crate) models: Arc<Vec<Arc<ServedModel>>>,
    pub(crate) llms: Arc<Vec<Arc<LlmModel>>>,
}

/// Messages of the metrics actor.
pub(crate) enum MetricsMsg {
    /// Take a reading and publish it.
    Sample,
}

impl ractor::Message for MetricsMsg {}

/// Mutable state, built in `pre_start`.
pub(crate) struct MetricsState {
    membership: Arc<Membership>,
    models: Arc<Vec<Arc<ServedModel>>>,
    llms: Arc<Vec<Arc<LlmModel>>>,
    probe: Box<dyn HardwareProbe>,
    last_published: Option<LoadSummary>,
    /// Samples at once when an engine's readiness changes (with language
    /// models only).
    _on_change: Option<tokio_util::task::AbortOnDropHandle<()>>,
}

impl Actor for MetricsActor {
    type Msg = MetricsMsg;
    type State = MetricsState;
    type Arguments = MetricsArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let probe = (args.probe)();
        myself.send_interval(args.interval, || MetricsMsg::Sample);
        myself.cast(MetricsMsg::Sample)?;
        let (membership, models, llms) = (args.membership, args.models, args.llms);
        let on_change = (!llms.is_empty())
            .then(|| tokio_util::task::AbortOnDropHandle::new(tokio::spawn(sample_on_change(myself, llms.clone()))));
        Ok(MetricsState { membership, models, llms, probe, last_published: None, _on_change: on_change })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MetricsMsg::Sample => {
                let sample = state.probe.sample();
                if !state.llms.is_empty() {
                    futures_util::future::join_all(state.llms.iter().map(|model| model.probe())).await;
                }
                let mut models: Vec<ModelLoad> = state.models.iter().map(|model| model_load(model)).collect();
                models.extend(state.llms.iter().map(|model| llm_load(model)));
                let load = LoadSummary {
                    gpus: sample.gpus,
                    cpu: sample.cpu,
                    queue_depth: models.iter().map(|m| m.queue_depth).sum(),
                    inflight: models.iter().map(|m| m.inflight).sum(),
                    models,
                };
                if state.last_published.as_ref() != Some(&load) {
                    state.membership.publish_load(&load).await?;
                    state.last_published = Some(load);
                }
            }
        }
        Ok(())
    }
}

/// Asks for a sample whenever a language model's readiness changes.
async fn sample_on_change(myself: ActorRef<MetricsMsg>, llms: Arc<Vec<Arc<LlmModel>>>) {
    loop {
        futures_util::future::select_all(llms.iter().map(|model| Box::pin(model.stats.changed.notified()))).await;
        if myself.cast(MetricsMsg::Sample).is_err() {
            return;
        }
    }
}

fn model_load(model: &ServedModel) -> ModelLoad {
    let window = model.stats.take_latency_window();
    let round = |ms: f64| (ms * 1000.0).round() / 1000.0;
    ModelLoad {
        name: model.spec.name.clone(),
        device: model.device.clone(),
        // Rounded to 1 us so tiny jitter does not republish the load.
        service_ms_per_item: (model.stats.service_ms_per_item() * 1000.0).round() / 1000.0,
        queue_depth: model.stats.queue_depth(),
        inflight: model.stats.inflight(),
        completed: model.stats.completed(),
        p50_ms: window.map(|w| round(w.p50_ms)),
        p99_ms: window.map(|w| round(w.p99_ms)),
        llm: None,
    }
}

/// A language model's load: the engine's counts where it publishes them,
/// gpumesh's own otherwise, and what gpumesh measured of its streams.
fn llm_load(model: &LlmModel) -> ModelLoad {
    let stats = &model.stats;
    let engine = stats.engine();
    let (running, waiting) = (stats.running_now(), stats.waiting_now());
    // Rounded so jitter does not republish the load.
    let measured = |value: f64| (value > 0.0).then(|| (value * 10.0).round() / 10.0);
    let ttft_ms = measured(stats.ttft_ms());
    let percentiles = stats.ttft_percentiles();
    let (prompt, _, cached) = stats.tokens();
    ModelLoad {
        name: model.spec.name.clone(),
        device: model.device().to_string(),
        service_ms_per_item: ttft_ms.unwrap_or(0.0),
        queue_depth: waiting,
        inflight: running,
        completed: stats.requests(),
        // For a language model: its time to first token.
        p50_ms: percentiles.and_then(|(p50, _)| measured(p50)),
        p99_ms: percentiles.and_then(|(_, p99)| measured(p99)),
        llm: Some(LlmLoad {
            ready: stats.ready(),
            running,
            waiting,
            kv_cache_use: engine.and_then(|load| load.kv_cache_use).map(|use_| (use_ * 1000.0).round() / 1000.0),
            ttft_ms,
            decode_tokens_per_s: measured(stats.decode_tokens_per_s()),
            prefill_tokens_per_s: measured(stats.prefill_tokens_per_s()),
            cached_ratio: (prompt > 0).then(|| (cached as f64 / prompt as f64 * 1000.0).round() / 1000.0),
            prompt_bytes_per_token: measured(stats.prompt_bytes_per_token()),
            max_concurrency: u32::try_from(model.kind.max_concurrency()).ok(),
            prefixes: model.prefix_sketch(),
        }),
    }
}
