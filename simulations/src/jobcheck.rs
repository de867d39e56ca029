//! The job invariants, checked against what is on each owner's disk (the
//! only states readers can see): no acknowledged job lost, at most one
//! completed result per job, histories that never go back, and every
//! acknowledged job completed within the bound with its own result. Also:
//! no new work sent to a node longer than the detection bound after it died.

use std::collections::{BTreeMap, BTreeSet};

use gpumesh_storage::jobs::{JobRecord, JobState, Step, is_monotone};

use crate::ledger::{Accepted, LedgerInner};
use crate::peers::SentWork;
use crate::report::JobCounts;
use crate::store::SimJobStore;
use crate::workload::echoed;

/// What was last seen of a job on disk.
struct Seen {
    history: Vec<Step>,
    outputs: Option<Vec<u8>>,
}

#[derive(Default)]
pub(crate) struct JobChecker {
    seen: BTreeMap<String, Seen>,
    pub(crate) failures: Vec<String>,
    /// Jobs seen completed with a second, different result.
    duplicate_visible: u64,
}

impl JobChecker {
    /// Compares every job version flushed to disk since the last call with
    /// what was seen before: called after every step, it sees every flush.
    pub(crate) fn observe(&mut self, stores: &BTreeMap<String, SimJobStore>) {
        for job in stores.values().flat_map(SimJobStore::flushed_jobs) {
            if !is_monotone(&job.history) {
                self.failures.push(format!("job {} has a history that goes back: {:?}", job.id, job.history));
            }
            let outputs = (job.state == JobState::Completed).then(|| job.outputs.clone().unwrap_or_default());
            if let Some(seen) = self.seen.get(&job.id) {
                if !job.history.starts_with(&seen.history) {
                    self.failures.push(format!("job {} went back to {} on disk", job.id, job.state.as_str()));
                }
                if let (Some(before), Some(now)) = (&seen.outputs, &outputs)
                    && before != now
                {
                    self.duplicate_visible += 1;
                    self.failures.push(format!("job {} showed a second, different result", job.id));
                }
                if seen.outputs.is_some() && outputs.is_none() {
                    self.failures.push(format!("job {} lost its completed result", job.id));
                }
            }
            let outputs = outputs.or_else(|| self.seen.get(&job.id).and_then(|seen| seen.outputs.clone()));
            self.seen.insert(job.id.clone(), Seen { history: job.history.clone(), outputs });
        }
    }

    /// The end of the run: every acknowledged job completed, with its own
    /// result, by `deadline_unix_ms`. Jobs owned by a node restarted without
    /// its disk are not checked: no promise survives losing the disk.
    pub(crate) fn finish(
        &mut self,
        ledger: &LedgerInner,
        stores: &BTreeMap<String, SimJobStore>,
        deadline_unix_ms: u64,
        wiped: &BTreeSet<String>,
    ) -> JobCounts {
        // A reader waits for a flush before it answers (the node flushes
        // for it), so what readers see at the end is each store flushed.
        for store in stores.values() {
            let _ = gpumesh_storage::JobStore::flush(store);
        }
        self.observe(stores);
        let on_disk: BTreeMap<String, JobRecord> =
            stores.values().flat_map(SimJobStore::durable_jobs).map(|job| (job.id.clone(), job)).collect();
        let owned_by_wiped =
            |id: &str| gpumesh_actors::job_owner::owner_of(id).is_some_and(|owner| wiped.contains(owner));
        let checked: Vec<(&String, &Accepted)> = ledger.accepted.iter().filter(|(id, _)| !owned_by_wiped(id)).collect();
        let mut counts =
            JobCounts { accepted: checked.len() as u64, moved_keys: ledger.moved_keys, ..JobCounts::default() };
        for conflict in &ledger.conflicts {
            if !conflict.owners.iter().any(|owner| wiped.contains(owner)) {
                self.failures.push(conflict.message.clone());
            }
        }
        for (id, accepted) in checked {
            let Some(job) = on_disk.get(id) else {
                counts.lost += 1;
                self.failures.push(format!("acknowledged job {id} is on no disk: lost"));
                continue;
            };
            match job.state {
                JobState::Completed => {
                    counts.completed += 1;
                    if let Some(wrong) = wrong_result(job, accepted) {
                        self.failures.push(format!("job {id} completed {wrong}"));
                    }
                    if job.updated_ms > deadline_unix_ms {
                        self.failures.push(format!("job {id} completed after the bound"));
                    }
                }
                JobState::Failed => {
                    counts.failed += 1;
                    self.failures.push(format!("acknowledged job {id} failed: {:?}", job.error));
                }
                _ => self.failures.push(format!("acknowledged job {id} is still {} at the end", job.state.as_str())),
            }
        }
        counts.duplicate_visible = self.duplicate_visible;
        counts
    }
}

/// What is wrong with a completed job's result, if anything.
fn wrong_result(job: &JobRecord, accepted: &Accepted) -> Option<String> {
    match accepted {
        Accepted::Tensor { value } => {
            let got = gpumesh_actors::job_owner::job_outputs(job).and_then(|(_, response)| echoed(&response));
            (got != Some(*value)).then(|| format!("with {got:?}, not its own {value}"))
        }
        Accepted::Llm { text } => {
            let answer = gpumesh_actors::job_owner::llm_answer(job);
            let content = answer.as_ref().and_then(|answer| answer["choices"][0]["message"]["content"].as_str());
            let content = content.unwrap_or_default();
            (content != text).then(|| format!("with a text that {}", crate::llmload::differs(content, text)))
        }
    }
}

/// Work sent to a node more than `detect_ms` after it crashed and before it
/// restarted; `downtimes` maps a node to its (crash, restart) times.
pub(crate) fn late_work(
    work: &[SentWork],
    downtimes: &BTreeMap<String, Vec<(u64, u64)>>,
    detect_ms: u64,
) -> Vec<String> {
    work.iter()
        .filter(|sent| {
            downtimes.get(&sent.to).is_some_and(|spans| {
                spans.iter().any(|&(crash, restart)| sent.at_ms > crash + detect_ms && sent.at_ms < restart)
            })
        })
        .map(|sent| {
            format!(
                "{} sent work to {} at {} ms, after the detection bound of its crash",
                sent.from, sent.to, sent.at_ms
            )
        })
        .collect()
}
