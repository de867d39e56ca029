//! Node-to-node messages: the forwarded requests and replies ractor_cluster
//! carries between nodes. Whatever a peer sends decodes to a value or an
//! error; a decoded request's encoding decodes to the same encoding (bytes
//! are compared: tensors may hold NaN).
#![no_main]

use gpumesh_actors::forward::{ForwardReply, ForwardRequest};

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let request = ForwardRequest::decode(bytes);
    if let ForwardRequest::Valid { .. } = &request {
        let encoded = request.encode();
        assert_eq!(ForwardRequest::decode(&encoded).encode(), encoded);
    }
    let _ = ForwardReply::decode(bytes);
});
