//! The OIP v2 JSON request decoder: any bytes give a request or an error,
//! never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    let _ = gpumesh_web::fuzzing::decode_infer_request(body, None);
});
