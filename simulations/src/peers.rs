//! Node-to-node links over turmoil's simulated TCP.
//!
//! The nodes run ractor_cluster as in production: node servers, the cookie
//! handshake, remote actors and RPCs to each other's forward endpoints. The
//! simulator replaces only the byte streams under them ([`SimLinks`]), so
//! partitions, pauses and latency apply to links, and records each call a
//! node makes to another ([`SimPeers`]) for the trace and the routing checks.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use gpumesh_actors::ClusterTls;
use gpumesh_actors::forward::peers::{PeerAnswer, PeerCall, PeerError, PeerNet};
use gpumesh_actors::link_net::LinkNet;
use ractor::ActorRef;
use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream, NodeServerMessage};

use crate::trace::TraceLog;

pub(crate) const CLUSTER_PORT: u16 = 7947;
/// Pause before binding again when a restarted links actor finds its
/// predecessor's listener still bound.
const REBIND_PAUSE: Duration = Duration::from_millis(10);

/// One inference sent to another node, for the routing checks.
#[derive(Clone, Debug)]
pub(crate) struct SentWork {
    pub(crate) at_ms: u64,
    pub(crate) from: String,
    pub(crate) to: String,
}

/// Every inference sent between nodes, in order.
pub(crate) type WorkLog = Arc<Mutex<Vec<SentWork>>>;

/// A simulated TCP connection carrying one ractor_cluster session.
struct SimStream(turmoil::net::TcpStream);

impl ClusterBidiStream for SimStream {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let (read, write) = self.0.into_split();
        (Box::new(read), Box::new(write))
    }
}

/// The network under one simulated node's ractor_cluster links.
pub(crate) struct SimLinks {
    pub(crate) name: String,
    pub(crate) trace: TraceLog,
}

#[async_trait]
impl LinkNet for SimLinks {
    /// The node server's own (real) listener stays on loopback, unused: links
    /// arrive through [`LinkNet::accept`].
    fn server_addr(&self, _configured: SocketAddr) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)
    }

    fn accept(&self, server: ActorRef<NodeServerMessage>, listen: SocketAddr) -> Option<tokio::task::JoinHandle<()>> {
        Some(tokio::spawn(async move {
            let listener = loop {
                match turmoil::net::TcpListener::bind(("0.0.0.0", listen.port())).await {
                    Ok(listener) => break listener,
                    Err(_) => tokio::time::sleep(REBIND_PAUSE).await,
                }
            };
            while let Ok((stream, _)) = listener.accept().await {
                let opened = NodeServerMessage::ConnectionOpenedExternal {
                    stream: Box::new(SimStream(stream)),
                    is_server: true,
                };
                if server.cast(opened).is_err() {
                    break;
                }
            }
        }))
    }

    async fn dial(
        &self,
        server: &ActorRef<NodeServerMessage>,
        addr: SocketAddr,
        _tls: Option<ClusterTls>,
    ) -> Result<(), String> {
        self.trace.record(format_args!("link {} -> {addr} dial", self.name));
        let stream = turmoil::net::TcpStream::connect(addr).await.map_err(|error| error.to_string())?;
        ractor_cluster::client_connect_external(server, Box::new(SimStream(stream)))
            .await
            .map_err(|error| format!("{error:?}"))
    }
}

/// One simulated node's calls to other nodes: recorded, then made over
/// ractor_cluster like any node's.
pub(crate) struct SimPeers {
    pub(crate) inner: Arc<dyn PeerNet>,
    pub(crate) name: String,
    pub(crate) trace: TraceLog,
    pub(crate) work: WorkLog,
}

fn kind(call: &PeerCall) -> &'static str {
    match call {
        PeerCall::Infer(_) => "infer",
        PeerCall::Metadata(_) => "metadata",
        PeerCall::Statistics(_) => "statistics",
        PeerCall::JobStatus(_) => "job",
        PeerCall::HeldResult(_) => "held",
        PeerCall::ReleaseResult(_) => "release",
        PeerCall::JobStarted { .. } => "started",
        PeerCall::LlmOpen(_) => "llm-open",
        PeerCall::LlmFrame(_) => "llm-frame",
        PeerCall::SubmitJob(_) => "submit",
    }
}

#[async_trait]
impl PeerNet for SimPeers {
    async fn call(&self, target: &str, call: PeerCall, timeout: Duration) -> Result<PeerAnswer, PeerError> {
        let kind = kind(&call);
        self.trace.record(format_args!("peer {} -> {target} {kind}", self.name));
        if kind == "infer" {
            let at_ms = u64::try_from(turmoil::elapsed().as_millis()).unwrap_or(u64::MAX);
            let sent = SentWork { at_ms, from: self.name.clone(), to: target.to_string() };
            self.work.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(sent);
        }
        self.inner.call(target, call, timeout).await
    }

    fn linked(&self, target: &str) -> bool {
        self.inner.linked(target)
    }
}
