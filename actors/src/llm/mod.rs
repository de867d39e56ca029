//! Language models through the mesh (SPEC section 10): every node answers
//! the OpenAI API for the engines of the whole cluster.
//!
//! - `request`: an OpenAI request as gpumesh reads it (pure).
//! - `error`: errors in OpenAI's shape.
//! - `synthetic`: the synthetic model's tokens, prefix cache and answers
//!   (pure); `engine_load`: an engine's load from its metrics (pure).
//! - `piece`: what engines yield, piece by piece.
//! - `engine`: what generates answers here (an engine beside the node over
//!   HTTP, or the synthetic one).
//! - `model`: a model served here: admission, health, measurements.
//! - `launch`: engines the node starts and restarts itself.
//! - `wire` (pure) and `relay`: streams between nodes, piece by piece, with
//!   credit (back-pressure) and cancellation.
//! - `service`: the request path: choose, start, retry before the first
//!   token.
//! - `resume` (pure) and `failover`: a stream whose source fails after its
//!   first token goes on on another node from what was already sent;
//!   `assemble` (pure): a stream made whole, for durable jobs, which run
//!   as streams so that they go on the same way.
//! - `prefix` (pure): the sketch of the prompt prefixes an engine holds,
//!   gossiped, and what it predicts of a new prompt; `affinity` (pure):
//!   what a prompt costs on each node, for `eta`.

pub mod affinity;
pub mod assemble;
pub mod engine;
pub mod engine_load;
pub mod error;
pub mod failover;
pub(crate) mod launch;
pub mod model;
pub mod piece;
pub mod prefix;
pub mod relay;
pub mod request;
pub mod resume;
pub mod service;
pub mod synthetic;
pub mod wire;

use std::sync::Arc;

pub use error::LlmError;
pub use model::LlmModel;
pub use request::{Endpoint, Hints, LlmRequest};
pub use service::{LlmService, Started};

use crate::clock::Clock;
use crate::registry::{LlmKind, ModelSpec};

/// The language models of the registry, each with its engine.
pub(crate) fn load(specs: &[ModelSpec], clock: &Arc<dyn Clock>) -> Result<Vec<Arc<LlmModel>>, LlmError> {
    let mut models = Vec::new();
    for spec in specs {
        let Some(kind) = spec.kind.llm() else { continue };
        let engine: Arc<dyn engine::Engine> = match kind {
            LlmKind::OpenAi(openai) => Arc::new(engine::HttpEngine::new(&spec.name, openai.clone())?),
            LlmKind::Synthetic(synthetic) => Arc::new(engine::SyntheticEngine::new(synthetic.clone(), clock.clone())),
        };
        tracing::info!(model = %spec.name, engine = kind.device(), "language model loaded");
        models.push(Arc::new(LlmModel::new(spec.clone(), kind.clone(), engine, clock.clone())));
    }
    Ok(models)
}
