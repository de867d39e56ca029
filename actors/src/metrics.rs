//! The metrics actor: samples the hardware and publishes the node's load
//! through gossip.

use std::sync::Arc;
use std::time::Duration;

use gpumesh_membership::{LoadSummary, Membership, ModelLoad};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::env::ProbeFactory;
use crate::executor::ServedModel;
use crate::hardware::HardwareProbe;

/// Samples hardware every `interval` and publishes a [`LoadSummary`].
pub(crate) struct MetricsActor;

/// What the metrics actor needs; kept by the supervisor for restarts.
#[derive(Clone)]
pub(crate) struct MetricsArgs {
    pub(crate) membership: Arc<Membership>,
    pub(crate) probe: ProbeFactory,
    pub(crate) interval: Duration,
    pub(crate) models: Arc<Vec<Arc<ServedModel>>>,
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
    probe: Box<dyn HardwareProbe>,
    last_published: Option<LoadSummary>,
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
        Ok(MetricsState { membership: args.membership, models: args.models, probe, last_published: None })
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
                let models: Vec<ModelLoad> = state.models.iter().map(|model| model_load(model)).collect();
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
    }
}
