//! Generates the KServe v2 / Triton gRPC types and service trait from the
//! vendored `.proto` files (`proto/`), with the `protoc` that the
//! protoc-bin-vendored crate ships: no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Tensor contents stay in the received buffer instead of being copied
    // into vectors of their own.
    config.bytes([
        ".inference.ModelInferRequest.raw_input_contents",
        ".inference.ModelInferResponse.raw_output_contents",
    ]);
    tonic_prost_build::configure()
        .build_client(false)
        .build_transport(false)
        .generate_default_stubs(true)
        .compile_with_config(config, &["proto/grpc_service.proto"], &["proto"])?;
    Ok(())
}
