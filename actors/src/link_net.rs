//! How node-to-node links travel: the [`LinkNet`] seam under ractor_cluster.
//!
//! Production links are TCP (optionally TLS) to each peer's node server:
//! [`TcpLinks`]. The simulator carries the same ractor_cluster sessions over
//! its simulated TCP instead, handing each connection to the node server as
//! an external stream; everything above the byte stream (the cookie
//! handshake, process groups, remote actors, RPCs) is ractor_cluster's own.

use std::net::SocketAddr;

use async_trait::async_trait;
use ractor::ActorRef;
use ractor_cluster::NodeServerMessage;

use crate::tls::ClusterTls;

/// The network under node-to-node links.
#[async_trait]
pub trait LinkNet: Send + Sync {
    /// Where the node server's own TCP listener binds, given the configured
    /// `--cluster` address.
    fn server_addr(&self, configured: SocketAddr) -> SocketAddr {
        configured
    }

    /// Starts accepting links for `server` on `listen` where the node server
    /// does not accept them itself; the task ends when the handle is aborted.
    fn accept(&self, _server: ActorRef<NodeServerMessage>, _listen: SocketAddr) -> Option<tokio::task::JoinHandle<()>> {
        None
    }

    /// Opens a link from `server` to the node server at `addr`; the links
    /// actor bounds each dial with its own timeout.
    async fn dial(
        &self,
        server: &ActorRef<NodeServerMessage>,
        addr: SocketAddr,
        tls: Option<ClusterTls>,
    ) -> Result<(), String>;
}

/// Links over the host's TCP, as `gpumesh node` runs them.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpLinks;

#[async_trait]
impl LinkNet for TcpLinks {
    async fn dial(
        &self,
        server: &ActorRef<NodeServerMessage>,
        addr: SocketAddr,
        tls: Option<ClusterTls>,
    ) -> Result<(), String> {
        let connected = match tls {
            // The peer's certificate must name the address dialed.
            Some(tls) => {
                let peer = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                ractor_cluster::client_connect_enc(server, addr, tls.connector, peer).await
            }
            None => ractor_cluster::client_connect(server, addr).await,
        };
        connected.map_err(|error| format!("{error:?}"))
    }
}
