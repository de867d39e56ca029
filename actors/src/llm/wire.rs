//! The bytes of the language-model stream protocol between two nodes
//! (postcard). Decoding never panics: bytes that are not a message of this
//! version decode to `None` and are dropped with a warning.
//!
//! The accepting node opens a stream on the serving node (an RPC carrying
//! [`Open`]); from then on both send [`Frame`]s: the serving node each
//! piece and the end, the accepting node credit (how far its client has
//! read, so the serving node runs at most a window ahead: back-pressure)
//! and a cancel when its client goes away.

use serde::{Deserialize, Serialize};

use crate::llm::error::LlmError;
use crate::llm::request::LlmRequest;
use crate::llm::resume::Resume;

/// Pieces the serving node may send beyond the reader's credit.
pub const WINDOW: u64 = 32;

/// Opens stream `stream` of node `from` on the serving node: `request`,
/// or with `resume` the rest of a completion begun elsewhere.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Open {
    pub from: String,
    pub stream: u64,
    pub request: LlmRequest,
    pub resume: Option<Resume>,
}

/// One message of an open stream: the node that sends it, and the
/// accepting node's number for the stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// The node that sends the frame.
    pub from: String,
    pub stream: u64,
    pub kind: FrameKind,
}

/// What a [`Frame`] says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FrameKind {
    /// Piece number `seq` (from 0), with its token ids where known.
    Piece { seq: u64, data: String, tokens: Vec<u32> },
    /// No more pieces: the answer is complete, or failed with `error`.
    End { error: Option<LlmError> },
    /// The reader has taken every piece before `upto`.
    Credit { upto: u64 },
    /// The reader is gone: stop generating.
    Cancel,
}

/// The answer to an [`Open`]: the stream runs, or why it does not.
pub type Opened = Result<(), LlmError>;

/// Message bytes.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // postcard writes any of these types; an error would be a bug here.
    postcard::to_allocvec(message).unwrap_or_default()
}

/// The message in `bytes`, or `None` when they hold none of this type.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    postcard::from_bytes(bytes).ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::llm::request::{Endpoint, Hints, parse};

    #[test]
    fn messages_round_trip() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
        let request = parse(Endpoint::Chat, body, &Hints::default()).expect("valid");
        let open = Open { from: "n1".into(), stream: 7, request, resume: None };
        assert_eq!(decode::<Open>(&encode(&open)), Some(open.clone()));
        let resume = Resume { text: " the mesh".into(), tokens: 2, ids: vec![259, 260] };
        let resumed = Open { resume: Some(resume), ..open };
        assert_eq!(decode::<Open>(&encode(&resumed)), Some(resumed));
        let kinds = [
            FrameKind::Piece { seq: 3, data: "{\"x\":1}".into(), tokens: vec![] },
            FrameKind::Piece { seq: 4, data: "{}".into(), tokens: vec![7, 300] },
            FrameKind::End { error: None },
            FrameKind::End { error: Some(LlmError::queue_full("m", 4, 1)) },
            FrameKind::Credit { upto: 64 },
            FrameKind::Cancel,
        ];
        for kind in kinds {
            let frame = Frame { from: "n1".into(), stream: 9, kind };
            assert_eq!(decode::<Frame>(&encode(&frame)), Some(frame));
        }
        let opened: Opened = Err(LlmError::unavailable("no engine"));
        assert_eq!(decode::<Opened>(&encode(&opened)), Some(opened));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<Open>(&bytes);
            let _ = decode::<Frame>(&bytes);
            let _ = decode::<Opened>(&bytes);
        }
    }
}
