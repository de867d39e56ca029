//! Continuing a completion another engine started (pure): what was already
//! sent, the request that asks an engine for the rest, and llama.cpp's
//! native chunks in OpenAI's words. Three ways, best first:
//!
//! - a synthetic engine starts at the next token index (its tokens are a
//!   function of the prompt and the index: exact);
//! - llama.cpp continues at the token level: its native `/completion` with
//!   the prompt's and the sent text's token ids (greedy: equal to an
//!   uninterrupted run); vLLM the same way through `/v1/completions` with
//!   a prompt of token ids (`vllm`);
//! - any other engine continues from the text: the partial answer as the
//!   final assistant message to be continued (chat), or appended to the
//!   prompt (completion).

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::llm::error::LlmError;
use crate::llm::piece::Piece;
use crate::llm::request::{Endpoint, LlmRequest};

pub mod vllm;

/// What a client already has of a completion.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The text sent so far.
    pub text: String,
    /// Tokens sent so far: those whose ids a piece told, one for each
    /// content piece that told none.
    pub tokens: u32,
    /// The ids of the tokens sent, as far as pieces told them.
    pub ids: Vec<u32>,
}

impl Resume {
    /// Notes a piece's text and token ids as sent.
    pub fn add(&mut self, text: &str, ids: &[u32]) {
        self.text.push_str(text);
        self.ids.extend_from_slice(ids);
        if !ids.is_empty() {
            self.tokens += ids.len() as u32;
        } else if !text.is_empty() {
            self.tokens += 1;
        }
    }

    /// The ids of every token sent, when every piece told them.
    pub fn exact_ids(&self) -> Option<&[u32]> {
        (self.tokens > 0 && self.ids.len() == self.tokens as usize).then_some(self.ids.as_slice())
    }
}

/// Fields of a chat or completion body that describe the request, not its
/// sampling: a continuation sets them itself.
const REQUEST_FIELDS: [&str; 9] =
    ["model", "messages", "prompt", "stream", "stream_options", "max_tokens", "max_completion_tokens", "n", "echo"];

fn raw(value: &impl Serialize) -> Result<Box<RawValue>, LlmError> {
    serde_json::value::to_raw_value(value).map_err(|error| LlmError::failed(format!("cannot encode: {error}")))
}

fn fields_of(body: &[u8]) -> Result<IndexMap<String, Box<RawValue>>, LlmError> {
    serde_json::from_slice(body).map_err(|error| LlmError::invalid(None, format!("not a JSON object: {error}")))
}

fn fields(request: &LlmRequest) -> Result<IndexMap<String, Box<RawValue>>, LlmError> {
    fields_of(&request.body)
}

fn encoded(body: &IndexMap<String, Box<RawValue>>) -> Result<Vec<u8>, LlmError> {
    serde_json::to_vec(body).map_err(|error| LlmError::failed(format!("cannot encode: {error}")))
}

/// An engine body of a llama.cpp stream that also asks for each token's id
/// (in `logprobs`, the sampled token only, cheap after sampling); `true`
/// when the ids are gpumesh's alone and come off each chunk before the
/// client sees it. A client that asked for log-probabilities gets its own,
/// with the ids in them.
pub fn ask_token_ids(endpoint: Endpoint, engine_body: Vec<u8>) -> Result<(Vec<u8>, bool), LlmError> {
    let mut body = fields_of(&engine_body)?;
    let asked = body.get("logprobs").is_some_and(|raw| !matches!(raw.get(), "null" | "false" | "0"));
    if asked {
        return Ok((engine_body, false));
    }
    match endpoint {
        Endpoint::Chat => {
            body.insert("logprobs".into(), raw(&true)?);
            body.insert("top_logprobs".into(), raw(&1)?);
        }
        _ => {
            body.insert("logprobs".into(), raw(&1)?);
        }
    }
    body.insert("post_sampling_probs".into(), raw(&true)?);
    Ok((encoded(&body)?, true))
}

/// A llama.cpp chunk as a piece with its token ids (from `logprobs`), the
/// `logprobs` taken off when `strip` (gpumesh asked for them, not the
/// client).
pub fn with_token_ids(data: String, strip: bool) -> Piece {
    let Ok(mut chunk) = serde_json::from_str::<Value>(&data) else { return Piece::new(data) };
    let Some(choice) = chunk["choices"].get_mut(0).and_then(Value::as_object_mut) else { return Piece::new(data) };
    let tokens = choice
        .get("logprobs")
        .and_then(|logprobs| logprobs["content"].as_array())
        .map(|content| content.iter().filter_map(|token| token["id"].as_u64()).map(|id| id as u32).collect())
        .unwrap_or_default();
    if !strip {
        return Piece { data, tokens };
    }
    choice.remove("logprobs");
    Piece { data: chunk.to_string(), tokens }
}

/// Tokens still to generate after `resume`, where the request bounds them
/// (0: nothing is left but to finish).
pub fn remaining(request: &LlmRequest, resume: &Resume) -> Option<u32> {
    request.max_tokens.map(|max| max.saturating_sub(resume.tokens))
}

/// The body asking an OpenAI-compatible engine to continue from the text:
/// chat gets the partial answer as a final assistant message to continue
/// (vLLM's `continue_final_message`), a completion gets it appended to its
/// prompt; `max_tokens` counts what is left.
pub fn text_continuation(request: &LlmRequest, resume: &Resume) -> Result<Vec<u8>, LlmError> {
    let mut body = fields(request)?;
    match request.endpoint {
        Endpoint::Chat => {
            let mut messages: Vec<Value> = body
                .get("messages")
                .and_then(|raw| serde_json::from_str(raw.get()).ok())
                .ok_or_else(|| LlmError::invalid(Some("messages"), "messages is required"))?;
            messages.push(json!({"role": "assistant", "content": resume.text}));
            body.insert("messages".into(), raw(&messages)?);
            body.insert("continue_final_message".into(), raw(&true)?);
            body.insert("add_generation_prompt".into(), raw(&false)?);
        }
        Endpoint::Completion => {
            let prompt: String = body
                .get("prompt")
                .and_then(|raw| serde_json::from_str(raw.get()).ok())
                .ok_or_else(|| LlmError::failed("only a text prompt continues from the text"))?;
            body.insert("prompt".into(), raw(&format!("{prompt}{}", resume.text))?);
        }
        Endpoint::Embedding => return Err(LlmError::failed("an embedding does not stream")),
    }
    if let Some(left) = remaining(request, resume) {
        body.shift_remove("max_completion_tokens");
        body.insert("max_tokens".into(), raw(&left)?);
    }
    encoded(&body)
}

/// The body of llama.cpp's native `/completion` continuing at the token
/// level from `tokens` (the prompt's and the sent text's ids), with the
/// request's own sampling fields.
pub fn native_continuation(request: &LlmRequest, resume: &Resume, tokens: &[u32]) -> Result<Vec<u8>, LlmError> {
    let mut body = fields(request)?;
    body.retain(|name, _| !REQUEST_FIELDS.contains(&name.as_str()));
    body.insert("prompt".into(), raw(&tokens)?);
    body.insert("stream".into(), raw(&true)?);
    body.insert("cache_prompt".into(), raw(&true)?);
    body.insert("return_tokens".into(), raw(&true)?);
    if let Some(left) = remaining(request, resume) {
        body.insert("n_predict".into(), raw(&left)?);
    }
    encoded(&body)
}

/// One chunk of llama.cpp's native stream in OpenAI's words: a content
/// chunk with its token ids, or at its end the finish chunk and (when the
/// client asked) the usage chunk. Empty for a chunk that says nothing.
pub fn from_native(request: &LlmRequest, native: &str) -> Result<Vec<Piece>, LlmError> {
    let chunk: Value =
        serde_json::from_str(native).map_err(|_| LlmError::failed("llama.cpp sent a chunk that is no JSON"))?;
    let text = chunk["content"].as_str().unwrap_or_default();
    let chat = request.endpoint == Endpoint::Chat;
    let object = if chat { "chat.completion.chunk" } else { "text_completion" };
    let piece = |text: Option<&str>, finish: Value| {
        let choice = if chat {
            let delta = text.map_or_else(|| json!({}), |text| json!({"content": text}));
            json!({"index": 0, "delta": delta, "finish_reason": finish})
        } else {
            json!({"index": 0, "text": text.unwrap_or_default(), "finish_reason": finish})
        };
        json!({"object": object, "choices": [choice]}).to_string()
    };
    let tokens: Vec<u32> = serde_json::from_value(chunk["tokens"].clone()).unwrap_or_default();
    let mut out = Vec::new();
    if !text.is_empty() || !tokens.is_empty() {
        out.push(Piece { data: piece(Some(text), Value::Null), tokens });
    }
    if chunk["stop"].as_bool() == Some(true) {
        let finish = if chunk["stop_type"] == "limit" { "length" } else { "stop" };
        out.push(Piece::new(piece(None, finish.into())));
        if request.include_usage {
            let (prompt, completion) = (&chunk["tokens_evaluated"], &chunk["tokens_predicted"]);
            let cached = chunk["timings"]["cache_n"].as_u64().unwrap_or(0);
            let usage = json!({
                "prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt.as_u64().unwrap_or(0) + completion.as_u64().unwrap_or(0),
                "prompt_tokens_details": {"cached_tokens": cached},
            });
            out.push(Piece::new(json!({"object": object, "choices": [], "usage": usage}).to_string()));
        }
    }
    Ok(out)
}

/// The end of a stream whose every token was sent before its source
/// failed: the finish chunk and (when asked) usage, made here. The prompt's
/// token count died with the source: usage counts the completion only.
pub fn nothing_left(request: &LlmRequest) -> Vec<Piece> {
    let end = r#"{"content":"","stop":true,"stop_type":"limit","tokens_predicted":0,"tokens_evaluated":0}"#;
    from_native(request, end).unwrap_or_default()
}

#[cfg(test)]
mod tests;
