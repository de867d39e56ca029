//! Typed calls to other nodes' forward endpoints: each call of
//! [`PeerNet`] with its answer read and its failure put in the words of an
//! [`InferError`]. The routing service forwards requests and asks for
//! metadata through it; the job owner asks for jobs and held results.

use std::sync::Arc;
use std::time::Duration;

use crate::executor::statistics::ModelStatisticsDoc;
use crate::executor::{InferError, InferRequest, InferResponse, MetadataDoc};
use crate::forward::job_wire::{KeyedSubmit, SubmitAnswer};
use crate::forward::peers::{PeerAnswer, PeerCall, PeerError, PeerNet};
use crate::forward::wire::{ForwardReply, ForwardRequest, STILL_RUNNING};
use crate::llm::error::LlmError;
use crate::llm::wire::{Opened, decode};

/// What a node holds for a job it ran an attempt of.
#[derive(Clone, Debug, PartialEq)]
pub enum Held {
    /// The attempt's reply bytes.
    Result(Vec<u8>),
    /// The attempt still runs or waits there.
    Running,
    /// Nothing: it never ran there, or its result was dropped.
    Nothing,
}

/// Calls to peers, each bounded by one timeout.
#[derive(Clone)]
pub struct PeerClient {
    net: Arc<dyn PeerNet>,
    timeout: Duration,
}

impl PeerClient {
    /// Calls over `net`, each given at most `timeout`.
    pub fn new(net: Arc<dyn PeerNet>, timeout: Duration) -> Self {
        Self { net, timeout }
    }

    /// This node's link to `target` is up.
    pub fn linked(&self, target: &str) -> bool {
        self.net.linked(target)
    }

    async fn call(&self, target: &str, call: PeerCall) -> Result<PeerAnswer, PeerError> {
        self.net.call(target, call, self.timeout).await
    }

    /// Sends `request` from `from` to `target`'s forward endpoint; `job`
    /// names the job it runs for, if any. Returns the executing node.
    pub async fn forward(
        &self,
        from: &str,
        target: &str,
        model: &str,
        job: Option<&str>,
        request: InferRequest,
    ) -> Result<(String, InferResponse), InferError> {
        let payload = ForwardRequest::Valid {
            model: model.to_string(),
            route: vec![from.to_string()],
            job: job.map(String::from),
            request,
        };
        match self.call(target, PeerCall::Infer(payload)).await {
            Ok(PeerAnswer::Infer(ForwardReply::Done { node, response })) => Ok((node, response)),
            Ok(PeerAnswer::Infer(ForwardReply::Refused(error))) => Err(error),
            Ok(_) => Err(InferError::Failed(format!("node {target} answered with something else than a result"))),
            Err(error) => Err(InferError::Unavailable(error.to_string())),
        }
    }

    /// Asks `target` for the metadata of `model`.
    pub async fn metadata(&self, target: &str, model: &str) -> Option<MetadataDoc> {
        match self.call(target, PeerCall::Metadata(model.to_string())).await {
            Ok(PeerAnswer::Text(json)) => serde_json::from_str(&json).ok(),
            _ => None,
        }
    }

    /// Asks `target` for its statistics of `model` (of every model it
    /// serves when `model` is empty); `None` when it does not answer.
    pub async fn statistics(&self, target: &str, model: &str) -> Option<Vec<ModelStatisticsDoc>> {
        match self.call(target, PeerCall::Statistics(model.to_string())).await {
            Ok(PeerAnswer::Text(json)) => serde_json::from_str(&json).ok(),
            _ => None,
        }
    }

    /// Asks `owner` for a job it owns: `Ok(None)` when it has no such job.
    pub async fn job(&self, owner: &str, id: &str) -> Result<Option<gpumesh_storage::jobs::JobRecord>, InferError> {
        match self.call(owner, PeerCall::JobStatus(id.to_string())).await {
            Ok(PeerAnswer::Text(json)) if json.is_empty() => Ok(None),
            Ok(PeerAnswer::Text(json)) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|error| InferError::Failed(format!("owner {owner} sent an unreadable job: {error}"))),
            Ok(_) => Err(InferError::Failed(format!("owner {owner} answered with something else than a job"))),
            Err(PeerError::NoLink(_)) => {
                Err(InferError::Unavailable(format!("job owner {owner} is not reachable from here")))
            }
            Err(_) => Err(InferError::Unavailable(format!("job owner {owner} did not answer"))),
        }
    }

    /// Asks `target` for the result it holds for job `id` (a
    /// [`ForwardReply`]'s bytes), or whether the job still runs there;
    /// `Err` when it cannot be asked.
    pub async fn held_result(&self, target: &str, id: &str) -> Result<Held, InferError> {
        match self.call(target, PeerCall::HeldResult(id.to_string())).await {
            Ok(PeerAnswer::Bytes(bytes)) if bytes.is_empty() => Ok(Held::Nothing),
            Ok(PeerAnswer::Bytes(bytes)) if bytes == STILL_RUNNING => Ok(Held::Running),
            Ok(PeerAnswer::Bytes(bytes)) => Ok(Held::Result(bytes)),
            Ok(_) => Err(InferError::Failed(format!("node {target} answered with something else than a result"))),
            Err(error) => Err(InferError::Unavailable(error.to_string())),
        }
    }

    /// Tells `target` that the owner has job `id`'s result (best effort:
    /// retention drops what is never released).
    pub async fn release_result(&self, target: &str, id: &str) {
        let _ = self.call(target, PeerCall::ReleaseResult(id.to_string())).await;
    }

    /// Opens a language-model stream on `target` (`open`: the bytes of an
    /// `llm::wire::Open`).
    pub async fn llm_open(&self, target: &str, open: Vec<u8>) -> Result<(), LlmError> {
        let other = || LlmError::failed(format!("node {target} answered with something else than a stream"));
        match self.call(target, PeerCall::LlmOpen(open)).await {
            Ok(PeerAnswer::Bytes(bytes)) => decode::<Opened>(&bytes).unwrap_or_else(|| Err(other())),
            Ok(_) => Err(other()),
            Err(error) => Err(LlmError::unavailable(error.to_string())),
        }
    }

    /// Sends a frame of a language-model stream to `target` (best effort);
    /// false when it could not be handed to the link.
    pub async fn llm_frame(&self, target: &str, frame: Vec<u8>) -> bool {
        self.call(target, PeerCall::LlmFrame(frame)).await.is_ok()
    }

    /// Asks `home`, the home of idempotency key `key`, to accept a job
    /// (`payload`: its request as stored) or find the one of its key.
    pub async fn submit_job(
        &self,
        home: &str,
        key: String,
        payload: Vec<u8>,
    ) -> Result<gpumesh_storage::jobs::JobRecord, InferError> {
        let submit = crate::llm::wire::encode(&KeyedSubmit { key, payload });
        let other = || InferError::Failed(format!("node {home} answered a job submit with something else"));
        match self.call(home, PeerCall::SubmitJob(submit)).await {
            Ok(PeerAnswer::Bytes(bytes)) => match decode::<SubmitAnswer>(&bytes).ok_or_else(other)? {
                Ok(json) => serde_json::from_str(&json)
                    .map_err(|error| InferError::Failed(format!("node {home} sent an unreadable job: {error}"))),
                Err(refused) => match ForwardReply::decode(&refused) {
                    ForwardReply::Refused(error) => Err(error),
                    ForwardReply::Done { .. } => Err(other()),
                },
            },
            Ok(_) => Err(other()),
            Err(error) => Err(InferError::Unavailable(format!(
                "node {home}, the home of this idempotency key, cannot be asked now ({error}); \
                 retry with the same key: it finds the job if {home} stored it"
            ))),
        }
    }

    /// Tells `owner` that its job `id` started running on `node` (best
    /// effort: the job's completion is what counts).
    pub async fn job_started(&self, owner: &str, id: &str, node: &str) {
        let call = PeerCall::JobStarted { id: id.to_string(), node: node.to_string() };
        let _ = self.call(owner, call).await;
    }
}
