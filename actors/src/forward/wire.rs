//! The bytes of a forwarded request and its reply (pure).
//!
//! Tensors travel as raw little-endian bytes, never JSON. ractor_cluster's
//! `BytesConvertable::from_bytes` cannot fail, so decoding maps any
//! malformed input to an explicit `Invalid` value instead of panicking:
//! every length is checked against what is left and against the limits.

use std::time::Duration;

use crate::executor::{InferError, InferRequest, InferResponse};
use crate::tensor::{DataType, Tensor, TensorData, element_count};

const REQUEST_MAGIC: &[u8; 4] = b"GMF1";
const REPLY_MAGIC: &[u8; 4] = b"GMR1";
/// The answer to a held-result call while the job still runs or waits
/// there (a held result starts with [`REPLY_MAGIC`]; none is empty).
pub(crate) const STILL_RUNNING: &[u8; 4] = b"GMJR";
/// Most tensors in one message.
const MAX_TENSORS: usize = 256;
/// Most dimensions of one tensor.
const MAX_RANK: usize = 16;
/// Most elements of one tensor.
const MAX_ELEMENTS: usize = 16 * 1024 * 1024;
/// Longest string (names, messages).
const MAX_STRING: usize = 64 * 1024;

/// A request forwarded to another node.
#[derive(Clone, Debug, PartialEq)]
pub enum ForwardRequest {
    Valid {
        model: String,
        /// Nodes the request passed through, the sender last.
        route: Vec<String>,
        /// The job this request runs for: the executing node keeps the
        /// result until the job's owner has it.
        job: Option<String>,
        request: InferRequest,
    },
    /// Bytes that did not decode; the reason says why.
    Invalid(String),
}

/// The reply to a forwarded request.
#[derive(Clone, Debug, PartialEq)]
pub enum ForwardReply {
    Done { node: String, response: InferResponse },
    Refused(InferError),
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend(v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend(v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
        self.0.extend(s.as_bytes());
    }
    fn tensors(&mut self, tensors: &[Tensor]) {
        self.u32(u32::try_from(tensors.len()).unwrap_or(u32::MAX));
        for tensor in tensors {
            self.str(&tensor.name);
            self.u8(tensor.datatype().code());
            self.u8(u8::try_from(tensor.shape.len()).unwrap_or(u8::MAX));
            for &dim in &tensor.shape {
                self.u64(dim as u64);
            }
            let start = self.0.len();
            self.u64(0);
            tensor.data.write_le_bytes(&mut self.0);
            let length = (self.0.len() - start - 8) as u64;
            self.0[start..start + 8].copy_from_slice(&length.to_le_bytes());
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], String> {
        if count > self.0.len() {
            return Err(format!("message ends early: {count} bytes wanted, {} left", self.0.len()));
        }
        let (head, rest) = self.0.split_at(count);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| "bad u32")?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| "bad u64")?))
    }
    fn count(&mut self, limit: usize, what: &str) -> Result<usize, String> {
        let count = self.u32()? as usize;
        if count > limit {
            return Err(format!("{count} {what} is more than {limit}"));
        }
        Ok(count)
    }
    fn str(&mut self) -> Result<String, String> {
        let length = self.count(MAX_STRING, "string bytes")?;
        String::from_utf8(self.take(length)?.to_vec()).map_err(|_| "a string is not UTF-8".to_string())
    }
    fn tensors(&mut self) -> Result<Vec<Tensor>, String> {
        let count = self.count(MAX_TENSORS, "tensors")?;
        let mut tensors = Vec::with_capacity(count);
        for _ in 0..count {
            let name = self.str()?;
            let datatype = DataType::from_code(self.u8()?).ok_or("unknown datatype code")?;
            let rank = usize::from(self.u8()?);
            if rank > MAX_RANK {
                return Err(format!("rank {rank} is more than {MAX_RANK}"));
            }
            let shape = (0..rank)
                .map(|_| self.u64().and_then(|d| usize::try_from(d).map_err(|_| "dimension too large".to_string())))
                .collect::<Result<Vec<usize>, String>>()?;
            let elements = element_count(&shape).filter(|&n| n <= MAX_ELEMENTS).ok_or("tensor too large")?;
            let length = usize::try_from(self.u64()?).map_err(|_| "length too large")?;
            if length != elements * datatype.size_bytes() {
                return Err(format!("tensor {name:?} has {length} bytes for {elements} {datatype} elements"));
            }
            let data = TensorData::from_le_bytes(datatype, self.take(length)?).map_err(|e| e.to_string())?;
            tensors.push(Tensor::new(name, shape, data).map_err(|e| e.to_string())?);
        }
        Ok(tensors)
    }
    fn finish(&self) -> Result<(), String> {
        if self.0.is_empty() { Ok(()) } else { Err(format!("{} trailing bytes", self.0.len())) }
    }
}

impl ForwardRequest {
    /// The message bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        w.0.extend(REQUEST_MAGIC);
        match self {
            Self::Valid { model, route, job, request } => {
                w.str(model);
                w.str(&route.join(">"));
                w.str(job.as_deref().unwrap_or(""));
                w.u8(request.priority);
                w.u32(u32::try_from(request.outputs.len()).unwrap_or(u32::MAX));
                for output in &request.outputs {
                    w.str(output);
                }
                w.tensors(&request.inputs);
            }
            // An invalid request is never sent; encode it as a truncated one.
            Self::Invalid(_) => {}
        }
        w.0
    }

    /// Decodes message bytes; never panics.
    pub fn decode(bytes: &[u8]) -> Self {
        let decode = || -> Result<Self, String> {
            let mut r = Reader(bytes);
            if r.take(4)? != REQUEST_MAGIC {
                return Err("not a gpumesh forward request".into());
            }
            let model = r.str()?;
            let route: Vec<String> = r.str()?.split('>').filter(|s| !s.is_empty()).map(String::from).collect();
            let job = Some(r.str()?).filter(|id| !id.is_empty());
            let priority = r.u8()?.min(10);
            let outputs = (0..r.count(MAX_TENSORS, "outputs")?).map(|_| r.str()).collect::<Result<Vec<_>, _>>()?;
            let inputs = r.tensors()?;
            r.finish()?;
            Ok(Self::Valid { model, route, job, request: InferRequest { inputs, outputs, priority } })
        };
        decode().unwrap_or_else(Self::Invalid)
    }
}

impl ForwardReply {
    /// The message bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        w.0.extend(REPLY_MAGIC);
        match self {
            Self::Done { node, response } => {
                w.u8(0);
                w.str(node);
                w.str(&response.device);
                w.u64(u64::try_from(response.queue_time.as_micros()).unwrap_or(u64::MAX));
                w.u64(u64::try_from(response.compute_time.as_micros()).unwrap_or(u64::MAX));
                w.u32(u32::try_from(response.batch_size).unwrap_or(u32::MAX));
                w.tensors(&response.outputs);
            }
            Self::Refused(error) => {
                let (code, message) = match error {
                    InferError::BadRequest(m) => (1, m.clone()),
                    InferError::UnknownModel(m) => (2, m.clone()),
                    InferError::QueueFull { model, .. } => (3, model.clone()),
                    InferError::Unavailable(m) => (4, m.clone()),
                    InferError::Failed(m) => (5, m.clone()),
                    InferError::TooManyJobs { .. } => (6, String::new()),
                };
                w.u8(code);
                w.str(&message);
                match error {
                    InferError::QueueFull { queued, retry_after_ms, .. } => {
                        w.u64(*queued as u64);
                        w.u64(*retry_after_ms);
                    }
                    InferError::TooManyJobs { active, retry_after_ms } => {
                        w.u64(*active);
                        w.u64(*retry_after_ms);
                    }
                    _ => {}
                }
            }
        }
        w.0
    }

    /// Decodes message bytes; malformed bytes become a failure, never a panic.
    pub fn decode(bytes: &[u8]) -> Self {
        let decode = || -> Result<Self, String> {
            let mut r = Reader(bytes);
            if r.take(4)? != REPLY_MAGIC {
                return Err("not a gpumesh forward reply".into());
            }
            let code = r.u8()?;
            let reply = if code == 0 {
                let node = r.str()?;
                let device = r.str()?;
                let queue_time = Duration::from_micros(r.u64()?);
                let compute_time = Duration::from_micros(r.u64()?);
                let batch_size = r.u32()? as usize;
                let outputs = r.tensors()?;
                Self::Done { node, response: InferResponse { outputs, device, queue_time, compute_time, batch_size } }
            } else {
                let message = r.str()?;
                Self::Refused(match code {
                    1 => InferError::BadRequest(message),
                    2 => InferError::UnknownModel(message),
                    3 => InferError::QueueFull {
                        model: message,
                        queued: usize::try_from(r.u64()?).unwrap_or(usize::MAX),
                        retry_after_ms: r.u64()?,
                    },
                    4 => InferError::Unavailable(message),
                    5 => InferError::Failed(message),
                    6 => InferError::TooManyJobs { active: r.u64()?, retry_after_ms: r.u64()? },
                    other => return Err(format!("unknown reply code {other}")),
                })
            };
            r.finish()?;
            Ok(reply)
        };
        decode().unwrap_or_else(|reason| {
            Self::Refused(InferError::Failed(format!("malformed reply from a peer: {reason}")))
        })
    }
}

impl ractor::BytesConvertable for ForwardRequest {
    fn into_bytes(self) -> Vec<u8> {
        self.encode()
    }
    fn from_bytes(bytes: Vec<u8>) -> Self {
        Self::decode(&bytes)
    }
}

impl ractor::BytesConvertable for ForwardReply {
    fn into_bytes(self) -> Vec<u8> {
        self.encode()
    }
    fn from_bytes(bytes: Vec<u8>) -> Self {
        Self::decode(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn request() -> ForwardRequest {
        ForwardRequest::Valid {
            model: "tiny".into(),
            route: vec!["a".into()],
            job: Some("a.1-2".into()),
            request: InferRequest {
                inputs: vec![
                    Tensor::new("x", vec![2, 2], TensorData::Fp32(vec![1.0, -2.0, 3.5, 0.0])).expect("tensor"),
                    Tensor::new("s", vec![], TensorData::Int64(vec![7])).expect("tensor"),
                ],
                outputs: vec!["y".into()],
                priority: 9,
            },
        }
    }

    #[test]
    fn requests_and_replies_round_trip() {
        let original = request();
        assert_eq!(ForwardRequest::decode(&original.encode()), original);
        let done = ForwardReply::Done {
            node: "c".into(),
            response: InferResponse {
                outputs: vec![Tensor::new("y", vec![1], TensorData::Bool(vec![true])).expect("tensor")],
                device: "cpu".into(),
                queue_time: Duration::from_micros(120),
                compute_time: Duration::from_micros(480),
                batch_size: 3,
            },
        };
        assert_eq!(ForwardReply::decode(&done.encode()), done);
        let full = ForwardReply::Refused(InferError::QueueFull { model: "m".into(), queued: 4, retry_after_ms: 9 });
        assert_eq!(ForwardReply::decode(&full.encode()), full);
        let jobs = ForwardReply::Refused(InferError::TooManyJobs { active: 7, retry_after_ms: 1000 });
        assert_eq!(ForwardReply::decode(&jobs.encode()), jobs);
        let bad = ForwardReply::Refused(InferError::BadRequest("shape".into()));
        assert_eq!(ForwardReply::decode(&bad.encode()), bad);
    }

    #[test]
    fn truncated_or_corrupted_messages_are_invalid() {
        let bytes = request().encode();
        for cut in 0..bytes.len() {
            assert!(matches!(ForwardRequest::decode(&bytes[..cut]), ForwardRequest::Invalid(_)), "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(ForwardRequest::decode(&trailing), ForwardRequest::Invalid(_)));
        assert!(matches!(ForwardReply::decode(b"nope"), ForwardReply::Refused(InferError::Failed(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = ForwardRequest::decode(&bytes);
            let _ = ForwardReply::decode(&bytes);
            let mut prefixed = REQUEST_MAGIC.to_vec();
            prefixed.extend(&bytes);
            let _ = ForwardRequest::decode(&prefixed);
        }
    }
}
