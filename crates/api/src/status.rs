//! `GET /status`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use colony_worker::{Status, WorkerState};

use crate::AppState;

/// Health and load: 200 while ready, 503 while draining (so a load
/// balancer stops sending work), with the same JSON body either way.
#[utoipa::path(
    get,
    path = "/status",
    operation_id = "get_status",
    summary = "The worker's health and load",
    tag = "worker",
    responses(
        (status = 200, description = "Ready.", body = colony_core::wire::Status),
        (status = 503, description = "Draining: finishing in-flight work, refusing new work.",
            body = colony_core::wire::Status),
    ),
)]
pub(crate) async fn status(State(state): State<AppState>) -> (StatusCode, Json<Status>) {
    let status = state.worker.status();
    let code = match status.state {
        WorkerState::Ready => StatusCode::OK,
        WorkerState::Draining => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, Json(status))
}
