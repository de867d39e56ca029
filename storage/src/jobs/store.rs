//! [`JobStore`]: where jobs live; its sled implementation is in
//! `sled_store` (layout and consistency rules there). Writes are not
//! durable until [`JobStore::flush`]; `DurableJobs` (group commit) decides
//! when to flush and waits for it before a job is acknowledged.

use crate::Result;
use crate::jobs::state::{JobEvent, JobRecord, JobState, TransitionError};

mod record;
mod sled_store;

pub use sled_store::SledJobStore;

/// The outcome of inserting a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inserted {
    New(JobRecord),
    /// A job with the same idempotency key already existed.
    Existing(JobRecord),
}

/// Which jobs to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateFilter {
    /// Accepted, dispatched or running.
    Active,
    Completed,
    Failed,
}

/// How long finished jobs are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Finished jobs older than this are dropped.
    pub max_age_ms: u64,
    /// Beyond this many finished jobs, the oldest are dropped.
    pub max_finished: usize,
}

impl Retention {
    /// The finished jobs retention drops: beyond `max_finished` the oldest,
    /// and every one older than `max_age_ms`. Every store prunes with this.
    pub fn expired(&self, mut finished: Vec<JobRecord>, now_ms: u64) -> Vec<JobRecord> {
        finished.sort_by_key(|job| job.updated_ms);
        let excess = finished.len().saturating_sub(self.max_finished);
        finished
            .into_iter()
            .enumerate()
            .filter(|(index, job)| *index < excess || self.too_old(job.updated_ms, now_ms))
            .map(|(_, job)| job)
            .collect()
    }

    /// Whether something last changed at `at_ms` is past `max_age_ms`.
    pub fn too_old(&self, at_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(at_ms) > self.max_age_ms
    }
}

impl Default for Retention {
    /// A day, and at most 100,000 finished jobs.
    fn default() -> Self {
        Self { max_age_ms: 24 * 3_600_000, max_finished: 100_000 }
    }
}

/// Where jobs live. Writes become durable at the next [`JobStore::flush`];
/// a crash before it loses them (the simulator's store models exactly that).
pub trait JobStore: Send + Sync {
    /// Stores a new job, or returns the job already stored under its
    /// idempotency key.
    fn insert(&self, job: JobRecord) -> Result<Inserted>;
    fn get(&self, id: &str) -> Result<Option<JobRecord>>;
    /// The job stored under idempotency `key`, if any.
    fn by_key(&self, key: &str) -> Result<Option<JobRecord>>;
    /// Applies `event`; the inner error says why it was refused.
    fn update(
        &self,
        id: &str,
        event: JobEvent,
        now_ms: u64,
        max_attempts: u32,
    ) -> Result<std::result::Result<JobRecord, TransitionError>>;
    /// Jobs in `filter`, oldest first, at most `limit`.
    fn list(&self, filter: StateFilter, limit: usize) -> Result<Vec<JobRecord>>;
    /// Every job not yet completed or failed: what a restarted owner resumes.
    fn recover(&self) -> Result<Vec<JobRecord>>;
    /// How many jobs are in `state`.
    fn count(&self, state: JobState) -> Result<u64>;
    /// The `limit` most recently created jobs, newest first.
    fn recent(&self, limit: usize) -> Result<Vec<JobRecord>>;
    /// Drops finished jobs beyond `retention`, oldest first, and held
    /// results older than its age; returns how many jobs and results.
    fn prune(&self, now_ms: u64, retention: Retention) -> Result<usize>;
    /// Keeps the result of a job this node ran for its owner until the
    /// owner has it.
    fn hold_result(&self, id: &str, now_ms: u64, reply: &[u8]) -> Result<()>;
    /// The result held for `id`, if any.
    fn held_result(&self, id: &str) -> Result<Option<Vec<u8>>>;
    /// Drops the result held for `id`: its owner has it.
    fn release_result(&self, id: &str) -> Result<()>;
    /// Makes every write so far durable.
    fn flush(&self) -> Result<()>;
}

#[cfg(test)]
mod tests;
