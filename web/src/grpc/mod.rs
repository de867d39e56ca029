//! The KServe v2 gRPC face of a node, with Triton's extensions (SPEC
//! section 11): `tritonclient.grpc` works against any node unchanged.
//!
//! - `proto`: the types and server trait generated from the vendored
//!   `proto/*.proto` (see `build.rs`).
//! - `decode` / `encode`: messages to inference requests and back.
//! - `service`: the RPCs, over the same node handle as the HTTP face, so
//!   routing, forwarding, priorities, requirements, provenance, limits,
//!   tokens and the error sentences are the HTTP face's.
//!
//! Connections are HTTP/2 served by hyper, through the HTTP face's
//! connection limits (`--max-connections`, `--max-client-connections`,
//! `--idle-timeout-secs`); a message larger than `--max-body-bytes` is
//! refused before it is decoded. With `--grpc-tls-cert` and
//! `--grpc-tls-key` every connection is TLS (`tls`).

mod decode;
mod encode;
mod service;
mod tls;

use std::future::Future;
use std::sync::Arc;

use gpumesh_actors::NodeHandle;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::HttpOptions;
use crate::listener::LimitedListener;

pub use tls::GrpcTls;

/// Generated from Triton's `grpc_service.proto` and `model_config.proto`.
#[allow(unreachable_pub, clippy::all, clippy::pedantic, rust_2018_idioms, missing_docs)]
pub(crate) mod proto {
    tonic::include_proto!("inference");
}

/// Most requests one HTTP/2 connection runs at once.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Longest a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long calls in flight may take to finish once shutdown begins.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
/// Largest header block a client may send.
const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// Decodes a `ModelInferRequest` message as `ModelInfer` does, with the
/// default limits; for the fuzz targets.
pub(crate) fn decode_message(message: &[u8]) -> Result<(), String> {
    let request = <proto::ModelInferRequest as prost::Message>::decode(message).map_err(|error| error.to_string())?;
    decode::decode(request, &crate::Limits::default()).map(drop).map_err(|error| error.to_string())
}

/// Serves gRPC on `listener` (over TLS when `tls` is given) until
/// `shutdown` completes, then lets the calls in flight finish.
pub async fn serve_grpc(
    listener: TcpListener,
    node: Arc<NodeHandle>,
    options: HttpOptions,
    tls: Option<GrpcTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (max, per_client) = (options.max_connections, options.max_client_connections);
    let mut listener = LimitedListener::new(listener, max, per_client, options.idle_timeout, node.clock());
    let max_message = options.limits.max_body_bytes;
    let server = proto::grpc_inference_service_server::GrpcInferenceServiceServer::new(service::Grpc::new(
        node,
        options.limits,
        options.tokens,
    ))
    .max_decoding_message_size(max_message)
    .max_encoding_message_size(usize::MAX);
    let mut http = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http.timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .keep_alive_interval(Some(std::time::Duration::from_secs(30)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            (stream, client) = axum::serve::Listener::accept(&mut listener) => {
                let (http, server, watcher, tls) = (http.clone(), server.clone(), graceful.watcher(), tls.clone());
                tokio::spawn(async move {
                    let service = TowerToHyperService::new(server);
                    let served = match tls {
                        None => watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await,
                        Some(GrpcTls(acceptor)) => {
                            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => {
                                    watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await
                                }
                                Ok(Err(error)) => {
                                    tracing::debug!(%client, %error, "grpc tls handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%client, "grpc tls handshake timed out");
                                    return;
                                }
                            }
                        }
                    };
                    if let Err(error) = served {
                        tracing::debug!(%client, %error, "grpc client connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    // An open ModelStreamInfer call lasts as long as its client wants:
    // the calls in flight get a bounded time to finish.
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::info!("grpc calls still open at shutdown were closed");
    }
}
