//! The task routes: submit, show (with long poll), result, list, cancel.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use colony_core::wire::{SubmitTask, TaskInfo, TaskList};
use colony_core::{ErrorCode, FunctionName, FunctionRef, TaskId, TaskState};
use colony_worker::Submission;
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiError;

/// Longest long poll.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Default and largest page of `GET /tasks`.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 1000;

fn task_id(s: &str) -> Result<TaskId, ApiError> {
    TaskId::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        format!("the task input exceeds this worker's limit of {limit} bytes"),
    )
}

/// `POST /tasks`: 202 once the task is durably committed (200 when an
/// idempotency key matched an existing task).
pub(crate) async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = state.max_body_bytes;
    // Room for base64 (4/3) and the JSON around it.
    let json_limit = limit / 3 * 4 + 64 * 1024;
    let bytes = crate::body::read(&headers, body, json_limit)
        .await
        .map_err(|e| {
            if e.code() == ErrorCode::PayloadTooLarge {
                too_large(limit)
            } else {
                e
            }
        })?;
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    let req: SubmitTask = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path.is_empty() || path == "." || path == "?" {
            ApiError::bad_request(format!("invalid JSON body: {}", e.inner()))
        } else {
            ApiError::bad_request(format!("field `{path}`: {}", e.inner()))
        }
    })?;
    let input = match (req.input, req.input_base64) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give `input` or `input_base64`, not both",
            ));
        }
        (Some(text), None) => bytes::Bytes::from(text),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map(bytes::Bytes::from)
            .map_err(|e| ApiError::bad_request(format!("field `input_base64`: {e}")))?,
        (None, None) => bytes::Bytes::new(),
    };
    if input.len() > limit {
        return Err(too_large(limit));
    }
    let target = FunctionRef::parse(&req.function)?;
    let submitted = state
        .worker
        .submit(Submission {
            target,
            input,
            idempotency_key: req.idempotency_key,
            max_attempts: req.max_attempts,
            timeout_ms: req.timeout_ms,
            priority: req.priority.unwrap_or(0),
        })
        .await?;
    let status = if submitted.created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let mut resp = (status, Json(&submitted)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/tasks/{}", submitted.id)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShowQuery {
    wait: Option<f64>,
}

/// `GET /tasks/{id}[?wait=SECONDS]`.
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<ShowQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TaskInfo>, ApiError> {
    let id = task_id(&id)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let info = match q.wait {
        Some(w) if w.is_finite() && w > 0.0 => {
            let wait = Duration::from_secs_f64(w).min(MAX_WAIT);
            state.worker.wait_task(&id, wait).await?
        }
        Some(w) if !(w.is_finite() && w >= 0.0) => {
            return Err(ApiError::bad_request(format!(
                "wait: {w} is not a number of seconds"
            )));
        }
        _ => state.worker.task(&id).await?,
    };
    Ok(Json(info))
}

/// `GET /tasks/{id}/result`: the output bytes of a succeeded task.
pub(crate) async fn result(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = task_id(&id)?;
    let bytes = state.worker.task_result(&id).await?;
    let mut resp = (StatusCode::OK, bytes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    state: Option<String>,
    function: Option<String>,
    limit: Option<u32>,
    after: Option<String>,
}

/// `GET /tasks?state=&function=&limit=&after=`: newest first.
pub(crate) async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TaskList>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let task_state = q
        .state
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<TaskState>()
                .map_err(|e| ApiError::bad_request(format!("state: {e}")))
        })
        .transpose()?;
    let function = q
        .function
        .filter(|s| !s.is_empty())
        .map(FunctionName::new)
        .transpose()?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit: must be between 1 and {MAX_LIMIT}"
        )));
    }
    let after = q
        .after
        .filter(|s| !s.is_empty())
        .map(|a| TaskId::parse(&a).map_err(|e| ApiError::bad_request(format!("after: {e}"))))
        .transpose()?;
    Ok(Json(
        state
            .worker
            .tasks(task_state, function, limit, after)
            .await?,
    ))
}

/// `DELETE /tasks/{id}`: cancel. 200 with the cancelled task; 202 when a
/// running guest has not stopped yet (its cancel stands); 409 when the
/// task had already finished.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = task_id(&id)?;
    let info = state.worker.cancel_task(&id).await?;
    let status = if info.state == TaskState::Cancelled {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(info)).into_response())
}
