//! The actors of a gpumesh node and the one path that starts them.
//!
//! Layout:
//! - `env`: [`NodeEnv`], where time, randomness, the gossip network and
//!   hardware readings come from (real, or simulated).
//! - `node`: [`start_node`] and [`NodeHandle`].
//! - `supervisor`: starts the actors below and restarts them with backoff.
//! - `metrics` + `hardware`: NVML/sysinfo readings published as load.
//! - `telemetry`: the Prometheus metrics; `history`: samples of the view
//!   kept for the status page's charts.
//! - `view`: turns gossip state into the typed cluster view.
//! - `links`: the ractor_cluster node server and links to peers; `link_net`:
//!   the network under them (TCP, or the simulator's); `tls`: optional
//!   mutual TLS for them.
//! - `executor`: one actor per model, ONNX Runtime or synthetic, with
//!   dynamic batching; `registry`: the model registry; `tensor`: tensors.
//! - `jobs`: the owner side of durable jobs (store, dispatch, resume).
//! - `routing`: the routing policies and candidates (pure) and the router
//!   that runs requests here or forwards them; `forward`: the node-to-node
//!   endpoint and its wire format.
//! - pure decision modules: `restart` (backoff), `link_plan` (links),
//!   `executor::batch` (batching), `executor::validate` (requests).
//!
//! Depends on gpumesh-membership and gpumesh-storage.

pub mod env;
pub mod executor;
pub mod forward;
pub mod hardware;
pub mod history;
pub mod jobs;
pub mod link_net;
pub mod link_plan;
mod links;
mod metrics;
mod node;
pub mod registry;
pub mod restart;
pub mod routing;
mod supervisor;
pub mod telemetry;
pub mod tensor;
mod tls;
mod view;

pub use env::{Clock, JobStorage, NodeEnv, ProbeFactory, RngFactory, SystemClock};
pub use executor::{InferError, InferRequest, InferResponse, MetadataDoc, ModelMetadata, ServedModel, TensorMeta};
pub use hardware::{HardwareProbe, HardwareSample, SystemProbe};
pub use node::{NodeConfig, NodeHandle, start_node};
pub use registry::{DevicePreference, ModelKind, ModelSpec, RegistryError, parse_registry};
pub use routing::policy::{DeviceRequirement, Policy, Requirements};
pub use routing::router::{DEFAULT_MAX_FORWARD_ATTEMPTS, DecisionRecord, Routed};
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
