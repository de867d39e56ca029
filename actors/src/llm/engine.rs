//! Engines: what generates a language model's answers on this node. An
//! engine takes an admitted request and yields its pieces (see `piece`):
//! each chunk of a stream or the one JSON object of an answer that does not
//! stream. Dropping the pieces cancels the request in the engine.
//!
//! - [`HttpEngine`]: an OpenAI-compatible server beside the node
//!   (llama.cpp's `llama-server`, vLLM, SGLang, ...), over HTTP.
//! - [`SyntheticEngine`]: deterministic tokens at a set speed, in process.

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
pub use crate::llm::piece::{Piece, Pieces};
use crate::llm::request::{Endpoint, LlmRequest};
use crate::llm::resume::{self, Resume, vllm};
use crate::llm::synthetic::{self, Answer, DEFAULT_MAX_TOKENS, PrefixCache, Usage};
use crate::registry::{EngineKind, OpenAiEngine, SyntheticLlm};

/// Upper bound on connecting to an engine.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound on a health or metrics check.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Pieces an engine may run ahead of their reader.
const PIECES_BUFFERED: usize = 16;

/// What generates answers.
#[async_trait]
pub trait Engine: Send + Sync {
    /// Starts `request`, or with `resume` continues a completion another
    /// engine began (yielding only what follows); `Err` when it failed
    /// before producing anything.
    async fn start(&self, request: &LlmRequest, resume: Option<&Resume>) -> Result<Pieces, LlmError>;
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

impl HttpEngine {
    /// POSTs `body` to `path`; one retry on a pooled connection the engine
    /// has just closed (llama.cpp closes one after its 100th request), which
    /// fails before anything is sent.
    async fn post(&self, path: &str, body: Vec<u8>) -> Result<reqwest::Response, LlmError> {
        let url = format!("{}{path}", self.spec.url);
        let send = || {
            let request = self.client.post(&url).header(reqwest::header::CONTENT_TYPE, "application/json");
            request.body(body.clone()).send()
        };
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
        Ok(response)
    }

    /// A small JSON call to one of the engine's helper endpoints.
    async fn ask(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value, LlmError> {
        let response = self.post(path, body.to_string().into_bytes()).await?;
        response.json().await.map_err(|error| LlmError::failed(format!("the engine's {path} answered: {error}")))
    }

    /// The `tokens` of an answer of `/tokenize` (llama.cpp's and vLLM's).
    async fn tokens(&self, body: serde_json::Value) -> Result<Vec<u32>, LlmError> {
        let mut answer = self.ask("/tokenize", body).await?;
        serde_json::from_value(answer["tokens"].take())
            .map_err(|_| LlmError::failed("the engine's /tokenize answered no tokens"))
    }

    /// Continues at the token level on llama.cpp: the prompt as the engine
    /// renders and tokenizes it, the sent text's tokens after it, and the
    /// rest generated by its native `/completion`.
    async fn resume_llamacpp(&self, request: &LlmRequest, resume: &Resume) -> Result<Pieces, LlmError> {
        let body: serde_json::Value =
            serde_json::from_slice(&request.body).map_err(|_| LlmError::failed("the body is not JSON"))?;
        let prompt = match request.endpoint {
            Endpoint::Chat => {
                self.ask("/apply-template", serde_json::json!({"messages": body["messages"]})).await?["prompt"].clone()
            }
            _ => body["prompt"].clone(),
        };
        let prompt = prompt.as_str().ok_or_else(|| LlmError::failed("no text prompt to continue"))?;
        let mut tokens = self.tokenize(prompt, true).await?;
        match resume.exact_ids() {
            Some(ids) => tokens.extend_from_slice(ids),
            // Some part came from an engine that tells no ids: its text.
            None => tokens.extend(self.tokenize(&resume.text, false).await?),
        }
        let response = self.post("/completion", resume::native_continuation(request, resume, &tokens)?).await?;
        let request = request.clone();
        let pieces = events(response).flat_map(move |native| {
            let pieces = native.and_then(|native| resume::from_native(&request, &native));
            let pieces: Vec<Result<Piece, LlmError>> = match pieces {
                Ok(pieces) => pieces.into_iter().map(Ok).collect(),
                Err(error) => vec![Err(error)],
            };
            futures_util::stream::iter(pieces)
        });
        Ok(Box::pin(pieces))
    }

    /// The token ids of `text` as llama.cpp reads it.
    async fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>, LlmError> {
        self.tokens(serde_json::json!({"content": text, "add_special": add_special})).await
    }

    /// Continues at the token level on vLLM: the prompt's ids as the engine
    /// renders them, the sent tokens' after them, and the rest generated by
    /// `/v1/completions` with those ids as its prompt.
    async fn resume_vllm(&self, request: &LlmRequest, resume: &Resume) -> Result<Pieces, LlmError> {
        let model = self.upstream_model().await;
        let mut tokens = match vllm::prompt_ids(request) {
            Some(ids) => ids,
            None => self.tokens(vllm::tokenize_prompt(request, &model)?).await?,
        };
        match resume.exact_ids() {
            Some(ids) => tokens.extend_from_slice(ids),
            None => tokens.extend(self.tokens(vllm::tokenize_text(&resume.text, &model)).await?),
        }
        let response = self.post("/v1/completions", vllm::continuation(request, resume, &tokens, &model)?).await?;
        let chunks = vllm::Chunks::new(request);
        Ok(Box::pin(events(response).map(move |data| data.map(|data| chunks.piece(data)))))
    }

    /// Continues at the token level where the engine can: `None` when it
    /// cannot, or failed to, and the text must do.
    async fn resume_tokens(&self, request: &LlmRequest, resume: &Resume) -> Option<Pieces> {
        let resumed = match self.spec.engine {
            EngineKind::Llamacpp => self.resume_llamacpp(request, resume).await,
            EngineKind::Vllm if !vllm::continues_from_text(request) => self.resume_vllm(request, resume).await,
            _ => return None,
        };
        resumed
            .inspect_err(|error| {
                let engine = self.spec.engine.as_str();
                tracing::warn!(%error, engine, "the engine cannot continue at the token level; from the text");
            })
            .ok()
    }
}

/// Where a stream's chunks tell their token ids, and whether they come off
/// before the client sees them (`strip`: gpumesh asked, not the client).
#[derive(Clone, Copy)]
enum TokenIds {
    None,
    Llamacpp { strip: bool },
    Vllm { strip: bool },
}

/// The data of each server-sent event of `response`, up to `[DONE]`.
fn events(response: reqwest::Response) -> impl Stream<Item = Result<String, LlmError>> + Send {
    response
        .bytes_stream()
        .eventsource()
        .take_while(|event| std::future::ready(!matches!(event, Ok(event) if event.data.trim() == "[DONE]")))
        .map(|event| match event {
            Ok(event) => Ok(event.data),
            Err(error) => Err(LlmError::failed(format!("the engine's stream broke off: {error}"))),
        })
}

#[async_trait]
impl Engine for HttpEngine {
    async fn start(&self, request: &LlmRequest, resume: Option<&Resume>) -> Result<Pieces, LlmError> {
        if let Some(resume) = resume {
            if let Some(pieces) = self.resume_tokens(request, resume).await {
                return Ok(pieces);
            }
            let mut continued = request.clone();
            continued.body = resume::text_continuation(request, resume)?;
            let body = continued.engine_body(&self.upstream_model().await)?;
            let pieces = events(self.post(request.endpoint.path(), body).await?).map(|data| data.map(Piece::new));
            return Ok(Box::pin(pieces));
        }
        let mut body = request.engine_body(&self.upstream_model().await)?;
        if !request.stream {
            let response = self.post(request.endpoint.path(), body).await?;
            let whole =
                response.text().await.map_err(|error| LlmError::failed(format!("the engine broke off: {error}")));
            return Ok(Box::pin(futures_util::stream::once(async move { whole.map(Piece::new) })));
        }
        // llama.cpp and vLLM tell each token's id, and a stream that knows
        // them continues elsewhere at the token level.
        let mut ids = TokenIds::None;
        if request.endpoint != Endpoint::Embedding {
            match self.spec.engine {
                EngineKind::Llamacpp => {
                    let (asked, ours) = resume::ask_token_ids(request.endpoint, body)?;
                    (body, ids) = (asked, TokenIds::Llamacpp { strip: ours });
                }
                EngineKind::Vllm => {
                    let (asked, ours) = vllm::ask_token_ids(body)?;
                    (body, ids) = (asked, TokenIds::Vllm { strip: ours });
                }
                EngineKind::Sglang | EngineKind::Generic => {}
            }
        }
        let response = self.post(request.endpoint.path(), body).await?;
        let pieces = events(response).map(move |data| {
            data.map(|data| match ids {
                TokenIds::Llamacpp { strip } => resume::with_token_ids(data, strip),
                TokenIds::Vllm { strip } => vllm::with_token_ids(data, strip),
                TokenIds::None => Piece::new(data),
            })
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
    async fn start(&self, request: &LlmRequest, resume: Option<&Resume>) -> Result<Pieces, LlmError> {
        let (sender, mut receiver) = mpsc::channel(PIECES_BUFFERED);
        let number = self.answers.fetch_add(1, Ordering::Relaxed);
        let run = SyntheticRun {
            request: request.clone(),
            spec: self.spec.clone(),
            id: format!("{}-{number:x}", if request.endpoint == Endpoint::Chat { "chatcmpl" } else { "cmpl" }),
            created: self.clock.unix_ms() / 1000,
            sequences: self.sequences.clone(),
            cache: self.cache.clone(),
            from: resume.map_or(0, |resume| resume.tokens),
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
    /// The first token to generate: a continuation starts after those sent.
    from: u32,
}

impl SyntheticRun {
    async fn generate(self, out: mpsc::Sender<Result<Piece, LlmError>>) {
        let Ok(_sequence) = self.sequences.clone().acquire_owned().await else { return };
        let tokens = synthetic::prompt_tokens(&self.request.prompt);
        // A continuation prefills the prompt and the tokens already sent.
        let prompt_tokens = tokens.len().max(1) + self.from as usize;
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .lookup_and_insert(&synthetic::block_hashes(&tokens));
        let prefill = (prompt_tokens - cached.min(prompt_tokens)) as f64 * self.spec.prefill_ms_per_token;
        tokio::time::sleep(Duration::from_secs_f64(prefill / 1000.0)).await;
        let answer = Answer { request: &self.request, id: self.id.clone(), created: self.created };
        if self.request.endpoint == Endpoint::Embedding {
            let _ = out.send(Ok(Piece::new(answer.embedding(prompt_tokens)))).await;
            return;
        }
        let max_tokens = self.request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        let decode = Duration::from_secs_f64(self.spec.decode_ms_per_token / 1000.0);
        let mut text = String::new();
        for index in self.from..max_tokens {
            if index > self.from {
                tokio::time::sleep(decode).await;
            }
            let token = synthetic::token(&self.request.prompt, index);
            if self.request.stream && out.send(Ok(Piece::new(answer.chunk(Some(&token), index == 0)))).await.is_err() {
                return;
            }
            text.push_str(&token);
        }
        let completion_tokens = max_tokens.saturating_sub(self.from) as usize;
        let usage = Usage { prompt_tokens, completion_tokens, cached_tokens: cached };
        if !self.request.stream {
            let _ = out.send(Ok(Piece::new(answer.whole(&text, usage)))).await;
            return;
        }
        let _ = out.send(Ok(Piece::new(answer.chunk(None, false)))).await;
        if self.request.include_usage {
            let _ = out.send(Ok(Piece::new(answer.usage_chunk(usage)))).await;
        }
    }
}
