//! Gossiped values: the signature check and the JSON of node state, as a
//! node reads them from any peer.
#![no_main]

use gpumesh_membership::{ClusterSecret, LoadSummary, NodeInfo, verify_value};

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    let key = ClusterSecret::from_bytes([7; 32]).signing_key();
    let _ = verify_value(&key, "n1", 1, "load", text);
    let _ = serde_json::from_str::<LoadSummary>(text);
    let _ = serde_json::from_str::<NodeInfo>(text);
});
