//! Triton's inference statistics of a model: counts and cumulative
//! nanoseconds per stage, and per batch size. Each node keeps its own for
//! the models it serves; what a client asks any node for is the sum over
//! the nodes that serve the model (see [`merge`]). The field names and
//! nesting are Triton's statistics JSON, so the HTTP API serves these
//! documents as they are.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How many requests went through a stage and their total time there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatDuration {
    pub count: u64,
    pub ns: u64,
}

impl StatDuration {
    fn add(&mut self, count: u64, time: Duration) {
        self.count += count;
        self.ns = self.ns.saturating_add(u64::try_from(time.as_nanos()).unwrap_or(u64::MAX));
    }

    fn merge(&mut self, other: &Self) {
        self.count += other.count;
        self.ns = self.ns.saturating_add(other.ns);
    }
}

/// Triton's `inference_stats`. gpumesh has no response cache and does not
/// time input and output copies apart from the run: `cache_*`,
/// `compute_input` and `compute_output` stay zero.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InferenceStats {
    /// Requests answered with outputs; time from queueing to the answer.
    pub success: StatDuration,
    /// Requests the executor refused or failed; time they spent in it.
    pub fail: StatDuration,
    pub queue: StatDuration,
    pub compute_input: StatDuration,
    pub compute_infer: StatDuration,
    pub compute_output: StatDuration,
    pub cache_hit: StatDuration,
    pub cache_miss: StatDuration,
}

/// Model runs of one batch size (items, not requests).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchStats {
    pub batch_size: u64,
    pub compute_input: StatDuration,
    pub compute_infer: StatDuration,
    pub compute_output: StatDuration,
}

/// One model's statistics, in Triton's shape.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelStatisticsDoc {
    pub name: String,
    pub version: String,
    /// Unix time of the last successful run, milliseconds; 0 before one.
    pub last_inference: u64,
    /// Items inferred: a request of 8 rows counts 8.
    pub inference_count: u64,
    /// Model runs; a batch of several requests is one.
    pub execution_count: u64,
    pub inference_stats: InferenceStats,
    pub batch_stats: Vec<BatchStats>,
    /// Triton's memory report; gpumesh reports memory in `/cluster`.
    pub memory_usage: Vec<serde_json::Value>,
}

impl ModelStatisticsDoc {
    /// Adds `other`'s counts (the same model on another node) to these.
    pub fn merge(&mut self, other: &Self) {
        self.last_inference = self.last_inference.max(other.last_inference);
        self.inference_count += other.inference_count;
        self.execution_count += other.execution_count;
        let (mine, theirs) = (&mut self.inference_stats, &other.inference_stats);
        for (a, b) in [
            (&mut mine.success, &theirs.success),
            (&mut mine.fail, &theirs.fail),
            (&mut mine.queue, &theirs.queue),
            (&mut mine.compute_input, &theirs.compute_input),
            (&mut mine.compute_infer, &theirs.compute_infer),
            (&mut mine.compute_output, &theirs.compute_output),
            (&mut mine.cache_hit, &theirs.cache_hit),
            (&mut mine.cache_miss, &theirs.cache_miss),
        ] {
            a.merge(b);
        }
        for batch in &other.batch_stats {
            match self.batch_stats.binary_search_by_key(&batch.batch_size, |b| b.batch_size) {
                Ok(at) => {
                    let mine = &mut self.batch_stats[at];
                    mine.compute_input.merge(&batch.compute_input);
                    mine.compute_infer.merge(&batch.compute_infer);
                    mine.compute_output.merge(&batch.compute_output);
                }
                Err(at) => self.batch_stats.insert(at, batch.clone()),
            }
        }
    }
}

/// Sums the documents of each model over the nodes that sent them; one
/// document per model, by name.
pub fn merge(docs: impl IntoIterator<Item = ModelStatisticsDoc>) -> Vec<ModelStatisticsDoc> {
    let mut by_name: BTreeMap<String, ModelStatisticsDoc> = BTreeMap::new();
    for doc in docs {
        match by_name.get_mut(&doc.name) {
            Some(sum) => sum.merge(&doc),
            None => {
                by_name.insert(doc.name.clone(), doc);
            }
        }
    }
    by_name.into_values().collect()
}

/// What one node counts for one model, updated once per model run.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    last_inference: u64,
    inference_count: u64,
    execution_count: u64,
    stats: InferenceStats,
    /// Runs and their compute time, by items in the run.
    batches: BTreeMap<u64, StatDuration>,
}

impl Counters {
    /// One model run of `items` rows answering `requests` requests that
    /// waited `waited` in all, at unix time `now_ms`.
    pub(crate) fn record_run(&self, items: usize, requests: usize, waited: Duration, compute: Duration, now_ms: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let computed = compute * u32::try_from(requests).unwrap_or(u32::MAX);
        inner.last_inference = inner.last_inference.max(now_ms);
        inner.inference_count += items as u64;
        inner.execution_count += 1;
        inner.stats.queue.add(requests as u64, waited);
        inner.stats.compute_infer.add(requests as u64, computed);
        inner.stats.success.add(requests as u64, waited + computed);
        inner.batches.entry(items as u64).or_default().add(1, compute);
    }

    /// `requests` requests failed after `spent` in the executor (together).
    pub(crate) fn record_failures(&self, requests: usize, spent: Duration) {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.stats.fail.add(requests as u64, spent);
    }

    /// The statistics of model `name` on this node.
    pub(crate) fn doc(&self, name: &str) -> ModelStatisticsDoc {
        let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        ModelStatisticsDoc {
            name: name.to_string(),
            version: "1".into(),
            last_inference: inner.last_inference,
            inference_count: inner.inference_count,
            execution_count: inner.execution_count,
            inference_stats: inner.stats.clone(),
            batch_stats: inner
                .batches
                .iter()
                .map(|(&batch_size, &compute)| BatchStats {
                    batch_size,
                    compute_infer: compute,
                    ..BatchStats::default()
                })
                .collect(),
            memory_usage: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Counters, merge};

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn runs_count_items_requests_and_time_per_stage() {
        let counters = Counters::default();
        counters.record_run(8, 2, 4 * MS, 2 * MS, 1_000);
        counters.record_run(1, 1, MS, 5 * MS, 2_000);
        counters.record_failures(2, 4 * MS);
        let doc = counters.doc("tiny");
        assert_eq!((doc.inference_count, doc.execution_count, doc.last_inference), (9, 2, 2_000));
        let stats = &doc.inference_stats;
        assert_eq!((stats.queue.count, stats.queue.ns), (3, 5_000_000));
        assert_eq!((stats.compute_infer.count, stats.compute_infer.ns), (3, 9_000_000));
        assert_eq!((stats.success.count, stats.success.ns), (3, 14_000_000));
        assert_eq!((stats.fail.count, stats.fail.ns), (2, 4_000_000));
        let batches: Vec<_> = doc.batch_stats.iter().map(|b| (b.batch_size, b.compute_infer.count)).collect();
        assert_eq!(batches, [(1, 1), (8, 1)]);
    }

    #[test]
    fn merging_sums_counts_per_model_and_batch_size() {
        let (a, b, other) = (Counters::default(), Counters::default(), Counters::default());
        a.record_run(4, 1, MS, MS, 10);
        b.record_run(4, 1, MS, MS, 30);
        b.record_run(2, 1, MS, MS, 20);
        other.record_run(1, 1, MS, MS, 5);
        let merged = merge([a.doc("m"), other.doc("z"), b.doc("m")]);
        let names: Vec<_> = merged.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["m", "z"]);
        let m = &merged[0];
        assert_eq!((m.inference_count, m.execution_count, m.last_inference), (10, 3, 30));
        let batches: Vec<_> = m.batch_stats.iter().map(|b| (b.batch_size, b.compute_infer.count)).collect();
        assert_eq!(batches, [(2, 1), (4, 2)]);
    }
}
