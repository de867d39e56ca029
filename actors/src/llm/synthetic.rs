//! The synthetic language model's arithmetic (pure): its tokens, its
//! prefix cache and the OpenAI objects it answers with. Token `i` of a
//! completion is a function of the prompt and `i` only, so a stream can be
//! checked token for token wherever it ran.

use lru::LruCache;
use serde_json::{Value, json};

use crate::llm::request::{Endpoint, LlmRequest};

/// Prompt tokens per prefix-cache block (the unit engines cache in).
pub const BLOCK_TOKENS: usize = 16;
/// Completion tokens when the request does not say.
pub const DEFAULT_MAX_TOKENS: u32 = 16;
/// Numbers in a synthetic embedding.
const EMBEDDING_DIMENSIONS: usize = 8;

/// The words a synthetic model says.
const VOCABULARY: [&str; 32] = [
    "mesh", "node", "gossip", "token", "stream", "engine", "cache", "prefix", "route", "batch", "queue", "link", "job",
    "model", "gpu", "peer", "seed", "clock", "trace", "shard", "tensor", "prompt", "reply", "chunk", "load", "cluster",
    "owner", "retry", "ready", "drain", "merge", "relay",
];

fn digest(parts: &[&[u8]]) -> u64 {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let bytes = hasher.finalize();
    u64::from_le_bytes(bytes.as_bytes()[..8].try_into().unwrap_or_default())
}

/// The prompt's tokens: its whitespace-separated words.
pub fn prompt_tokens(prompt: &str) -> Vec<&str> {
    prompt.split_whitespace().collect()
}

/// Token `index` (from 0) of the completion of `prompt`, with its leading
/// space.
pub fn token(prompt: &str, index: u32) -> String {
    let pick = digest(&[prompt.as_bytes(), &index.to_le_bytes()]);
    format!(" {}", VOCABULARY[(pick % VOCABULARY.len() as u64) as usize])
}

/// Chained hashes of the prompt's whole blocks: block `k`'s hash covers
/// every token before its end, so equal hashes mean equal prefixes.
pub fn block_hashes(tokens: &[&str]) -> Vec<u64> {
    let mut chain = 0u64;
    tokens
        .chunks_exact(BLOCK_TOKENS)
        .map(|block| {
            let words = block.join(" ");
            chain = digest(&[&chain.to_le_bytes(), words.as_bytes()]);
            chain
        })
        .collect()
}

/// The prompt prefixes the synthetic engine holds, block by block, least
/// recently used dropped first.
#[derive(Debug)]
pub struct PrefixCache {
    blocks: Option<LruCache<u64, ()>>,
}

impl PrefixCache {
    /// A cache of `kv_cache_tokens` tokens (rounded down to whole blocks).
    pub fn new(kv_cache_tokens: usize) -> Self {
        let blocks = std::num::NonZeroUsize::new(kv_cache_tokens / BLOCK_TOKENS).map(LruCache::new);
        Self { blocks }
    }

    /// Tokens of the longest cached prefix among `blocks`; then every
    /// block is cached (the engine keeps what it just computed).
    pub fn lookup_and_insert(&mut self, blocks: &[u64]) -> usize {
        let Some(cache) = &mut self.blocks else { return 0 };
        let mut cached = 0;
        for hash in blocks {
            if cache.get(hash).is_none() {
                break;
            }
            cached += 1;
        }
        for hash in blocks {
            cache.put(*hash, ());
        }
        cached * BLOCK_TOKENS
    }
}

/// Token counts of one completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub cached_tokens: usize,
}

impl Usage {
    fn json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        })
    }
}

/// What every object of one answer shares.
#[derive(Clone, Debug)]
pub struct Answer<'a> {
    pub request: &'a LlmRequest,
    pub id: String,
    pub created: u64,
}

impl Answer<'_> {
    fn head(&self, object: &str) -> Value {
        json!({"id": self.id, "object": object, "created": self.created, "model": self.request.model})
    }

    /// A stream chunk carrying `text` (the first one also says who speaks),
    /// or the last one, carrying `finish_reason` `length`.
    pub fn chunk(&self, text: Option<&str>, first: bool) -> String {
        let finish = if text.is_none() { Value::from("length") } else { Value::Null };
        let mut chunk = match self.request.endpoint {
            Endpoint::Chat => {
                let mut delta = serde_json::Map::new();
                if first {
                    delta.insert("role".into(), "assistant".into());
                }
                if let Some(text) = text {
                    delta.insert("content".into(), text.into());
                }
                let mut chunk = self.head("chat.completion.chunk");
                chunk["choices"] = json!([{"index": 0, "delta": delta, "finish_reason": finish}]);
                chunk
            }
            Endpoint::Completion | Endpoint::Embedding => {
                let mut chunk = self.head("text_completion");
                chunk["choices"] = json!([{"index": 0, "text": text.unwrap_or(""), "finish_reason": finish}]);
                chunk
            }
        };
        if self.request.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk.to_string()
    }

    /// The chunk that ends a stream whose client asked for usage.
    pub fn usage_chunk(&self, usage: Usage) -> String {
        let object = if self.request.endpoint == Endpoint::Chat { "chat.completion.chunk" } else { "text_completion" };
        let mut chunk = self.head(object);
        chunk["choices"] = json!([]);
        chunk["usage"] = usage.json();
        chunk.to_string()
    }

    /// The whole answer of a request that does not stream.
    pub fn whole(&self, text: &str, usage: Usage) -> String {
        let mut answer = self.head(self.request.endpoint.object());
        answer["choices"] = match self.request.endpoint {
            Endpoint::Chat => {
                json!([{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}])
            }
            Endpoint::Completion | Endpoint::Embedding => {
                json!([{"index": 0, "text": text, "finish_reason": "length"}])
            }
        };
        answer["usage"] = usage.json();
        answer.to_string()
    }

    /// An embedding of the input: numbers drawn from its hash.
    pub fn embedding(&self, prompt_tokens: usize) -> String {
        let prompt = self.request.prompt.as_bytes();
        let vector: Vec<f64> = (0..EMBEDDING_DIMENSIONS)
            .map(|k| (digest(&[prompt, &k.to_le_bytes()]) % 2001) as f64 / 1000.0 - 1.0)
            .collect();
        json!({
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": vector}],
            "model": self.request.model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests;
