//! Where a node reads time: the [`Clock`] seam (a leaf: it imports nothing
//! of this crate). Production reads the system clock through
//! [`SystemClock`]; the simulator hands in its own. Nothing else in the
//! workspace may call `Instant::now` or `SystemTime::now` (clippy.toml).

use tokio::time::Instant;

/// Monotonic and wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic time. tokio's clock, so simulated and paused runtimes
    /// control it.
    fn now(&self) -> Instant;
    /// Milliseconds since the Unix epoch.
    fn unix_ms(&self) -> u64;
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods, reason = "the production clock is the one place that reads time")]
    fn now(&self) -> Instant {
        Instant::now()
    }

    #[allow(clippy::disallowed_methods, reason = "the production clock is the one place that reads wall time")]
    fn unix_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}
