//! Triton's extensions of the inference protocol, shared by the HTTP and
//! gRPC faces: model configuration (`config`), statistics and the
//! repository index. Any node answers for every tensor model of the
//! cluster; statistics are the sum over the nodes that serve the model.

pub(crate) mod config;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use gpumesh_actors::{InferError, ModelStatisticsDoc, NodeHandle};
use serde_json::{Value, json};

use crate::{ApiError, AppState};

/// Why a Triton extension request has no answer, in words both faces use.
pub(crate) enum Missing {
    Unknown(String),
    NoAnswer(String),
    Version { model: String, version: String },
}

impl Missing {
    /// No such model or version (rather than none answering).
    pub(crate) fn is_not_found(&self) -> bool {
        !matches!(self, Missing::NoAnswer(_))
    }

    pub(crate) fn message(&self) -> String {
        match self {
            Missing::Unknown(model) => InferError::UnknownModel(model.clone()).to_string(),
            Missing::NoAnswer(model) => format!(
                "no node that serves model {model} answered; retry in a moment, GET /cluster shows which nodes are live"
            ),
            Missing::Version { model, version } => format!("model {model} has only version 1, not {version:?}"),
        }
    }
}

/// Accepts the version a client names: none, or "1".
pub(crate) fn check_version(model: &str, version: &str) -> Result<(), Missing> {
    if version.is_empty() || version == "1" {
        Ok(())
    } else {
        Err(Missing::Version { model: model.to_string(), version: version.to_string() })
    }
}

/// The statistics of `model` (every tensor model when `None`) summed over
/// the cluster.
pub(crate) async fn statistics(node: &NodeHandle, model: Option<&str>) -> Result<Vec<ModelStatisticsDoc>, Missing> {
    let docs = node.model_statistics(model).await;
    match model {
        Some(name) if docs.is_empty() => {
            if node.model_names().contains(name) {
                Err(Missing::NoAnswer(name.to_string()))
            } else {
                Err(Missing::Unknown(name.to_string()))
            }
        }
        _ => Ok(docs),
    }
}

/// Name, version, state and reason of each tensor model of the cluster.
pub(crate) fn repository_index(node: &NodeHandle) -> Vec<(String, &'static str, &'static str)> {
    node.model_names().into_iter().map(|name| (name, "1", "READY")).collect()
}

/// The HTTP error of a missing answer: 404, or 503 when no node answered.
pub(crate) fn http_error(missing: Missing) -> ApiError {
    let status = if missing.is_not_found() { StatusCode::NOT_FOUND } else { StatusCode::SERVICE_UNAVAILABLE };
    ApiError::new(status, missing.message())
}

/// `GET /v2/models/{model}/config`.
pub(crate) async fn get_config(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let doc = state.node.model_metadata(&model).await.ok_or_else(|| http_error(Missing::Unknown(model)))?;
    Ok(Json(config::config_json(&config::model_config(&doc))))
}

/// `GET /v2/models/{model}/versions/{version}/config`.
pub(crate) async fn get_config_versioned(
    state: State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_version(&model, &version).map_err(http_error)?;
    get_config(state, Path(model)).await
}

/// `GET /v2/models/stats`.
pub(crate) async fn get_all_stats(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let docs = statistics(&state.node, None).await.map_err(http_error)?;
    Ok(Json(json!({ "model_stats": docs })))
}

/// `GET /v2/models/{model}/stats`.
pub(crate) async fn get_stats(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let docs = statistics(&state.node, Some(&model)).await.map_err(http_error)?;
    Ok(Json(json!({ "model_stats": docs })))
}

/// `GET /v2/models/{model}/versions/{version}/stats`.
pub(crate) async fn get_stats_versioned(
    state: State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_version(&model, &version).map_err(http_error)?;
    get_stats(state, Path(model)).await
}

/// `POST /v2/repository/index`: every tensor model of the cluster (all
/// ready: a node lists only models it serves).
pub(crate) async fn post_index(State(state): State<AppState>) -> Json<Value> {
    let models: Vec<Value> = repository_index(&state.node)
        .into_iter()
        .map(|(name, version, model_state)| json!({ "name": name, "version": version, "state": model_state, "reason": "" }))
        .collect();
    Json(Value::Array(models))
}
