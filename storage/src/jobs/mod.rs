//! Durable asynchronous jobs.
//!
//! - `state`: the job state machine (pure).
//! - `store`: the [`JobStore`] trait and its sled implementation.
//! - `commit`: group commit, so concurrent submits share one flush.

mod commit;
pub mod state;
mod store;

pub use commit::{DurableJobs, Flusher};
pub use state::{JobEvent, JobRecord, JobState, Step, TransitionError, apply, is_monotone};
pub use store::{Inserted, JobStore, Retention, SledJobStore, StateFilter};
