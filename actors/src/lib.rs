//! The actors of a gpumesh node and the one path that starts them.
//!
//! Layout:
//! - `env`: [`NodeEnv`], where time, randomness, the gossip network and
//!   hardware readings come from (real, or simulated).
//! - `node`: [`start_node`] and [`NodeHandle`].
//! - `supervisor`: starts the actors below and restarts them with backoff.
//! - `metrics` + `hardware`: NVML/sysinfo readings published as load.
//! - `view`: turns gossip state into the typed cluster view.
//! - `links`: the ractor_cluster node server and links to peers.
//! - pure decision modules: `restart` (backoff), `link_plan` (links).
//!
//! Depends on gpumesh-membership and gpumesh-storage.

pub mod env;
pub mod hardware;
pub mod link_plan;
mod links;
mod metrics;
mod node;
pub mod restart;
mod supervisor;
mod view;

pub use env::{Clock, NodeEnv, ProbeFactory, RngFactory, SystemClock};
pub use hardware::{HardwareProbe, HardwareSample, SystemProbe};
pub use node::{NodeConfig, NodeHandle, start_node};

/// Errors of the actors crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Storage(#[from] gpumesh_storage::Error),
    #[error(transparent)]
    Membership(#[from] gpumesh_membership::Error),
    #[error("node could not start: {0}")]
    Start(String),
}

/// Result alias of the actors crate.
pub type Result<T> = std::result::Result<T, Error>;
