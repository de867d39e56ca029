//! Simulated language-model clients: streamed chats to the `synthetic-llm`
//! model, each checked token by token against what an uninterrupted run
//! says (the synthetic model's token `i` is a function of the prompt and
//! `i` only, SPEC section 10), wherever and however often the stream moved;
//! and chats submitted as durable jobs, whose answers `jobcheck` checks the
//! same way.

use std::sync::Arc;

use futures_util::StreamExt as _;
use gpumesh_actors::NodeHandle;
use gpumesh_actors::llm::LlmRequest;
use gpumesh_actors::llm::request::{Endpoint, Hints, parse};
use gpumesh_actors::llm::synthetic;
use rand::RngExt as _;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use crate::ledger::{Accepted, Ledger, now_ms};
use crate::scenario::LlmTraffic;
use crate::trace::TraceLog;

/// The language model every node with an engine serves.
pub(crate) const LLM_MODEL: &str = "llm";

/// A chat a client sends: its body, streamed or as a job.
pub(crate) enum Chat {
    Stream(Vec<u8>),
    Job(Vec<u8>),
}

/// Draws the chats of one client.
pub(crate) struct LlmDraws {
    pub(crate) traffic: LlmTraffic,
    pub(crate) name: String,
    pub(crate) count: u64,
}

impl LlmDraws {
    /// The next chat: its group's shared words, then words of its own.
    pub(crate) fn next(&mut self, rng: &mut StdRng) -> Chat {
        self.count += 1;
        let traffic = &self.traffic;
        let group = rng.random_range(0..traffic.prefix_groups);
        let own = rng.random_range(traffic.own_words[0]..=traffic.own_words[1]);
        let max_tokens = rng.random_range(traffic.max_tokens[0]..=traffic.max_tokens[1]);
        let mut words: Vec<String> = (0..traffic.shared_words).map(|word| format!("g{group}w{word}")).collect();
        words.extend((0..own).map(|word| format!("{}r{}w{word}", self.name, self.count)));
        let messages = json!([{"role": "user", "content": words.join(" ")}]);
        // Drawn only where jobs are asked for, so streamed workloads draw as before.
        if traffic.async_fraction > 0.0 && rng.random_bool(traffic.async_fraction) {
            let body = json!({"model": LLM_MODEL, "messages": messages, "max_tokens": max_tokens});
            return Chat::Job(body.to_string().into_bytes());
        }
        let body = json!({"model": LLM_MODEL, "messages": messages,
            "max_tokens": max_tokens, "stream": true, "stream_options": {"include_usage": true}});
        Chat::Stream(body.to_string().into_bytes())
    }
}

/// How a stream ended, as its client saw it.
#[derive(Default)]
struct Seen {
    text: String,
    finished: bool,
    error: Option<String>,
    prompt_tokens: u64,
    cached_tokens: u64,
}

impl Seen {
    fn take(&mut self, chunk: &str) {
        let Ok(chunk) = serde_json::from_str::<Value>(chunk) else { return };
        let choice = &chunk["choices"][0];
        if let Some(text) = choice["delta"]["content"].as_str() {
            self.text.push_str(text);
        }
        self.finished |= choice["finish_reason"].is_string();
        if let Some(usage) = chunk.get("usage").filter(|usage| usage.is_object()) {
            self.prompt_tokens = usage["prompt_tokens"].as_u64().unwrap_or(0);
            self.cached_tokens = usage["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0);
        }
    }
}

/// The chat in `body`, and the text an uninterrupted run answers it with.
fn drawn(body: &[u8], ledger: &Ledger) -> Option<(LlmRequest, String)> {
    let Ok(request) = parse(Endpoint::Chat, body, &Hints::default()) else {
        ledger.lock().failures.push("the simulator drew a chat the node cannot parse".into());
        return None;
    };
    let tokens = request.max_tokens.unwrap_or(synthetic::DEFAULT_MAX_TOKENS);
    let expected = (0..tokens).map(|index| synthetic::token(&request.prompt, index)).collect();
    Some((request, expected))
}

/// Submits a chat as a durable job; `jobcheck` checks its answer at the end.
pub(crate) async fn submit(node: Arc<NodeHandle>, body: Vec<u8>, key: String, ledger: Ledger, trace: TraceLog) {
    let Some((request, text)) = drawn(&body, &ledger) else { return };
    let members = crate::ledger::home_candidates(&node.view());
    let Ok(job) = node.submit_llm_job(request, Some(key.clone())).await else { return };
    trace.record(format_args!("client {} accepted chat job {} key {key}", node.name(), job.id));
    ledger.acknowledged(key, job.id, Accepted::Llm { text }, members);
}

/// Sends one streamed chat and checks every token of it.
pub(crate) async fn stream(node: Arc<NodeHandle>, body: Vec<u8>, ledger: Ledger, trace: TraceLog) {
    let Some((request, expected)) = drawn(&body, &ledger) else { return };
    let tokens = request.max_tokens.unwrap_or(synthetic::DEFAULT_MAX_TOKENS);
    let sent_at = now_ms();
    let Ok(started) = node.llm().start(request).await else {
        ledger.lock().streams.refused += 1;
        return;
    };
    {
        let mut ledger = ledger.lock();
        ledger.streams.started += 1;
        ledger.ttft_ms.push((now_ms() - sent_at) as f64);
    }
    let mut open = Open::new(&ledger);
    let mut seen = Seen::default();
    seen.take(&started.first.data);
    let mut rest = started.rest;
    while let Some(piece) = rest.next().await {
        match piece {
            Ok(piece) => seen.take(&piece.data),
            Err(error) => {
                seen.error = Some(error.message);
                break;
            }
        }
    }
    let provenance = started.provenance.lock().map(|p| (p.nodes.join(">"), p.failovers)).unwrap_or_default();
    let outcome = judge(&seen, &expected);
    trace.record(format_args!(
        "client {} stream of {tokens} tokens by {} ({} moves): {}",
        node.name(),
        provenance.0,
        provenance.1,
        outcome.as_ref().map_or_else(|failure| failure.as_str(), |ok| *ok)
    ));
    open.judged = true;
    drop(open);
    let mut ledger = ledger.lock();
    let counts = &mut ledger.streams;
    counts.failovers += u64::from(provenance.1);
    counts.prompt_tokens += seen.prompt_tokens;
    counts.cached_tokens += seen.cached_tokens;
    match outcome {
        Ok("completed") => counts.completed += 1,
        Ok(_) => counts.errors += 1,
        Err(failure) => {
            let failure = format!("a stream from {} via {}: {failure}", node.name(), provenance.0);
            ledger.failures.push(failure);
        }
    }
}

/// A stream under way: counted open until it ends; dropped before it was
/// judged, its client died with its node (a crash drops the host's tasks).
struct Open {
    ledger: Ledger,
    judged: bool,
}

impl Open {
    fn new(ledger: &Ledger) -> Self {
        ledger.lock().streams.open += 1;
        Self { ledger: ledger.clone(), judged: false }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut ledger = self.ledger.lock();
        ledger.streams.open -= 1;
        if !self.judged {
            ledger.streams.client_gone += 1;
        }
    }
}

/// Where `text` departs from `expected`, said for a failure.
pub(crate) fn differs(text: &str, expected: &str) -> String {
    let at = text.chars().zip(expected.chars()).take_while(|(a, b)| a == b).count();
    format!("differs from an uninterrupted run from character {at} of {}", expected.chars().count())
}

/// `completed`, `error` (the text before it right), or what went wrong.
fn judge(seen: &Seen, expected: &str) -> Result<&'static str, String> {
    let first_difference = || format!("its text {}", differs(&seen.text, expected));
    match &seen.error {
        Some(_) if expected.starts_with(&seen.text) => Ok("error"),
        Some(error) => Err(format!("{} before its error event ({error})", first_difference())),
        None if !seen.finished => Err("it ended without a finish and without an error event".into()),
        None if seen.text != expected => Err(first_difference()),
        None => Ok("completed"),
    }
}
