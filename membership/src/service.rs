//! [`Membership`]: chitchat running with signed state, read as a typed view.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chitchat::transport::Transport;
use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ProtocolVersion, spawn_chitchat};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::record::{INFO_KEY, LOAD_KEY};
use crate::{
    AgeTracker, ClusterSecret, ClusterView, Error, LoadSummary, NodeInfo, NodeName, RawMember, Result, SigningKey,
    ViewParams, build_view, sign_value,
};

/// Every node of one gpumesh cluster gossips under this id. Nodes with a
/// different secret still gossip (and show up as untrusted) so an operator
/// can see them; they never get into the typed fields.
const CLUSTER_ID: &str = "gpumesh";
/// chitchat's phi-accrual threshold: with exponential inter-arrival times a
/// node is declared dead after about 2.3 x this many mean heartbeat
/// intervals without one. 8 gave up to 3.01 s at 100 nodes with 300 ms
/// gossip (simulator, `hundred-nodes`); 7 brings that under the 3 s goal.
const PHI_THRESHOLD: f64 = 7.0;
/// A live node whose heartbeat has not moved for this many gossip
/// intervals is shown as suspect.
const SUSPECT_AFTER_INTERVALS: u32 = 5;
/// How long a dead node stays listed before chitchat forgets it.
const DEAD_NODE_GRACE_PERIOD: Duration = Duration::from_secs(600);
/// How long deleted keys are kept before garbage collection.
const TOMBSTONE_GRACE_PERIOD: Duration = Duration::from_secs(3600);
/// Heartbeat intervals longer than this are not sampled (a paused node).
const MAX_SAMPLED_INTERVAL_INTERVALS: u32 = 50;

/// How to start gossip for one node.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    pub name: NodeName,
    pub generation: u64,
    /// UDP address to bind.
    pub listen_addr: SocketAddr,
    /// UDP address other nodes use to reach this one.
    pub advertise_addr: SocketAddr,
    /// Gossip addresses of existing nodes, `host:port`.
    pub seeds: Vec<String>,
    pub gossip_interval: Duration,
    pub secret: ClusterSecret,
}

/// The failure detector tuned together with the gossip interval: chitchat's
/// default `initial_interval` of 5 s would otherwise dominate detection.
pub fn failure_detector_for(gossip_interval: Duration) -> FailureDetectorConfig {
    FailureDetectorConfig {
        phi_threshold: PHI_THRESHOLD,
        sampling_window_size: 1000,
        max_interval: gossip_interval * MAX_SAMPLED_INTERVAL_INTERVALS,
        initial_interval: gossip_interval,
        dead_node_grace_period: DEAD_NODE_GRACE_PERIOD,
    }
}

/// A running chitchat instance publishing this node's signed state.
pub struct Membership {
    handle: ChitchatHandle,
    name: NodeName,
    generation: u64,
    key: SigningKey,
    params: ViewParams,
    next_seq: AtomicU64,
    tracker: Mutex<AgeTracker>,
}

impl Membership {
    /// Starts gossip through `transport`, publishing `info` from the first message on.
    pub async fn start(config: MembershipConfig, transport: &dyn Transport, info: &NodeInfo) -> Result<Self> {
        let key = config.secret.signing_key();
        let params = ViewParams { suspect_after: config.gossip_interval * SUSPECT_AFTER_INTERVALS };
        let chitchat_id = ChitchatId::new(config.name.as_str(), config.generation, config.advertise_addr);
        let first_info =
            sign_value(&key, config.name.as_str(), config.generation, INFO_KEY, 1, &serde_json::to_string(info)?);
        let chitchat_config = ChitchatConfig {
            chitchat_id,
            cluster_id: CLUSTER_ID.to_string(),
            gossip_interval: config.gossip_interval,
            listen_addr: config.listen_addr,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: failure_detector_for(config.gossip_interval),
            marked_for_deletion_grace_period: TOMBSTONE_GRACE_PERIOD,
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V0,
        };
        let handle = spawn_chitchat(chitchat_config, vec![(INFO_KEY.to_string(), first_info)], transport)
            .await
            .map_err(|error| Error::GossipStart { addr: config.listen_addr, reason: format!("{error:#}") })?;
        Ok(Self {
            handle,
            name: config.name,
            generation: config.generation,
            key,
            params,
            next_seq: AtomicU64::new(2),
            tracker: Mutex::new(AgeTracker::default()),
        })
    }

    /// This node's name.
    pub fn name(&self) -> &NodeName {
        &self.name
    }

    /// This node's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Publishes new addresses or lifecycle state.
    pub async fn publish_info(&self, info: &NodeInfo) -> Result<()> {
        self.publish(INFO_KEY, serde_json::to_string(info)?).await;
        Ok(())
    }

    /// Publishes this node's load.
    pub async fn publish_load(&self, load: &LoadSummary) -> Result<()> {
        self.publish(LOAD_KEY, serde_json::to_string(load)?).await;
        Ok(())
    }

    async fn publish(&self, gossip_key: &str, payload: String) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let value = sign_value(&self.key, self.name.as_str(), self.generation, gossip_key, seq, &payload);
        self.handle.with_chitchat(|chitchat| chitchat.self_node_state().set(gossip_key, value.clone())).await;
    }

    /// Every node chitchat knows, with its liveness and raw values.
    pub async fn raw_members(&self) -> Vec<RawMember> {
        self.handle
            .with_chitchat(|chitchat| {
                let live: HashSet<ChitchatId> = chitchat.live_nodes().cloned().collect();
                let dead: HashSet<ChitchatId> = chitchat.dead_nodes().cloned().collect();
                chitchat
                    .node_states()
                    .iter()
                    .map(|(id, state)| RawMember {
                        name: id.node_id.to_string(),
                        generation: id.generation_id,
                        gossip_addr: id.gossip_advertise_addr,
                        live: live.contains(id),
                        dead: dead.contains(id),
                        heartbeat: u64::from(state.heartbeat()),
                        values: state
                            .key_values()
                            .filter(|(key, _)| *key == INFO_KEY || *key == LOAD_KEY)
                            .map(|(key, value)| (key.to_string(), value.to_string()))
                            .collect::<BTreeMap<_, _>>(),
                    })
                    .collect()
            })
            .await
    }

    /// The typed cluster view at `now`.
    pub async fn view(&self, now: Instant) -> ClusterView {
        let raw = self.raw_members().await;
        let mut tracker = self.tracker.lock().await;
        build_view(self.name.as_str(), raw, &self.key, &mut tracker, self.params, now)
    }

    /// Stops gossiping and waits until the gossip task has ended. Peers
    /// will declare this node dead.
    pub async fn shutdown(&self) {
        if self.handle.initiate_shutdown().is_ok() {
            let _ = self.handle.termination_watcher().await;
        }
    }
}
