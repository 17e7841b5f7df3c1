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

/// The live workers with their load: the cluster's, or this worker alone
/// when it runs on the embedded store.
#[utoipa::path(
    get,
    path = "/workers",
    operation_id = "list_workers",
    summary = "Live workers and their load",
    tag = "worker",
    responses(
        (status = 200, description = "The workers whose heartbeat is within its TTL.",
            body = colony_core::wire::WorkerList),
        (status = 503, description = "`cluster_unavailable`: NATS did not answer.",
            body = colony_core::wire::ErrorBody),
    ),
)]
pub(crate) async fn workers(
    State(state): State<AppState>,
) -> Result<Json<colony_core::wire::WorkerList>, crate::error::ApiError> {
    Ok(Json(state.worker.workers().await?))
}
