//! What the simulated clients saw, shared by every host: the jobs nodes
//! acknowledged, synchronous requests' latencies, language-model streams
//! and every failure a client noticed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// A job a node acknowledged, and what its result must be.
#[derive(Clone, Debug)]
pub(crate) enum Accepted {
    /// The echo model returns the input value.
    Tensor { value: f32 },
    /// The synthetic language model answers with the text of an
    /// uninterrupted run, wherever the job ran and however often it moved.
    Llm { text: String },
}

/// What clients saw, shared by every host.
#[derive(Default)]
pub(crate) struct LedgerInner {
    pub(crate) accepted: BTreeMap<String, Accepted>,
    /// Idempotency key -> the job id first acknowledged for it.
    pub(crate) keys: BTreeMap<String, String>,
    pub(crate) sync_latencies_ms: Vec<f64>,
    pub(crate) sync_errors: u64,
    /// Language-model streams: what became of them, and their times to
    /// first token (ms).
    pub(crate) streams: StreamCounts,
    pub(crate) ttft_ms: Vec<f64>,
    pub(crate) failures: Vec<String>,
    /// Requests each client sent, across its node's restarts.
    sent: BTreeMap<u32, u32>,
}

#[derive(Clone, Default)]
pub(crate) struct Ledger(Arc<Mutex<LedgerInner>>);

impl Ledger {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, LedgerInner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A node acknowledged job `id` for idempotency `key`: a key must give
    /// the same job every time.
    pub(crate) fn acknowledged(&self, key: String, id: String, accepted: Accepted) {
        let mut ledger = self.lock();
        match ledger.keys.get(&key) {
            Some(first) if *first != id => {
                let failure = format!("idempotency key {key} gave job {id} after {first}");
                ledger.failures.push(failure);
            }
            Some(_) => {}
            None => {
                ledger.keys.insert(key, id.clone());
                ledger.accepted.insert(id, accepted);
            }
        }
    }

    /// A value no request of any client had: `count * 128 + index`, exact in f32.
    pub(crate) fn next_value(&self, index: u32) -> f32 {
        let mut ledger = self.lock();
        let count = ledger.sent.entry(index).or_default();
        *count += 1;
        (*count * 128 + index) as f32
    }
}

pub(crate) fn now_ms() -> u64 {
    u64::try_from(turmoil::sim_elapsed().unwrap_or_default().as_millis()).unwrap_or(u64::MAX)
}

/// What the language-model clients saw.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct StreamCounts {
    /// Streams that got their first token.
    pub(crate) started: u64,
    /// Streams that ended with exactly the tokens of an uninterrupted run.
    pub(crate) completed: u64,
    /// Streams that ended with an error event after their first token (the
    /// tokens before it were right).
    pub(crate) errors: u64,
    /// Requests refused before their first token.
    pub(crate) refused: u64,
    /// Moves of streams to another node.
    pub(crate) failovers: u64,
    /// Streams not ended when the run ended.
    pub(crate) open: u64,
    /// Streams whose client died with its node (crashed) before the end.
    pub(crate) client_gone: u64,
    pub(crate) prompt_tokens: u64,
    pub(crate) cached_tokens: u64,
}
