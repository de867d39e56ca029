//! Node-to-node calls over turmoil's simulated TCP.
//!
//! The simulator replaces only the network under the forward endpoints: a
//! call's bytes travel over a simulated TCP connection, so partitions, loss
//! and latency apply to them, and the target host hands them to its node's
//! real forward actor.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use gpumesh_actors::forward::peers::{PeerAnswer, PeerCall, PeerError, PeerNet, deliver, local_endpoint};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::trace::TraceLog;

pub(crate) const CLUSTER_PORT: u16 = 7947;
/// Largest frame accepted (a batch of tensors).
const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;
/// Longest a host waits for its node's endpoint to answer a call.
const SERVE_TIMEOUT: Duration = Duration::from_secs(60);

/// One inference sent to another node, for the routing checks.
#[derive(Clone, Debug)]
pub(crate) struct SentWork {
    pub(crate) at_ms: u64,
    pub(crate) from: String,
    pub(crate) to: String,
}

/// Every inference sent between nodes, in order.
pub(crate) type WorkLog = Arc<Mutex<Vec<SentWork>>>;

/// The peer network of one simulated node.
pub(crate) struct SimPeers {
    pub(crate) name: String,
    pub(crate) trace: TraceLog,
    pub(crate) work: WorkLog,
}

fn kind(call: &PeerCall) -> &'static str {
    match call {
        PeerCall::Infer(_) => "infer",
        PeerCall::Metadata(_) => "metadata",
        PeerCall::JobStatus(_) => "job",
        PeerCall::HeldResult(_) => "held",
        PeerCall::ReleaseResult(_) => "release",
    }
}

async fn write_frame(stream: &mut turmoil::net::TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let length = u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    stream.write_all(&length.to_le_bytes()).await?;
    stream.write_all(bytes).await?;
    stream.flush().await
}

async fn read_frame(stream: &mut turmoil::net::TcpStream) -> std::io::Result<Vec<u8>> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).await?;
    let length = u32::from_le_bytes(length) as usize;
    if length > MAX_FRAME_BYTES {
        return Err(std::io::Error::other("frame too large"));
    }
    let mut bytes = vec![0u8; length];
    stream.read_exact(&mut bytes).await?;
    Ok(bytes)
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
        let exchange = async {
            let mut stream = turmoil::net::TcpStream::connect((target, CLUSTER_PORT))
                .await
                .map_err(|_| PeerError::NoLink(target.to_string()))?;
            let failed = |_| PeerError::Failed(target.to_string());
            write_frame(&mut stream, &call.encode()).await.map_err(failed)?;
            let bytes = read_frame(&mut stream).await.map_err(failed)?;
            PeerAnswer::decode(&bytes).map_err(|_| PeerError::Failed(target.to_string()))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(PeerError::Timeout { node: target.to_string(), timeout_ms: timeout.as_millis() }),
        }
    }
}

/// Accepts calls for `node` and hands each to its forward actor: the newest
/// local member of its group (a crashed host's actor may linger there).
pub(crate) async fn serve(node: String) -> std::io::Result<()> {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", CLUSTER_PORT)).await?;
    loop {
        let (mut stream, _) = listener.accept().await?;
        let node = node.clone();
        tokio::spawn(async move {
            let Ok(bytes) = read_frame(&mut stream).await else { return };
            let Ok(call) = PeerCall::decode(&bytes) else { return };
            let Some(endpoint) = local_endpoint(&node) else { return };
            let Ok(answer) = deliver(&endpoint, &node, call, SERVE_TIMEOUT).await else { return };
            let _ = write_frame(&mut stream, &answer.encode()).await;
        });
    }
}
