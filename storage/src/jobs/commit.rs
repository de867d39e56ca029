//! Group commit: many concurrent submits share one flush.
//!
//! A writer finishes its (unflushed) write, takes a ticket, and waits until
//! a flush that started after its ticket has completed. One flusher thread
//! reads the highest ticket, flushes, and publishes that ticket as durable:
//! every write with a ticket at or below it happened before the flush began,
//! so it is on disk. Under load one flush covers many writes; alone, a
//! submit costs one flush, as before.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use crate::jobs::state::{JobEvent, JobRecord, TransitionError};
use crate::jobs::store::{Inserted, JobStore as _, SledJobStore};
use crate::{Error, Result};

/// Highest durable ticket, or why flushing stopped.
type Durable = std::result::Result<u64, String>;

/// The job store with group commit for submits.
#[derive(Clone)]
pub struct DurableJobs {
    store: Arc<SledJobStore>,
    tickets: Arc<AtomicU64>,
    wake: Arc<Wake>,
    durable: watch::Receiver<Durable>,
    /// Stops the flusher when the last handle is dropped.
    _closer: Arc<Closer>,
}

struct Closer(Arc<Wake>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl DurableJobs {
    /// Starts the flusher thread; it ends when every handle is dropped.
    pub fn start(store: SledJobStore) -> Self {
        let store = Arc::new(store);
        let tickets = Arc::new(AtomicU64::new(0));
        let wake = Arc::new(Wake::default());
        let (durable_tx, durable) = watch::channel(Ok(0));
        let (flush_store, flush_tickets, flush_wake) = (store.clone(), tickets.clone(), wake.clone());
        let spawned = std::thread::Builder::new()
            .name("gpumesh-flusher".into())
            .spawn(move || flusher(flush_store, flush_tickets, flush_wake, durable_tx));
        if let Err(error) = spawned {
            // The sender went with the failed closure: every wait reports
            // that the flusher stopped, and no job is acknowledged.
            tracing::error!(%error, "cannot start the job store flusher thread; jobs cannot be accepted");
        }
        Self { store, tickets, wake: wake.clone(), durable, _closer: Arc::new(Closer(wake)) }
    }

    /// The underlying store (reads and state changes).
    pub fn store(&self) -> &SledJobStore {
        &self.store
    }

    /// Stores a new job and returns once it is on disk: the caller may
    /// acknowledge it.
    ///
    /// The write itself runs on the calling task: sled writes go to memory
    /// in microseconds, and only the flush, on its own thread, touches the
    /// disk. Handing each write to a blocking thread cost more in thread
    /// switches than the write (measured: `gpumesh bench --jobs`).
    pub async fn submit(&self, job: JobRecord) -> Result<Inserted> {
        let inserted = self.store.insert_unflushed(job)?;
        self.wait_durable().await?;
        Ok(inserted)
    }

    /// Applies `event` without waiting for the disk: a caller that needs
    /// the change durable (before telling another node, or before a reader
    /// sees it) calls [`Self::wait_durable`]. A change lost in a crash is
    /// one the owner redoes: its job was not final on disk.
    pub fn record(
        &self,
        id: &str,
        event: JobEvent,
        now_ms: u64,
        max_attempts: u32,
    ) -> Result<std::result::Result<JobRecord, TransitionError>> {
        self.store.update_unflushed(id, event, now_ms, max_attempts)
    }

    /// Keeps the result of a job run here for another owner, on disk, until
    /// that owner has it.
    pub async fn hold_result(&self, id: &str, now_ms: u64, reply: &[u8]) -> Result<()> {
        self.store.hold_result(id, now_ms, reply)?;
        self.wait_durable().await
    }

    /// Waits until everything written before this call is on disk.
    pub async fn wait_durable(&self) -> Result<()> {
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        self.wake.notify();
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

/// The flusher: one thread of its own, so a flush costs no hand-over to a
/// pool thread and back (thread switches dominated the cost of a durable
/// submit before).
fn flusher(store: Arc<SledJobStore>, tickets: Arc<AtomicU64>, wake: Arc<Wake>, durable: watch::Sender<Durable>) {
    let mut flushed = 0;
    loop {
        let target = tickets.load(Ordering::SeqCst);
        if target == flushed {
            if !wake.wait(|| tickets.load(Ordering::SeqCst) != flushed) {
                return;
            }
            continue;
        }
        match store.flush() {
            Ok(()) => {
                flushed = target;
                let _previous = durable.send_replace(Ok(flushed));
            }
            Err(error) => {
                let _previous = durable.send_replace(Err(error.to_string()));
                return;
            }
        }
    }
}

/// Wakes the flusher thread; closed when the last handle is dropped.
#[derive(Default)]
struct Wake {
    state: std::sync::Mutex<WakeState>,
    signal: std::sync::Condvar,
}

#[derive(Default)]
struct WakeState {
    pending: bool,
    closed: bool,
}

impl Wake {
    fn notify(&self) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.pending = true;
        self.signal.notify_one();
    }

    fn close(&self) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.closed = true;
        self.signal.notify_one();
    }

    /// Waits for work; `false` once closed.
    fn wait(&self, ready: impl Fn() -> bool) -> bool {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if state.closed {
                return false;
            }
            if state.pending || ready() {
                state.pending = false;
                return true;
            }
            state = self.signal.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recorded_changes_are_durable_after_a_wait_and_the_flusher_stops_with_the_last_handle() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = sled::open(dir.path()).expect("sled");
            let jobs = DurableJobs::start(SledJobStore::open(&db).expect("trees"));
            jobs.submit(JobRecord::accepted("n1.1".into(), "m".into(), vec![1], None, 1)).await.expect("durable");
            let dispatched = JobEvent::Dispatched { node: "n2".into() };
            jobs.record("n1.1", dispatched, 2, 3).expect("stored").expect("applies");
            jobs.wait_durable().await.expect("flushed");
            assert!(jobs.store().flushes() >= 2, "the wait flushed the recorded change");
            let copy = jobs.clone();
            drop(jobs);
            copy.wait_durable().await.expect("a clone keeps the flusher");
        }
        // Every handle is gone: the flusher thread lets go of the database,
        // so it opens again (sled locks a database to one opener).
        let reopened = {
            let deadline = std::time::Duration::from_secs(5);
            let path = dir.path().to_path_buf();
            tokio::time::timeout(deadline, async move {
                loop {
                    if let Ok(db) = sled::open(&path) {
                        return db;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            })
            .await
            .expect("the flusher thread stopped")
        };
        let store = SledJobStore::open(&reopened).expect("trees");
        let job = store.get("n1.1").expect("read").expect("present");
        assert_eq!(job.node.as_deref(), Some("n2"), "the recorded change was flushed");
    }
}
