//! How a node reaches other nodes' forward endpoints: [`ClusterPeers`]
//! calls them over ractor_cluster links, in production and in the
//! simulator alike (whose network sits under the links, see `link_net`).
//! [`PeerNet`] is what the router calls; the simulator wraps it
//! ([`PeerLayer`]) to record each call.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use tokio::sync::watch;

use crate::clock::Clock;

use crate::forward::messages::{ForwardMsg, is_endpoint_of};
use crate::forward::wire::{ForwardReply, ForwardRequest};
use crate::links::LinkedPeers;

/// Longest wait for a linked peer's forward endpoint to appear.
const ENDPOINT_WAIT: Duration = Duration::from_millis(500);
const ENDPOINT_POLL: Duration = Duration::from_millis(10);

/// A call to another node's forward endpoint.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerCall {
    Infer(ForwardRequest),
    /// The metadata of a model, as JSON.
    Metadata(String),
    /// Statistics of a model served there (every model when empty), as
    /// a JSON array.
    Statistics(String),
    /// A job the target owns, as JSON.
    JobStatus(String),
    /// The result the target holds for a job.
    HeldResult(String),
    /// The owner has a job's result: drop the one held (no answer).
    ReleaseResult(String),
    /// A job the target owns started running on `node` (no answer).
    JobStarted {
        id: String,
        node: String,
    },
    /// Open a language-model stream there (`llm::wire::Open` bytes); the
    /// answer is `llm::wire::Opened` bytes.
    LlmOpen(Vec<u8>),
    /// A frame of an open stream (`llm::wire::Frame` bytes; no answer).
    LlmFrame(Vec<u8>),
    /// Accept a keyed job there, the key's home (`job_wire::KeyedSubmit`
    /// bytes); the answer is `job_wire::SubmitAnswer` bytes.
    SubmitJob(Vec<u8>),
}

/// What a peer answered.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerAnswer {
    Infer(ForwardReply),
    /// Metadata or job JSON; empty when there is none.
    Text(String),
    /// A held result's bytes; empty when there is none.
    Bytes(Vec<u8>),
    /// A call without an answer was delivered.
    Done,
}

/// Why a call got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("no link to node {0} yet")]
    NoLink(String),
    #[error("node {node} did not answer within {timeout_ms} ms")]
    Timeout { node: String, timeout_ms: u128 },
    #[error("the link to node {0} failed")]
    Failed(String),
}

/// The network between forward endpoints.
#[async_trait]
pub trait PeerNet: Send + Sync {
    /// Sends `call` to `target`'s forward endpoint and waits at most
    /// `timeout` for its answer.
    async fn call(&self, target: &str, call: PeerCall, timeout: Duration) -> Result<PeerAnswer, PeerError>;

    /// The link to `target` is up (its endpoint may still be on its way).
    fn linked(&self, target: &str) -> bool;
}

/// Wraps the node's peer network (the simulator records calls with it).
pub type PeerLayer = Arc<dyn Fn(Arc<dyn PeerNet>) -> Arc<dyn PeerNet> + Send + Sync>;

/// Hands `call` to ractor_cluster's proxy of a remote forward endpoint and
/// waits for the answer.
async fn deliver(
    endpoint: &ActorRef<ForwardMsg>,
    node: &str,
    call: PeerCall,
    timeout: Duration,
) -> Result<PeerAnswer, PeerError> {
    let rpc = Rpc { endpoint, node, timeout };
    match call {
        PeerCall::Infer(request) => rpc.call(|reply| ForwardMsg::Infer(request, reply)).await.map(PeerAnswer::Infer),
        PeerCall::Metadata(model) => rpc.call(|reply| ForwardMsg::Metadata(model, reply)).await.map(PeerAnswer::Text),
        PeerCall::Statistics(model) => {
            rpc.call(|reply| ForwardMsg::Statistics(model, reply)).await.map(PeerAnswer::Text)
        }
        PeerCall::JobStatus(id) => rpc.call(|reply| ForwardMsg::JobStatus(id, reply)).await.map(PeerAnswer::Text),
        PeerCall::HeldResult(id) => rpc.call(|reply| ForwardMsg::HeldResult(id, reply)).await.map(PeerAnswer::Bytes),
        PeerCall::ReleaseResult(id) => endpoint
            .cast(ForwardMsg::ReleaseResult(id))
            .map(|()| PeerAnswer::Done)
            .map_err(|_| PeerError::Failed(node.to_string())),
        PeerCall::JobStarted { id, node: runner } => endpoint
            .cast(ForwardMsg::JobStarted(id, runner))
            .map(|()| PeerAnswer::Done)
            .map_err(|_| PeerError::Failed(node.to_string())),
        PeerCall::LlmOpen(open) => rpc.call(|reply| ForwardMsg::LlmOpen(open, reply)).await.map(PeerAnswer::Bytes),
        PeerCall::SubmitJob(submit) => {
            rpc.call(|reply| ForwardMsg::SubmitJob(submit, reply)).await.map(PeerAnswer::Bytes)
        }
        PeerCall::LlmFrame(frame) => endpoint
            .cast(ForwardMsg::LlmFrame(frame))
            .map(|()| PeerAnswer::Done)
            .map_err(|_| PeerError::Failed(node.to_string())),
    }
}

struct Rpc<'a> {
    endpoint: &'a ActorRef<ForwardMsg>,
    node: &'a str,
    timeout: Duration,
}

impl Rpc<'_> {
    async fn call<T: Send + 'static>(
        &self,
        message: impl FnOnce(RpcReplyPort<T>) -> ForwardMsg,
    ) -> Result<T, PeerError> {
        match self.endpoint.call(message, Some(self.timeout)).await {
            Ok(CallResult::Success(value)) => Ok(value),
            Ok(CallResult::Timeout) => {
                Err(PeerError::Timeout { node: self.node.to_string(), timeout_ms: self.timeout.as_millis() })
            }
            Ok(CallResult::SenderError) | Err(_) => Err(PeerError::Failed(self.node.to_string())),
        }
    }
}

/// Peers over ractor_cluster: `target`'s endpoint is the remote actor of
/// that name among those its link knows.
pub struct ClusterPeers {
    links: watch::Receiver<Arc<LinkedPeers>>,
    clock: Arc<dyn Clock>,
}

impl ClusterPeers {
    pub(crate) fn new(links: watch::Receiver<Arc<LinkedPeers>>, clock: Arc<dyn Clock>) -> Self {
        Self { links, clock }
    }

    /// The newest endpoint of `target` its link carries. Only this node's
    /// own link to `target` is looked at, so a call takes no detour through
    /// another node, even where several nodes share one process.
    fn endpoint_now(&self, target: &str) -> Option<ActorRef<ForwardMsg>> {
        let session = self.links.borrow().get(target).cloned()?;
        let newest = session
            .get_children()
            .into_iter()
            .filter(|cell| cell.get_name().is_some_and(|name| is_endpoint_of(&name, target)))
            .max_by_key(|cell| cell.get_id().pid())?;
        Some(newest.into())
    }

    /// `target`'s endpoint. A link learns the peer's actors just after it
    /// comes up, so a freshly linked peer gets a short, bounded wait.
    async fn endpoint(&self, target: &str) -> Option<ActorRef<ForwardMsg>> {
        let deadline = self.clock.now() + ENDPOINT_WAIT;
        loop {
            if let Some(endpoint) = self.endpoint_now(target) {
                return Some(endpoint);
            }
            if self.clock.now() >= deadline {
                return None;
            }
            tokio::time::sleep(ENDPOINT_POLL).await;
        }
    }
}

#[async_trait]
impl PeerNet for ClusterPeers {
    async fn call(&self, target: &str, call: PeerCall, timeout: Duration) -> Result<PeerAnswer, PeerError> {
        let endpoint = match &call {
            // News without an answer is best effort: no waiting for a link.
            PeerCall::ReleaseResult(_) | PeerCall::JobStarted { .. } | PeerCall::LlmFrame(_) => {
                self.endpoint_now(target)
            }
            _ => self.endpoint(target).await,
        };
        let Some(endpoint) = endpoint else { return Err(PeerError::NoLink(target.to_string())) };
        deliver(&endpoint, target, call, timeout).await
    }

    fn linked(&self, target: &str) -> bool {
        self.links.borrow().contains_key(target)
    }
}
