//! Shared by the in-process node tests.

use std::path::Path;
use std::time::Duration;

use gpumesh_actors::NodeConfig;
use gpumesh_membership::ClusterSecret;

/// A node called `name` on free loopback ports, its data under `dir`,
/// gossiping to `seeds`, serving no model; tests change what they need.
pub(crate) fn loopback_config(name: &str, dir: &Path, seeds: Vec<String>) -> NodeConfig {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let gossip = udp.local_addr().expect("addr");
    let cluster = tcp.local_addr().expect("addr");
    NodeConfig {
        requested_name: Some(name.into()),
        data_dir: dir.join(name),
        http_advertise: "127.0.0.1:1".parse().expect("addr"),
        gossip_listen: gossip,
        gossip_advertise: gossip,
        cluster_listen: cluster,
        cluster_advertise: cluster,
        seeds,
        gossip_interval: Duration::from_millis(100),
        metrics_interval: Duration::from_millis(200),
        secret: ClusterSecret::from_bytes([7; 32]),
        models: Vec::new(),
        ort_library_candidates: Vec::new(),
        infer_timeout: Duration::from_secs(5),
        policy: gpumesh_actors::Policy::Eta,
        forward_timeout: Duration::from_secs(10),
        job_retention: gpumesh_storage::jobs::Retention::default(),
        history_interval: None,
        max_forward_attempts: gpumesh_actors::DEFAULT_MAX_FORWARD_ATTEMPTS,
        prefix_affinity: true,
        cluster_tls: None,
        max_active_jobs: gpumesh_actors::DEFAULT_MAX_ACTIVE_JOBS,
    }
}
