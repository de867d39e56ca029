//! Durable local state of a gpumesh node, in sled.
//!
//! Layout:
//! - `node_store`: [`NodeStore`], the sled database in the data directory,
//!   and the node identity (name and generation) kept in it.
//! - `jobs`: the job state machine (pure) and the [`JobStore`] with its
//!   sled implementation.
//!
//! - `history`: [`MetricsHistory`], samples of every member for the status
//!   page's charts.
//!
//! Depends on no workspace crate; sled is used only here.

mod history;
pub mod jobs;
mod node_store;

pub use history::{HistorySample, MetricsHistory, NodeSample};
pub use jobs::{JobStore, SledJobStore};
pub use node_store::{Identity, NodeStore};

/// Errors of the storage crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("data dir {path} is in use by another gpumesh process: stop it, or give this node its own --data-dir")]
    Locked { path: String },
    #[error("cannot open data dir {path}: {reason}; check its permissions or choose another --data-dir")]
    Open { path: String, reason: String },
    #[error(
        "data dir {path} belongs to node {stored:?}, not {requested:?}: start with --name {stored} or use another --data-dir"
    )]
    NameMismatch { path: String, stored: String, requested: String },
    #[error("data dir holds an invalid {what}; move the data dir aside and start again")]
    Corrupt { what: &'static str },
    #[error("storage failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("job store transaction aborted: {0}")]
    Transaction(String),
    #[error("no job {0:?} in this store")]
    UnknownJob(String),
}

/// Result alias of the storage crate.
pub type Result<T> = std::result::Result<T, Error>;
