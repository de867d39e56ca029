//! [`JobStore`]: where jobs live, and its sled implementation.
//!
//! Layout (one sled tree each): `job_meta` id -> JSON of the record without
//! its payloads; `job_request` and `job_outputs` id -> raw bytes (tensors
//! stay binary); `job_by_state` state byte + created ms + id -> (); and
//! `job_idem` idempotency key -> id; `job_held` id -> held ms (big endian)
//! and the result bytes of a job this node ran for another owner. Every
//! change runs in one multi-tree transaction. Writes are not durable until
//! [`JobStore::flush`]; `DurableJobs` (group commit) decides when to flush
//! and waits for it before a job is acknowledged.

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::jobs::state::{JobEvent, JobRecord, JobState, Step, TransitionError, apply};
use crate::{Error, Result};

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

#[derive(Serialize, Deserialize)]
struct Meta {
    id: String,
    model: String,
    state: JobState,
    attempts: u32,
    node: Option<String>,
    created_ms: u64,
    updated_ms: u64,
    idempotency_key: Option<String>,
    error: Option<String>,
    history: Vec<Step>,
}

fn state_byte(state: JobState) -> u8 {
    match state {
        JobState::Accepted => 0,
        JobState::Dispatched => 1,
        JobState::Running => 2,
        JobState::Completed => 3,
        JobState::Failed => 4,
    }
}

fn index_key(state: JobState, created_ms: u64, id: &str) -> Vec<u8> {
    let mut key = vec![state_byte(state)];
    key.extend(created_ms.to_be_bytes());
    key.extend(id.as_bytes());
    key
}

type Abort = ConflictableTransactionError<String>;

fn corrupt(what: &str) -> Abort {
    ConflictableTransactionError::Abort(format!("stored {what} is unreadable"))
}

/// The sled job store.
#[derive(Clone, Debug)]
pub struct SledJobStore {
    db: sled::Db,
    meta: sled::Tree,
    request: sled::Tree,
    outputs: sled::Tree,
    by_state: sled::Tree,
    idem: sled::Tree,
    held: sled::Tree,
}

impl SledJobStore {
    /// Opens the job trees of a node's database.
    pub fn open(db: &sled::Db) -> Result<Self> {
        Ok(Self {
            db: db.clone(),
            meta: db.open_tree("job_meta")?,
            request: db.open_tree("job_request")?,
            outputs: db.open_tree("job_outputs")?,
            by_state: db.open_tree("job_by_state")?,
            idem: db.open_tree("job_idem")?,
            held: db.open_tree("job_held")?,
        })
    }

    fn assemble(&self, meta: Meta) -> Result<JobRecord> {
        let request = self.request.get(meta.id.as_bytes())?.map(|bytes| bytes.to_vec()).unwrap_or_default();
        let outputs = self.outputs.get(meta.id.as_bytes())?.map(|bytes| bytes.to_vec());
        Ok(JobRecord {
            id: meta.id,
            model: meta.model,
            state: meta.state,
            attempts: meta.attempts,
            node: meta.node,
            created_ms: meta.created_ms,
            updated_ms: meta.updated_ms,
            idempotency_key: meta.idempotency_key,
            request,
            outputs,
            error: meta.error,
            history: meta.history,
        })
    }

    fn read_meta(bytes: &[u8]) -> Result<Meta> {
        serde_json::from_slice(bytes).map_err(|_| Error::Corrupt { what: "job record" })
    }

    fn committed<T>(result: std::result::Result<T, TransactionError<String>>) -> Result<T> {
        result.map_err(|error| match error {
            TransactionError::Abort(reason) => Error::Transaction(reason),
            TransactionError::Storage(error) => Error::Sled(error),
        })
    }

    fn update_unflushed(
        &self,
        id: &str,
        event: JobEvent,
        now_ms: u64,
        max_attempts: u32,
    ) -> Result<std::result::Result<JobRecord, TransitionError>> {
        let Some(current) = self.get(id)? else { return Err(Error::UnknownJob(id.to_string())) };
        let next = match apply(&current, event, now_ms, max_attempts) {
            Ok(next) => next,
            Err(refused) => return Ok(Err(refused)),
        };
        let trees = (&self.meta, &self.outputs, &self.by_state);
        let result = trees.transaction(|(meta, outputs, by_state)| {
            // The stored record must still be the one `next` was made from.
            let stored = meta.get(id.as_bytes())?.ok_or_else(|| corrupt("job record"))?;
            let stored: Meta = serde_json::from_slice(&stored).map_err(|_| corrupt("job record"))?;
            if stored.history.len() != current.history.len() || stored.state != current.state {
                return Err(ConflictableTransactionError::Abort("job changed concurrently; retry".into()));
            }
            write_meta(meta, &next)?;
            if let Some(bytes) = &next.outputs {
                outputs.insert(id.as_bytes(), bytes.as_slice())?;
            }
            by_state.remove(index_key(current.state, current.created_ms, id))?;
            by_state.insert(index_key(next.state, next.created_ms, id), &[])?;
            Ok(())
        });
        Self::committed(result)?;
        Ok(Ok(next))
    }

    fn insert_transaction(&self, job: JobRecord) -> Result<(Option<Vec<u8>>, JobRecord)> {
        let trees = (&self.meta, &self.request, &self.by_state, &self.idem);
        let result = trees.transaction(|(meta, request, by_state, idem)| {
            if let Some(key) = &job.idempotency_key
                && let Some(existing) = idem.get(key.as_bytes())?
            {
                return Ok(Some(existing.to_vec()));
            }
            write_meta(meta, &job)?;
            request.insert(job.id.as_bytes(), job.request.as_slice())?;
            by_state.insert(index_key(job.state, job.created_ms, &job.id), &[])?;
            if let Some(key) = &job.idempotency_key {
                idem.insert(key.as_bytes(), job.id.as_bytes())?;
            }
            Ok(None)
        });
        Ok((Self::committed(result)?, job))
    }

    fn resolve_insert(&self, existing_id: Option<Vec<u8>>, job: JobRecord) -> Result<Inserted> {
        match existing_id {
            None => Ok(Inserted::New(job)),
            Some(existing_id) => {
                let id = String::from_utf8(existing_id).map_err(|_| Error::Corrupt { what: "idempotency index" })?;
                let existing = self.get(&id)?.ok_or(Error::Corrupt { what: "idempotency index" })?;
                Ok(Inserted::Existing(existing))
            }
        }
    }
}

fn meta_of(job: &JobRecord) -> Meta {
    Meta {
        id: job.id.clone(),
        model: job.model.clone(),
        state: job.state,
        attempts: job.attempts,
        node: job.node.clone(),
        created_ms: job.created_ms,
        updated_ms: job.updated_ms,
        idempotency_key: job.idempotency_key.clone(),
        error: job.error.clone(),
        history: job.history.clone(),
    }
}

fn write_meta(tree: &TransactionalTree, job: &JobRecord) -> std::result::Result<(), Abort> {
    let bytes = serde_json::to_vec(&meta_of(job)).map_err(|_| corrupt("job record"))?;
    tree.insert(job.id.as_bytes(), bytes)?;
    Ok(())
}

impl JobStore for SledJobStore {
    fn insert(&self, job: JobRecord) -> Result<Inserted> {
        let (outcome, job) = self.insert_transaction(job)?;
        self.resolve_insert(outcome, job)
    }

    fn get(&self, id: &str) -> Result<Option<JobRecord>> {
        match self.meta.get(id.as_bytes())? {
            Some(bytes) => Ok(Some(self.assemble(Self::read_meta(&bytes)?)?)),
            None => Ok(None),
        }
    }

    fn by_key(&self, key: &str) -> Result<Option<JobRecord>> {
        let Some(id) = self.idem.get(key.as_bytes())? else { return Ok(None) };
        let id = std::str::from_utf8(&id).map_err(|_| Error::Corrupt { what: "idempotency index" })?;
        self.get(id)
    }

    fn update(
        &self,
        id: &str,
        event: JobEvent,
        now_ms: u64,
        max_attempts: u32,
    ) -> Result<std::result::Result<JobRecord, TransitionError>> {
        self.update_unflushed(id, event, now_ms, max_attempts)
    }

    fn count(&self, state: JobState) -> Result<u64> {
        let mut count = 0;
        for key in self.by_state.scan_prefix([state_byte(state)]).keys() {
            key?;
            count += 1;
        }
        Ok(count)
    }

    fn list(&self, filter: StateFilter, limit: usize) -> Result<Vec<JobRecord>> {
        let states: &[JobState] = match filter {
            StateFilter::Active => &[JobState::Accepted, JobState::Dispatched, JobState::Running],
            StateFilter::Completed => &[JobState::Completed],
            StateFilter::Failed => &[JobState::Failed],
        };
        let mut ids: Vec<(u64, String)> = Vec::new();
        for state in states {
            for entry in self.by_state.scan_prefix([state_byte(*state)]) {
                let (key, _) = entry?;
                let created = u64::from_be_bytes(
                    key.get(1..9).and_then(|b| b.try_into().ok()).ok_or(Error::Corrupt { what: "job index" })?,
                );
                let id = String::from_utf8(key[9..].to_vec()).map_err(|_| Error::Corrupt { what: "job index" })?;
                ids.push((created, id));
            }
        }
        ids.sort();
        ids.into_iter().take(limit).filter_map(|(_, id)| self.get(&id).transpose()).collect()
    }

    fn recover(&self) -> Result<Vec<JobRecord>> {
        self.list(StateFilter::Active, usize::MAX)
    }

    fn recent(&self, limit: usize) -> Result<Vec<JobRecord>> {
        let mut keys: Vec<(u64, String)> = Vec::new();
        let states =
            [JobState::Accepted, JobState::Dispatched, JobState::Running, JobState::Completed, JobState::Failed];
        for state in states {
            for key in self.by_state.scan_prefix([state_byte(state)]).keys().rev().take(limit) {
                let key = key?;
                let created = key.get(1..9).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
                let id = key.get(9..).and_then(|b| String::from_utf8(b.to_vec()).ok());
                let (Some(created), Some(id)) = (created, id) else { return Err(Error::Corrupt { what: "job index" }) };
                keys.push((created, id));
            }
        }
        keys.sort_by(|a, b| b.cmp(a));
        keys.into_iter().take(limit).filter_map(|(_, id)| self.get(&id).transpose()).collect()
    }

    fn prune(&self, now_ms: u64, retention: Retention) -> Result<usize> {
        let mut finished = self.list(StateFilter::Completed, usize::MAX)?;
        finished.extend(self.list(StateFilter::Failed, usize::MAX)?);
        let doomed = retention.expired(finished, now_ms);
        for job in &doomed {
            self.meta.remove(job.id.as_bytes())?;
            self.request.remove(job.id.as_bytes())?;
            self.outputs.remove(job.id.as_bytes())?;
            self.by_state.remove(index_key(job.state, job.created_ms, &job.id))?;
            if let Some(key) = &job.idempotency_key {
                self.idem.remove(key.as_bytes())?;
            }
        }
        let mut dropped = doomed.len();
        for entry in self.held.iter() {
            let (id, value) = entry?;
            let held_ms = value.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes);
            if retention.too_old(held_ms, now_ms) {
                self.held.remove(id)?;
                dropped += 1;
            }
        }
        self.flush()?;
        Ok(dropped)
    }

    fn hold_result(&self, id: &str, now_ms: u64, reply: &[u8]) -> Result<()> {
        let mut value = Vec::with_capacity(8 + reply.len());
        value.extend(now_ms.to_be_bytes());
        value.extend(reply);
        self.held.insert(id.as_bytes(), value)?;
        Ok(())
    }

    fn held_result(&self, id: &str) -> Result<Option<Vec<u8>>> {
        match self.held.get(id.as_bytes())? {
            Some(value) if value.len() >= 8 => Ok(Some(value[8..].to_vec())),
            Some(_) => Err(Error::Corrupt { what: "held result" }),
            None => Ok(None),
        }
    }

    fn release_result(&self, id: &str) -> Result<()> {
        self.held.remove(id.as_bytes())?;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
