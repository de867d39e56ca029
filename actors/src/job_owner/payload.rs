//! What a job asks for, as stored with it (pure): a tensor request (the
//! forwarded-request bytes, as jobs have always been stored) or a
//! language-model request (its own magic, then postcard). Decoding never
//! panics; bytes that are neither are unreadable.

use crate::executor::InferRequest;
use crate::forward::ForwardRequest;
use crate::llm::request::LlmRequest;

/// The first bytes of a stored language-model request.
const LLM_MAGIC: &[u8; 4] = b"GML1";

/// A job's request.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    Tensor { model: String, request: InferRequest },
    Llm(LlmRequest),
    Unreadable,
}

impl Payload {
    /// The bytes stored with the job.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Tensor { model, request } => {
                let forward = ForwardRequest::Valid {
                    model: model.clone(),
                    route: Vec::new(),
                    job: None,
                    request: request.clone(),
                };
                forward.encode()
            }
            Self::Llm(request) => {
                let mut bytes = LLM_MAGIC.to_vec();
                bytes.extend(crate::llm::wire::encode(request));
                bytes
            }
            Self::Unreadable => Vec::new(),
        }
    }

    /// The request in `bytes`.
    pub fn decode(bytes: &[u8]) -> Self {
        if let Some(rest) = bytes.strip_prefix(LLM_MAGIC) {
            return crate::llm::wire::decode::<LlmRequest>(rest).map_or(Self::Unreadable, Self::Llm);
        }
        match ForwardRequest::decode(bytes) {
            ForwardRequest::Valid { model, request, .. } => Self::Tensor { model, request },
            ForwardRequest::Invalid(_) => Self::Unreadable,
        }
    }

    /// The model the job is for.
    pub fn model(&self) -> Option<&str> {
        match self {
            Self::Tensor { model, .. } => Some(model),
            Self::Llm(request) => Some(&request.model),
            Self::Unreadable => None,
        }
    }

    /// The job's priority (0 to 10, higher first).
    pub fn priority(&self) -> u8 {
        match self {
            Self::Tensor { request, .. } => request.priority,
            Self::Llm(request) => request.requirements.priority,
            Self::Unreadable => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::llm::request::{Endpoint, Hints, parse};
    use crate::tensor::{Tensor, TensorData};

    #[test]
    fn both_kinds_round_trip() {
        let x = Tensor::new("x", vec![1, 2], TensorData::Fp32(vec![1.0, 2.0])).expect("tensor");
        let tensor = Payload::Tensor {
            model: "tiny".into(),
            request: InferRequest { inputs: vec![x], outputs: Vec::new(), priority: 7 },
        };
        assert_eq!(Payload::decode(&tensor.encode()), tensor);
        assert_eq!(tensor.priority(), 7);
        let body = br#"{"model":"chat","messages":[{"role":"user","content":"hi"}]}"#;
        let llm = Payload::Llm(parse(Endpoint::Chat, body, &Hints::default()).expect("valid"));
        assert_eq!(Payload::decode(&llm.encode()), llm);
        assert_eq!(llm.model(), Some("chat"));
        assert_eq!(Payload::decode(b"GML1garbage"), Payload::Unreadable);
        assert_eq!(Payload::decode(b""), Payload::Unreadable);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Payload::decode(&bytes);
            let mut llm = LLM_MAGIC.to_vec();
            llm.extend(&bytes);
            let _ = Payload::decode(&llm);
        }
    }
}
