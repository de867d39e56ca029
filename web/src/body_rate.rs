//! A minimum rate for request bodies (`--min-body-rate`, SPEC section 9):
//! after a grace of [`BODY_GRACE`], a body must have arrived at least at
//! that many bytes a second on average, or the request is answered 408 and
//! its connection closed. A client that drips its body a byte at a time
//! cannot hold a connection slot for long, while a large upload over a slow
//! link that keeps the pace goes through.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::{ApiError, AppState};

/// Time a body may take before the rate counts.
pub const BODY_GRACE: Duration = Duration::from_secs(2);

/// Holds every request body to the node's minimum rate.
pub(crate) async fn min_body_rate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let rate = state.options.min_body_rate;
    if rate == 0 {
        return next.run(request).await;
    }
    let slow = Arc::new(AtomicBool::new(false));
    let started = state.node.clock().now();
    let request = request.map(|body| Body::new(Paced::new(body, rate, started, slow.clone())));
    let response = next.run(request).await;
    if !slow.load(Ordering::Relaxed) {
        return response;
    }
    tracing::info!(rate, "request body arrived too slowly: answered 408 and its connection closed");
    let message = format!(
        "the request body arrived slower than {rate} bytes a second, this node's --min-body-rate; send it at once, or ask the operator for a lower --min-body-rate"
    );
    let mut error = ApiError::new(StatusCode::REQUEST_TIMEOUT, message).into_response();
    error.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    error
}

/// A body that fails once it falls behind its pace.
struct Paced {
    body: Body,
    rate: u64,
    started: Instant,
    received: u64,
    /// When the body falls behind, with what it has received so far.
    behind: Pin<Box<Sleep>>,
    slow: Arc<AtomicBool>,
}

impl Paced {
    fn new(body: Body, rate: u64, started: Instant, slow: Arc<AtomicBool>) -> Self {
        let behind = Box::pin(tokio::time::sleep_until(started + BODY_GRACE));
        Self { body, rate, started, received: 0, behind, slow }
    }
}

impl http_body::Body for Paced {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.received += data.len() as u64;
                    let due =
                        self.started + BODY_GRACE + Duration::from_secs_f64(self.received as f64 / self.rate as f64);
                    self.behind.as_mut().reset(due);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => match self.behind.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.slow.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err(axum::Error::new("the request body arrived too slowly"))))
                }
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
