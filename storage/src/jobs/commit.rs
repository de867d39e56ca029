//! Group commit: many concurrent submits share one flush.
//!
//! A writer finishes its (unflushed) write, takes a ticket, and waits until
//! a flush that started after its ticket has completed. One flusher reads
//! the highest ticket, flushes, and publishes that ticket as durable: every
//! write with a ticket at or below it happened before the flush began, so it
//! is on disk. Under load one flush covers many writes; alone, a submit
//! costs one flush.
//!
//! In production the flusher is a thread of its own (a flush then costs no
//! hand-over to a pool thread and back: thread switches dominated the cost
//! of a durable submit). In the simulator it is a task on the node's
//! runtime that takes a simulated disk latency before each flush, so a
//! crash can land between a write and its flush.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::jobs::state::{JobEvent, JobRecord, TransitionError};
use crate::jobs::store::{Inserted, JobStore, Retention};
use crate::{Error, Result};

/// Highest durable ticket, or why flushing stopped.
type Durable = std::result::Result<u64, String>;

/// Longest a writer waits for the flush that covers it; beyond it the
/// write is not acknowledged (it may still reach the disk).
const FLUSH_STALLED_AFTER: Duration = Duration::from_secs(10);

/// Who flushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flusher {
    /// A thread of its own; store calls that may block run on blocking
    /// threads (production).
    Thread,
    /// A task on the current runtime that waits `latency` before each flush;
    /// every store call runs inline (the simulator, single-threaded and
    /// deterministic).
    Task { latency: Duration },
}

/// The job store with group commit for submits.
#[derive(Clone)]
pub struct DurableJobs {
    store: Arc<dyn JobStore>,
    flusher: Flusher,
    tickets: Arc<AtomicU64>,
    flushes: Arc<AtomicU64>,
    wake: Arc<Wake>,
    durable: watch::Receiver<Durable>,
    /// A deliberately broken build for the simulator: acknowledge a submit
    /// before its flush. Never set outside the simulator.
    ack_before_flush: Arc<AtomicBool>,
    /// Stops the flusher when the last handle is dropped.
    _closer: Arc<Closer>,
}

struct Closer(Arc<Wake>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.close();
    }
}

struct Shared {
    store: Arc<dyn JobStore>,
    tickets: Arc<AtomicU64>,
    flushes: Arc<AtomicU64>,
    wake: Arc<Wake>,
}

impl DurableJobs {
    /// Starts the flusher; it ends when every handle is dropped.
    pub fn start(store: Arc<dyn JobStore>, flusher: Flusher) -> Self {
        let tickets = Arc::new(AtomicU64::new(0));
        let flushes = Arc::new(AtomicU64::new(0));
        let wake = Arc::new(Wake::default());
        let (durable_tx, durable) = watch::channel(Ok(0));
        let shared =
            Shared { store: store.clone(), tickets: tickets.clone(), flushes: flushes.clone(), wake: wake.clone() };
        match flusher {
            Flusher::Thread => {
                let spawned = std::thread::Builder::new()
                    .name("gpumesh-flusher".into())
                    .spawn(move || flush_thread(&shared, &durable_tx));
                if let Err(error) = spawned {
                    // The sender went with the failed closure: every wait
                    // reports that the flusher stopped; nothing is acknowledged.
                    tracing::error!(%error, "cannot start the job store flusher thread; jobs cannot be accepted");
                }
            }
            Flusher::Task { latency } => {
                tokio::spawn(flush_task(shared, durable_tx, latency));
            }
        }
        Self {
            store,
            flusher,
            tickets,
            flushes,
            wake: wake.clone(),
            durable,
            ack_before_flush: Arc::default(),
            _closer: Arc::new(Closer(wake)),
        }
    }

    /// The underlying store (reads, and writes that need no flush).
    pub fn store(&self) -> &dyn JobStore {
        self.store.as_ref()
    }

    /// Flushes done since the start.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Breaks the acknowledgement promise on purpose (submits return before
    /// their flush): only the simulator sets this, to prove it catches it.
    pub fn set_ack_before_flush(&self, broken: bool) {
        self.ack_before_flush.store(broken, Ordering::Relaxed);
    }

    /// Stores a new job and returns once it is on disk: the caller may
    /// acknowledge it.
    ///
    /// The write itself runs on the calling task: sled writes go to memory
    /// in microseconds, and only the flush touches the disk. Handing each
    /// write to a blocking thread cost more in thread switches than the
    /// write (measured: `gpumesh bench --jobs`).
    pub async fn submit(&self, job: JobRecord) -> Result<Inserted> {
        let inserted = self.store.insert(job)?;
        if !self.ack_before_flush.load(Ordering::Relaxed) {
            self.wait_durable().await?;
        }
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
        self.store.update(id, event, now_ms, max_attempts)
    }

    /// Keeps the result of a job run here for another owner, on disk, until
    /// that owner has it.
    pub async fn hold_result(&self, id: &str, now_ms: u64, reply: &[u8]) -> Result<()> {
        self.store.hold_result(id, now_ms, reply)?;
        self.wait_durable().await
    }

    /// Drops finished jobs and held results beyond `retention`.
    pub async fn prune(&self, now_ms: u64, retention: Retention) -> Result<usize> {
        match self.flusher {
            Flusher::Task { .. } => self.store.prune(now_ms, retention),
            Flusher::Thread => {
                let store = self.store.clone();
                tokio::task::spawn_blocking(move || store.prune(now_ms, retention))
                    .await
                    .map_err(|error| Error::Transaction(format!("retention task failed: {error}")))?
            }
        }
    }

    /// Waits until everything written before this call is on disk.
    pub async fn wait_durable(&self) -> Result<()> {
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        self.wake.notify();
        let mut durable = self.durable.clone();
        let flushed = durable.wait_for(|state| state.as_ref().map_or(true, |flushed| *flushed >= ticket));
        // sled can block a flush for good after a write failed (seen on a
        // full disk): the caller gets an error instead of waiting forever.
        let outcome = tokio::time::timeout(FLUSH_STALLED_AFTER, flushed)
            .await
            .map_err(|_| Error::FlushStalled { waited_s: FLUSH_STALLED_AFTER.as_secs() })?
            .map_err(|_| Error::Transaction("the flusher stopped".into()))?;
        match &*outcome {
            Ok(_) => Ok(()),
            Err(reason) => Err(Error::Transaction(format!("flush failed: {reason}"))),
        }
    }
}

impl Shared {
    /// Flushes up to the newest ticket; `false` when the store failed.
    fn flush(&self, durable: &watch::Sender<Durable>, flushed: &mut u64) -> bool {
        let target = self.tickets.load(Ordering::SeqCst);
        match self.store.flush() {
            Ok(()) => {
                self.flushes.fetch_add(1, Ordering::Relaxed);
                *flushed = target;
                let _previous = durable.send_replace(Ok(target));
                true
            }
            Err(error) => {
                let _previous = durable.send_replace(Err(error.to_string()));
                false
            }
        }
    }
}

fn flush_thread(shared: &Shared, durable: &watch::Sender<Durable>) {
    let mut flushed = 0;
    loop {
        if shared.tickets.load(Ordering::SeqCst) == flushed {
            if !shared.wake.wait(|| shared.tickets.load(Ordering::SeqCst) != flushed) {
                return;
            }
            continue;
        }
        if !shared.flush(durable, &mut flushed) {
            return;
        }
    }
}

async fn flush_task(shared: Shared, durable: watch::Sender<Durable>, latency: Duration) {
    let mut flushed = 0;
    loop {
        if shared.tickets.load(Ordering::SeqCst) == flushed {
            tokio::select! {
                () = shared.wake.notified() => {}
                () = durable.closed() => return,
            }
            continue;
        }
        if shared.wake.is_closed() {
            return;
        }
        // The disk takes its time: writes made meanwhile ride along.
        tokio::time::sleep(latency).await;
        if !shared.flush(&durable, &mut flushed) {
            return;
        }
    }
}

/// Wakes the flusher; closed when the last handle is dropped.
#[derive(Default)]
struct Wake {
    state: std::sync::Mutex<WakeState>,
    signal: std::sync::Condvar,
    task: tokio::sync::Notify,
}

#[derive(Default)]
struct WakeState {
    pending: bool,
    closed: bool,
}

impl Wake {
    fn lock(&self) -> std::sync::MutexGuard<'_, WakeState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn notify(&self) {
        self.lock().pending = true;
        self.signal.notify_one();
        self.task.notify_one();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.signal.notify_one();
        self.task.notify_one();
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The flusher task's wait (its state is the ticket count).
    async fn notified(&self) {
        self.task.notified().await;
    }

    /// The flusher thread's wait; `false` once closed.
    fn wait(&self, ready: impl Fn() -> bool) -> bool {
        let mut state = self.lock();
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
    use crate::SledJobStore;

    fn start(db: &sled::Db) -> DurableJobs {
        DurableJobs::start(Arc::new(SledJobStore::open(db).expect("trees")), Flusher::Thread)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_submits_are_all_stored_and_share_flushes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        let jobs = start(&db);
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
        assert!(jobs.flushes() < 200, "flushes were shared: {}", jobs.flushes());
        assert!(jobs.flushes() >= 1);
        assert_eq!(jobs.store().recover().expect("recover").len(), 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recorded_changes_are_durable_after_a_wait_and_the_flusher_stops_with_the_last_handle() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = sled::open(dir.path()).expect("sled");
            let jobs = start(&db);
            jobs.submit(JobRecord::accepted("n1.1".into(), "m".into(), vec![1], None, 1)).await.expect("durable");
            let dispatched = JobEvent::Dispatched { node: "n2".into() };
            jobs.record("n1.1", dispatched, 2, 3).expect("stored").expect("applies");
            jobs.wait_durable().await.expect("flushed");
            assert!(jobs.flushes() >= 2, "the wait flushed the recorded change");
            let copy = jobs.clone();
            drop(jobs);
            copy.wait_durable().await.expect("a clone keeps the flusher");
        }
        // Every handle is gone: the flusher thread lets go of the database,
        // so it opens again (sled locks a database to one opener).
        let reopened = crate::reopen_sled(dir.path());
        let store = SledJobStore::open(&reopened).expect("trees");
        let job = store.get("n1.1").expect("read").expect("present");
        assert_eq!(job.node.as_deref(), Some("n2"), "the recorded change was flushed");
    }
}
