//! Forwarding inference between nodes over ractor_cluster.
//!
//! - `wire`: the bytes of a forwarded request and its reply (pure).
//! - `peers`: how calls reach other nodes' endpoints over ractor_cluster.
//! - `client`: the typed calls (forward, metadata, jobs, held results).
//! - the forward actor: each node's endpoint for requests forwarded to it,
//!   found by peers by its name among the remote actors their link to the
//!   node knows.

pub mod client;
pub mod peers;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;

use crate::executor::{InferError, ServedModel, infer};
pub use wire::{ForwardReply, ForwardRequest};

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
    /// A job this node owns, as JSON; empty when there is none.
    #[rpc]
    JobStatus(String, RpcReplyPort<String>),
    /// The result this node holds for a job (a [`ForwardReply`]'s bytes);
    /// empty when it holds none.
    #[rpc]
    HeldResult(String, RpcReplyPort<Vec<u8>>),
    /// The owner of a job has its result: drop the one held here.
    ReleaseResult(String),
}

/// This node's endpoint for forwarded requests.
pub(crate) struct ForwardActor;

/// What the forward actor needs; kept by the supervisor for restarts.
#[derive(Clone)]
pub(crate) struct ForwardArgs {
    pub(crate) node: String,
    pub(crate) models: Arc<Vec<Arc<ServedModel>>>,
    pub(crate) infer_timeout: Duration,
    pub(crate) jobs: gpumesh_storage::jobs::DurableJobs,
    pub(crate) clock: Arc<dyn crate::clock::Clock>,
}

impl Actor for ForwardActor {
    type Msg = ForwardMsg;
    type State = ForwardArgs;
    type Arguments = ForwardArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(group_of(&args.node), vec![myself.get_cell()]);
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ForwardMsg::Metadata(model, reply) => {
                let doc = state.models.iter().find(|m| m.spec.name == model).map(|m| m.metadata_doc(&state.node));
                let _ = reply.send(doc.and_then(|doc| serde_json::to_string(&doc).ok()).unwrap_or_default());
            }
            ForwardMsg::JobStatus(id, reply) => {
                let jobs = state.jobs.clone();
                // Only what is on disk is shown, so no reader sees a state a
                // crash could take back.
                tokio::spawn(async move {
                    let job = match jobs.wait_durable().await {
                        Ok(()) => jobs.store().get(&id).ok().flatten(),
                        Err(_) => None,
                    };
                    let _ = reply.send(job.and_then(|job| serde_json::to_string(&job).ok()).unwrap_or_default());
                });
            }
            ForwardMsg::HeldResult(id, reply) => {
                let _ = reply.send(state.jobs.store().held_result(&id).ok().flatten().unwrap_or_default());
            }
            ForwardMsg::ReleaseResult(id) => {
                if let Err(error) = state.jobs.store().release_result(&id) {
                    tracing::warn!(job = %id, %error, "could not drop a held result; retention drops it later");
                }
            }
            ForwardMsg::Infer(request, reply) => {
                let args = state.clone();
                // Each forwarded request waits for its result on its own task
                // so the endpoint keeps taking requests meanwhile.
                tokio::spawn(async move {
                    let _ = reply.send(serve(&args, request).await);
                });
            }
        }
        Ok(())
    }
}

async fn serve(args: &ForwardArgs, request: ForwardRequest) -> ForwardReply {
    let (model, route, job, request) = match request {
        ForwardRequest::Valid { model, route, job, request } => (model, route, job, request),
        ForwardRequest::Invalid(reason) => {
            tracing::warn!(%reason, "refused a malformed forwarded request");
            return ForwardReply::Refused(InferError::BadRequest(format!("malformed forwarded request: {reason}")));
        }
    };
    let Some(served) = args.models.iter().find(|m| m.spec.name == model) else {
        return ForwardReply::Refused(InferError::Unavailable(format!("model {model} is not loaded on {}", args.node)));
    };
    tracing::debug!(model = %model, from = ?route.last(), job = ?job, "serving a forwarded request");
    let Some(job) = job else {
        return match infer(served, request, args.infer_timeout).await {
            Ok(response) => ForwardReply::Done { node: args.node.clone(), response },
            Err(error) => ForwardReply::Refused(error),
        };
    };
    // A job sent here again (its owner lost the reply) gets the result
    // already computed.
    if let Ok(Some(held)) = args.jobs.store().held_result(&job) {
        return ForwardReply::decode(&held);
    }
    let response = match infer(served, request, args.infer_timeout).await {
        Ok(response) => response,
        Err(error) => return ForwardReply::Refused(error),
    };
    let reply = ForwardReply::Done { node: args.node.clone(), response };
    if let Err(error) = args.jobs.hold_result(&job, args.clock.unix_ms(), &reply.encode()).await {
        tracing::warn!(job = %job, %error, "could not keep a job result until its owner has it");
    }
    reply
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
