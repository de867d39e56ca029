//! Node-to-node messages: forwarded requests and replies, and the peer
//! calls and answers around them. Whatever a peer sends decodes to a value
//! or an error; a decoded value's encoding decodes to the same encoding
//! (bytes are compared: tensors may hold NaN).
#![no_main]

use gpumesh_actors::forward::peers::{PeerAnswer, PeerCall};
use gpumesh_actors::forward::{ForwardReply, ForwardRequest};

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let request = ForwardRequest::decode(bytes);
    if let ForwardRequest::Valid { .. } = &request {
        let encoded = request.encode();
        assert_eq!(ForwardRequest::decode(&encoded).encode(), encoded);
    }
    let _ = ForwardReply::decode(bytes);
    if let Ok(call) = PeerCall::decode(bytes) {
        let encoded = call.encode();
        assert_eq!(PeerCall::decode(&encoded).map(|again| again.encode()), Ok(encoded));
    }
    let _ = PeerAnswer::decode(bytes);
});
