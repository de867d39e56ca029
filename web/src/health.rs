//! Liveness and readiness (OIP v2 health endpoints).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::{ApiError, AppState};

pub(crate) async fn live() -> Json<serde_json::Value> {
    Json(json!({ "live": true }))
}

/// Ready while the node takes new work: started and not draining.
pub(crate) async fn ready(State(state): State<AppState>) -> Response {
    if state.node.is_draining().await {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "node is draining and takes no new work")
            .into_response();
    }
    Json(json!({ "ready": true })).into_response()
}
