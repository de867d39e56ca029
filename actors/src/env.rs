//! The environment a node runs in: where time, randomness, the gossip
//! network and hardware readings come from.
//!
//! `gpumesh node` uses [`NodeEnv::production`]; the simulator builds one from
//! simulated parts. Nothing in a node reads the clock, OS randomness or the
//! network except through this. The clock and randomness seams themselves
//! are the leaf modules `clock` and `rng`, which every actor may import.

use std::sync::Arc;
use std::time::Duration;

use gpumesh_membership::transport::{Transport, UdpTransport};
use rand::rngs::StdRng;

use crate::clock::{Clock, SystemClock};
use crate::hardware::{HardwareProbe, SystemProbe};
use crate::rng::RngFactory;

/// Makes hardware probes; a restarted metrics actor gets a fresh one.
pub type ProbeFactory = Arc<dyn Fn() -> Box<dyn HardwareProbe> + Send + Sync>;

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
    /// The deliberately broken build the simulator must catch: a stream
    /// continued on another node forgets the tokens already sent.
    pub forget_sent_tokens: bool,
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
            rng: crate::rng::os_rngs(),
            gossip_transport: Arc::new(UdpTransport),
            probe: Arc::new(|| Box::new(SystemProbe::new()) as Box<dyn HardwareProbe>),
            links: Some(Arc::new(crate::link_net::TcpLinks)),
            peer_layer: None,
            job_storage: JobStorage::Sled,
            gpu_faults: Arc::default(),
            forget_sent_tokens: false,
        }
    }

    /// A generator seeded from this environment's randomness.
    pub fn fork_rng(&self) -> StdRng {
        crate::rng::fork(&self.rng)
    }
}
