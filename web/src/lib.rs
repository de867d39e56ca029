//! The HTTP face of a gpumesh node (axum).
//!
//! Layout:
//! - `cluster`: `GET /cluster`, the typed view as the JSON of SPEC section 4,
//!   and `GET /cluster/decisions`, the recent routing decisions.
//! - `health`: `GET /v2/health/live` and `/v2/health/ready`.
//! - `oip`: the Open Inference Protocol v2 endpoints (metadata, infer).
//! - `triton`: Triton's model configuration, statistics and repository
//!   index, for the HTTP and gRPC faces.
//! - `grpc`: the KServe v2 / Triton gRPC server (tonic), `serve_grpc`.
//! - `openai`: the OpenAI API for the cluster's language models (`/v1`).
//! - `jobs`: the durable jobs API.
//! - `page`: `GET /`, the live status page, and `GET /events`, the
//!   server-sent events that keep it live.
//! - `metrics`: `GET /metrics`, the Prometheus text format.
//! - `auth`: client API tokens; `limits`: request and connection bounds;
//!   `listener`: the connection limits; `server`: hyper's connections with
//!   the header timeout; `body_rate`: the minimum body rate.
//! - `error`: the JSON error shape every 4xx/5xx uses.
//!
//! May depend on gpumesh-actors (the node handle and the request types),
//! gpumesh-membership (view types) and gpumesh-storage (job records), not
//! on node or simulations. axum and tonic are used only here.

mod auth;
mod body_rate;
mod cluster;
mod error;
mod grpc;
mod health;
mod jobs;
mod limits;
mod listener;
mod metrics;
mod oip;
mod openai;
mod page;
mod server;
mod triton;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use gpumesh_actors::NodeHandle;
use tokio::net::TcpListener;

pub use auth::ApiTokens;
pub use body_rate::BODY_GRACE;
pub use cluster::{ClusterResponse, cluster_response};
pub use error::ApiError;
pub use grpc::{GrpcTls, serve_grpc};
pub use limits::{
    DEFAULT_HEADER_TIMEOUT_SECS, DEFAULT_IDLE_TIMEOUT_SECS, DEFAULT_MAX_CLIENT_CONNECTIONS, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MIN_BODY_RATE, HttpOptions, Limits,
};
pub use oip::{DecodeError, InputError};

/// Entry points for the fuzz targets in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// Decodes an inference request body (JSON, or the binary extension when
    /// `header_len` is given) as `POST /v2/models/{model}/infer` does.
    pub fn decode_infer_request(body: &[u8], header_len: Option<usize>) -> Result<(), crate::DecodeError> {
        crate::oip::decode_with_default_limits(body, header_len)
    }

    /// Decodes a protobuf `ModelInferRequest` as gRPC `ModelInfer` does.
    pub fn decode_grpc_infer_request(message: &[u8]) -> Result<(), String> {
        crate::grpc::decode_message(message)
    }
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub node: Arc<NodeHandle>,
    pub options: Arc<HttpOptions>,
    /// Turns true when the server starts shutting down: long-lived
    /// responses (`/events`) end then, so the graceful shutdown does not
    /// wait for them.
    pub closing: tokio::sync::watch::Receiver<bool>,
}

/// Every route a node serves.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(page::status_page))
        .route("/events", get(page::events))
        .route("/metrics", get(metrics::metrics))
        .route("/cluster", get(cluster::get_cluster))
        .route("/cluster/decisions", get(cluster::get_decisions))
        .route("/jobs", post(jobs::submit).get(jobs::list))
        .route("/jobs/{id}", get(jobs::get))
        .route("/v2/health/live", get(health::live))
        .route("/v2/health/ready", get(health::ready))
        .route("/v2", get(oip::server_metadata))
        .route("/v2/models/stats", get(triton::get_all_stats))
        .route("/v2/models/{model}/config", get(triton::get_config))
        .route("/v2/models/{model}/stats", get(triton::get_stats))
        .route("/v2/models/{model}/versions/{version}/config", get(triton::get_config_versioned))
        .route("/v2/models/{model}/versions/{version}/stats", get(triton::get_stats_versioned))
        .route("/v2/repository/index", post(triton::post_index))
        .route("/v2/models/{model}", get(oip::model_metadata))
        .route("/v2/models/{model}/ready", get(oip::model_ready))
        .route("/v2/models/{model}/infer", post(oip::infer))
        .route("/v2/models/{model}/versions/{version}", get(oip::model_metadata_versioned))
        .route("/v2/models/{model}/versions/{version}/ready", get(oip::model_ready_versioned))
        .route("/v2/models/{model}/versions/{version}/infer", post(oip::infer_versioned))
        .route("/v1/models", get(openai::models))
        .route("/v1/chat/completions", post(openai::chat))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token))
        .layer(axum::middleware::map_response(error::json_errors))
        .layer(axum::middleware::from_fn(openai::openai_errors))
        .layer(axum::middleware::from_fn_with_state(state.clone(), body_rate::min_body_rate))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes, then finishes
/// the requests in flight.
pub async fn serve(
    listener: TcpListener,
    node: Arc<NodeHandle>,
    options: HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        closing_tx.send_replace(true);
    };
    let (max, per_client) = (options.max_connections, options.max_client_connections);
    let listener = listener::LimitedListener::new(listener, max, per_client, options.idle_timeout, node.clock());
    let header_timeout = options.header_timeout;
    let state = AppState { node, options: Arc::new(options), closing };
    server::run(listener, router(state), header_timeout, shutdown).await;
    Ok(())
}
