//! The Open Inference Protocol v2 endpoints (KServe v2 / Triton HTTP).

mod decode;
mod encode;

pub(crate) use encode::tensor_json;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gpumesh_actors::InferError;
use serde_json::{Value, json};

use crate::{ApiError, AppState};
use decode::decode;
pub use decode::{DecodeError, InputError};
pub(crate) use decode::{declared, parameters};
use encode::{Provenance, encode};

/// Decodes `body` as the infer endpoint does, with the default limits;
/// `Err` is what the 400 says. For the fuzz targets.
pub(crate) fn decode_with_default_limits(body: &[u8], header_len: Option<usize>) -> Result<(), DecodeError> {
    decode(body, header_len, &crate::Limits::default()).map(drop)
}

/// Bodies larger than this are decoded on a blocking thread.
const DECODE_INLINE_MAX_BYTES: usize = 256 * 1024;

fn unknown_model(name: &str) -> ApiError {
    ApiError::from(InferError::UnknownModel(name.to_string()))
}

impl From<InferError> for ApiError {
    fn from(error: InferError) -> Self {
        let status = match &error {
            InferError::BadRequest(_) => StatusCode::BAD_REQUEST,
            InferError::UnknownModel(_) => StatusCode::NOT_FOUND,
            InferError::QueueFull { .. } | InferError::TooManyJobs { .. } => StatusCode::TOO_MANY_REQUESTS,
            InferError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            InferError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let retry_after_s = match &error {
            InferError::QueueFull { retry_after_ms, .. } | InferError::TooManyJobs { retry_after_ms, .. } => {
                Some(retry_after_ms.div_ceil(1000).max(1))
            }
            _ => None,
        };
        ApiError { status, message: error.to_string(), retry_after_s }
    }
}

/// `GET /v2`: server metadata.
pub(crate) async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "gpumesh",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "gpumesh_provenance"],
    }))
}

/// `GET /v2/models/{model}`: inputs and outputs with names, datatypes and
/// shapes, for a model served here or by any live node of the cluster.
pub(crate) async fn model_metadata(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let doc = state.node.model_metadata(&name).await.ok_or_else(|| unknown_model(&name))?;
    Ok(Json(serde_json::to_value(doc).unwrap_or(Value::Null)))
}

/// `GET /v2/models/{model}/ready`: served here and running, or served by a
/// live node of the cluster.
pub(crate) async fn model_ready(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match state.node.model(&name) {
        Some(model) if model.executor_running() => Ok(Json(json!({ "name": name, "ready": true }))),
        Some(_) => {
            Err(ApiError::from(InferError::Unavailable(format!("model {name} is restarting; retry in a moment"))))
        }
        None if state.node.model_metadata(&name).await.is_some() => Ok(Json(json!({ "name": name, "ready": true }))),
        None => Err(unknown_model(&name)),
    }
}

fn header_length(headers: &HeaderMap) -> Result<Option<usize>, ApiError> {
    let Some(value) = headers.get("inference-header-content-length") else { return Ok(None) };
    value.to_str().ok().and_then(|v| v.trim().parse().ok()).map(Some).ok_or_else(|| {
        ApiError::new(StatusCode::BAD_REQUEST, "Inference-Header-Content-Length must be a non-negative integer")
    })
}

/// Reads and decodes an inference request body (JSON or binary
/// extension), within the body limit.
pub(crate) async fn read_request(
    headers: &HeaderMap,
    body: Body,
    limits: &crate::Limits,
) -> Result<decode::Decoded, ApiError> {
    let bytes = crate::limits::read_body(headers, body, limits.max_body_bytes, "send fewer or smaller tensors").await?;
    let header_len = header_length(headers)?;
    if bytes.len() > DECODE_INLINE_MAX_BYTES {
        let limits = *limits;
        tokio::task::spawn_blocking(move || decode(&bytes, header_len, &limits))
            .await
            .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "decoding the request failed"))?
    } else {
        decode(&bytes, header_len, limits)
    }
    .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, error.to_string()))
}

/// `POST /v2/models/{model}/infer`.
pub(crate) async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let decoded = read_request(&headers, body, &state.options.limits).await?;
    let routed = state.node.route_infer(&name, &decoded.requirements, decoded.request).await?;
    let route = routed.route.join(">");
    let provenance = Provenance { node: &routed.node, route: &route };
    let (headers, body) = encode(&name, decoded.id.as_deref(), &routed.response, &provenance, &decoded.binary_outputs)
        .map_err(|error| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the response failed: {error}"))
        })?;
    Ok((headers, body).into_response())
}

/// Adds `Retry-After` to a response.
pub(crate) fn retry_after(response: &mut Response, seconds: u64) {
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
}

fn check_version(name: &str, version: &str) -> Result<(), ApiError> {
    crate::triton::check_version(name, version).map_err(crate::triton::http_error)
}

/// `GET /v2/models/{model}/versions/{version}`.
pub(crate) async fn model_metadata_versioned(
    state: State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_version(&name, &version)?;
    model_metadata(state, Path(name)).await
}

/// `GET /v2/models/{model}/versions/{version}/ready`.
pub(crate) async fn model_ready_versioned(
    state: State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_version(&name, &version)?;
    model_ready(state, Path(name)).await
}

/// `POST /v2/models/{model}/versions/{version}/infer`.
pub(crate) async fn infer_versioned(
    state: State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_version(&name, &version)?;
    infer(state, Path(name), headers, body).await
}
