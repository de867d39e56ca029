//! Group commit: many concurrent submits share one flush.
//!
//! A writer finishes its (unflushed) write, takes a ticket, and waits until
//! a flush that started after its ticket has completed. One flusher task
//! reads the highest ticket, flushes, and publishes that ticket as durable:
//! every write with a ticket at or below it happened before the flush began,
//! so it is on disk. Under load one flush covers many writes; alone, a
//! submit costs one flush, as before.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Notify, watch};

use crate::jobs::state::JobRecord;
use crate::jobs::store::{Inserted, SledJobStore};
use crate::{Error, Result};

/// Highest durable ticket, or why flushing stopped.
type Durable = std::result::Result<u64, String>;

/// The job store with group commit for submits.
#[derive(Clone)]
pub struct DurableJobs {
    store: Arc<SledJobStore>,
    tickets: Arc<AtomicU64>,
    wake: Arc<Notify>,
    durable: watch::Receiver<Durable>,
}

impl DurableJobs {
    /// Starts the flusher task on the current tokio runtime; it ends when
    /// every handle is dropped.
    pub fn start(store: SledJobStore) -> Self {
        let store = Arc::new(store);
        let tickets = Arc::new(AtomicU64::new(0));
        let wake = Arc::new(Notify::new());
        let (durable_tx, durable) = watch::channel(Ok(0));
        tokio::spawn(flusher(store.clone(), tickets.clone(), wake.clone(), durable_tx));
        Self { store, tickets, wake, durable }
    }

    /// The underlying store (reads and state changes).
    pub fn store(&self) -> &SledJobStore {
        &self.store
    }

    /// Stores a new job and returns once it is on disk: the caller may
    /// acknowledge it.
    pub async fn submit(&self, job: JobRecord) -> Result<Inserted> {
        let store = self.store.clone();
        let inserted = tokio::task::spawn_blocking(move || store.insert_unflushed(job))
            .await
            .map_err(|error| Error::Transaction(format!("submit task failed: {error}")))??;
        self.wait_durable().await?;
        Ok(inserted)
    }

    /// Waits until everything written before this call is on disk.
    pub async fn wait_durable(&self) -> Result<()> {
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        self.wake.notify_one();
        let mut durable = self.durable.clone();
        let outcome = durable
            .wait_for(|state| state.as_ref().map_or(true, |flushed| *flushed >= ticket))
            .await
            .map_err(|_| Error::Transaction("the flusher stopped".into()))?;
        match &*outcome {
            Ok(_) => Ok(()),
            Err(reason) => Err(Error::Transaction(format!("flush failed: {reason}"))),
        }
    }
}

async fn flusher(
    store: Arc<SledJobStore>,
    tickets: Arc<AtomicU64>,
    wake: Arc<Notify>,
    durable: watch::Sender<Durable>,
) {
    let mut flushed = 0;
    loop {
        if tickets.load(Ordering::SeqCst) == flushed {
            tokio::select! {
                () = wake.notified() => {}
                () = durable.closed() => return,
            }
            continue;
        }
        let target = tickets.load(Ordering::SeqCst);
        let flush_store = store.clone();
        match tokio::task::spawn_blocking(move || flush_store.flush()).await {
            Ok(Ok(())) => {
                flushed = target;
                let _previous = durable.send_replace(Ok(flushed));
            }
            Ok(Err(error)) => {
                let _previous = durable.send_replace(Err(error.to_string()));
                return;
            }
            Err(error) => {
                let _previous = durable.send_replace(Err(error.to_string()));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::store::JobStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_submits_are_all_stored_and_share_flushes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        let jobs = DurableJobs::start(SledJobStore::open(&db).expect("trees"));
        let submits: Vec<_> = (0..200)
            .map(|i| {
                let jobs = jobs.clone();
                tokio::spawn(async move {
                    jobs.submit(JobRecord::accepted(format!("n1.{i:04}"), "m".into(), vec![1; 64], None, i)).await
                })
            })
            .collect();
        for submit in submits {
            assert!(matches!(submit.await.expect("task").expect("durable"), Inserted::New(_)));
        }
        // Each submit returned only after a flush that began after its
        // write; 200 submits needed far fewer flushes.
        assert!(jobs.store().flushes() < 200, "flushes were shared: {}", jobs.store().flushes());
        assert!(jobs.store().flushes() >= 1);
        assert_eq!(jobs.store().recover().expect("recover").len(), 200);
    }
}
