//! vLLM at the token level (pure). A stream asks for each token's id
//! (`return_token_ids`, vLLM 0.10.2 and later; an older vLLM ignores it and
//! a continuation then tokenizes the sent text). A continuation sends the
//! prompt's ids, as the engine's `/tokenize` renders them, and the sent
//! tokens' ids after them to `/v1/completions`, whose chunks read here in
//! the words of the client's endpoint: with greedy sampling, the rest of an
//! uninterrupted run.

use serde_json::{Map, Value, json};

use super::{REQUEST_FIELDS, encoded, fields, fields_of, raw, remaining};
use crate::llm::error::LlmError;
use crate::llm::piece::Piece;
use crate::llm::request::{Endpoint, LlmRequest};
use crate::llm::resume::Resume;

/// Fields of a chat body that `/v1/completions` reads differently or not
/// at all; a continuation leaves them out (and asks for the client's
/// log-probabilities in the completion's words).
const CHAT_FIELDS: [&str; 12] = [
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "chat_template",
    "chat_template_kwargs",
    "add_generation_prompt",
    "continue_final_message",
    "add_special_tokens",
    "documents",
    "logprobs",
    "top_logprobs",
    "return_token_ids",
];

/// Fields of a chat body that shape how the engine renders the prompt:
/// `/tokenize` gets them as they are.
const TEMPLATE_FIELDS: [&str; 7] = [
    "messages",
    "tools",
    "chat_template",
    "chat_template_kwargs",
    "add_generation_prompt",
    "continue_final_message",
    "add_special_tokens",
];

fn asked(body: &Value, name: &str) -> bool {
    !matches!(body.get(name), None | Some(Value::Null | Value::Bool(false)))
}

/// A vLLM stream body that also asks for each token's id; `true` when the
/// ids are gpumesh's alone and come off each chunk before the client sees
/// it.
pub fn ask_token_ids(engine_body: Vec<u8>) -> Result<(Vec<u8>, bool), LlmError> {
    let mut body = fields_of(&engine_body)?;
    if body.get("return_token_ids").is_some_and(|raw| raw.get() == "true") {
        return Ok((engine_body, false));
    }
    body.insert("return_token_ids".into(), raw(&true)?);
    Ok((encoded(&body)?, true))
}

/// A vLLM chunk as a piece with its token ids, the ids (and the prompt's)
/// taken off when `strip`.
pub fn with_token_ids(data: String, strip: bool) -> Piece {
    let Ok(mut chunk) = serde_json::from_str::<Value>(&data) else { return Piece::new(data) };
    let Some(choice) = chunk["choices"].get_mut(0).and_then(Value::as_object_mut) else { return Piece::new(data) };
    let tokens = ids(choice);
    if !strip {
        return Piece { data, tokens };
    }
    strip_ids(&mut chunk);
    Piece { data: chunk.to_string(), tokens }
}

fn ids(choice: &Map<String, Value>) -> Vec<u32> {
    let ids = choice.get("token_ids").and_then(Value::as_array);
    ids.map(|ids| ids.iter().filter_map(Value::as_u64).map(|id| id as u32).collect()).unwrap_or_default()
}

fn strip_ids(chunk: &mut Value) {
    if let Some(chunk) = chunk.as_object_mut() {
        chunk.remove("prompt_token_ids");
        chunk.remove("prompt_text");
    }
    let choices = chunk.get_mut("choices").and_then(Value::as_array_mut);
    for choice in choices.into_iter().flatten().filter_map(Value::as_object_mut) {
        choice.remove("token_ids");
        choice.remove("prompt_token_ids");
    }
}

/// The prompt's token ids where the client sent them (a completion whose
/// prompt is one array of ids); `None` when the engine must render them.
pub fn prompt_ids(request: &LlmRequest) -> Option<Vec<u32>> {
    if request.endpoint != Endpoint::Completion {
        return None;
    }
    let body: Value = serde_json::from_slice(&request.body).ok()?;
    serde_json::from_value(body.get("prompt")?.clone()).ok()
}

/// `true` when a token-level continuation would change what the engine
/// answers: a chat with tools, whose calls only the chat endpoint parses.
pub fn continues_from_text(request: &LlmRequest) -> bool {
    let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
    request.endpoint == Endpoint::Chat && asked(&body, "tools")
}

/// The `/tokenize` body that renders the request's prompt as its engine
/// does: a chat's messages through the chat template, a completion's text
/// with the tokenizer's special tokens.
pub fn tokenize_prompt(request: &LlmRequest, model: &str) -> Result<Value, LlmError> {
    let body: Value =
        serde_json::from_slice(&request.body).map_err(|_| LlmError::failed("the request body is not JSON"))?;
    let mut out = json!({"model": model});
    match request.endpoint {
        Endpoint::Chat => {
            for name in TEMPLATE_FIELDS {
                if let Some(value) = body.get(name) {
                    out[name] = value.clone();
                }
            }
        }
        Endpoint::Completion => {
            let prompt = body["prompt"].as_str().ok_or_else(|| LlmError::failed("no text prompt to continue"))?;
            out["prompt"] = prompt.into();
            if let Some(special) = body.get("add_special_tokens") {
                out["add_special_tokens"] = special.clone();
            }
        }
        Endpoint::Embedding => return Err(LlmError::failed("an embedding does not stream")),
    }
    Ok(out)
}

/// The `/tokenize` body of text sent so far: its ids with no special token.
pub fn tokenize_text(text: &str, model: &str) -> Value {
    json!({"model": model, "prompt": text, "add_special_tokens": false})
}

/// The `/v1/completions` body continuing at the token level from `tokens`
/// (the prompt's and the sent tokens' ids), with the request's own
/// sampling: what is left of `max_tokens` and `min_tokens`, the usage chunk
/// where the client asked, a chat's log-probabilities as a completion's.
pub fn continuation(request: &LlmRequest, resume: &Resume, tokens: &[u32], model: &str) -> Result<Vec<u8>, LlmError> {
    let client: Value =
        serde_json::from_slice(&request.body).map_err(|_| LlmError::failed("the request body is not JSON"))?;
    let mut body = fields(request)?;
    body.retain(|name, _| !REQUEST_FIELDS.contains(&name.as_str()));
    if request.endpoint == Endpoint::Chat {
        body.retain(|name, _| !CHAT_FIELDS.contains(&name.as_str()));
        if asked(&client, "logprobs") {
            let top = client["top_logprobs"].as_u64().unwrap_or(0);
            body.insert("logprobs".into(), raw(&top)?);
        }
    }
    body.insert("model".into(), raw(&model)?);
    body.insert("prompt".into(), raw(&tokens)?);
    body.insert("stream".into(), raw(&true)?);
    body.insert("stream_options".into(), raw(&json!({"include_usage": request.include_usage}))?);
    body.insert("return_token_ids".into(), raw(&true)?);
    if let Some(left) = remaining(request, resume) {
        body.insert("max_tokens".into(), raw(&left)?);
    }
    if let Some(min) = client["min_tokens"].as_u64() {
        body.insert("min_tokens".into(), raw(&min.saturating_sub(u64::from(resume.tokens)))?);
    }
    encoded(&body)
}

/// How the chunks of a continuation's `/v1/completions` stream read for
/// one request: in the words of the client's endpoint, with token ids only
/// where the client asked for them. Made once a continuation, since the
/// request's body is read once.
#[derive(Clone, Copy, Debug)]
pub struct Chunks {
    chat: bool,
    keep_ids: bool,
}

impl Chunks {
    pub fn new(request: &LlmRequest) -> Self {
        let client: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        Self { chat: request.endpoint == Endpoint::Chat, keep_ids: asked(&client, "return_token_ids") }
    }

    /// One chunk as the client's endpoint words it, with its token ids.
    pub fn piece(self, data: String) -> Piece {
        let Ok(mut chunk) = serde_json::from_str::<Value>(&data) else { return Piece::new(data) };
        let tokens = chunk["choices"].get(0).and_then(Value::as_object).map(ids).unwrap_or_default();
        if !self.keep_ids {
            strip_ids(&mut chunk);
        } else if let Some(choice) = chunk["choices"].get_mut(0).and_then(Value::as_object_mut) {
            choice.remove("prompt_token_ids");
        }
        if self.chat {
            chunk["object"] = "chat.completion.chunk".into();
            let choices = chunk.get_mut("choices").and_then(Value::as_array_mut);
            for choice in choices.into_iter().flatten().filter_map(Value::as_object_mut) {
                as_chat_choice(choice);
            }
        }
        Piece { data: chunk.to_string(), tokens }
    }
}

/// A completion choice as a chat chunk's: its text as the delta's content,
/// its log-probabilities in the chat's shape.
fn as_chat_choice(choice: &mut Map<String, Value>) {
    let text = choice.remove("text").unwrap_or_default();
    let delta = match text.as_str() {
        Some(text) if !text.is_empty() => json!({"content": text}),
        _ => json!({}),
    };
    choice.insert("delta".into(), delta);
    if let Some(logprobs) = choice.get_mut("logprobs").filter(|logprobs| !logprobs.is_null()) {
        *logprobs = chat_logprobs(logprobs);
    }
}

/// A completion's log-probabilities (`tokens`, `token_logprobs`,
/// `top_logprobs` as token → log-probability) in a chat chunk's shape.
fn chat_logprobs(completion: &Value) -> Value {
    let entry = |token: &str, logprob: &Value| json!({"token": token, "logprob": logprob, "bytes": token.as_bytes()});
    let tokens = completion["tokens"].as_array().map(Vec::as_slice).unwrap_or_default();
    let content: Vec<Value> = tokens
        .iter()
        .enumerate()
        .map(|(index, token)| {
            let token = token.as_str().unwrap_or_default();
            let mut out = entry(token, &completion["token_logprobs"][index]);
            let top = completion["top_logprobs"][index].as_object();
            let top: Vec<Value> = top.into_iter().flatten().map(|(token, logprob)| entry(token, logprob)).collect();
            out["top_logprobs"] = top.into();
            out
        })
        .collect();
    json!({"content": content})
}

#[cfg(test)]
mod tests;
