//! Where a node draws randomness: the [`RngFactory`] seam (a leaf: it
//! imports nothing of this crate). Production seeds from the OS; the
//! simulator from the scenario's seed, so a run replays.

use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::StdRng;

/// Makes random number generators.
pub type RngFactory = Arc<dyn Fn() -> StdRng + Send + Sync>;

/// Generators seeded from the operating system.
pub fn os_rngs() -> RngFactory {
    Arc::new(|| rand::make_rng::<StdRng>())
}

/// A generator seeded from one of `factory`'s.
pub fn fork(factory: &RngFactory) -> StdRng {
    StdRng::from_rng(&mut factory())
}
