//! `GET /events`: the server-sent events that keep the status page live.
//!
//! The first event, `history`, carries the metrics history of the last 10
//! minutes; then a `snapshot` event follows whenever the cluster view
//! changes (at most every 250 ms) and at least every second.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use gpumesh_actors::NodeHandle;

use crate::AppState;

/// What the charts show.
const CHART_WINDOW_MS: u64 = 10 * 60_000;
/// Longest gap between snapshots.
const MAX_GAP: Duration = Duration::from_secs(1);
/// Shortest gap between snapshots.
const MIN_GAP: Duration = Duration::from_millis(250);

fn event(name: &str, data: &impl serde::Serialize) -> Event {
    Event::default().event(name).json_data(data).unwrap_or_else(|error| {
        tracing::warn!(%error, event = name, "encoding a status event failed");
        Event::default().event("error").data("encoding failed")
    })
}

struct Feed {
    node: Arc<NodeHandle>,
    closing: tokio::sync::watch::Receiver<bool>,
    view: tokio::sync::watch::Receiver<Arc<gpumesh_membership::ClusterView>>,
    /// Events sent so far.
    sent: u64,
}

pub(crate) async fn events(State(state): State<AppState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let feed = Feed { view: state.node.subscribe_view(), node: state.node, closing: state.closing, sent: 0 };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        feed.sent += 1;
        if feed.sent == 1 {
            let history = feed.node.history_since(feed.node.unix_ms().saturating_sub(CHART_WINDOW_MS));
            return Some((Ok(event("history", &history)), feed));
        }
        if feed.sent > 2 {
            tokio::select! {
                _ = feed.view.changed() => tokio::time::sleep(MIN_GAP).await,
                () = tokio::time::sleep(MAX_GAP) => {}
                // The server is shutting down: end the stream (the page reconnects elsewhere or later).
                () = async { drop(feed.closing.wait_for(|closing| *closing).await) } => return None,
            }
        }
        feed.view.mark_unchanged();
        let snapshot = super::snapshot::snapshot(&feed.node).await;
        Some((Ok(event("snapshot", &snapshot)), feed))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
