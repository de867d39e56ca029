//! `GET /metrics`: every metric of the node in the Prometheus text format,
//! in its OpenMetrics flavour (what prometheus-client writes; Prometheus
//! asks for it by default).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::AppState;

pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let node = state.node.clone();
    // Job counts read sled: keep that off the runtime threads.
    let text = tokio::task::spawn_blocking(move || node.prometheus_text()).await.unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
}
