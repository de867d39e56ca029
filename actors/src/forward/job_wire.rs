//! The bytes of a job submit with an idempotency key, sent by the node
//! that took it to the key's home, and of its answer (postcard; decoding
//! never panics).

use serde::{Deserialize, Serialize};

/// A keyed submit: the key and the job's request as stored
/// (`job_owner::payload::Payload` bytes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyedSubmit {
    pub key: String,
    pub payload: Vec<u8>,
}

/// The home's answer: the job accepted or found (its record as JSON, as
/// job status answers carry it), or why not (a refused
/// [`crate::forward::ForwardReply`]'s bytes, which carry any error).
pub type SubmitAnswer = Result<String, Vec<u8>>;
