//! `GET /metrics`: the Prometheus text exposition.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// The worker's metrics, for Prometheus to scrape.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.worker.render_metrics().await;
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
