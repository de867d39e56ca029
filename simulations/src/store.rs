//! The storage fault model: a job store whose writes are lost in a crash
//! unless a flush made them durable, as on a real disk.
//!
//! Each table keeps its durable contents and the writes made since the last
//! flush. Reads see both; a flush folds the writes into the durable part; a
//! crash throws them away. The job state machine is the real one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use gpumesh_storage::jobs::{
    Inserted, JobEvent, JobRecord, JobState, JobStore, Retention, StateFilter, TransitionError, apply,
};

/// A table with a durable part and unflushed writes (`None`: removed).
struct Layered<V> {
    durable: BTreeMap<String, V>,
    pending: BTreeMap<String, Option<V>>,
}

impl<V: Clone> Default for Layered<V> {
    fn default() -> Self {
        Self { durable: BTreeMap::new(), pending: BTreeMap::new() }
    }
}

impl<V: Clone> Layered<V> {
    fn get(&self, key: &str) -> Option<V> {
        match self.pending.get(key) {
            Some(value) => value.clone(),
            None => self.durable.get(key).cloned(),
        }
    }

    fn put(&mut self, key: &str, value: V) {
        self.pending.insert(key.to_string(), Some(value));
    }

    fn remove(&mut self, key: &str) {
        self.pending.insert(key.to_string(), None);
    }

    /// Every live entry, in key order.
    fn entries(&self) -> Vec<(String, V)> {
        let mut merged = self.durable.clone();
        for (key, value) in &self.pending {
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        merged.into_iter().collect()
    }

    /// Makes the pending writes durable; returns the values written.
    fn flush(&mut self) -> Vec<V> {
        let mut written = Vec::with_capacity(self.pending.len());
        for (key, value) in std::mem::take(&mut self.pending) {
            match value {
                Some(value) => {
                    written.push(value.clone());
                    self.durable.insert(key, value);
                }
                None => {
                    self.durable.remove(&key);
                }
            }
        }
        written
    }

    fn crash(&mut self) {
        self.pending.clear();
    }
}

#[derive(Default)]
struct Tables {
    jobs: Layered<JobRecord>,
    idem: Layered<String>,
    held: Layered<(u64, Vec<u8>)>,
    /// Every version of a job a flush made durable since the checker last
    /// looked, in flush order.
    flushed: Vec<JobRecord>,
}

/// One node's job store in simulation; it outlives the node's crashes.
#[derive(Clone, Default)]
pub(crate) struct SimJobStore(Arc<Mutex<Tables>>);

impl SimJobStore {
    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The node crashed: every write not yet flushed is gone.
    pub(crate) fn crash(&self) {
        let mut tables = self.tables();
        tables.jobs.crash();
        tables.idem.crash();
        tables.held.crash();
    }

    /// A restart without its disk: nothing is left.
    pub(crate) fn wipe(&self) {
        *self.tables() = Tables::default();
    }

    /// Jobs as they are on disk: what survives a crash and what readers see.
    pub(crate) fn durable_jobs(&self) -> Vec<JobRecord> {
        self.tables().jobs.durable.values().cloned().collect()
    }

    /// Every job version flushed to disk since the last call, in order.
    pub(crate) fn flushed_jobs(&self) -> Vec<JobRecord> {
        std::mem::take(&mut self.tables().flushed)
    }
}

fn in_filter(state: JobState, filter: StateFilter) -> bool {
    match filter {
        StateFilter::Active => !state.is_final(),
        StateFilter::Completed => state == JobState::Completed,
        StateFilter::Failed => state == JobState::Failed,
    }
}

impl JobStore for SimJobStore {
    fn insert(&self, job: JobRecord) -> gpumesh_storage::Result<Inserted> {
        let mut tables = self.tables();
        if let Some(key) = &job.idempotency_key
            && let Some(existing) = tables.idem.get(key).and_then(|id| tables.jobs.get(&id))
        {
            return Ok(Inserted::Existing(existing));
        }
        if let Some(key) = &job.idempotency_key {
            tables.idem.put(key, job.id.clone());
        }
        tables.jobs.put(&job.id, job.clone());
        Ok(Inserted::New(job))
    }

    fn get(&self, id: &str) -> gpumesh_storage::Result<Option<JobRecord>> {
        Ok(self.tables().jobs.get(id))
    }

    fn by_key(&self, key: &str) -> gpumesh_storage::Result<Option<JobRecord>> {
        let tables = self.tables();
        Ok(tables.idem.get(key).and_then(|id| tables.jobs.get(&id)))
    }

    fn update(
        &self,
        id: &str,
        event: JobEvent,
        now_ms: u64,
        max_attempts: u32,
    ) -> gpumesh_storage::Result<Result<JobRecord, TransitionError>> {
        let mut tables = self.tables();
        let Some(current) = tables.jobs.get(id) else { return Err(gpumesh_storage::Error::UnknownJob(id.into())) };
        let next = match apply(&current, event, now_ms, max_attempts) {
            Ok(next) => next,
            Err(refused) => return Ok(Err(refused)),
        };
        tables.jobs.put(id, next.clone());
        Ok(Ok(next))
    }

    fn list(&self, filter: StateFilter, limit: usize) -> gpumesh_storage::Result<Vec<JobRecord>> {
        let mut jobs: Vec<JobRecord> = self
            .tables()
            .jobs
            .entries()
            .into_iter()
            .map(|(_, job)| job)
            .filter(|j| in_filter(j.state, filter))
            .collect();
        jobs.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        jobs.truncate(limit);
        Ok(jobs)
    }

    fn count(&self, state: gpumesh_storage::jobs::JobState) -> gpumesh_storage::Result<u64> {
        Ok(self.tables().jobs.entries().into_iter().filter(|(_, job)| job.state == state).count() as u64)
    }

    fn recent(&self, limit: usize) -> gpumesh_storage::Result<Vec<JobRecord>> {
        let mut jobs: Vec<JobRecord> = self.tables().jobs.entries().into_iter().map(|(_, job)| job).collect();
        jobs.sort_by(|a, b| (b.created_ms, &b.id).cmp(&(a.created_ms, &a.id)));
        jobs.truncate(limit);
        Ok(jobs)
    }

    fn recover(&self) -> gpumesh_storage::Result<Vec<JobRecord>> {
        self.list(StateFilter::Active, usize::MAX)
    }

    fn prune(&self, now_ms: u64, retention: Retention) -> gpumesh_storage::Result<usize> {
        let mut tables = self.tables();
        let finished: Vec<JobRecord> =
            tables.jobs.entries().into_iter().map(|(_, job)| job).filter(|j| j.state.is_final()).collect();
        let mut dropped = 0;
        for job in retention.expired(finished, now_ms) {
            tables.jobs.remove(&job.id);
            if let Some(key) = &job.idempotency_key {
                tables.idem.remove(key);
            }
            dropped += 1;
        }
        for (id, (held_ms, _)) in tables.held.entries() {
            if retention.too_old(held_ms, now_ms) {
                tables.held.remove(&id);
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    fn hold_result(&self, id: &str, now_ms: u64, reply: &[u8]) -> gpumesh_storage::Result<()> {
        self.tables().held.put(id, (now_ms, reply.to_vec()));
        Ok(())
    }

    fn held_result(&self, id: &str) -> gpumesh_storage::Result<Option<Vec<u8>>> {
        Ok(self.tables().held.get(id).map(|(_, reply)| reply))
    }

    fn release_result(&self, id: &str) -> gpumesh_storage::Result<()> {
        self.tables().held.remove(id);
        Ok(())
    }

    fn flush(&self) -> gpumesh_storage::Result<()> {
        let mut tables = self.tables();
        let written = tables.jobs.flush();
        tables.flushed.extend(written);
        tables.idem.flush();
        tables.held.flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, key: Option<&str>) -> JobRecord {
        JobRecord::accepted(id.into(), "m".into(), vec![1], key.map(String::from), 1)
    }

    #[test]
    fn a_crash_loses_exactly_the_unflushed_writes() {
        let store = SimJobStore::default();
        store.insert(job("n1.1", Some("k"))).expect("insert");
        store.flush().expect("flush");
        store.update("n1.1", JobEvent::Dispatched { node: "n2".into() }, 2, 3).expect("stored").expect("applies");
        store.insert(job("n1.2", None)).expect("insert");
        assert_eq!(store.list(StateFilter::Active, 10).expect("list").len(), 2, "reads see unflushed writes");
        assert_eq!(store.durable_jobs().len(), 1);
        store.crash();
        let survivor = store.get("n1.1").expect("get").expect("flushed job survives");
        assert_eq!(survivor.state, JobState::Accepted, "the unflushed dispatch is gone");
        assert_eq!(store.get("n1.2").expect("get"), None, "the unflushed job is gone");
        assert!(matches!(store.insert(job("n1.3", Some("k"))).expect("insert"), Inserted::Existing(_)));
    }
}
