//! The job state machine (pure): `accepted -> dispatched -> running ->
//! completed | failed`, with attempts counted. Every change to a job goes
//! through [`apply`], which refuses anything that would move a job's
//! history backwards.
//!
//! History is ordered by (attempt, state): a re-dispatch after a lost
//! target starts a new attempt, so `running` on attempt 1 followed by
//! `dispatched` on attempt 2 moves forward. A final state never changes:
//! the first completion wins and is the one every reader sees.

use serde::{Deserialize, Serialize};

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Accepted,
    Dispatched,
    Running,
    Completed,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Dispatched => "dispatched",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    /// Completed or failed: the job will not change again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

/// One step of a job's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub state: JobState,
    pub attempt: u32,
    pub node: Option<String>,
    pub at_ms: u64,
}

/// A durable job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub model: String,
    pub state: JobState,
    /// Dispatches so far.
    pub attempts: u32,
    /// The executing node of the current attempt.
    pub node: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub idempotency_key: Option<String>,
    /// The request as the client sent it (opaque to storage).
    pub request: Vec<u8>,
    /// The outputs (opaque) once completed.
    pub outputs: Option<Vec<u8>>,
    pub error: Option<String>,
    pub history: Vec<Step>,
}

impl JobRecord {
    /// A job just accepted.
    pub fn accepted(id: String, model: String, request: Vec<u8>, idempotency_key: Option<String>, now_ms: u64) -> Self {
        Self {
            id,
            model,
            state: JobState::Accepted,
            attempts: 0,
            node: None,
            created_ms: now_ms,
            updated_ms: now_ms,
            idempotency_key,
            request,
            outputs: None,
            error: None,
            history: vec![Step { state: JobState::Accepted, attempt: 0, node: None, at_ms: now_ms }],
        }
    }
}

/// Something that happened to a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobEvent {
    /// Sent to `node`, starting a new attempt.
    Dispatched { node: String },
    /// `node` started running it (ignored unless it is the current attempt's node).
    Started { node: String },
    /// `node` finished it with `outputs`.
    Completed { node: String, outputs: Vec<u8> },
    /// It failed; `retryable` failures go back for another attempt while
    /// attempts remain.
    Failed { reason: String, retryable: bool },
}

/// Why an event does not apply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("job is already {0}")]
    Final(&'static str),
    #[error("event for node {event_node} but attempt {attempt} runs on {current:?}")]
    StaleNode { event_node: String, attempt: u32, current: Option<String> },
    #[error("a job cannot start running before it is dispatched")]
    NotDispatched,
    #[error("job has used all {0} attempts")]
    NoAttemptsLeft(u32),
}

/// Applies `event` to `job` at `now_ms`; `max_attempts` bounds dispatches.
/// Returns the new record, or why the event is refused (the record stands).
pub fn apply(job: &JobRecord, event: JobEvent, now_ms: u64, max_attempts: u32) -> Result<JobRecord, TransitionError> {
    if job.state.is_final() {
        return Err(TransitionError::Final(job.state.as_str()));
    }
    let mut next = job.clone();
    match event {
        JobEvent::Dispatched { node } => {
            if job.attempts >= max_attempts {
                return Err(TransitionError::NoAttemptsLeft(max_attempts));
            }
            next.attempts += 1;
            next.state = JobState::Dispatched;
            next.node = Some(node);
        }
        JobEvent::Started { node } => {
            check_node(job, &node)?;
            if job.state == JobState::Accepted {
                return Err(TransitionError::NotDispatched);
            }
            next.state = JobState::Running;
        }
        JobEvent::Completed { node, outputs } => {
            // A completion from any node that ran an attempt is a valid
            // result: inference is idempotent, and the first one wins.
            next.state = JobState::Completed;
            next.node = Some(node);
            next.outputs = Some(outputs);
        }
        JobEvent::Failed { reason, retryable } => {
            if retryable && job.attempts < max_attempts {
                next.state = JobState::Accepted;
                next.node = None;
            } else {
                next.state = JobState::Failed;
            }
            next.error = Some(reason);
        }
    }
    next.updated_ms = now_ms.max(job.updated_ms);
    // `accepted` is recorded once, at creation: a job waiting for another
    // attempt keeps its last step (and its error), and the next dispatch
    // opens a higher attempt, so the history only moves forward.
    if next.state != JobState::Accepted {
        next.history.push(Step {
            state: next.state,
            attempt: next.attempts,
            node: next.node.clone(),
            at_ms: next.updated_ms,
        });
    }
    debug_assert!(is_monotone(&next.history));
    Ok(next)
}

fn check_node(job: &JobRecord, node: &str) -> Result<(), TransitionError> {
    if job.node.as_deref() == Some(node) {
        Ok(())
    } else {
        Err(TransitionError::StaleNode {
            event_node: node.to_string(),
            attempt: job.attempts,
            current: job.node.clone(),
        })
    }
}

/// True when every step is at or after the one before in (attempt, state)
/// order and time.
pub fn is_monotone(history: &[Step]) -> bool {
    history.windows(2).all(|pair| {
        let (a, b) = (&pair[0], &pair[1]);
        (a.attempt, a.state) <= (b.attempt, b.state) && a.at_ms <= b.at_ms && !a.state.is_final()
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn job() -> JobRecord {
        JobRecord::accepted("n1.0001".into(), "tiny".into(), vec![1, 2], None, 10)
    }

    fn dispatched(node: &str) -> JobEvent {
        JobEvent::Dispatched { node: node.into() }
    }

    #[test]
    fn the_happy_path() {
        let j = apply(&job(), dispatched("c"), 11, 3).expect("dispatch");
        let j = apply(&j, JobEvent::Started { node: "c".into() }, 12, 3).expect("start");
        let j = apply(&j, JobEvent::Completed { node: "c".into(), outputs: vec![9] }, 13, 3).expect("complete");
        assert_eq!(
            (j.state, j.attempts, j.node.as_deref(), j.outputs.as_deref()),
            (JobState::Completed, 1, Some("c"), Some(&[9u8][..]))
        );
        let states: Vec<JobState> = j.history.iter().map(|s| s.state).collect();
        assert_eq!(states, vec![JobState::Accepted, JobState::Dispatched, JobState::Running, JobState::Completed]);
        assert!(is_monotone(&j.history));
    }

    #[test]
    fn first_completion_wins() {
        let j = apply(&job(), dispatched("c"), 11, 3).expect("dispatch");
        let j = apply(&j, JobEvent::Completed { node: "c".into(), outputs: vec![1] }, 12, 3).expect("complete");
        let late = apply(&j, JobEvent::Completed { node: "b".into(), outputs: vec![2] }, 13, 3);
        assert_eq!(late, Err(TransitionError::Final("completed")));
    }

    #[test]
    fn a_lost_target_is_redispatched_as_a_new_attempt() {
        let j = apply(&job(), dispatched("c"), 11, 3).expect("dispatch");
        let j = apply(&j, JobEvent::Started { node: "c".into() }, 12, 3).expect("start");
        let j = apply(&j, JobEvent::Failed { reason: "c died".into(), retryable: true }, 13, 3).expect("retry");
        assert_eq!((j.state, j.node.clone()), (JobState::Accepted, None));
        let j = apply(&j, dispatched("b"), 14, 3).expect("dispatch again");
        assert_eq!((j.state, j.attempts), (JobState::Dispatched, 2));
        assert!(matches!(
            apply(&j, JobEvent::Started { node: "c".into() }, 15, 3),
            Err(TransitionError::StaleNode { .. })
        ));
        assert!(is_monotone(&j.history));
    }

    #[test]
    fn failures_that_retrying_cannot_fix_or_too_many_attempts_are_final() {
        let j = apply(&job(), dispatched("c"), 11, 3).expect("dispatch");
        let bad = apply(&j, JobEvent::Failed { reason: "bad input".into(), retryable: false }, 12, 3).expect("fail");
        assert_eq!(bad.state, JobState::Failed);
        let mut j = job();
        for attempt in 0..3 {
            j = apply(&j, dispatched("c"), 20 + attempt, 3).expect("dispatch");
            j = apply(&j, JobEvent::Failed { reason: "timeout".into(), retryable: true }, 21 + attempt, 3)
                .expect("fail");
        }
        assert_eq!((j.state, j.attempts), (JobState::Failed, 3));
    }

    fn arbitrary_event() -> impl Strategy<Value = JobEvent> {
        prop_oneof![
            "[a-c]".prop_map(|node| JobEvent::Dispatched { node }),
            "[a-c]".prop_map(|node| JobEvent::Started { node }),
            "[a-c]".prop_map(|node| JobEvent::Completed { node, outputs: vec![1] }),
            any::<bool>().prop_map(|retryable| JobEvent::Failed { reason: "x".into(), retryable }),
        ]
    }

    proptest! {
        /// Whatever events arrive, in any order, the history never goes
        /// backwards and a final state never changes.
        #[test]
        fn history_is_monotone_under_any_events(events in proptest::collection::vec((arbitrary_event(), 0u64..5), 0..30)) {
            let mut j = job();
            let mut now = 10;
            let mut final_state = None;
            for (event, step) in events {
                now += step;
                if let Ok(next) = apply(&j, event, now, 3) {
                    prop_assert!(final_state.is_none(), "a final job changed");
                    j = next;
                    if j.state.is_final() {
                        final_state = Some(j.state);
                    }
                }
                prop_assert!(is_monotone(&j.history));
                prop_assert!(j.attempts <= 3);
            }
        }
    }
}
