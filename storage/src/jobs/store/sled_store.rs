//! The sled job store.
//!
//! Layout: `job_record` id -> the job without its request (JSON of its
//! metadata, then its outputs once it has them); `job_request` id -> the
//! request bytes, written once; `job_by_state` state byte + created ms + id
//! -> (); `job_idem` idempotency key -> id; `job_held` id -> held ms (big
//! endian) and the result bytes of a job this node ran for another owner.
//!
//! Every change is plain single-key writes, never a sled transaction: in
//! sled 0.34 each transaction (and each batch) writes the log buffer out
//! twice, with a `sync_file_range` and a wake-up of every sled I/O thread
//! each, which made four transactions per job the cost of a durable submit
//! (docs/BENCHMARKS.md, issue 16). Plain writes ride the next flush, which
//! `DurableJobs` (group commit) makes before anything is acknowledged.
//!
//! What keeps it consistent:
//! - The record is the truth; the state index and the key index are
//!   derived. A job's changes are serialised by a lock striped by its id,
//!   and a reader checks each index entry against the record.
//! - A key is claimed with `compare_and_swap` after the job's record is
//!   written, so a loser of a race removes its own record and returns the
//!   winner's job, which is already there.
//! - Writes after the last flush may be lost in a crash, and not
//!   necessarily as a prefix: opening the store repairs it from the
//!   records. A record without its request was never acknowledged (both
//!   were written before the flush its acknowledgement waited for) and is
//!   dropped; a keyed job whose key names another job lost the key's race
//!   and is dropped; the state index is brought in line with the records.
//!   Stores of the layout before (`job_meta`, `job_outputs`) are converted
//!   on open.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::jobs::state::{JobEvent, JobRecord, JobState, TransitionError, apply};
use crate::jobs::store::record::{Meta, decode_record, encode_record, index_key, job_of, parse_index_key, state_byte};
use crate::jobs::store::{Inserted, JobStore, Retention, StateFilter};
use crate::{Error, Result};

/// Locks that serialise changes of one job (striped by id).
const LOCKS: usize = 64;

/// The sled job store; clones share the trees and the locks.
#[derive(Clone, Debug)]
pub struct SledJobStore {
    db: sled::Db,
    record: sled::Tree,
    request: sled::Tree,
    by_state: sled::Tree,
    idem: sled::Tree,
    held: sled::Tree,
    locks: Arc<[Mutex<()>]>,
    stripes: std::hash::RandomState,
}

impl SledJobStore {
    /// Opens the job trees of a node's database, converting a store of the
    /// layout before and repairing what a crash left half-written.
    pub fn open(db: &sled::Db) -> Result<Self> {
        let store = Self {
            db: db.clone(),
            record: db.open_tree("job_record")?,
            request: db.open_tree("job_request")?,
            by_state: db.open_tree("job_by_state")?,
            idem: db.open_tree("job_idem")?,
            held: db.open_tree("job_held")?,
            locks: (0..LOCKS).map(|_| Mutex::new(())).collect(),
            stripes: std::hash::RandomState::new(),
        };
        store.convert_old_layout()?;
        store.repair()?;
        Ok(store)
    }

    fn lock(&self, id: &str) -> std::sync::MutexGuard<'_, ()> {
        use std::hash::BuildHasher as _;
        let stripe = usize::try_from(self.stripes.hash_one(id) % LOCKS as u64).unwrap_or(0);
        self.locks[stripe].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores of the layout before kept the metadata (`job_meta`, JSON)
    /// and the outputs (`job_outputs`) in trees of their own.
    fn convert_old_layout(&self) -> Result<()> {
        let names = self.db.tree_names();
        if !names.iter().any(|name| name.as_ref() == b"job_meta") {
            return Ok(());
        }
        let (meta, outputs) = (self.db.open_tree("job_meta")?, self.db.open_tree("job_outputs")?);
        let mut converted = 0usize;
        for entry in &meta {
            let (id, bytes) = entry?;
            let meta: Meta = serde_json::from_slice(&bytes).map_err(|_| Error::Corrupt { what: "job record" })?;
            let outputs = outputs.get(&id)?.map(|bytes| bytes.to_vec());
            self.record.insert(&id, encode_record(&job_of(meta, Vec::new(), outputs))?)?;
            converted += 1;
        }
        self.db.flush()?;
        self.db.drop_tree("job_meta")?;
        self.db.drop_tree("job_outputs")?;
        tracing::info!(jobs = converted, "converted the job store to its single-record layout");
        Ok(())
    }

    /// Drops what was never acknowledged and brings both indexes in line
    /// with the records. Only what a crash left wrong is written: after a
    /// clean stop this reads every record and writes nothing.
    fn repair(&self) -> Result<()> {
        let mut dropped = 0usize;
        let mut indexed = HashSet::new();
        for entry in &self.record {
            let (id, bytes) = entry?;
            let (meta, _) = decode_record(&bytes)?;
            let orphan = !self.request.contains_key(&id)?;
            let lost_race = match &meta.idempotency_key {
                Some(key) if !orphan => self.lost_key(key, &id)?,
                _ => false,
            };
            if orphan || lost_race {
                self.record.remove(&id)?;
                self.request.remove(&id)?;
                dropped += 1;
                continue;
            }
            let key = index_key(meta.state, meta.created_ms, &meta.id);
            if !self.by_state.contains_key(&key)? {
                self.by_state.insert(key.as_slice(), &[])?;
            }
            indexed.insert(key);
        }
        for key in self.by_state.iter().keys() {
            let key = key?;
            if !indexed.contains(key.as_ref()) {
                self.by_state.remove(key)?;
            }
        }
        for entry in &self.idem {
            let (key, id) = entry?;
            if !self.intact(&id)? {
                self.idem.remove(key)?;
            }
        }
        self.db.flush()?;
        if dropped > 0 {
            tracing::warn!(dropped, "dropped jobs a crash left half-written; none was acknowledged");
        }
        Ok(())
    }

    /// Whether job `id` has its record and its request.
    fn intact(&self, id: &[u8]) -> Result<bool> {
        Ok(self.record.contains_key(id)? && self.request.contains_key(id)?)
    }

    /// Whether job `id` lost the race for `key` to another intact job;
    /// otherwise the key is made to name it.
    fn lost_key(&self, key: &str, id: &[u8]) -> Result<bool> {
        match self.idem.get(key.as_bytes())? {
            Some(holder) if holder == id => Ok(false),
            Some(holder) if self.intact(&holder)? => Ok(true),
            _ => {
                self.idem.insert(key.as_bytes(), id)?;
                Ok(false)
            }
        }
    }

    fn read(&self, id: &str) -> Result<Option<(Meta, Option<Vec<u8>>)>> {
        let Some(bytes) = self.record.get(id.as_bytes())? else { return Ok(None) };
        decode_record(&bytes).map(Some)
    }

    /// The entries the index lists under `states`: created ms, id, state.
    fn indexed(&self, states: &[JobState]) -> Result<Vec<(u64, String, JobState)>> {
        let mut ids = Vec::new();
        for state in states {
            for key in self.by_state.scan_prefix([state_byte(*state)]).keys() {
                let (created, id) = parse_index_key(&key?)?;
                ids.push((created, id, *state));
            }
        }
        Ok(ids)
    }

    /// The jobs of `entries`, in their order, at most `limit`; an entry
    /// whose record has moved on (a change under way) is skipped.
    fn load(&self, entries: Vec<(u64, String, JobState)>, limit: usize) -> Result<Vec<JobRecord>> {
        let mut jobs = Vec::new();
        for (_, id, state) in entries {
            if jobs.len() >= limit {
                break;
            }
            jobs.extend(self.get(&id)?.filter(|job| job.state == state));
        }
        Ok(jobs)
    }
}

impl JobStore for SledJobStore {
    fn insert(&self, job: JobRecord) -> Result<Inserted> {
        if let Some(existing) = job.idempotency_key.as_deref().map(|key| self.by_key(key)).transpose()?.flatten() {
            return Ok(Inserted::Existing(existing));
        }
        let _lock = self.lock(&job.id);
        let id = job.id.as_bytes();
        self.request.insert(id, job.request.as_slice())?;
        if self.record.compare_and_swap(id, None as Option<&[u8]>, Some(encode_record(&job)?))?.is_err() {
            return Err(Error::Transaction(format!("job id {} is taken", job.id)));
        }
        if let Some(key) = &job.idempotency_key
            && let Err(claimed) = self.idem.compare_and_swap(key.as_bytes(), None as Option<&[u8]>, Some(id))?
        {
            // Another submit of the key got there first: its job is stored.
            self.record.remove(id)?;
            self.request.remove(id)?;
            let winner = claimed.current.ok_or(Error::Corrupt { what: "idempotency index" })?;
            let winner = std::str::from_utf8(&winner).map_err(|_| Error::Corrupt { what: "idempotency index" })?;
            return self.get(winner)?.map(Inserted::Existing).ok_or(Error::Corrupt { what: "idempotency index" });
        }
        self.by_state.insert(index_key(job.state, job.created_ms, &job.id), &[])?;
        Ok(Inserted::New(job))
    }

    fn get(&self, id: &str) -> Result<Option<JobRecord>> {
        let Some((meta, outputs)) = self.read(id)? else { return Ok(None) };
        let request = self.request.get(id.as_bytes())?.map(|bytes| bytes.to_vec()).unwrap_or_default();
        Ok(Some(job_of(meta, request, outputs)))
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
        let _lock = self.lock(id);
        let Some(current) = self.get(id)? else { return Err(Error::UnknownJob(id.to_string())) };
        let next = match apply(&current, event, now_ms, max_attempts) {
            Ok(next) => next,
            Err(refused) => return Ok(Err(refused)),
        };
        let (old_key, new_key) =
            (index_key(current.state, current.created_ms, id), index_key(next.state, next.created_ms, id));
        self.by_state.insert(new_key.as_slice(), &[])?;
        self.record.insert(id.as_bytes(), encode_record(&next)?)?;
        if old_key != new_key {
            self.by_state.remove(old_key)?;
        }
        Ok(Ok(next))
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
        let mut entries = self.indexed(states)?;
        entries.sort();
        self.load(entries, limit)
    }

    fn recover(&self) -> Result<Vec<JobRecord>> {
        self.list(StateFilter::Active, usize::MAX)
    }

    fn recent(&self, limit: usize) -> Result<Vec<JobRecord>> {
        let states =
            [JobState::Accepted, JobState::Dispatched, JobState::Running, JobState::Completed, JobState::Failed];
        let mut entries = self.indexed(&states)?;
        entries.sort_by(|a, b| b.cmp(a));
        self.load(entries, limit)
    }

    fn prune(&self, now_ms: u64, retention: Retention) -> Result<usize> {
        let mut finished = self.list(StateFilter::Completed, usize::MAX)?;
        finished.extend(self.list(StateFilter::Failed, usize::MAX)?);
        let doomed = retention.expired(finished, now_ms);
        for job in &doomed {
            let _lock = self.lock(&job.id);
            self.by_state.remove(index_key(job.state, job.created_ms, &job.id))?;
            if let Some(key) = &job.idempotency_key {
                let _ = self.idem.compare_and_swap(key.as_bytes(), Some(job.id.as_bytes()), None as Option<&[u8]>)?;
            }
            self.record.remove(job.id.as_bytes())?;
            self.request.remove(job.id.as_bytes())?;
        }
        let mut dropped = doomed.len();
        for entry in &self.held {
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
