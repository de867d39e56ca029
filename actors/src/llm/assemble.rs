//! A streamed answer made whole (pure): the chunks of an OpenAI stream,
//! chat or completion, put together as the one object the same request
//! answers without `stream`. Durable language-model jobs run as streams,
//! so that a job whose node dies mid-generation goes on on another node
//! from the tokens already made (see `failover`), and keep this object.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::llm::request::Endpoint;

/// One choice as its deltas arrive.
#[derive(Debug, Default)]
struct Choice {
    role: Option<Value>,
    content: String,
    reasoning: String,
    /// Tool calls by their index; the arguments arrive in pieces.
    tool_calls: BTreeMap<u64, Map<String, Value>>,
    finish_reason: Value,
}

/// The whole answer, chunk by chunk.
#[derive(Debug)]
pub struct Assembler {
    endpoint: Endpoint,
    /// `id`, `created`, `model`, `system_fingerprint` of the first chunk.
    header: Map<String, Value>,
    choices: BTreeMap<u64, Choice>,
    usage: Option<Value>,
}

impl Assembler {
    pub fn new(endpoint: Endpoint) -> Self {
        Self { endpoint, header: Map::new(), choices: BTreeMap::new(), usage: None }
    }

    /// Adds one chunk (the data of one event); a chunk that is no JSON
    /// object is left out.
    pub fn add(&mut self, chunk: &str) {
        let Ok(Value::Object(chunk)) = serde_json::from_str::<Value>(chunk) else { return };
        if self.header.is_empty() {
            for key in ["id", "created", "model", "system_fingerprint"] {
                if let Some(value) = chunk.get(key) {
                    self.header.insert(key.to_string(), value.clone());
                }
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|usage| usage.is_object()) {
            self.usage = Some(usage.clone());
        }
        for choice in chunk.get("choices").and_then(Value::as_array).into_iter().flatten() {
            let index = choice["index"].as_u64().unwrap_or(0);
            let whole = self.choices.entry(index).or_default();
            if !choice["finish_reason"].is_null() {
                whole.finish_reason = choice["finish_reason"].clone();
            }
            if let Some(text) = choice["text"].as_str() {
                whole.content.push_str(text);
            }
            let delta = &choice["delta"];
            if let Some(role) = delta.get("role").filter(|role| role.is_string()) {
                whole.role = Some(role.clone());
            }
            whole.content.push_str(delta["content"].as_str().unwrap_or_default());
            whole.reasoning.push_str(delta["reasoning_content"].as_str().unwrap_or_default());
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                merge_tool_call(whole.tool_calls.entry(call["index"].as_u64().unwrap_or(0)).or_default(), call);
            }
        }
    }

    /// The whole answer: `chat.completion` or `text_completion`.
    pub fn finish(self) -> Value {
        let chat = self.endpoint == Endpoint::Chat;
        let choices: Vec<Value> = self
            .choices
            .into_iter()
            .map(|(index, choice)| {
                if !chat {
                    return json!({"index": index, "text": choice.content, "finish_reason": choice.finish_reason});
                }
                let mut message =
                    json!({"role": choice.role.unwrap_or_else(|| json!("assistant")), "content": choice.content});
                if !choice.reasoning.is_empty() {
                    message["reasoning_content"] = json!(choice.reasoning);
                }
                if !choice.tool_calls.is_empty() {
                    message["tool_calls"] = Value::Array(choice.tool_calls.into_values().map(Value::Object).collect());
                }
                json!({"index": index, "message": message, "finish_reason": choice.finish_reason})
            })
            .collect();
        let mut answer = self.header;
        answer.insert("object".into(), json!(self.endpoint.object()));
        answer.insert("choices".into(), Value::Array(choices));
        if let Some(usage) = self.usage {
            answer.insert("usage".into(), usage);
        }
        Value::Object(answer)
    }
}

/// One piece of a tool call: its id, type and name once, its arguments
/// in pieces.
fn merge_tool_call(whole: &mut Map<String, Value>, piece: &Value) {
    for key in ["id", "type"] {
        if let Some(value) = piece.get(key).filter(|value| value.is_string()) {
            whole.insert(key.to_string(), value.clone());
        }
    }
    let function = whole.entry("function").or_insert_with(|| json!({"name": "", "arguments": ""}));
    if let Some(name) = piece["function"]["name"].as_str() {
        function["name"] = json!(name);
    }
    if let Some(arguments) = piece["function"]["arguments"].as_str() {
        let so_far = function["arguments"].as_str().unwrap_or_default().to_string();
        function["arguments"] = json!(so_far + arguments);
    }
}

#[cfg(test)]
mod tests;
