//! The gRPC `ModelInferRequest` decoder (protobuf, then tensors): any bytes
//! give a request or an error, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|message: &[u8]| {
    let _ = gpumesh_web::fuzzing::decode_grpc_infer_request(message);
});
