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
    /// Every idempotency key any client has drawn, in order, with the
    /// value of its request: duplicates are drawn from here, so one key
    /// enters at several nodes.
    pub(crate) pool: Vec<(String, f32)>,
    /// Idempotency key -> the jobs acknowledged for it.
    keys: BTreeMap<String, KeyJobs>,
    /// Acknowledgements that broke a key's promise (see [`KeyConflict`]).
    pub(crate) conflicts: Vec<KeyConflict>,
    /// Keys acknowledged with a second job after their home moved.
    pub(crate) moved_keys: u64,
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

/// The jobs acknowledged for one key: by owner, and by the members the
/// accepting node saw.
#[derive(Default)]
struct KeyJobs {
    by_owner: BTreeMap<String, String>,
    by_members: BTreeMap<String, String>,
}

/// An acknowledgement that broke a key's promise, and the owners involved:
/// a node whose disk was wiped lost its jobs and keys, so its conflicts
/// are no failure (the job check knows which nodes were wiped).
pub(crate) struct KeyConflict {
    pub(crate) owners: [String; 2],
    pub(crate) message: String,
}

/// The candidates for a key's home in `view`, as one string: the members
/// that may take new work, by name.
pub(crate) fn home_candidates(view: &gpumesh_membership::ClusterView) -> String {
    gpumesh_actors::job_owner::home::candidates(view).collect::<Vec<_>>().join(",")
}

#[derive(Clone, Default)]
pub(crate) struct Ledger(Arc<Mutex<LedgerInner>>);

impl Ledger {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, LedgerInner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A node acknowledged job `id` for idempotency `key`; `members` are
    /// the candidates for the key's home in the view of the node that took
    /// the submit, when it took it. One key gives one job while the members
    /// stay the same; a second job is allowed only on another home, chosen
    /// from other members (the promise `job_owner::home` documents).
    pub(crate) fn acknowledged(&self, key: String, id: String, accepted: Accepted, members: String) {
        let mut ledger = self.lock();
        let owner_of = |id: &str| gpumesh_actors::job_owner::owner_of(id).unwrap_or_default().to_string();
        let owner = owner_of(&id);
        let jobs = ledger.keys.entry(key.clone()).or_default();
        let mut conflicts = Vec::new();
        if let Some(first) = jobs.by_owner.get(&owner).filter(|first| **first != id) {
            let message = format!("idempotency key {key} gave job {id} after {first}, both owned by {owner}");
            conflicts.push(KeyConflict { owners: [owner.clone(), owner.clone()], message });
        }
        if let Some(first) = jobs.by_members.get(&members).filter(|first| **first != id) {
            let message = format!(
                "idempotency key {key} gave job {id} after {first} while the members were the same ({members})"
            );
            conflicts.push(KeyConflict { owners: [owner.clone(), owner_of(first)], message });
        }
        let new_job = !jobs.by_owner.values().any(|known| *known == id);
        let moved = new_job && !jobs.by_owner.is_empty();
        jobs.by_owner.entry(owner).or_insert_with(|| id.clone());
        jobs.by_members.entry(members).or_insert_with(|| id.clone());
        ledger.conflicts.extend(conflicts);
        ledger.moved_keys += u64::from(moved);
        if new_job {
            ledger.accepted.insert(id, accepted);
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
