//! Serves HTTP/1.1 connections with hyper directly rather than through
//! `axum::serve`, which cannot bound the time a request's headers take:
//! each connection gets hyper's header-read timeout (`--header-timeout-secs`),
//! so a client that drips its headers a byte at a time loses its connection
//! slot when the timeout ends. Its body is bounded by `body_rate`. On
//! shutdown the listener closes and the requests in flight finish.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::serve::Listener as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

use crate::listener::LimitedListener;

/// Serves `router` on every connection `listener` accepts until `shutdown`
/// completes, then waits for the connections to finish what they started.
pub(crate) async fn run(
    mut listener: LimitedListener,
    router: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            (stream, client) = listener.accept() => {
                let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%client, %error, "client connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}
