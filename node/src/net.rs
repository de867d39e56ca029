//! Address checks done before a node starts, so a taken port is one clear
//! sentence instead of a failure deep inside a library.

use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{Context, bail};

fn in_use(flag: &str, addr: SocketAddr, error: &std::io::Error) -> anyhow::Error {
    if error.kind() == std::io::ErrorKind::AddrInUse {
        anyhow::anyhow!("{flag} address {addr} is already in use: stop the process using it or choose another port")
    } else {
        anyhow::anyhow!("cannot listen on {flag} address {addr}: {error}; choose an address of this machine")
    }
}

/// Binds the listener of a client API (`--http`, `--grpc`), kept to serve it.
pub(crate) async fn bind_api(flag: &str, addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|error| in_use(flag, addr, &error))
}

/// Fails when the gossip UDP port cannot be bound.
pub(crate) fn check_udp(flag: &str, addr: SocketAddr) -> anyhow::Result<()> {
    std::net::UdpSocket::bind(addr).map(drop).map_err(|error| in_use(flag, addr, &error))
}

/// Fails when the cluster TCP port cannot be bound.
pub(crate) fn check_tcp(flag: &str, addr: SocketAddr) -> anyhow::Result<()> {
    std::net::TcpListener::bind(addr).map(drop).map_err(|error| in_use(flag, addr, &error))
}

/// The address peers use for a service listening on `listen`.
pub(crate) fn advertised(advertise_host: Option<&str>, listen: SocketAddr) -> anyhow::Result<SocketAddr> {
    let Some(host) = advertise_host else { return Ok(listen) };
    let resolved = (host, listen.port())
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve --advertise-host {host:?}: give an IP address or a resolvable name"))?
        .next();
    match resolved {
        Some(addr) if !addr.ip().is_unspecified() => Ok(addr),
        _ => bail!("--advertise-host {host:?} is not an address other nodes can reach: give this machine's IP"),
    }
}
