//! Simulated language-model clients: streamed chats to the `synthetic-llm`
//! model, each checked token by token against what an uninterrupted run
//! says (the synthetic model's token `i` is a function of the prompt and
//! `i` only, SPEC section 10), wherever and however often the stream moved.

use std::sync::Arc;

use futures_util::StreamExt as _;
use gpumesh_actors::NodeHandle;
use gpumesh_actors::llm::request::{Endpoint, Hints, parse};
use gpumesh_actors::llm::synthetic;
use rand::RngExt as _;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use crate::ledger::{Ledger, now_ms};
use crate::scenario::LlmTraffic;
use crate::trace::TraceLog;

/// The language model every node with an engine serves.
pub(crate) const LLM_MODEL: &str = "llm";

/// Draws the chats of one client.
pub(crate) struct LlmDraws {
    pub(crate) traffic: LlmTraffic,
    pub(crate) name: String,
    pub(crate) count: u64,
}

impl LlmDraws {
    /// The next chat: its group's shared words, then words of its own.
    pub(crate) fn next(&mut self, rng: &mut StdRng) -> Vec<u8> {
        self.count += 1;
        let traffic = &self.traffic;
        let group = rng.random_range(0..traffic.prefix_groups);
        let own = rng.random_range(traffic.own_words[0]..=traffic.own_words[1]);
        let max_tokens = rng.random_range(traffic.max_tokens[0]..=traffic.max_tokens[1]);
        let mut words: Vec<String> = (0..traffic.shared_words).map(|word| format!("g{group}w{word}")).collect();
        words.extend((0..own).map(|word| format!("{}r{}w{word}", self.name, self.count)));
        let body = json!({"model": LLM_MODEL, "messages": [{"role": "user", "content": words.join(" ")}],
            "max_tokens": max_tokens, "stream": true, "stream_options": {"include_usage": true}});
        body.to_string().into_bytes()
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

/// Sends one streamed chat and checks every token of it.
pub(crate) async fn stream(node: Arc<NodeHandle>, body: Vec<u8>, ledger: Ledger, trace: TraceLog) {
    let Ok(request) = parse(Endpoint::Chat, &body, &Hints::default()) else {
        ledger.lock().failures.push("the simulator drew a chat the node cannot parse".into());
        return;
    };
    let tokens = request.max_tokens.unwrap_or(synthetic::DEFAULT_MAX_TOKENS);
    let expected: String = (0..tokens).map(|index| synthetic::token(&request.prompt, index)).collect();
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

/// `completed`, `error` (the text before it right), or what went wrong.
fn judge(seen: &Seen, expected: &str) -> Result<&'static str, String> {
    let first_difference = || {
        let at = seen.text.chars().zip(expected.chars()).take_while(|(a, b)| a == b).count();
        format!("its text differs from an uninterrupted run from character {at} of {}", expected.chars().count())
    };
    match &seen.error {
        Some(_) if expected.starts_with(&seen.text) => Ok("error"),
        Some(error) => Err(format!("{} before its error event ({error})", first_difference())),
        None if !seen.finished => Err("it ended without a finish and without an error event".into()),
        None if seen.text != expected => Err(first_difference()),
        None => Ok("completed"),
    }
}
