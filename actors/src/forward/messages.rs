//! The messages a node's forward endpoint takes from its peers, and how a
//! peer finds the endpoint: by its name among the remote actors its link to
//! the node knows.

use std::sync::atomic::{AtomicU64, Ordering};

use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;

use crate::forward::wire::{ForwardReply, ForwardRequest};

/// The process group of `node`'s forward endpoint.
pub fn group_of(node: &str) -> String {
    format!("gpumesh.forward.{node}")
}

/// A fresh name for `node`'s forward endpoint. ractor_cluster tells linked
/// peers each remote actor's name: that is how a peer finds the endpoint
/// among the actors its link knows. The counter keeps names unique in a
/// process that runs several nodes (the simulator), where a crashed node's
/// actor keeps its name.
pub(crate) fn endpoint_name(node: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{}#{}", group_of(node), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Whether `name` is one of `node`'s endpoint names.
pub(crate) fn is_endpoint_of(name: &str, node: &str) -> bool {
    name.strip_prefix(group_of(node).as_str())
        .and_then(|rest| rest.strip_prefix('#'))
        .is_some_and(|number| number.parse::<u64>().is_ok())
}

/// Messages other nodes send to this node's forward endpoint.
#[derive(RactorClusterMessage)]
pub enum ForwardMsg {
    #[rpc]
    Infer(ForwardRequest, RpcReplyPort<ForwardReply>),
    /// The metadata of a model served here, as JSON; empty when it is not.
    #[rpc]
    Metadata(String, RpcReplyPort<String>),
    /// This node's Triton statistics of the model named (of every model
    /// it serves when the name is empty), as a JSON array.
    #[rpc]
    Statistics(String, RpcReplyPort<String>),
    /// A job this node owns, as JSON; empty when there is none.
    #[rpc]
    JobStatus(String, RpcReplyPort<String>),
    /// The result this node holds for a job (a [`ForwardReply`]'s bytes);
    /// empty when it holds none.
    #[rpc]
    HeldResult(String, RpcReplyPort<Vec<u8>>),
    /// The owner of a job has its result: drop the one held here.
    ReleaseResult(String),
    /// A job this node owns (its id) started running on the node named.
    JobStarted(String, String),
    /// Open a language-model stream here (`llm::wire::Open` bytes); the
    /// reply is `llm::wire::Opened` bytes.
    #[rpc]
    LlmOpen(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// A frame of a language-model stream (`llm::wire::Frame` bytes).
    LlmFrame(Vec<u8>),
    /// Accept a job whose idempotency key has this node as its home
    /// (`job_wire::KeyedSubmit` bytes); the reply is
    /// `job_wire::SubmitAnswer` bytes.
    #[rpc]
    SubmitJob(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

#[cfg(test)]
mod tests {
    use super::{endpoint_name, is_endpoint_of};

    #[test]
    fn endpoint_names_are_fresh_and_name_only_their_node() {
        let (first, second) = (endpoint_name("n1"), endpoint_name("n1"));
        assert_ne!(first, second, "a restarted endpoint needs a name of its own");
        assert!(is_endpoint_of(&first, "n1") && is_endpoint_of(&second, "n1"));
        assert!(!is_endpoint_of(&first, "n"), "n1's endpoint is not n's");
        assert!(!is_endpoint_of(&endpoint_name("n10"), "n1"), "n10's endpoint is not n1's");
        assert!(!is_endpoint_of("gpumesh.forward.n1", "n1"));
        assert!(!is_endpoint_of("gpumesh.forward.n1#x", "n1"));
    }
}
