//! Forwarding inference between nodes over ractor_cluster.
//!
//! - `wire`: the bytes of a forwarded request and its reply (pure).
//! - the forward actor: each node's endpoint for requests forwarded to it,
//!   found by peers through a process group named after the node.

pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;

use crate::executor::{InferError, ServedModel, infer};
pub use wire::{ForwardReply, ForwardRequest};

/// The process group of `node`'s forward endpoint.
pub fn group_of(node: &str) -> String {
    format!("gpumesh.forward.{node}")
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
}

/// This node's endpoint for forwarded requests.
pub(crate) struct ForwardActor;

/// What the forward actor needs; kept by the supervisor for restarts.
#[derive(Clone)]
pub(crate) struct ForwardArgs {
    pub(crate) node: String,
    pub(crate) models: Arc<Vec<Arc<ServedModel>>>,
    pub(crate) infer_timeout: Duration,
    pub(crate) jobs: gpumesh_storage::SledJobStore,
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
                use gpumesh_storage::JobStore as _;
                let job = state.jobs.get(&id).ok().flatten();
                let _ = reply.send(job.and_then(|job| serde_json::to_string(&job).ok()).unwrap_or_default());
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
    let (model, route, request) = match request {
        ForwardRequest::Valid { model, route, request } => (model, route, request),
        ForwardRequest::Invalid(reason) => {
            tracing::warn!(%reason, "refused a malformed forwarded request");
            return ForwardReply::Refused(InferError::BadRequest(format!("malformed forwarded request: {reason}")));
        }
    };
    let Some(served) = args.models.iter().find(|m| m.spec.name == model) else {
        return ForwardReply::Refused(InferError::Unavailable(format!("model {model} is not loaded on {}", args.node)));
    };
    tracing::debug!(model = %model, from = ?route.last(), "serving a forwarded request");
    match infer(served, request, args.infer_timeout).await {
        Ok(response) => ForwardReply::Done { node: args.node.clone(), response },
        Err(error) => ForwardReply::Refused(error),
    }
}
