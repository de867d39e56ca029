//! The actors of a gpumesh node and the one path that starts them.
//!
//! Layout:
//! - `clock`, `rng`: the seams time and randomness flow in through (leaf
//!   modules: they import nothing of this crate, and anything may import
//!   them).
//! - `env`: [`NodeEnv`], everything a node takes from the outside world
//!   (real, or simulated).
//! - `node`: [`start_node`] and [`NodeHandle`], thin delegators to the
//!   services below.
//! - `routing`: the request path. The policies and candidates (pure), the
//!   retry rules (pure), and the routing service that chooses, runs here or
//!   forwards, and retries.
//! - `job_owner`: the job path. The owner protocol's next step (pure), the
//!   dispatch task that carries it out, and the job service.
//! - `forward`: each node's endpoint for calls from peers, the wire format
//!   of forwarded requests (pure), and the typed calls to peers.
//! - `executor`: one actor per model, ONNX Runtime or synthetic, with
//!   dynamic batching; `registry`: the model registry; `tensor`: tensors.
//! - `supervisor`: starts the actors and restarts them with backoff.
//! - `metrics` + `hardware`: NVML/sysinfo readings published as load.
//! - `telemetry`: the Prometheus metrics; `history`: samples of the view
//!   kept for the status page's charts.
//! - `view`: turns gossip state into the typed cluster view.
//! - `links`: the ractor_cluster node server and links to peers; `link_net`:
//!   the network under them (TCP, or the simulator's); `tls`: optional
//!   mutual TLS for them.
//! - other pure decision modules: `restart` (backoff), `link_plan` (links),
//!   `executor::batch` (batching), `executor::validate` (requests).
//!
//! May depend on gpumesh-membership and gpumesh-storage, no other crate of
//! the workspace. ractor, ractor_cluster, ort and nvml-wrapper are used only
//! here.

pub mod clock;
pub mod env;
pub mod executor;
pub mod forward;
pub mod hardware;
pub mod history;
pub mod job_owner;
pub mod link_net;
pub mod link_plan;
mod links;
pub mod llm;
mod metrics;
mod node;
pub mod registry;
pub mod restart;
pub mod rng;
pub mod routing;
mod supervisor;
pub mod telemetry;
pub mod tensor;
#[cfg(test)]
mod test_members;
mod tls;
mod view;

pub use clock::{Clock, SystemClock};
pub use env::{JobStorage, NodeEnv, ProbeFactory};
pub use executor::statistics::{ModelStatisticsDoc, StatDuration};
pub use executor::{InferError, InferRequest, InferResponse, MetadataDoc, ModelMetadata, ServedModel, TensorMeta};
pub use hardware::{HardwareProbe, HardwareSample, SystemProbe};
pub use job_owner::JobService;
pub use node::{DEFAULT_MAX_ACTIVE_JOBS, NodeConfig, NodeHandle, start_node};
pub use registry::{
    DevicePreference, EngineKind, LlmKind, ModelKind, ModelSpec, OpenAiEngine, RegistryError, SyntheticLlm,
    parse_registry,
};
pub use rng::RngFactory;
pub use routing::policy::{DeviceRequirement, Policy, Requirements};
pub use routing::service::{DEFAULT_MAX_FORWARD_ATTEMPTS, DecisionRecord, Routed, RoutingService};
pub use tensor::{DataType, Tensor, TensorData, TensorError};
pub use tls::ClusterTls;

/// Errors of the actors crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Storage(#[from] gpumesh_storage::Error),
    #[error(transparent)]
    Membership(#[from] gpumesh_membership::Error),
    #[error("node could not start: {0}")]
    Start(String),
    #[error("{0}")]
    Models(String),
}

/// Result alias of the actors crate.
pub type Result<T> = std::result::Result<T, Error>;
