//! The bytes the sled job store keeps (pure): a job's record (its
//! metadata as JSON, then its outputs) and the keys of its state index.

use serde::{Deserialize, Serialize};

use crate::jobs::state::{JobRecord, JobState, Step};
use crate::{Error, Result};

/// What a record keeps of a job besides its request and outputs.
#[derive(Serialize, Deserialize)]
pub(super) struct Meta {
    pub(super) id: String,
    pub(super) model: String,
    pub(super) state: JobState,
    pub(super) attempts: u32,
    pub(super) node: Option<String>,
    pub(super) created_ms: u64,
    pub(super) updated_ms: u64,
    pub(super) idempotency_key: Option<String>,
    pub(super) error: Option<String>,
    pub(super) history: Vec<Step>,
}

fn meta_of(job: &JobRecord) -> Meta {
    Meta {
        id: job.id.clone(),
        model: job.model.clone(),
        state: job.state,
        attempts: job.attempts,
        node: job.node.clone(),
        created_ms: job.created_ms,
        updated_ms: job.updated_ms,
        idempotency_key: job.idempotency_key.clone(),
        error: job.error.clone(),
        history: job.history.clone(),
    }
}

pub(super) fn job_of(meta: Meta, request: Vec<u8>, outputs: Option<Vec<u8>>) -> JobRecord {
    JobRecord {
        id: meta.id,
        model: meta.model,
        state: meta.state,
        attempts: meta.attempts,
        node: meta.node,
        created_ms: meta.created_ms,
        updated_ms: meta.updated_ms,
        idempotency_key: meta.idempotency_key,
        request,
        outputs,
        error: meta.error,
        history: meta.history,
    }
}

/// The first byte of a record.
const RECORD_VERSION: u8 = 1;

/// A record: version, metadata length (u32, big endian), metadata JSON,
/// then 1 and the outputs, or 0.
pub(super) fn encode_record(job: &JobRecord) -> Result<Vec<u8>> {
    let meta = serde_json::to_vec(&meta_of(job)).map_err(|_| Error::Corrupt { what: "job record" })?;
    let meta_len = u32::try_from(meta.len()).map_err(|_| Error::Corrupt { what: "job record" })?;
    let outputs = job.outputs.as_deref();
    let mut bytes = Vec::with_capacity(6 + meta.len() + outputs.map_or(0, <[u8]>::len));
    bytes.push(RECORD_VERSION);
    bytes.extend(meta_len.to_be_bytes());
    bytes.extend(meta);
    match outputs {
        Some(outputs) => {
            bytes.push(1);
            bytes.extend(outputs);
        }
        None => bytes.push(0),
    }
    Ok(bytes)
}

pub(super) fn decode_record(bytes: &[u8]) -> Result<(Meta, Option<Vec<u8>>)> {
    let corrupt = || Error::Corrupt { what: "job record" };
    let (&version, rest) = bytes.split_first().ok_or_else(corrupt)?;
    if version != RECORD_VERSION || rest.len() < 4 {
        return Err(corrupt());
    }
    let (len, rest) = rest.split_at(4);
    let len = u32::from_be_bytes(len.try_into().map_err(|_| corrupt())?) as usize;
    if rest.len() < len + 1 {
        return Err(corrupt());
    }
    let (meta, rest) = rest.split_at(len);
    let meta: Meta = serde_json::from_slice(meta).map_err(|_| corrupt())?;
    let outputs = match rest.split_first() {
        Some((0, [])) => None,
        Some((1, outputs)) => Some(outputs.to_vec()),
        _ => return Err(corrupt()),
    };
    Ok((meta, outputs))
}

pub(super) fn state_byte(state: JobState) -> u8 {
    match state {
        JobState::Accepted => 0,
        JobState::Dispatched => 1,
        JobState::Running => 2,
        JobState::Completed => 3,
        JobState::Failed => 4,
    }
}

pub(super) fn index_key(state: JobState, created_ms: u64, id: &str) -> Vec<u8> {
    let mut key = vec![state_byte(state)];
    key.extend(created_ms.to_be_bytes());
    key.extend(id.as_bytes());
    key
}

/// The created time and id an index key names.
pub(super) fn parse_index_key(key: &[u8]) -> Result<(u64, String)> {
    let corrupt = || Error::Corrupt { what: "job index" };
    let created = key.get(1..9).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).ok_or_else(corrupt)?;
    let id = key.get(9..).and_then(|b| String::from_utf8(b.to_vec()).ok()).ok_or_else(corrupt)?;
    Ok((created, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_damaged_bytes_are_refused() {
        let mut job = JobRecord::accepted("n1.1".into(), "tiny".into(), vec![7; 10], Some("k".into()), 5);
        for outputs in [None, Some(vec![]), Some(vec![1, 2, 3])] {
            job.outputs = outputs;
            let bytes = encode_record(&job).expect("encode");
            let (meta, outputs) = decode_record(&bytes).expect("decode");
            assert_eq!(job_of(meta, job.request.clone(), outputs), job);
            for cut in 0..bytes.len().min(40) {
                assert!(decode_record(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
        let mut other_version = encode_record(&job).expect("encode");
        other_version[0] = 9;
        assert!(decode_record(&other_version).is_err());
        let key = index_key(JobState::Running, 42, "n1.1");
        assert_eq!(parse_index_key(&key).expect("parse"), (42, "n1.1".to_string()));
        assert!(parse_index_key(&key[..5]).is_err());
    }
}
