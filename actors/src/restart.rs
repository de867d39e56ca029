//! Restart backoff for supervised children (pure).
//!
//! A child that keeps failing is restarted after exponentially growing
//! delays with jitter, capped; one that stayed up long enough starts over
//! from the initial delay.

use std::time::Duration;

use rand::{Rng, RngExt};
use tokio::time::Instant;

/// How restarts are spaced.
#[derive(Clone, Copy, Debug)]
pub struct RestartPolicy {
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// A child up at least this long is considered healthy again.
    pub stable_after: Duration,
    /// Each delay is scaled by a random factor in `1 ± jitter`.
    pub jitter: f64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            stable_after: Duration::from_secs(30),
            jitter: 0.2,
        }
    }
}

/// Restart bookkeeping of one child.
#[derive(Clone, Debug, Default)]
pub struct RestartState {
    consecutive_failures: u32,
    started_at: Option<Instant>,
}

impl RestartState {
    /// Records that the child (re)started at `now`.
    pub fn started(&mut self, now: Instant) {
        self.started_at = Some(now);
    }

    /// How many failures in a row, counting from the last stable run.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Records a failure at `now` and returns how long to wait before the
    /// next start.
    pub fn failed(&mut self, policy: &RestartPolicy, now: Instant, rng: &mut impl Rng) -> Duration {
        let was_stable =
            self.started_at.is_some_and(|started| now.saturating_duration_since(started) >= policy.stable_after);
        if was_stable {
            self.consecutive_failures = 0;
        }
        let exponent = self.consecutive_failures.min(20);
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let base = policy.initial_delay.saturating_mul(1u32 << exponent).min(policy.max_delay);
        let factor =
            if policy.jitter > 0.0 { rng.random_range((1.0 - policy.jitter)..=(1.0 + policy.jitter)) } else { 1.0 };
        base.mul_f64(factor).min(policy.max_delay)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "a test picks any instant as its start")]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    const NO_JITTER: RestartPolicy = RestartPolicy {
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(2),
        stable_after: Duration::from_secs(30),
        jitter: 0.0,
    };

    #[test]
    fn delays_double_up_to_the_cap() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut state = RestartState::default();
        let now = Instant::now();
        let delays: Vec<u128> = (0..7)
            .map(|_| {
                state.started(now);
                state.failed(&NO_JITTER, now, &mut rng).as_millis()
            })
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600, 2000, 2000]);
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut state = RestartState::default();
        let start = Instant::now();
        for _ in 0..4 {
            state.started(start);
            state.failed(&NO_JITTER, start, &mut rng);
        }
        state.started(start);
        let delay = state.failed(&NO_JITTER, start + Duration::from_secs(31), &mut rng);
        assert_eq!(delay, Duration::from_millis(100));
        assert_eq!(state.consecutive_failures(), 1);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let policy = RestartPolicy { jitter: 0.2, ..NO_JITTER };
        let mut rng = StdRng::seed_from_u64(7);
        let now = Instant::now();
        for _ in 0..200 {
            let mut state = RestartState::default();
            let delay = state.failed(&policy, now, &mut rng);
            assert!((80..=120).contains(&delay.as_millis()), "{delay:?}");
        }
    }
}
