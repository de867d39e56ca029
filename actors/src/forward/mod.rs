//! Calls between nodes over ractor_cluster.
//!
//! - `wire`: the bytes of a forwarded request and its reply (pure).
//! - `messages`: what a node's forward endpoint takes, and how peers find
//!   it by name among the remote actors their link to the node knows.
//! - `endpoint`: the forward actor, each node's endpoint for its peers.
//! - `peers`: how calls reach other nodes' endpoints over ractor_cluster.
//! - `client`: the typed calls (forward, metadata, jobs, held results).
//! - `job_wire`: the bytes of a keyed job submit sent to the key's home.

pub mod client;
pub(crate) mod endpoint;
pub mod job_wire;
pub mod messages;
pub mod peers;
pub mod wire;

pub use wire::{ForwardReply, ForwardRequest};
