//! The gossip transport seam. Production uses [`UdpTransport`]; the
//! simulator implements [`Transport`] over its simulated network.

pub use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpTransport};
pub use chitchat::{ChitchatEnvelope, ChitchatMessage};
