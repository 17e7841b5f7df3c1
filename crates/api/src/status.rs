//! `GET /status`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use colony_worker::{Status, WorkerState};

use crate::AppState;

/// Health and load: 200 while ready, 503 while draining (so a load
/// balancer stops sending work), with the same JSON body either way.
pub(crate) async fn status(State(state): State<AppState>) -> (StatusCode, Json<Status>) {
    let status = state.worker.status();
    let code = match status.state {
        WorkerState::Ready => StatusCode::OK,
        WorkerState::Draining => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, Json(status))
}
