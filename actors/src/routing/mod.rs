//! Routing: which node runs a request (SPEC section 6).
//!
//! - `policy`: the policies and the explainable decision (pure).
//! - `candidates`: candidates from the gossiped view, reachability (pure).
//! - `router`: deciding, running here or forwarding, retrying.

pub mod candidates;
pub mod policy;
pub mod router;
