//! A language model served by this node: its engine, the admission in
//! front of it (at most `max_concurrency` requests inside the engine, at
//! most `max_queue_size` waiting here, then 429), whether the engine
//! answers its health check, and what gpumesh measures of the streams it
//! carries.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::llm::engine::{Engine, Piece, Pieces};
use crate::llm::engine_load::EngineLoad;
use crate::llm::error::LlmError;
use crate::llm::prefix::{Prefixes, Sketch};
use crate::llm::request::LlmRequest;
use crate::llm::resume::Resume;
use crate::registry::{LlmKind, ModelSpec};

/// Weight of the newest request in the averages.
const EWMA_ALPHA: f64 = 0.2;
/// Requests whose time to first token the percentiles cover.
const RECENT_TTFTS: usize = 256;
/// Bytes of a rendered prompt per token until the engine has counted some.
pub const DEFAULT_PROMPT_BYTES_PER_TOKEN: f64 = 4.0;
/// Tokens an engine beside the node is taken to keep in its prefix cache
/// until it reports its own KV cache (vLLM and SGLang do, in their
/// metrics); llama.cpp keeps its slots' contexts and, by default,
/// gigabytes more in host memory, which it does not report.
const ENGINE_CACHE_TOKENS: usize = 131_072;

/// What gpumesh knows of one language model's load.
#[derive(Debug)]
pub struct LlmStats {
    ready: AtomicBool,
    /// Requests waiting here for room in the engine.
    waiting: AtomicU32,
    /// Requests inside the engine.
    running: AtomicU32,
    engine: std::sync::Mutex<Option<EngineLoad>>,
    /// Moving averages, as f64 bits: time to first token (ms) and decode
    /// speed (tokens per second).
    ttft_ms: AtomicU64,
    decode_tokens_per_s: AtomicU64,
    /// Prompt tokens not served from the cache over the time to first
    /// token (moving average, f64 bits): the prefill speed as seen here.
    prefill_tokens_per_s: AtomicU64,
    /// Bytes of gpumesh's rendering of a prompt per prompt token the
    /// engine counted (moving average, f64 bits).
    prompt_bytes_per_token: AtomicU64,
    /// Requests served, and their tokens, since start.
    requests: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    cached_tokens: AtomicU64,
    /// Woken when readiness changes, so the load is published at once, and
    /// when the engine may be down, so its health is checked at once.
    pub(crate) changed: tokio::sync::Notify,
    /// Time to first token of each request, seconds
    /// (`gpumesh_llm_time_to_first_token_seconds`).
    pub ttft_seconds: Histogram,
    /// Time between the pieces of a stream, seconds
    /// (`gpumesh_llm_inter_token_seconds`).
    pub inter_token_seconds: Histogram,
    /// The times to first token of the latest requests, ms.
    recent_ttft_ms: std::sync::Mutex<std::collections::VecDeque<f64>>,
}

impl Default for LlmStats {
    fn default() -> Self {
        Self {
            ready: AtomicBool::default(),
            waiting: AtomicU32::default(),
            running: AtomicU32::default(),
            engine: std::sync::Mutex::default(),
            ttft_ms: AtomicU64::default(),
            decode_tokens_per_s: AtomicU64::default(),
            prefill_tokens_per_s: AtomicU64::default(),
            prompt_bytes_per_token: AtomicU64::default(),
            requests: AtomicU64::default(),
            prompt_tokens: AtomicU64::default(),
            completion_tokens: AtomicU64::default(),
            cached_tokens: AtomicU64::default(),
            changed: tokio::sync::Notify::new(),
            // 1 ms to about 3 min.
            ttft_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            // 100 us to about 6 s.
            inter_token_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            recent_ttft_ms: std::sync::Mutex::default(),
        }
    }
}

fn ewma(cell: &AtomicU64, sample: f64) {
    let old = f64::from_bits(cell.load(Ordering::Relaxed));
    let new = if old == 0.0 { sample } else { old + EWMA_ALPHA * (sample - old) };
    cell.store(new.to_bits(), Ordering::Relaxed);
}

impl LlmStats {
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }
    pub fn running(&self) -> u32 {
        self.running.load(Ordering::Relaxed)
    }
    /// What the engine last published, where it does.
    pub fn engine(&self) -> Option<EngineLoad> {
        *self.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sequences being generated: the engine's count where it publishes
    /// one, else the requests gpumesh has inside it.
    pub fn running_now(&self) -> u32 {
        self.engine().map_or(self.running(), |load| load.running)
    }

    /// Requests waiting: here for room in the engine, and in the engine.
    pub fn waiting_now(&self) -> u32 {
        self.waiting() + self.engine().map_or(0, |load| load.waiting)
    }
    /// Moving average of the time to first token, ms (0 before any).
    pub fn ttft_ms(&self) -> f64 {
        f64::from_bits(self.ttft_ms.load(Ordering::Relaxed))
    }
    /// Moving average of the decode speed, tokens per second (0 before any).
    pub fn decode_tokens_per_s(&self) -> f64 {
        f64::from_bits(self.decode_tokens_per_s.load(Ordering::Relaxed))
    }
    /// Median and 99th percentile of the time to first token of the latest
    /// requests, ms; `None` before any.
    pub fn ttft_percentiles(&self) -> Option<(f64, f64)> {
        let mut recent: Vec<f64> =
            self.recent_ttft_ms.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().copied().collect();
        if recent.is_empty() {
            return None;
        }
        recent.sort_by(f64::total_cmp);
        let at = |q: f64| recent[((recent.len() as f64 * q).ceil() as usize).clamp(1, recent.len()) - 1];
        Some((at(0.5), at(0.99)))
    }

    fn record_ttft(&self, seconds: f64) {
        self.ttft_seconds.observe(seconds);
        ewma(&self.ttft_ms, seconds * 1000.0);
        let mut recent = self.recent_ttft_ms.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() >= RECENT_TTFTS {
            recent.pop_front();
        }
        recent.push_back(seconds * 1000.0);
    }

    /// Moving average of the prefill speed, tokens per second (0 before
    /// any request with usage).
    pub fn prefill_tokens_per_s(&self) -> f64 {
        f64::from_bits(self.prefill_tokens_per_s.load(Ordering::Relaxed))
    }

    /// Moving average of the bytes of a rendered prompt per token (0
    /// before any request with usage).
    pub fn prompt_bytes_per_token(&self) -> f64 {
        f64::from_bits(self.prompt_bytes_per_token.load(Ordering::Relaxed))
    }

    /// Requests served since start.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    /// Prompt, completion and cached prompt tokens since start (where the
    /// engine reported usage).
    pub fn tokens(&self) -> (u64, u64, u64) {
        let load = |cell: &AtomicU64| cell.load(Ordering::Relaxed);
        (load(&self.prompt_tokens), load(&self.completion_tokens), load(&self.cached_tokens))
    }
}

/// A language model served here.
pub struct LlmModel {
    pub spec: ModelSpec,
    pub kind: LlmKind,
    pub stats: Arc<LlmStats>,
    engine: Arc<dyn Engine>,
    admission: Arc<Semaphore>,
    clock: Arc<dyn Clock>,
    /// The prompt prefixes the engine holds, as seen here.
    sketch: Arc<std::sync::Mutex<Sketch>>,
}

impl LlmModel {
    /// A model served by `engine`; a synthetic engine is always ready, an
    /// engine beside the node once it answers its health check.
    pub fn new(spec: ModelSpec, kind: LlmKind, engine: Arc<dyn Engine>, clock: Arc<dyn Clock>) -> Self {
        let stats = LlmStats::default();
        stats.ready.store(matches!(kind, LlmKind::Synthetic(_)), Ordering::Relaxed);
        let admission = Arc::new(Semaphore::new(kind.max_concurrency()));
        let sketch =
            Arc::new(std::sync::Mutex::new(Sketch::new(cache_bytes(&kind, DEFAULT_PROMPT_BYTES_PER_TOKEN, None))));
        Self { spec, kind, stats: Arc::new(stats), engine, admission, clock, sketch }
    }

    fn sketch(&self) -> std::sync::MutexGuard<'_, Sketch> {
        lock(&self.sketch)
    }

    /// What gossip carries of the prefixes the engine holds.
    pub fn prefix_sketch(&self) -> gpumesh_membership::PrefixSketch {
        self.sketch().published()
    }

    /// Bytes of the longest prefix of a prompt the engine holds, as seen
    /// here (fresher than this node's gossip).
    pub fn longest_held(&self, prefixes: &Prefixes) -> usize {
        let sketch = self.sketch();
        prefixes.longest_held(|hash| sketch.holds(hash))
    }

    /// What the engine will hold once it has prefilled `request`'s prompt.
    fn will_hold(&self, request: &LlmRequest) -> Held {
        let measured = self.stats.prompt_bytes_per_token();
        let per_token = if measured > 0.0 { measured } else { DEFAULT_PROMPT_BYTES_PER_TOKEN };
        Held {
            sketch: self.sketch.clone(),
            prefixes: Prefixes::of(&request.prompt),
            capacity: cache_bytes(&self.kind, per_token, self.stats.engine().and_then(|load| load.cache_tokens)),
        }
    }

    /// The engine kind, as gossip shows it.
    pub fn device(&self) -> &'static str {
        self.kind.device()
    }

    /// Asks the engine whether it is healthy and what load it publishes.
    pub async fn probe(&self) {
        let (healthy, load) = tokio::join!(self.engine.healthy(), self.engine.load());
        self.set_ready(healthy);
        *self.stats.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = load;
    }

    /// The engine is gone (it exited, or refused a connection): unready
    /// until it answers its health check again.
    pub fn mark_down(&self) {
        self.set_ready(false);
    }

    fn set_ready(&self, ready: bool) {
        if self.stats.ready.swap(ready, Ordering::Relaxed) != ready {
            tracing::info!(model = %self.spec.name, ready, "engine readiness changed");
            self.stats.changed.notify_one();
        }
    }

    /// Runs `request` in the engine once there is room for it, or with
    /// `resume` the rest of a completion begun elsewhere; `Err` when the
    /// engine is down, the queue is full, or the engine refused it.
    pub async fn start(&self, request: &LlmRequest, resume: Option<&Resume>) -> Result<Pieces, LlmError> {
        let name = &self.spec.name;
        if !self.stats.ready() {
            return Err(LlmError::unavailable(format!("the engine of model {name} is not answering its health check")));
        }
        let waiting = Counted::enter(&self.stats, |stats| &stats.waiting);
        let queued = waiting.before as usize;
        if queued >= self.spec.batch.max_queue_size {
            let retry_after_s = (self.stats.ttft_ms() / 1000.0).ceil().max(1.0) as u64;
            return Err(LlmError::queue_full(name, queued, retry_after_s));
        }
        let Ok(permit) = self.admission.clone().acquire_owned().await else {
            return Err(LlmError::unavailable(format!("model {name} is shutting down")));
        };
        drop(waiting);
        let running = Counted::enter(&self.stats, |stats| &stats.running);
        let started = self.clock.now();
        let pieces = self.engine.start(request, resume).await.inspect_err(|error| {
            if error.status == 502 {
                // Not answering: check its health now rather than at the
                // next tick (one failed connection does not make it down).
                self.stats.changed.notify_one();
            }
        })?;
        Ok(Box::pin(Metered {
            held: Some(self.will_hold(request)),
            pieces,
            // A continuation's prompt also holds the tokens already sent.
            prompt_bytes: if resume.is_some() { 0 } else { request.prompt.len() },
            _permit: permit,
            _running: running,
            stats: self.stats.clone(),
            clock: self.clock.clone(),
            started,
            first: None,
            last: None,
            count: 0,
        }))
    }
}

/// One count held up while this lives (waiting or running).
struct Counted {
    stats: Arc<LlmStats>,
    counter: fn(&LlmStats) -> &AtomicU32,
    before: u32,
}

impl Counted {
    fn enter(stats: &Arc<LlmStats>, counter: fn(&LlmStats) -> &AtomicU32) -> Self {
        let before = counter(stats).fetch_add(1, Ordering::Relaxed);
        Self { stats: stats.clone(), counter, before }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        (self.counter)(&self.stats).fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock(sketch: &std::sync::Mutex<Sketch>) -> std::sync::MutexGuard<'_, Sketch> {
    sketch.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A prompt's prefixes, for the sketch once the engine has prefilled them.
struct Held {
    sketch: Arc<std::sync::Mutex<Sketch>>,
    prefixes: Prefixes,
    capacity: usize,
}

impl Held {
    fn record(self) {
        let mut sketch = lock(&self.sketch);
        sketch.set_capacity(self.capacity);
        sketch.record(&self.prefixes);
    }
}

/// An answer's pieces, measured as they pass: time to first piece, decode
/// speed, and the token counts of any `usage` the engine reports. The
/// prompt enters the sketch with the first piece, when the engine has
/// prefilled it and its time to first token is measured: gossip never
/// shows a held prefix without a measure of what prefill costs there.
struct Metered {
    held: Option<Held>,
    pieces: Pieces,
    prompt_bytes: usize,
    _permit: OwnedSemaphorePermit,
    _running: Counted,
    stats: Arc<LlmStats>,
    clock: Arc<dyn Clock>,
    started: Instant,
    first: Option<Instant>,
    last: Option<Instant>,
    count: u64,
}

impl Stream for Metered {
    type Item = Result<Piece, LlmError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.pieces.as_mut().poll_next(cx);
        if let Poll::Ready(Some(Ok(Piece { data: piece, .. }))) = &polled {
            let now = self.clock.now();
            match self.last {
                None => {
                    self.first = Some(now);
                    self.stats.record_ttft(now.saturating_duration_since(self.started).as_secs_f64());
                    if let Some(held) = self.held.take() {
                        held.record();
                    }
                }
                Some(last) => self.stats.inter_token_seconds.observe(now.saturating_duration_since(last).as_secs_f64()),
            }
            self.last = Some(now);
            self.count += 1;
            if piece.contains("\"usage\"")
                && let Some((prompt, uncached)) = count_usage(&self.stats, piece)
                && let Some(first) = self.first
            {
                if prompt > 0 && self.prompt_bytes > 0 {
                    ewma(&self.stats.prompt_bytes_per_token, self.prompt_bytes as f64 / prompt as f64);
                }
                let ttft = first.saturating_duration_since(self.started).as_secs_f64();
                if uncached > 0 && ttft > 0.0 {
                    ewma(&self.stats.prefill_tokens_per_s, uncached as f64 / ttft);
                }
            }
        }
        polled
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        if let (Some(first), Some(last)) = (self.first, self.last) {
            let seconds = last.saturating_duration_since(first).max(Duration::from_micros(1)).as_secs_f64();
            if self.count > 2 {
                ewma(&self.stats.decode_tokens_per_s, (self.count - 1) as f64 / seconds);
            }
        }
    }
}

/// Adds the token counts of a piece's `usage`, if it has one: the prompt
/// tokens, and those not served from the cache.
fn count_usage(stats: &LlmStats, piece: &str) -> Option<(u64, u64)> {
    let value = serde_json::from_str::<serde_json::Value>(piece).ok()?;
    let usage = value.get("usage").filter(|usage| usage.is_object())?;
    let number = |value: Option<&serde_json::Value>| value.and_then(serde_json::Value::as_u64).unwrap_or(0);
    stats.prompt_tokens.fetch_add(number(usage.get("prompt_tokens")), Ordering::Relaxed);
    stats.completion_tokens.fetch_add(number(usage.get("completion_tokens")), Ordering::Relaxed);
    let cached = usage.get("prompt_tokens_details").and_then(|details| details.get("cached_tokens"));
    stats.cached_tokens.fetch_add(number(cached), Ordering::Relaxed);
    let prompt = number(usage.get("prompt_tokens"));
    Some((prompt, prompt.saturating_sub(number(cached))))
}

/// Bytes of rendered prompt the engine's prefix cache holds: the tokens
/// the engine `reported` its cache holds, else what is assumed of it.
fn cache_bytes(kind: &LlmKind, bytes_per_token: f64, reported: Option<u64>) -> usize {
    let tokens = match kind {
        LlmKind::Synthetic(synthetic) => synthetic.kv_cache_tokens,
        LlmKind::OpenAi(_) => {
            reported.map_or(ENGINE_CACHE_TOKENS, |tokens| usize::try_from(tokens).unwrap_or(usize::MAX))
        }
    };
    (tokens as f64 * bytes_per_token) as usize
}

#[cfg(test)]
mod tests;
