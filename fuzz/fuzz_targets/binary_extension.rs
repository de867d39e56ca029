//! The binary tensor extension: the first two bytes choose where the JSON
//! header ends (`Inference-Header-Content-Length`), the rest is the body.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let header_len = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let _ = gpumesh_web::fuzzing::decode_infer_request(&data[2..], Some(header_len));
});
