//! The job owner's next step (pure). The dispatcher (`dispatch`) tells
//! [`JobSteps::next`] what just happened to a job and carries out the step
//! it returns: choose a node, dispatch there, wait, record an event,
//! collect a result held through a restart, release held results, or stop.
//! Every state change itself goes through the storage state machine; this
//! decides which change to ask for.
//!
//! The rules:
//! - a job whose stored request does not decode fails for good;
//! - a job found mid-attempt at a restart asks the node of that attempt for
//!   the result it holds (waiting while the attempt still runs there);
//!   without one the attempt counts as failed and the job goes back for
//!   another;
//! - no node to choose: wait and choose again, [`NO_NODE_WAITS`] times in
//!   all, then fail (right after a start gossip may not list the model's
//!   nodes yet, so an unknown model waits like an unavailable one); a bad
//!   request fails at once;
//! - an attempt's client error fails the job; any other failure is
//!   retryable (the state machine bounds attempts by [`MAX_JOB_ATTEMPTS`]);
//! - once completed, every other node that ran an attempt may drop the
//!   result it holds.

use std::time::Duration;

use gpumesh_storage::jobs::{JobEvent, JobRecord, JobState};

use crate::executor::InferError;

/// Dispatches of one job before it fails.
pub const MAX_JOB_ATTEMPTS: u32 = 3;
/// Wait before asking the router again when no node can take the job.
pub const NO_NODE_BACKOFF: Duration = Duration::from_millis(500);
/// How many times a job waits for a node before it fails.
pub const NO_NODE_WAITS: u32 = 20;

/// What the dispatcher saw last.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// It took up the job as stored; `readable`: its request decodes;
    /// `held`: a node that ran an attempt keeps its result for the owner
    /// (a tensor job; a language-model job is assembled by its owner, so
    /// an attempt the owner did not see end is lost with it).
    Loaded { readable: bool, held: bool },
    /// The node of the interrupted attempt answered with the node that ran
    /// it and its reply bytes, or held no result (or could not be asked).
    Collected(Option<(String, Vec<u8>)>),
    /// The router chose this node, or none.
    Chosen(Result<String, InferError>),
    /// It waited after no node could be chosen.
    Waited,
    /// The attempt ended: the node that ran it and its reply bytes, or why not.
    Ran(Result<(String, Vec<u8>), InferError>),
    /// The event of the last step is recorded; the job is as it now stands.
    Recorded,
}

/// What the dispatcher does next.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Ask the router for a node for attempt `attempt`, trying the nodes in
    /// `avoid` last; `last_error` explains an earlier failure.
    Choose { attempt: usize, avoid: Vec<String>, last_error: Option<InferError> },
    /// Record the dispatch to `target`, then run the job there.
    Dispatch { target: String },
    /// Wait this long, then report [`Outcome::Waited`].
    Wait(Duration),
    /// Record this event.
    Record(JobEvent),
    /// Ask `from` for the result of the attempt the owner's restart cut off.
    Collect { from: String },
    /// The job completed: these other nodes may hold its result; tell them
    /// to drop it once the completion is on disk.
    Release { nodes: Vec<String> },
    /// Nothing more to do for this job.
    Stop,
}

/// The dispatcher's memory of one job between steps.
#[derive(Debug)]
pub struct JobSteps {
    me: String,
    waits: u32,
    last_error: Option<InferError>,
}

impl JobSteps {
    /// Steps of a job owned by node `me`.
    pub fn new(me: &str) -> Self {
        Self { me: me.to_string(), waits: 0, last_error: None }
    }

    /// The step after `outcome`, for `job` as it stands.
    pub fn next(&mut self, job: &JobRecord, outcome: Outcome) -> Step {
        match outcome {
            Outcome::Loaded { readable: false, .. } => {
                Step::Record(JobEvent::Failed { reason: "the stored request is unreadable".into(), retryable: false })
            }
            Outcome::Loaded { readable: true, .. } if job.state.is_final() => Step::Stop,
            Outcome::Loaded { readable: true, .. } if job.state == JobState::Accepted => self.choose(job),
            // The owner stopped during this attempt: the node running it
            // keeps the result; without one, the attempt is lost.
            Outcome::Loaded { readable: true, held } => {
                match job.node.as_deref().filter(|node| held && *node != self.me) {
                    Some(node) => Step::Collect { from: node.to_string() },
                    None => lost_attempt(job),
                }
            }
            Outcome::Collected(Some((node, outputs))) => Step::Record(JobEvent::Completed { node, outputs }),
            Outcome::Collected(None) => lost_attempt(job),
            Outcome::Chosen(Ok(target)) => Step::Dispatch { target },
            Outcome::Chosen(Err(error @ InferError::BadRequest(_))) => fail(&error),
            Outcome::Chosen(Err(error)) if self.waits < NO_NODE_WAITS => {
                self.waits += 1;
                self.last_error = Some(error);
                Step::Wait(NO_NODE_BACKOFF)
            }
            Outcome::Chosen(Err(error)) => fail(&error),
            Outcome::Waited => self.choose(job),
            Outcome::Ran(Ok((node, outputs))) => Step::Record(JobEvent::Completed { node, outputs }),
            Outcome::Ran(Err(InferError::BadRequest(reason))) => {
                Step::Record(JobEvent::Failed { reason, retryable: false })
            }
            Outcome::Ran(Err(error)) => {
                let reason = error.to_string();
                self.last_error = Some(error);
                Step::Record(JobEvent::Failed { reason, retryable: true })
            }
            Outcome::Recorded => match job.state {
                JobState::Accepted => self.choose(job),
                JobState::Completed => self.release(job),
                // Failed is final; a recorded step never leaves a job
                // dispatched or running (those come from `Dispatch`).
                JobState::Failed | JobState::Dispatched | JobState::Running => Step::Stop,
            },
        }
    }

    fn choose(&self, job: &JobRecord) -> Step {
        // Nodes that already ran an attempt of this job are tried last.
        let avoid = job.history.iter().filter_map(|step| step.node.clone()).collect();
        Step::Choose { attempt: job.attempts as usize + 1, avoid, last_error: self.last_error.clone() }
    }

    fn release(&self, job: &JobRecord) -> Step {
        let mut nodes: Vec<String> =
            job.history.iter().filter_map(|step| step.node.clone()).filter(|node| *node != self.me).collect();
        nodes.sort_unstable();
        nodes.dedup();
        if nodes.is_empty() { Step::Stop } else { Step::Release { nodes } }
    }
}

fn fail(error: &InferError) -> Step {
    Step::Record(JobEvent::Failed { reason: error.to_string(), retryable: false })
}

fn lost_attempt(job: &JobRecord) -> Step {
    let reason = format!("owner restarted during attempt {}", job.attempts);
    Step::Record(JobEvent::Failed { reason, retryable: true })
}

#[cfg(test)]
mod tests;
