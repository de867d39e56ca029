//! Engines: what generates a language model's answers on this node. An
//! engine takes an admitted request and yields its pieces: each chunk of a
//! stream (the JSON of one server-sent event) or the one JSON object of an
//! answer that does not stream. Dropping the pieces cancels the request in
//! the engine.
//!
//! - [`HttpEngine`]: an OpenAI-compatible server beside the node
//!   (llama.cpp's `llama-server`, vLLM, SGLang, ...), over HTTP.
//! - [`SyntheticEngine`]: deterministic tokens at a set speed, in process.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use eventsource_stream::Eventsource as _;
use futures_util::{Stream, StreamExt as _};
use tokio::sync::{Mutex, Semaphore, mpsc};

use crate::clock::Clock;
use crate::llm::engine_load::{EngineLoad, read_metrics, read_slots};
use crate::llm::error::LlmError;
use crate::llm::request::{Endpoint, LlmRequest};
use crate::llm::synthetic::{self, Answer, DEFAULT_MAX_TOKENS, PrefixCache, Usage};
use crate::registry::{EngineKind, OpenAiEngine, SyntheticLlm};

/// The pieces of one answer, in order; an `Err` ends it.
pub type Pieces = Pin<Box<dyn Stream<Item = Result<String, LlmError>> + Send>>;

/// Upper bound on connecting to an engine.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound on a health or metrics check.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Pieces an engine may run ahead of their reader.
const PIECES_BUFFERED: usize = 16;

/// What generates answers.
#[async_trait]
pub trait Engine: Send + Sync {
    /// Starts `request`; `Err` when it failed before producing anything.
    async fn start(&self, request: &LlmRequest) -> Result<Pieces, LlmError>;
    /// The engine answers its health check.
    async fn healthy(&self) -> bool;
    /// The load the engine publishes, where it does.
    async fn load(&self) -> Option<EngineLoad>;
}

/// An OpenAI-compatible server.
pub struct HttpEngine {
    spec: OpenAiEngine,
    client: reqwest::Client,
    /// The registry's name of the model: the engine's when it gives none.
    name: String,
    upstream: Mutex<Option<String>>,
}

impl HttpEngine {
    /// An engine at `spec.url` serving the model called `name` here.
    pub fn new(name: &str, spec: OpenAiEngine) -> Result<Self, LlmError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .build()
            .map_err(|error| LlmError::failed(format!("cannot make an HTTP client: {error}")))?;
        let upstream = Mutex::new(spec.upstream_model.clone());
        Ok(Self { spec, client, name: name.to_string(), upstream })
    }

    /// The engine's name of the model: the registry's `upstream_model`,
    /// else the first its `/v1/models` lists (asked once), else ours.
    async fn upstream_model(&self) -> String {
        let mut upstream = self.upstream.lock().await;
        if let Some(name) = upstream.as_ref() {
            return name.clone();
        }
        let asked = async {
            let response = self.client.get(format!("{}/v1/models", self.spec.url)).send().await.ok()?;
            let list: serde_json::Value = response.json().await.ok()?;
            list.get("data")?.get(0)?.get("id")?.as_str().map(String::from)
        };
        match tokio::time::timeout(PROBE_TIMEOUT, asked).await {
            Ok(Some(name)) => upstream.insert(name).clone(),
            _ => self.name.clone(),
        }
    }
}

#[async_trait]
impl Engine for HttpEngine {
    async fn start(&self, request: &LlmRequest) -> Result<Pieces, LlmError> {
        let body = request.engine_body(&self.upstream_model().await)?;
        let url = format!("{}{}", self.spec.url, request.endpoint.path());
        let send = || {
            let request = self.client.post(&url).header(reqwest::header::CONTENT_TYPE, "application/json");
            request.body(body.clone()).send()
        };
        // A pooled connection the engine has just closed (llama.cpp closes
        // one after its 100th request) fails before anything is sent: once
        // more, on a fresh connection.
        let sent = match send().await {
            Err(error) if error.is_request() || error.is_connect() => send().await,
            sent => sent,
        };
        let response = sent.map_err(|error| {
            let message = format!("the engine at {} is not answering: {error}", self.spec.url);
            LlmError::with_status(502, message)
        })?;
        let status = response.status().as_u16();
        if status != 200 {
            let text = response.text().await.unwrap_or_default();
            return Err(LlmError::from_engine(status, text));
        }
        if !request.stream {
            let whole =
                response.text().await.map_err(|error| LlmError::failed(format!("the engine broke off: {error}")));
            return Ok(Box::pin(futures_util::stream::once(async move { whole })));
        }
        let events = response.bytes_stream().eventsource();
        let pieces = events
            .take_while(|event| std::future::ready(!matches!(event, Ok(event) if event.data.trim() == "[DONE]")))
            .map(|event| match event {
                Ok(event) => Ok(event.data),
                Err(error) => Err(LlmError::failed(format!("the engine's stream broke off: {error}"))),
            });
        Ok(Box::pin(pieces))
    }

    async fn healthy(&self) -> bool {
        let path = match self.spec.engine {
            EngineKind::Generic => "/v1/models",
            EngineKind::Llamacpp | EngineKind::Vllm | EngineKind::Sglang => "/health",
        };
        let check = self.client.get(format!("{}{path}", self.spec.url)).send();
        matches!(tokio::time::timeout(PROBE_TIMEOUT, check).await, Ok(Ok(response)) if response.status().is_success())
    }

    async fn load(&self) -> Option<EngineLoad> {
        if self.spec.engine == EngineKind::Generic {
            return None;
        }
        let fetch = |path: &'static str| async move {
            let request = self.client.get(format!("{}{path}", self.spec.url)).send();
            let text = async { request.await.ok()?.text().await.ok() };
            tokio::time::timeout(PROBE_TIMEOUT, text).await.ok().flatten()
        };
        let mut load = read_metrics(self.spec.engine, &fetch("/metrics").await?)?;
        // llama.cpp publishes no KV-cache gauge: its slots tell how full it is.
        if load.kv_cache_use.is_none() && self.spec.engine == EngineKind::Llamacpp {
            load.kv_cache_use = fetch("/slots").await.as_deref().and_then(read_slots);
        }
        Some(load)
    }
}

/// A synthetic language model in process.
pub struct SyntheticEngine {
    spec: SyntheticLlm,
    clock: Arc<dyn Clock>,
    sequences: Arc<Semaphore>,
    cache: Arc<std::sync::Mutex<PrefixCache>>,
    answers: AtomicU64,
}

impl SyntheticEngine {
    pub fn new(spec: SyntheticLlm, clock: Arc<dyn Clock>) -> Self {
        let sequences = Arc::new(Semaphore::new(spec.max_sequences));
        let cache = Arc::new(std::sync::Mutex::new(PrefixCache::new(spec.kv_cache_tokens)));
        Self { spec, clock, sequences, cache, answers: AtomicU64::new(0) }
    }
}

#[async_trait]
impl Engine for SyntheticEngine {
    async fn start(&self, request: &LlmRequest) -> Result<Pieces, LlmError> {
        let (sender, mut receiver) = mpsc::channel(PIECES_BUFFERED);
        let number = self.answers.fetch_add(1, Ordering::Relaxed);
        let run = SyntheticRun {
            request: request.clone(),
            spec: self.spec.clone(),
            id: format!("{}-{number:x}", if request.endpoint == Endpoint::Chat { "chatcmpl" } else { "cmpl" }),
            created: self.clock.unix_ms() / 1000,
            sequences: self.sequences.clone(),
            cache: self.cache.clone(),
        };
        tokio::spawn(run.generate(sender));
        Ok(Box::pin(futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))))
    }

    async fn healthy(&self) -> bool {
        true
    }

    async fn load(&self) -> Option<EngineLoad> {
        None
    }
}

/// One answer of a synthetic engine, generated on its own task; it stops
/// as soon as nobody reads it.
struct SyntheticRun {
    request: LlmRequest,
    spec: SyntheticLlm,
    id: String,
    created: u64,
    sequences: Arc<Semaphore>,
    cache: Arc<std::sync::Mutex<PrefixCache>>,
}

impl SyntheticRun {
    async fn generate(self, out: mpsc::Sender<Result<String, LlmError>>) {
        let Ok(_sequence) = self.sequences.clone().acquire_owned().await else { return };
        let tokens = synthetic::prompt_tokens(&self.request.prompt);
        let prompt_tokens = tokens.len().max(1);
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .lookup_and_insert(&synthetic::block_hashes(&tokens));
        let prefill = (prompt_tokens - cached.min(prompt_tokens)) as f64 * self.spec.prefill_ms_per_token;
        tokio::time::sleep(Duration::from_secs_f64(prefill / 1000.0)).await;
        let answer = Answer { request: &self.request, id: self.id.clone(), created: self.created };
        if self.request.endpoint == Endpoint::Embedding {
            let _ = out.send(Ok(answer.embedding(prompt_tokens))).await;
            return;
        }
        let max_tokens = self.request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        let decode = Duration::from_secs_f64(self.spec.decode_ms_per_token / 1000.0);
        let mut text = String::new();
        for index in 0..max_tokens {
            if index > 0 {
                tokio::time::sleep(decode).await;
            }
            let token = synthetic::token(&self.request.prompt, index);
            if self.request.stream && out.send(Ok(answer.chunk(Some(&token), index == 0))).await.is_err() {
                return;
            }
            text.push_str(&token);
        }
        let usage = Usage { prompt_tokens, completion_tokens: max_tokens as usize, cached_tokens: cached };
        if !self.request.stream {
            let _ = out.send(Ok(answer.whole(&text, usage))).await;
            return;
        }
        let _ = out.send(Ok(answer.chunk(None, false))).await;
        if self.request.include_usage {
            let _ = out.send(Ok(answer.usage_chunk(usage))).await;
        }
    }
}
