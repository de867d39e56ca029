//! Where this node takes the jobs it will own: [`Intake`] stores a new job
//! (or finds the one of its key) and starts its dispatch; [`JobDoor`] is
//! how the forward endpoint, which starts before the job service, hands it
//! the keyed submits other nodes send to this node, the key's home.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use gpumesh_storage::jobs::{Inserted, JobRecord};

use crate::executor::InferError;
use crate::forward::ForwardReply;
use crate::forward::job_wire::{KeyedSubmit, SubmitAnswer};
use crate::job_owner::dispatch::{self, Owner};
use crate::job_owner::payload::Payload;
use crate::job_owner::storage_error;

/// Retry-After of a submit refused for too many active jobs.
const TOO_MANY_JOBS_RETRY_MS: u64 = 1000;

/// Takes the jobs this node will own.
pub(super) struct Intake {
    owner: Arc<Owner>,
    max_active: u64,
    prefix: String,
    next_seq: AtomicU64,
}

impl Intake {
    pub(super) fn new(owner: Arc<Owner>, max_active: u64, generation: u64) -> Self {
        let prefix = format!("{}.{:x}-", owner.me, generation);
        Self { owner, max_active, prefix, next_seq: AtomicU64::new(1) }
    }

    fn new_id(&self) -> String {
        format!("{}{:x}", self.prefix, self.next_seq.fetch_add(1, Ordering::Relaxed))
    }

    /// Stores a new job (or finds the one of its key) and dispatches it. A
    /// place among the `max_active` unfinished jobs is taken before the job
    /// is written, so the cap holds under concurrent submits; beyond it a
    /// new job is refused (429) while a repeated key still finds its job.
    pub(super) async fn accept(
        &self,
        payload: Payload,
        idempotency_key: Option<String>,
    ) -> Result<JobRecord, InferError> {
        let owner = &self.owner;
        if owner.active.fetch_add(1, Ordering::Relaxed) >= self.max_active {
            owner.active.fetch_sub(1, Ordering::Relaxed);
            return self
                .existing(idempotency_key.as_deref())
                .await?
                .ok_or(InferError::TooManyJobs { active: self.max_active, retry_after_ms: TOO_MANY_JOBS_RETRY_MS });
        }
        let model = payload.model().unwrap_or_default().to_string();
        let job = JobRecord::accepted(self.new_id(), model, payload.encode(), idempotency_key, owner.clock.unix_ms());
        let inserted = owner.store.submit(job).await;
        if !matches!(inserted, Ok(Inserted::New(_))) {
            owner.active.fetch_sub(1, Ordering::Relaxed);
        }
        match inserted.map_err(storage_error)? {
            Inserted::New(job) => {
                tokio::spawn(dispatch::run(owner.clone(), job.clone()));
                Ok(job)
            }
            Inserted::Existing(job) => Ok(job),
        }
    }

    /// The job already stored under `key`, once on disk.
    async fn existing(&self, key: Option<&str>) -> Result<Option<JobRecord>, InferError> {
        let Some(key) = key else { return Ok(None) };
        let found = self.owner.store.store().by_key(key).map_err(storage_error)?;
        if found.is_some() {
            self.owner.store.wait_durable().await.map_err(storage_error)?;
        }
        Ok(found)
    }
}

/// The forward endpoint's way to this node's [`Intake`], opened once the
/// job service runs; it does not keep a stopped service alive.
#[derive(Clone, Default)]
pub struct JobDoor(Arc<OnceLock<Weak<Intake>>>);

impl JobDoor {
    pub(super) fn open(&self, intake: &Arc<Intake>) {
        let _ = self.0.set(Arc::downgrade(intake));
    }

    /// Takes a keyed submit another node sent here (a [`KeyedSubmit`]'s
    /// bytes) and answers with a [`SubmitAnswer`]'s bytes. The job is
    /// accepted here, never sent on: the sender chose this node as the
    /// key's home, and a second hop could loop while views differ.
    pub(crate) async fn take(&self, bytes: &[u8]) -> Vec<u8> {
        let answer = match self.accept(bytes).await {
            Ok(job) => serde_json::to_string(&job)
                .map_err(|error| InferError::Failed(format!("could not write the job record: {error}"))),
            Err(error) => Err(error),
        };
        let answer: SubmitAnswer = answer.map_err(|error| ForwardReply::Refused(error).encode());
        crate::llm::wire::encode(&answer)
    }

    async fn accept(&self, bytes: &[u8]) -> Result<JobRecord, InferError> {
        let Some(submit) = crate::llm::wire::decode::<KeyedSubmit>(bytes) else {
            return Err(InferError::BadRequest("malformed keyed job submit from a peer".into()));
        };
        let payload = Payload::decode(&submit.payload);
        if payload == Payload::Unreadable {
            return Err(InferError::BadRequest("a peer sent a job whose request does not decode".into()));
        }
        let Some(intake) = self.0.get().and_then(Weak::upgrade) else {
            return Err(InferError::Unavailable("this node's job service is not running; retry".into()));
        };
        intake.accept(payload, Some(submit.key)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::InferRequest;

    fn refusal(answer: &[u8]) -> InferError {
        let answer = crate::llm::wire::decode::<SubmitAnswer>(answer).expect("an answer");
        match ForwardReply::decode(&answer.expect_err("a refusal")) {
            ForwardReply::Refused(error) => error,
            ForwardReply::Done { .. } => panic!("a refusal carries an error"),
        }
    }

    #[tokio::test]
    async fn a_door_refuses_what_does_not_decode_and_answers_unavailable_until_it_opens() {
        let door = JobDoor::default();
        assert!(matches!(refusal(&door.take(b"junk").await), InferError::BadRequest(_)));
        let unreadable = crate::llm::wire::encode(&KeyedSubmit { key: "k".into(), payload: b"junk".to_vec() });
        assert!(matches!(refusal(&door.take(&unreadable).await), InferError::BadRequest(_)));
        let payload = Payload::Tensor {
            model: "m".into(),
            request: InferRequest { inputs: vec![], outputs: vec![], priority: 0 },
        };
        let valid = crate::llm::wire::encode(&KeyedSubmit { key: "k".into(), payload: payload.encode() });
        assert!(matches!(refusal(&door.take(&valid).await), InferError::Unavailable(_)));
    }
}
