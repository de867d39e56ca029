//! The event log of a run; its SHA-256 is the report's `trace_sha256`.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

/// Lines of `<simulated ms> <event>`, shared by the driver and the
/// simulated network.
#[derive(Clone, Default)]
pub(crate) struct TraceLog(Arc<Mutex<Vec<String>>>);

impl TraceLog {
    /// Records an event at the current simulated time of the running host.
    pub(crate) fn record(&self, event: fmt::Arguments<'_>) {
        let now_ms = turmoil::sim_elapsed().map_or(0, |elapsed| elapsed.as_millis());
        self.push(format!("{now_ms:>8} {event}"));
    }

    /// Records an event seen by the driver at `now_ms`.
    pub(crate) fn record_at(&self, now_ms: u64, event: impl fmt::Display) {
        self.push(format!("{now_ms:>8} {event}"));
    }

    fn push(&self, line: String) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(line);
    }

    /// The lines so far.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// SHA-256 of the lines, each ended by a newline, as hex.
    pub(crate) fn sha256(&self) -> String {
        let mut hasher = Sha256::new();
        for line in self.0.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            hasher.update(line.as_bytes());
            hasher.update(b"\n");
        }
        hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect()
    }
}
