//! The environment a node runs in: where time, randomness, the gossip
//! network and hardware readings come from.
//!
//! `gpumesh node` uses [`NodeEnv::production`]; the simulator builds one from
//! simulated parts. Nothing in a node reads the clock, OS randomness or the
//! network except through this.

use std::sync::Arc;
use std::time::Duration;

use gpumesh_membership::transport::{Transport, UdpTransport};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::time::Instant;

use crate::hardware::{HardwareProbe, SystemProbe};

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

/// Makes hardware probes; a restarted metrics actor gets a fresh one.
pub type ProbeFactory = Arc<dyn Fn() -> Box<dyn HardwareProbe> + Send + Sync>;

/// Makes random number generators.
pub type RngFactory = Arc<dyn Fn() -> StdRng + Send + Sync>;

/// Everything a node takes from the outside world.
#[derive(Clone)]
pub struct NodeEnv {
    pub clock: Arc<dyn Clock>,
    pub rng: RngFactory,
    pub gossip_transport: Arc<dyn Transport>,
    pub probe: ProbeFactory,
    /// The network under ractor_cluster links to peers; `None` runs no node
    /// server and opens no links (a node alone).
    pub links: Option<Arc<dyn crate::link_net::LinkNet>>,
    /// Wraps the calls to other nodes' forward endpoints (the simulator
    /// records them); `None` calls them as they are.
    pub peer_layer: Option<crate::forward::peers::PeerLayer>,
    /// Where jobs are kept.
    pub job_storage: JobStorage,
    /// Faults of the device synthetic models stand for (the simulator's).
    pub gpu_faults: Arc<crate::executor::GpuFaults>,
}

/// Where a node keeps its jobs.
#[derive(Clone)]
pub enum JobStorage {
    /// sled in the data dir, flushed by a thread of its own.
    Sled,
    /// The simulator's store (its storage fault model: unflushed writes are
    /// lost in a crash), flushed by a task after a simulated disk latency.
    /// `ack_before_flush` is the deliberately broken build the simulator
    /// must catch.
    Simulated { store: Arc<dyn gpumesh_storage::JobStore>, flush_latency: Duration, ack_before_flush: bool },
}

impl NodeEnv {
    /// Real clock, OS randomness, UDP gossip, NVML and sysinfo, TCP links.
    pub fn production() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            rng: Arc::new(|| rand::make_rng::<StdRng>()),
            gossip_transport: Arc::new(UdpTransport),
            probe: Arc::new(|| Box::new(SystemProbe::new()) as Box<dyn HardwareProbe>),
            links: Some(Arc::new(crate::link_net::TcpLinks)),
            peer_layer: None,
            job_storage: JobStorage::Sled,
            gpu_faults: Arc::default(),
        }
    }

    /// A generator seeded from this environment's randomness.
    pub fn fork_rng(&self) -> StdRng {
        StdRng::from_rng(&mut (self.rng)())
    }
}
