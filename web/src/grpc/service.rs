//! The RPCs of `inference.GRPCInferenceService`. Each answers as the
//! HTTP endpoint of the same name does; errors are gRPC status codes with
//! the HTTP face's sentences. Repository load/unload and shared memory
//! answer `UNIMPLEMENTED` with the reason; trace and log settings too.

use std::sync::Arc;

use gpumesh_actors::{InferError, NodeHandle};
use tokio::sync::{Semaphore, mpsc};
use tonic::codegen::BoxStream;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::grpc::proto::grpc_inference_service_server::GrpcInferenceService;
use crate::grpc::proto::model_metadata_response::TensorMetadata;
use crate::grpc::proto::repository_index_response::ModelIndex;
use crate::grpc::proto::{
    ModelConfigRequest, ModelConfigResponse, ModelInferRequest, ModelInferResponse, ModelMetadataRequest,
    ModelMetadataResponse, ModelReadyRequest, ModelReadyResponse, ModelStatisticsRequest, ModelStatisticsResponse,
    ModelStreamInferResponse, RepositoryIndexRequest, RepositoryIndexResponse, ServerLiveRequest, ServerLiveResponse,
    ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest, ServerReadyResponse,
};
use crate::grpc::{decode, encode, proto};
use crate::triton::{self, Missing};
use crate::{ApiTokens, Limits};

/// Why models are not loaded through the API.
const LOAD: &str = "gpumesh loads the models of its registry file (--models) at start; edit it and restart the node";
/// Why shared-memory tensors are refused.
const SHM: &str = "gpumesh nodes take tensors in the request (raw_input_contents) only, not in shared memory: another node may run it";

/// Requests of one `ModelStreamInfer` call running at once; the next
/// message is read when one finishes.
const STREAM_IN_FLIGHT: usize = 64;

/// The gRPC service of one node.
#[derive(Clone)]
pub(crate) struct Grpc {
    node: Arc<NodeHandle>,
    limits: Limits,
    tokens: ApiTokens,
}

/// The gRPC status of an inference error, with the HTTP face's sentence;
/// refusals for load carry `retry-after-ms` metadata.
pub(crate) fn status(error: InferError) -> Status {
    let code = match &error {
        InferError::BadRequest(_) => Code::InvalidArgument,
        InferError::UnknownModel(_) => Code::NotFound,
        InferError::QueueFull { .. } | InferError::TooManyJobs { .. } => Code::ResourceExhausted,
        InferError::Unavailable(_) => Code::Unavailable,
        InferError::Failed(_) => Code::Internal,
    };
    let mut status = Status::new(code, error.to_string());
    if let InferError::QueueFull { retry_after_ms, .. } | InferError::TooManyJobs { retry_after_ms, .. } = &error
        && let Ok(value) = retry_after_ms.to_string().parse()
    {
        status.metadata_mut().insert("retry-after-ms", value);
    }
    status
}

fn missing(missing: Missing) -> Status {
    let code = if missing.is_not_found() { Code::NotFound } else { Code::Unavailable };
    Status::new(code, missing.message())
}

impl Grpc {
    pub(crate) fn new(node: Arc<NodeHandle>, limits: Limits, tokens: ApiTokens) -> Self {
        Self { node, limits, tokens }
    }

    /// Lets a call through when the API is open or it carries a valid
    /// `authorization: Bearer <token>`.
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if self.tokens.is_open() {
            return Ok(());
        }
        let bearer = request.metadata().get("authorization").and_then(|value| value.to_str().ok());
        match bearer.and_then(|value| value.strip_prefix("Bearer ")) {
            Some(token) if self.tokens.accepts(token.trim()) => Ok(()),
            Some(_) => Err(Status::unauthenticated(
                "the API token is not valid: use one listed in the node's --api-token-file",
            )),
            None => Err(Status::unauthenticated(
                "this node requires an API token: send metadata authorization: Bearer <token>",
            )),
        }
    }

    /// Runs one inference request where the routing policy says.
    async fn infer(&self, message: ModelInferRequest) -> Result<ModelInferResponse, Status> {
        let model = message.model_name.clone();
        triton::check_version(&model, &message.model_version).map_err(missing)?;
        let id = message.id.clone();
        let decoded =
            decode::decode(message, &self.limits).map_err(|error| Status::invalid_argument(error.to_string()))?;
        let routed = self.node.route_infer(&model, &decoded.requirements, decoded.request).await.map_err(status)?;
        Ok(encode::infer_response(&model, id, routed))
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Grpc {
    async fn server_live(&self, _: Request<ServerLiveRequest>) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(&self, _: Request<ServerReadyRequest>) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse { ready: !self.node.is_draining().await }))
    }

    async fn model_ready(&self, request: Request<ModelReadyRequest>) -> Result<Response<ModelReadyResponse>, Status> {
        self.authorize(&request)?;
        let ModelReadyRequest { name, version } = request.into_inner();
        triton::check_version(&name, &version).map_err(missing)?;
        let ready = match self.node.model(&name) {
            Some(model) => model.executor_running(),
            None => self.node.model_metadata(&name).await.is_some(),
        };
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        request: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        self.authorize(&request)?;
        Ok(Response::new(ServerMetadataResponse {
            name: "gpumesh".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec!["model_configuration".into(), "statistics".into(), "gpumesh_provenance".into()],
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        self.authorize(&request)?;
        let ModelMetadataRequest { name, version } = request.into_inner();
        triton::check_version(&name, &version).map_err(missing)?;
        let doc = self.node.model_metadata(&name).await.ok_or_else(|| missing(Missing::Unknown(name)))?;
        let tensor = |t: &gpumesh_actors::executor::TensorDoc| TensorMetadata {
            name: t.name.clone(),
            datatype: t.datatype.clone(),
            shape: t.shape.clone(),
        };
        Ok(Response::new(ModelMetadataResponse {
            name: doc.name.clone(),
            versions: doc.versions.clone(),
            platform: doc.platform.clone(),
            inputs: doc.inputs.iter().map(tensor).collect(),
            outputs: doc.outputs.iter().map(tensor).collect(),
        }))
    }

    async fn model_infer(&self, request: Request<ModelInferRequest>) -> Result<Response<ModelInferResponse>, Status> {
        self.authorize(&request)?;
        self.infer(request.into_inner()).await.map(Response::new)
    }

    async fn model_stream_infer(
        &self,
        request: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<BoxStream<ModelStreamInferResponse>>, Status> {
        self.authorize(&request)?;
        let mut incoming = request.into_inner();
        let (tx, mut rx) = mpsc::channel(STREAM_IN_FLIGHT);
        let this = self.clone();
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(STREAM_IN_FLIGHT));
            loop {
                let message = match incoming.message().await {
                    Ok(Some(message)) => message,
                    Ok(None) => break,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                };
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                let (this, tx) = (this.clone(), tx.clone());
                tokio::spawn(async move {
                    let answer = match this.infer(message).await {
                        Ok(response) => {
                            ModelStreamInferResponse { error_message: String::new(), infer_response: Some(response) }
                        }
                        Err(status) => ModelStreamInferResponse {
                            error_message: status.message().to_string(),
                            infer_response: None,
                        },
                    };
                    let _ = tx.send(Ok(answer)).await;
                    drop(slot);
                });
            }
        });
        let responses = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(Response::new(Box::pin(responses)))
    }

    async fn model_config(
        &self,
        request: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        self.authorize(&request)?;
        let ModelConfigRequest { name, version } = request.into_inner();
        triton::check_version(&name, &version).map_err(missing)?;
        let doc = self.node.model_metadata(&name).await.ok_or_else(|| missing(Missing::Unknown(name)))?;
        Ok(Response::new(ModelConfigResponse { config: Some(triton::config::model_config(&doc)) }))
    }

    async fn model_statistics(
        &self,
        request: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        self.authorize(&request)?;
        let ModelStatisticsRequest { name, version } = request.into_inner();
        let model = (!name.is_empty()).then_some(name.as_str());
        if let Some(name) = model {
            triton::check_version(name, &version).map_err(missing)?;
        }
        let docs = triton::statistics(&self.node, model).await.map_err(missing)?;
        Ok(Response::new(ModelStatisticsResponse { model_stats: docs.into_iter().map(encode::statistics).collect() }))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        self.authorize(&request)?;
        let models = triton::repository_index(&self.node)
            .into_iter()
            .map(|(name, version, state)| ModelIndex {
                name,
                version: version.into(),
                state: state.into(),
                reason: String::new(),
            })
            .collect();
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        _: Request<proto::RepositoryModelLoadRequest>,
    ) -> Result<Response<proto::RepositoryModelLoadResponse>, Status> {
        Err(Status::unimplemented(LOAD))
    }

    async fn repository_model_unload(
        &self,
        _: Request<proto::RepositoryModelUnloadRequest>,
    ) -> Result<Response<proto::RepositoryModelUnloadResponse>, Status> {
        Err(Status::unimplemented(LOAD))
    }

    async fn system_shared_memory_status(
        &self,
        _: Request<proto::SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<proto::SystemSharedMemoryStatusResponse>, Status> {
        Err(Status::unimplemented(SHM))
    }

    async fn system_shared_memory_register(
        &self,
        _: Request<proto::SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<proto::SystemSharedMemoryRegisterResponse>, Status> {
        Err(Status::unimplemented(SHM))
    }

    async fn system_shared_memory_unregister(
        &self,
        _: Request<proto::SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<proto::SystemSharedMemoryUnregisterResponse>, Status> {
        Err(Status::unimplemented(SHM))
    }

    async fn cuda_shared_memory_status(
        &self,
        _: Request<proto::CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<proto::CudaSharedMemoryStatusResponse>, Status> {
        Err(Status::unimplemented(SHM))
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<proto::CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<proto::CudaSharedMemoryRegisterResponse>, Status> {
        Err(Status::unimplemented(SHM))
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<proto::CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<proto::CudaSharedMemoryUnregisterResponse>, Status> {
        Err(Status::unimplemented(SHM))
    }
}
