//! The durable jobs API (SPEC sections 4 and 10): `POST /jobs` (a tensor
//! request, or `{"model", "request": {chat or completion body}}` for a
//! language model), `GET /jobs/{id}`, `GET /jobs?state=&limit=`.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use gpumesh_actors::job_owner::{job_outputs, llm_answer};
use gpumesh_actors::llm::{Endpoint, Hints};
use gpumesh_storage::jobs::{JobRecord, JobState, StateFilter};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::oip::{read_request, tensor_json};
use crate::{ApiError, AppState};

/// Longest accepted idempotency key.
const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;
/// Most jobs one listing returns.
const MAX_LIST_LIMIT: usize = 1000;
const DEFAULT_LIST_LIMIT: usize = 100;

/// A job as `GET /jobs/{id}` shows it.
pub(crate) fn job_json(job: &JobRecord) -> Value {
    let mut body = json!({
        "job_id": job.id,
        "model": job.model,
        "state": job.state.as_str(),
        "attempts": job.attempts,
        "node": job.node,
        "created_ms": job.created_ms,
        "updated_ms": job.updated_ms,
        "history": job.history.iter().map(|step| json!({
            "state": step.state.as_str(),
            "attempt": step.attempt,
            "node": step.node,
            "at_ms": step.at_ms,
        })).collect::<Vec<_>>(),
    });
    match job.state {
        JobState::Completed if let Some(answer) = llm_answer(job) => body["outputs"] = answer,
        JobState::Completed => {
            let outputs = job_outputs(job)
                .map(|(_, response)| response.outputs.iter().map(tensor_json).collect::<Vec<_>>())
                .unwrap_or_default();
            body["outputs"] = Value::Array(outputs);
        }
        JobState::Failed => body["error"] = json!(job.error),
        _ => {}
    }
    body
}

/// `POST /jobs`: 202 with the job id once the job is on disk.
pub(crate) async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let limits = &state.options.limits;
    let bytes = crate::limits::read_body(&headers, body, limits.max_body_bytes, "send fewer or smaller inputs").await?;
    if let Some(job) = llm_job(&bytes)? {
        check_key(job.idempotency_key.as_deref())?;
        let job = state.node.submit_llm_job(job.request, job.idempotency_key).await?;
        return Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job.id, "state": job.state.as_str() }))));
    }
    let decoded = read_request(&headers, Body::from(bytes), limits).await?;
    let model = decoded
        .model
        .filter(|model| !model.is_empty())
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "a job names its model: add \"model\" to the body"))?;
    check_key(decoded.idempotency_key.as_deref())?;
    let job = state.node.submit_job(&model, decoded.request, decoded.idempotency_key).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job.id, "state": job.state.as_str() }))))
}

fn check_key(key: Option<&str>) -> Result<(), ApiError> {
    if key.is_some_and(|key| key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// A language-model job: its request and key.
struct LlmJob {
    request: gpumesh_actors::llm::LlmRequest,
    idempotency_key: Option<String>,
}

/// `body` as a language-model job (it has a `request` object), or `None`
/// for a tensor job. The request's endpoint follows from its fields
/// (`messages`: chat, `prompt`: completion, `input`: embeddings) and its
/// model from the job's when it names none.
fn llm_job(body: &[u8]) -> Result<Option<LlmJob>, ApiError> {
    #[derive(Deserialize)]
    struct Fields<'a> {
        #[serde(default)]
        model: Option<String>,
        #[serde(borrow, default)]
        request: Option<&'a RawValue>,
        #[serde(default)]
        idempotency_key: Option<String>,
    }
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, message);
    let Ok(fields) = serde_json::from_slice::<Fields<'_>>(body) else { return Ok(None) };
    let Some(raw) = fields.request else { return Ok(None) };
    let mut request: serde_json::Map<String, Value> = serde_json::from_str(raw.get())
        .map_err(|_| bad("request must be a chat or completion body (a JSON object)".into()))?;
    let endpoint = if request.contains_key("messages") {
        Endpoint::Chat
    } else if request.contains_key("prompt") {
        Endpoint::Completion
    } else if request.contains_key("input") {
        Endpoint::Embedding
    } else {
        return Err(bad("request must have messages (chat), prompt (completion) or input (embeddings)".into()));
    };
    if let Some(model) = fields.model {
        request.entry("model").or_insert(Value::String(model));
    }
    let bytes = serde_json::to_vec(&request).map_err(|error| bad(error.to_string()))?;
    let request = gpumesh_actors::llm::request::parse(endpoint, &bytes, &Hints::default())
        .map_err(|error| bad(format!("request: {}", error.message)))?;
    Ok(Some(LlmJob { request, idempotency_key: fields.idempotency_key }))
}

/// `GET /jobs/{id}`: any node answers, asking the owner when it is not it.
pub(crate) async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    match state.node.find_job(&id).await? {
        Some(job) => Ok(Json(job_json(&job))),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, format!("unknown job {id:?}"))),
    }
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
}

/// `GET /jobs?state=active|completed|failed&limit=N`: this node's jobs.
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = match query.state.as_deref().unwrap_or("active") {
        "active" => StateFilter::Active,
        "completed" => StateFilter::Completed,
        "failed" => StateFilter::Failed,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("state {other:?} is not active, completed or failed"),
            ));
        }
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIST_LIMIT).min(MAX_LIST_LIMIT);
    let jobs = state.node.jobs(filter, limit).await?;
    Ok(Json(json!({ "jobs": jobs.iter().map(job_json).collect::<Vec<_>>() })))
}
