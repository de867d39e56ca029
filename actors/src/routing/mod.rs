//! Routing: which node runs a request (SPEC section 6).
//!
//! - `policy`: the policies and the explainable decision (pure).
//! - `candidates`: candidates from the gossiped view, reachability (pure).
//! - `retry`: after a failed attempt, another node or the answer; the
//!   avoid list and the cooldowns (pure).
//! - `service`: the routing service, which carries them out: choose, run
//!   here or forward, retry.
//! - `catalog`: what the cluster serves (metadata, statistics, the model
//!   list), answered here or by the nodes that serve it.

pub mod candidates;
pub mod catalog;
pub mod policy;
pub mod retry;
pub mod service;
