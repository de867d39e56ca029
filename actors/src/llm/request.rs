//! An OpenAI request as gpumesh reads it (pure): the fields it routes and
//! accounts by are checked and kept beside the body, which itself goes to
//! the engine as the client sent it, but for `model`. Nothing a client
//! sends can panic here; every error names the field at fault.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::llm::error::LlmError;
use crate::routing::policy::{DeviceRequirement, Requirements};

/// Largest `max_tokens` (and `max_completion_tokens`) accepted.
pub const MAX_TOKENS_LIMIT: u64 = 131_072;
/// Most choices (`n`) one request may ask for.
pub const MAX_CHOICES: u64 = 16;
/// Priority when the request gives none (0 to 10, higher first).
pub const DEFAULT_PRIORITY: u8 = 5;

/// The OpenAI endpoint a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Endpoint {
    Chat,
    Completion,
    Embedding,
}

impl Endpoint {
    /// The path under the engine's base URL.
    pub fn path(self) -> &'static str {
        match self {
            Self::Chat => "/v1/chat/completions",
            Self::Completion => "/v1/completions",
            Self::Embedding => "/v1/embeddings",
        }
    }

    /// The `object` of a whole answer.
    pub fn object(self) -> &'static str {
        match self {
            Self::Chat => "chat.completion",
            Self::Completion => "text_completion",
            Self::Embedding => "list",
        }
    }
}

/// Routing hints a client gives in headers (the body's fields win).
#[derive(Clone, Debug, Default)]
pub struct Hints {
    pub device: Option<String>,
    pub min_free_vram_mb: Option<String>,
    pub gpu_type: Option<String>,
    pub priority: Option<String>,
}

/// A checked language-model request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlmRequest {
    pub endpoint: Endpoint,
    /// The model the client named.
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage`: the stream ends with a usage chunk.
    pub include_usage: bool,
    pub max_tokens: Option<u32>,
    pub requirements: Requirements,
    /// The prompt as text (chat messages rendered `role: content` a line
    /// each): what a synthetic engine reads and what prompt sizes count.
    pub prompt: String,
    /// The body as the client sent it.
    pub body: Vec<u8>,
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<&'a RawValue>,
    #[serde(borrow, default)]
    prompt: Option<&'a RawValue>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    n: Option<&'a RawValue>,
    #[serde(borrow, default)]
    device: Option<&'a RawValue>,
    #[serde(borrow, default)]
    min_free_vram_mb: Option<&'a RawValue>,
    #[serde(borrow, default)]
    gpu_type: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

fn typed<'a, T: Deserialize<'a>>(raw: &'a RawValue, param: &str, expected: &str) -> Result<T, LlmError> {
    serde_json::from_str(raw.get()).map_err(|_| LlmError::invalid(Some(param), format!("{param} must be {expected}")))
}

/// Reads `body` as a request for `endpoint`.
pub fn parse(endpoint: Endpoint, body: &[u8], hints: &Hints) -> Result<LlmRequest, LlmError> {
    let text = std::str::from_utf8(body).map_err(|_| LlmError::invalid(None, "the body is not valid UTF-8"))?;
    // serde reads a struct from an array too: only an object is a request.
    if !text.trim_start().starts_with('{') {
        return Err(LlmError::invalid(None, "the body is not a JSON object"));
    }
    let fields: Fields<'_> = serde_json::from_str(text)
        .map_err(|error| LlmError::invalid(None, format!("the body is not a JSON object of this endpoint: {error}")))?;
    let model: String = typed(fields.model.ok_or_else(|| missing("model"))?, "model", "a string")?;
    if model.is_empty() {
        return Err(LlmError::invalid(Some("model"), "model must not be empty"));
    }
    let stream = fields.stream.map(|raw| typed(raw, "stream", "true or false")).transpose()?.unwrap_or(false);
    let include_usage = match fields.stream_options {
        Some(raw) => include_usage(raw)?,
        None => false,
    };
    let max_tokens = max_tokens(&fields)?;
    if let Some(raw) = fields.n {
        let n: u64 = typed(raw, "n", "a whole number")?;
        if !(1..=MAX_CHOICES).contains(&n) {
            return Err(LlmError::invalid(Some("n"), format!("n must be 1 to {MAX_CHOICES}")));
        }
    }
    let prompt = match endpoint {
        Endpoint::Chat => messages(fields.messages.ok_or_else(|| missing("messages"))?)?,
        Endpoint::Completion => prompt_text(fields.prompt.ok_or_else(|| missing("prompt"))?, "prompt")?,
        Endpoint::Embedding => prompt_text(fields.input.ok_or_else(|| missing("input"))?, "input")?,
    };
    let requirements = requirements(&fields, hints)?;
    Ok(LlmRequest { endpoint, model, stream, include_usage, max_tokens, requirements, prompt, body: body.to_vec() })
}

fn missing(param: &str) -> LlmError {
    LlmError::invalid(Some(param), format!("{param} is required"))
}

fn include_usage(raw: &RawValue) -> Result<bool, LlmError> {
    #[derive(Deserialize)]
    struct StreamOptions {
        #[serde(default)]
        include_usage: Option<bool>,
    }
    let options: StreamOptions = typed(raw, "stream_options", "an object with include_usage true or false")?;
    Ok(options.include_usage.unwrap_or(false))
}

fn max_tokens(fields: &Fields<'_>) -> Result<Option<u32>, LlmError> {
    let given = [("max_completion_tokens", fields.max_completion_tokens), ("max_tokens", fields.max_tokens)];
    let Some((param, raw)) = given.into_iter().find_map(|(param, raw)| raw.map(|raw| (param, raw))) else {
        return Ok(None);
    };
    let value: u64 = typed(raw, param, "a whole number")?;
    if !(1..=MAX_TOKENS_LIMIT).contains(&value) {
        return Err(LlmError::invalid(Some(param), format!("{param} must be 1 to {MAX_TOKENS_LIMIT}")));
    }
    Ok(u32::try_from(value).ok())
}

/// Chat messages as text, a `role: content` line each.
fn messages(raw: &RawValue) -> Result<String, LlmError> {
    let messages: Vec<Message> = typed(raw, "messages", "an array of messages, each with a role")?;
    if messages.is_empty() {
        return Err(LlmError::invalid(Some("messages"), "messages must hold at least one message"));
    }
    let mut text = String::new();
    for message in messages {
        let content = match message.content {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(content)) => content,
            Some(serde_json::Value::Array(parts)) => {
                parts.iter().filter_map(|part| part.get("text")?.as_str()).collect::<Vec<_>>().join("")
            }
            Some(_) => return Err(LlmError::invalid(Some("messages"), "a message's content must be text or parts")),
        };
        text.push_str(&message.role);
        text.push_str(": ");
        text.push_str(&content);
        text.push('\n');
    }
    Ok(text)
}

/// A completion prompt or an embedding input as text; token ids as `<id>`.
fn prompt_text(raw: &RawValue, param: &str) -> Result<String, LlmError> {
    let expected = "a string, an array of strings, or an array of token ids";
    let tokens = |ids: &[u32]| ids.iter().map(|id| format!("<{id}>")).collect::<Vec<_>>().join(" ");
    Ok(match typed::<Prompt>(raw, param, expected)? {
        Prompt::Text(text) => text,
        Prompt::Texts(texts) => texts.join("\n"),
        Prompt::Tokens(ids) => tokens(&ids),
        Prompt::TokenLists(lists) => lists.iter().map(|ids| tokens(ids)).collect::<Vec<_>>().join("\n"),
    })
}

fn requirements(fields: &Fields<'_>, hints: &Hints) -> Result<Requirements, LlmError> {
    let body_string = |raw: Option<&RawValue>, param: &str| -> Result<Option<String>, LlmError> {
        raw.map(|raw| typed::<String>(raw, param, "a string")).transpose()
    };
    let device = body_string(fields.device, "device")?.or_else(|| hints.device.clone());
    let device = match device.as_deref() {
        None | Some("any") => DeviceRequirement::Any,
        Some("gpu") => DeviceRequirement::Gpu,
        Some("cpu") => DeviceRequirement::Cpu,
        Some(_) => return Err(LlmError::invalid(Some("device"), "device must be \"gpu\", \"cpu\" or \"any\"")),
    };
    let min_free_vram_mb = match fields.min_free_vram_mb {
        Some(raw) => typed(raw, "min_free_vram_mb", "a whole number of MiB")?,
        None => match &hints.min_free_vram_mb {
            Some(text) => text.trim().parse().map_err(|_| {
                LlmError::invalid(Some("min_free_vram_mb"), "x-gpumesh-min-free-vram-mb must be a whole number")
            })?,
            None => 0,
        },
    };
    let gpu_type = body_string(fields.gpu_type, "gpu_type")?.or_else(|| hints.gpu_type.clone());
    let priority = match &hints.priority {
        Some(text) => text
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|priority| *priority <= 10)
            .ok_or_else(|| LlmError::invalid(None, "x-gpumesh-priority must be a whole number from 0 to 10"))?,
        None => DEFAULT_PRIORITY,
    };
    Ok(Requirements { device, min_free_vram_mb, gpu_type, priority })
}

impl LlmRequest {
    /// The same request answered whole, not streamed (what a job runs).
    pub fn whole(&self) -> Result<Self, LlmError> {
        let mut fields: IndexMap<String, Box<RawValue>> = serde_json::from_slice(&self.body)
            .map_err(|error| LlmError::invalid(None, format!("the body is not a JSON object: {error}")))?;
        fields.shift_remove("stream_options");
        if fields.contains_key("stream") {
            let no = serde_json::value::to_raw_value(&false)
                .map_err(|error| LlmError::failed(format!("cannot encode the body: {error}")))?;
            fields.insert("stream".to_string(), no);
        }
        let body = serde_json::to_vec(&fields)
            .map_err(|error| LlmError::failed(format!("cannot encode the body: {error}")))?;
        Ok(Self { stream: false, include_usage: false, body, ..self.clone() })
    }

    /// This request streamed, with usage at its end (a durable job runs
    /// so, to go on elsewhere if its node dies mid-generation).
    pub fn streamed(&self) -> Result<Self, LlmError> {
        let mut fields: IndexMap<String, Box<RawValue>> = serde_json::from_slice(&self.body)
            .map_err(|error| LlmError::invalid(None, format!("the body is not a JSON object: {error}")))?;
        let raw = |value: serde_json::Value| {
            serde_json::value::to_raw_value(&value)
                .map_err(|error| LlmError::failed(format!("cannot encode the body: {error}")))
        };
        fields.insert("stream".to_string(), raw(serde_json::json!(true))?);
        fields.insert("stream_options".to_string(), raw(serde_json::json!({"include_usage": true}))?);
        let body = serde_json::to_vec(&fields)
            .map_err(|error| LlmError::failed(format!("cannot encode the body: {error}")))?;
        Ok(Self { stream: true, include_usage: true, body, ..self.clone() })
    }

    /// The body for the engine: the client's, fields in their order, with
    /// `model` set to the engine's name for it.
    pub fn engine_body(&self, upstream_model: &str) -> Result<Vec<u8>, LlmError> {
        let mut fields: IndexMap<String, Box<RawValue>> = serde_json::from_slice(&self.body)
            .map_err(|error| LlmError::invalid(None, format!("the body is not a JSON object: {error}")))?;
        let model = serde_json::value::to_raw_value(upstream_model)
            .map_err(|error| LlmError::failed(format!("cannot name the model: {error}")))?;
        fields.insert("model".to_string(), model);
        serde_json::to_vec(&fields).map_err(|error| LlmError::failed(format!("cannot encode the body: {error}")))
    }
}

#[cfg(test)]
mod tests;
