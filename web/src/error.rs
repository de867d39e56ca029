//! The error body every 4xx/5xx response carries: `{"error": "<sentence>"}`.

use axum::Json;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An HTTP error with a plain-sentence message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds for a `Retry-After` header (429 and 503).
    pub retry_after_s: Option<u64>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after_s: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(ErrorBody { error: &self.message })).into_response();
        if let Some(seconds) = self.retry_after_s {
            crate::oip::retry_after(&mut response, seconds);
        }
        response
    }
}

pub(crate) async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}; see GET /v2, /v2/models/{{model}}, /v1/models, /cluster", uri.path()),
    )
}

pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}; see the endpoints in GET /v2 and the README", uri.path()),
    )
}

/// Gives every error response the JSON error shape: axum's own rejections
/// (a path that is not UTF-8, a query that does not parse, ...) come as
/// plain text, and clients must not have to tell the two apart.
pub(crate) async fn json_errors(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    let status = response.status();
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, ERROR_TEXT_MAX_BYTES).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = if text.trim().is_empty() { status.canonical_reason().unwrap_or("error") } else { text.trim() };
    let mut error = ApiError::new(status, message).into_response();
    for (name, value) in parts
        .headers
        .iter()
        .filter(|(name, _)| *name != axum::http::header::CONTENT_TYPE && *name != axum::http::header::CONTENT_LENGTH)
    {
        error.headers_mut().insert(name.clone(), value.clone());
    }
    error
}

/// Longest plain-text rejection turned into a JSON error.
const ERROR_TEXT_MAX_BYTES: usize = 4096;
