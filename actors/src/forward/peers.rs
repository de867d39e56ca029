//! How a node reaches other nodes' forward endpoints: the [`PeerNet`] seam.
//!
//! In production, [`ClusterPeers`] calls the endpoint over ractor_cluster
//! (found through the per-node process group). The simulator replaces only
//! the network: its implementation carries the same calls over simulated TCP
//! and hands them to the target's real forward actor with [`deliver`].

use std::time::Duration;

use async_trait::async_trait;
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use tokio::time::Instant;

use crate::forward::{ForwardMsg, ForwardReply, ForwardRequest, group_of};

/// Longest wait for a linked peer's forward endpoint to appear.
const ENDPOINT_WAIT: Duration = Duration::from_millis(500);
const ENDPOINT_POLL: Duration = Duration::from_millis(10);

/// A call to another node's forward endpoint.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerCall {
    Infer(ForwardRequest),
    /// The metadata of a model, as JSON.
    Metadata(String),
    /// A job the target owns, as JSON.
    JobStatus(String),
    /// The result the target holds for a job.
    HeldResult(String),
    /// The owner has a job's result: drop the one held (no answer).
    ReleaseResult(String),
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
}

/// Hands `call` to a forward endpoint (a local actor, or ractor_cluster's
/// proxy of a remote one) and waits for the answer.
pub async fn deliver(
    endpoint: &ActorRef<ForwardMsg>,
    node: &str,
    call: PeerCall,
    timeout: Duration,
) -> Result<PeerAnswer, PeerError> {
    let rpc = Rpc { endpoint, node, timeout };
    match call {
        PeerCall::Infer(request) => rpc.call(|reply| ForwardMsg::Infer(request, reply)).await.map(PeerAnswer::Infer),
        PeerCall::Metadata(model) => rpc.call(|reply| ForwardMsg::Metadata(model, reply)).await.map(PeerAnswer::Text),
        PeerCall::JobStatus(id) => rpc.call(|reply| ForwardMsg::JobStatus(id, reply)).await.map(PeerAnswer::Text),
        PeerCall::HeldResult(id) => rpc.call(|reply| ForwardMsg::HeldResult(id, reply)).await.map(PeerAnswer::Bytes),
        PeerCall::ReleaseResult(id) => endpoint
            .cast(ForwardMsg::ReleaseResult(id))
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

/// This process's running endpoint of `node`: the newest local member of
/// its group. The simulator, whose nodes share one process, delivers calls
/// to it (a crashed host's actor may linger in the group).
pub fn local_endpoint(node: &str) -> Option<ActorRef<ForwardMsg>> {
    let newest = ractor::pg::get_members(&group_of(node))
        .into_iter()
        .filter(|cell| cell.get_id().is_local())
        .max_by_key(|cell| cell.get_id().pid())?;
    Some(newest.into())
}

/// Peers over ractor_cluster: each node's endpoint is the non-local member
/// of its process group.
pub struct ClusterPeers;

impl ClusterPeers {
    fn endpoint_now(target: &str) -> Option<ActorRef<ForwardMsg>> {
        let cell = ractor::pg::get_members(&group_of(target)).into_iter().find(|cell| !cell.get_id().is_local())?;
        Some(cell.into())
    }

    /// `target`'s endpoint. Process groups sync just after a link comes
    /// up, so a freshly linked peer gets a short, bounded wait.
    async fn endpoint(target: &str) -> Option<ActorRef<ForwardMsg>> {
        let deadline = Instant::now() + ENDPOINT_WAIT;
        loop {
            if let Some(endpoint) = Self::endpoint_now(target) {
                return Some(endpoint);
            }
            if Instant::now() >= deadline {
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
            // Releasing is best effort: no waiting for a link.
            PeerCall::ReleaseResult(_) => Self::endpoint_now(target),
            _ => Self::endpoint(target).await,
        };
        let Some(endpoint) = endpoint else { return Err(PeerError::NoLink(target.to_string())) };
        deliver(&endpoint, target, call, timeout).await
    }
}

const CALL_MAGIC: &[u8; 4] = b"GMP1";

/// Appends a call or answer whose body is text: its kind, then the text's bytes.
fn push_text(bytes: &mut Vec<u8>, tag: u8, text: &str) {
    bytes.push(tag);
    bytes.extend(text.as_bytes());
}

impl PeerCall {
    /// The call's bytes, for networks that carry bytes (the simulator's).
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = CALL_MAGIC.to_vec();
        match self {
            PeerCall::Infer(request) => {
                bytes.push(0);
                bytes.extend(request.encode());
            }
            PeerCall::Metadata(text) => push_text(&mut bytes, 1, text),
            PeerCall::JobStatus(text) => push_text(&mut bytes, 2, text),
            PeerCall::HeldResult(text) => push_text(&mut bytes, 3, text),
            PeerCall::ReleaseResult(text) => push_text(&mut bytes, 4, text),
        }
        bytes
    }

    /// Decodes call bytes; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let rest = bytes.strip_prefix(CALL_MAGIC).ok_or("not a gpumesh peer call")?;
        let (&tag, body) = rest.split_first().ok_or("a peer call without a kind")?;
        let text = || String::from_utf8(body.to_vec()).map_err(|_| "a peer call's text is not UTF-8".to_string());
        match tag {
            0 => match ForwardRequest::decode(body) {
                ForwardRequest::Invalid(reason) => Err(reason),
                valid => Ok(PeerCall::Infer(valid)),
            },
            1 => Ok(PeerCall::Metadata(text()?)),
            2 => Ok(PeerCall::JobStatus(text()?)),
            3 => Ok(PeerCall::HeldResult(text()?)),
            4 => Ok(PeerCall::ReleaseResult(text()?)),
            other => Err(format!("unknown peer call kind {other}")),
        }
    }
}

impl PeerAnswer {
    /// The answer's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = CALL_MAGIC.to_vec();
        match self {
            PeerAnswer::Infer(reply) => {
                bytes.push(0);
                bytes.extend(reply.encode());
            }
            PeerAnswer::Text(text) => push_text(&mut bytes, 1, text),
            PeerAnswer::Bytes(data) => {
                bytes.push(2);
                bytes.extend(data);
            }
            PeerAnswer::Done => bytes.push(3),
        }
        bytes
    }

    /// Decodes answer bytes; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let rest = bytes.strip_prefix(CALL_MAGIC).ok_or("not a gpumesh peer answer")?;
        let (&tag, body) = rest.split_first().ok_or("a peer answer without a kind")?;
        match tag {
            0 => Ok(PeerAnswer::Infer(ForwardReply::decode(body))),
            1 => String::from_utf8(body.to_vec()).map(PeerAnswer::Text).map_err(|_| "answer text is not UTF-8".into()),
            2 => Ok(PeerAnswer::Bytes(body.to_vec())),
            3 if body.is_empty() => Ok(PeerAnswer::Done),
            other => Err(format!("unknown peer answer kind {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn peer_calls_and_answers_round_trip() {
        let calls = [
            PeerCall::Infer(ForwardRequest::Valid {
                model: "m".into(),
                route: vec!["a".into()],
                job: Some("a.1-2".into()),
                request: crate::executor::InferRequest { inputs: Vec::new(), outputs: Vec::new(), priority: 5 },
            }),
            PeerCall::Metadata("tiny".into()),
            PeerCall::JobStatus("n1.1-2".into()),
            PeerCall::HeldResult("n1.1-3".into()),
            PeerCall::ReleaseResult("n1.1-4".into()),
        ];
        for call in calls {
            assert_eq!(PeerCall::decode(&call.encode()), Ok(call));
        }
        let answers = [
            PeerAnswer::Infer(ForwardReply::Refused(crate::executor::InferError::BadRequest("shape".into()))),
            PeerAnswer::Text("{}".into()),
            PeerAnswer::Bytes(vec![0, 1, 2]),
            PeerAnswer::Done,
        ];
        for answer in answers {
            assert_eq!(PeerAnswer::decode(&answer.encode()), Ok(answer));
        }
        assert!(PeerCall::decode(b"GMP1\x09").is_err());
        assert!(PeerAnswer::decode(b"nope").is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = PeerCall::decode(&bytes);
            let _ = PeerAnswer::decode(&bytes);
            let mut prefixed = CALL_MAGIC.to_vec();
            prefixed.extend(&bytes);
            let _ = PeerCall::decode(&prefixed);
            let _ = PeerAnswer::decode(&prefixed);
        }
    }
}
