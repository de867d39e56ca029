//! The OpenAI API of every node (SPEC section 10): `GET /v1/models`,
//! `POST /v1/chat/completions`, `/v1/completions` and `/v1/embeddings`,
//! for the language models of the whole cluster. Bodies go to the engine as
//! the client sent them (but `model`); a stream is relayed piece by piece
//! as server-sent events, ends with a `gpumesh` chunk and `[DONE]`, or, if
//! it breaks, with an error event, never a bare `[DONE]`. Errors have
//! OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`.

use std::convert::Infallible;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt as _};
use gpumesh_actors::llm::engine::Piece;
use gpumesh_actors::llm::failover::{Provenance, provenance_of};
use gpumesh_actors::llm::{Endpoint, Hints, LlmError, Started};
use serde_json::{Value, json};

use crate::AppState;

/// An error answered in OpenAI's shape.
pub(crate) struct OpenAiError(LlmError);

impl From<LlmError> for OpenAiError {
    fn from(error: LlmError) -> Self {
        Self(error)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, [(header::CONTENT_TYPE, "application/json")], self.0.body()).into_response();
        if let Some(seconds) = self.0.retry_after_s {
            crate::oip::retry_after(&mut response, seconds);
        }
        response
    }
}

/// `GET /v1/models`: every language model of the cluster and the nodes
/// that serve it.
pub(crate) async fn models(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = state
        .node
        .llm()
        .catalog()
        .into_iter()
        .map(|(name, nodes)| {
            json!({"id": name, "object": "model", "created": 0, "owned_by": "gpumesh", "gpumesh": {"nodes": nodes}})
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

pub(crate) async fn chat(state: State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, OpenAiError> {
    complete(state, Endpoint::Chat, headers, body).await
}

pub(crate) async fn completions(
    state: State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, OpenAiError> {
    complete(state, Endpoint::Completion, headers, body).await
}

pub(crate) async fn embeddings(
    state: State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, OpenAiError> {
    complete(state, Endpoint::Embedding, headers, body).await
}

fn hints(headers: &HeaderMap) -> Hints {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).map(String::from);
    Hints {
        device: header("x-gpumesh-device"),
        min_free_vram_mb: header("x-gpumesh-min-free-vram-mb"),
        gpu_type: header("x-gpumesh-gpu-type"),
        priority: header("x-gpumesh-priority"),
    }
}

async fn complete(
    State(state): State<AppState>,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, OpenAiError> {
    let max = state.options.limits.max_body_bytes;
    let bytes = crate::limits::read_body(&headers, body, max, "send a shorter prompt")
        .await
        .map_err(|error| LlmError::with_status(413, error.message))?;
    let request = gpumesh_actors::llm::request::parse(endpoint, &bytes, &hints(&headers))?;
    let stream = request.stream && endpoint != Endpoint::Embedding;
    let started = state.node.llm().start(request).await?;
    let (node, route) = (started.node.clone(), started.route.join(">"));
    let mut response = if stream { streamed(started).into_response() } else { whole(&started) };
    for (name, value) in [("x-gpumesh-node", node), ("x-gpumesh-route", route)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

/// The `gpumesh` field: every node that generated a part of the answer,
/// and how often it moved to another node.
fn gpumesh_field(provenance: &Provenance, cached_tokens: u64) -> Value {
    json!({"nodes": provenance.nodes, "failovers": provenance.failovers, "cached_tokens": cached_tokens})
}

fn cached_tokens(object: &Value) -> Option<u64> {
    object.get("usage")?.get("prompt_tokens_details")?.get("cached_tokens")?.as_u64()
}

/// The one JSON object of an answer that does not stream, with `gpumesh`.
fn whole(started: &Started) -> Response {
    let Ok(mut object) = serde_json::from_str::<Value>(&started.first.data) else {
        let error = LlmError::failed(format!("the engine on {} answered with something else than JSON", started.node));
        return OpenAiError(error).into_response();
    };
    let cached = cached_tokens(&object).unwrap_or(0);
    if let Some(fields) = object.as_object_mut() {
        fields.insert("gpumesh".into(), gpumesh_field(&provenance_of(&started.provenance), cached));
    }
    (StatusCode::OK, Json(object)).into_response()
}

/// What the last chunk of a stream repeats from its first.
#[derive(Default)]
struct StreamHead {
    id: Value,
    object: Value,
    created: Value,
    model: Value,
    cached_tokens: u64,
    /// The usage chunk, held back: it must stay the last before `[DONE]`
    /// (OpenAI clients read usage there), so it carries `gpumesh` too.
    usage: Option<Value>,
}

impl StreamHead {
    /// Reads `piece`; `false` when it is the usage chunk, held back.
    fn read(&mut self, piece: &str, first: bool) -> bool {
        if !first && !piece.contains("\"usage\"") {
            return true;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(piece) else { return true };
        if first {
            let field = |name: &str| chunk.get(name).cloned().unwrap_or(Value::Null);
            (self.id, self.object, self.created, self.model) =
                (field("id"), field("object"), field("created"), field("model"));
        }
        if let Some(cached) = cached_tokens(&chunk) {
            self.cached_tokens = cached;
        }
        let usage_only = chunk["usage"].is_object() && chunk["choices"].as_array().is_some_and(Vec::is_empty);
        if usage_only && !first {
            self.usage = Some(chunk);
            return false;
        }
        true
    }

    /// The stream's last chunk: the usage chunk with `gpumesh` added, or
    /// one of its own.
    fn last_chunk(&mut self, provenance: &Provenance) -> String {
        let gpumesh = gpumesh_field(provenance, self.cached_tokens);
        let mut chunk = self.usage.take().unwrap_or_else(|| {
            json!({"id": self.id, "object": self.object, "created": self.created, "model": self.model, "choices": []})
        });
        chunk["gpumesh"] = gpumesh;
        chunk.to_string()
    }
}

/// A stream as server-sent events: every piece as it comes, then the last
/// chunk (usage, `gpumesh`) and `[DONE]`; an error ends it with an error
/// event.
fn streamed(started: Started) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let Started { node, first, rest, provenance, .. } = started;
    let mut head = StreamHead::default();
    head.read(&first.data, true);
    let state = (Some(first.data), Some(rest), head, (node, provenance), false);
    let events = futures_util::stream::unfold(state, |(first, rest, mut head, node, done)| async move {
        if done {
            return None;
        }
        if let Some(first) = first {
            return Some((vec![Event::default().data(first)], (None, rest, head, node, false)));
        }
        let mut rest = rest?;
        let events = match rest.next().await {
            Some(Ok(Piece { data, .. })) => {
                let events = if head.read(&data, false) { vec![Event::default().data(data)] } else { Vec::new() };
                return Some((events, (None, Some(rest), head, node, false)));
            }
            None => {
                let last = head.last_chunk(&provenance_of(&node.1));
                vec![Event::default().data(last), Event::default().data("[DONE]")]
            }
            Some(Err(error)) => {
                tracing::warn!(node = %node.0, %error, "a stream broke off after its first token and could not go on");
                vec![Event::default().data(error.openai_body().to_string())]
            }
        };
        Some((events, (None, None, head, node, true)))
    });
    let events = events.flat_map(|events| futures_util::stream::iter(events.into_iter().map(Ok)));
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// Gives the errors of `/v1` paths OpenAI's shape: the node's own (401 for
/// a missing token, 413, 404 for an unknown path) come as
/// `{"error": "<sentence>"}`, which OpenAI clients do not read.
pub(crate) async fn openai_errors(request: Request, next: Next) -> Response {
    let openai = request.uri().path().starts_with("/v1/");
    let response = next.run(request).await;
    let status = response.status();
    if !openai || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, ERROR_BODY_MAX_BYTES).await.unwrap_or_default();
    let sentence = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|value| value.get("error").and_then(Value::as_str).map(String::from));
    let Some(sentence) = sentence else { return Response::from_parts(parts, Body::from(bytes)) };
    let error = LlmError::with_status(status.as_u16(), sentence).openai_body();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(error.to_string()))
}

/// Largest error body rewritten in OpenAI's shape.
const ERROR_BODY_MAX_BYTES: usize = 64 * 1024;
