//! Routing (pure): which node runs a request, under the policies of SPEC
//! section 6. The router actor (next) feeds it the gossiped view and its own
//! record of recent sends; the simulator drives it directly.
//!
//! - `policy`: the policies and the decision with its scored candidates.

pub mod policy;
