//! Gossip membership for gpumesh: what a node publishes, the typed cluster
//! view it reads, and the signing that keeps nodes without the cluster
//! secret out of that view.
//!
//! Layout:
//! - `name`: [`NodeName`], the node id used everywhere in the cluster.
//! - `secret`: the cluster secret and the keys derived from it.
//! - `record`: the state a node publishes ([`NodeInfo`], [`LoadSummary`]).
//! - `signed`: the signed value format every gossiped value uses (pure).
//! - `view`: the typed [`ClusterView`] built from raw gossip state (pure).
//! - `diff`: membership diffing between two views (pure).
//! - `service`: [`Membership`], the chitchat wrapper that carries it out.
//! - `transport`: the seam through which the simulator replaces UDP.
//!
//! Depends on no workspace crate. chitchat is used only here.

mod diff;
mod name;
mod record;
mod secret;
mod service;
mod signed;
pub mod transport;
mod view;

pub use diff::{MembershipEvent, diff_views};
pub use name::NodeName;
pub use record::{CpuStats, GpuStats, LlmLoad, LoadSummary, MAX_PREFIX_HASHES, ModelLoad, NodeInfo, PrefixSketch};
pub use secret::{ClusterSecret, SECRET_LEN, SigningKey};
pub use service::{Membership, MembershipConfig, failure_detector_for};
pub use signed::{SignedValueError, sign_value, verify_value};
pub use view::{AgeTracker, ClusterView, Member, MemberStatus, RawMember, ViewParams, build_view};

/// Errors of the membership crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid node name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid cluster secret: {0}")]
    InvalidSecret(String),
    #[error("gossip could not start on {addr}: {reason}")]
    GossipStart { addr: std::net::SocketAddr, reason: String },
    #[error("could not encode gossip state: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Result alias of the membership crate.
pub type Result<T> = std::result::Result<T, Error>;
