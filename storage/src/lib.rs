//! Durable local state of a gpumesh node, in sled.
//!
//! Layout:
//! - `node_store`: [`NodeStore`], the sled database in the data directory,
//!   and the node identity (name and generation) kept in it.
//! - `jobs`: the job state machine (pure) and the [`JobStore`] with its
//!   sled implementation.
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

/// Opens the sled database in `dir` for a test, waiting up to 5 s for one
/// dropped just before to let go of it: sled locks a database to one
/// opener, and its background threads release the lock a moment after
/// the last handle is dropped.
#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "a test waits for sled's own threads, outside any clock")]
pub(crate) fn reopen_sled(dir: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(error) if std::time::Instant::now() >= deadline => panic!("sled did not reopen within 5 s: {error}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

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
    Sled(sled::Error),
    #[error("the disk of the data dir is full ({0})")]
    DiskFull(String),
    #[error(
        "writes to the data dir have not reached the disk for {waited_s} s: the disk of the data dir is full or failing"
    )]
    FlushStalled { waited_s: u64 },
    #[error("job store transaction aborted: {0}")]
    Transaction(String),
    #[error("no job {0:?} in this store")]
    UnknownJob(String),
}

impl From<sled::Error> for Error {
    fn from(error: sled::Error) -> Self {
        match error {
            sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => Self::DiskFull(io.to_string()),
            other => Self::Sled(other),
        }
    }
}

/// Result alias of the storage crate.
pub type Result<T> = std::result::Result<T, Error>;
