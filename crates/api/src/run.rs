//! `POST /run/{name}` and `POST /run/{name}@{rev}`.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use colony_core::files::FileSet;
use colony_core::wire::{ErrorBody, FilesResult};
use colony_core::{FunctionRef, IoRuntime};

use crate::error::ApiError;
use crate::openapi::RawBytes;
use crate::{AppState, HEADER_DURATION_US, HEADER_EXIT_CODE, HEADER_REVISION};

/// Runs the function once: the body is its stdin, its stdout the response.
#[utoipa::path(
    post,
    path = "/run/{target}",
    operation_id = "run",
    summary = "Run a function once",
    tag = "run",
    params(("target" = FunctionRef, Path,
        description = "The function: `name` (its default revision) or `name@rev` (a revision \
                       id or a unique prefix of at least 8 hex digits).")),
    request_body(content(
        (inline(RawBytes) = "application/octet-stream"),
        (inline(RawBytes) = "multipart/form-data")),
        description = "The function's stdin, up to the worker's `max_body` (16 MiB by default). \
            For a function on the `files` I/O runtime: its input files, as multipart/form-data \
            with one part per file named by the file."),
    responses(
        (status = 200, description = "The function succeeded; the body is its stdout (for a \
            `files` function: JSON listing the files it wrote to `/output`).",
            content(
                (inline(RawBytes) = "application/octet-stream"),
                (FilesResult = "application/json")),
            headers(
                ("colony-revision" = String, description = "The revision that ran."),
                ("colony-duration-us" = u64, description = "Run time in microseconds, excluding queueing."),
                ("colony-exit-code" = i32, description = "The guest's exit code: 0."),
            )),
        (status = 400, description = "`invalid_name`: a malformed name or `@rev`; \
            `ambiguous_revision`: a prefix matching several revisions; `bad_request`: input \
            files missing, unknown or malformed for a `files` function, or a wasi:http \
            component (served at `/http`).", body = ErrorBody),
        (status = 404, description = "`function_not_found`, `revision_not_found`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the input is over `max_body`.", body = ErrorBody),
        (status = 500, description = "The guest failed: `guest_trap` (`stderr_tail`), `guest_exit` \
            (`exit_code`, `stderr_tail`), `memory_limit_exceeded`, `output_limit_exceeded` \
            (`limit_bytes`), all with `revision` and `duration_ms`; or `internal`.",
            body = ErrorBody,
            headers(
                ("colony-revision" = String, description = "The revision that ran."),
                ("colony-exit-code" = i32, description = "`guest_exit`: the guest's exit code."),
            )),
        (status = 503, description = "`overloaded`: every slot busy and the queue full; \
            `draining`: the worker is shutting down.", body = ErrorBody,
            headers(("retry-after" = u64, description = "Seconds to wait before retrying."))),
        (status = 504, description = "`timeout`: the guest ran past its timeout (`limit_ms`).",
            body = ErrorBody,
            headers(("colony-revision" = String, description = "The revision that ran."))),
    ),
)]
pub(crate) async fn run(
    State(state): State<AppState>,
    target: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path(target) = target?;
    let target = FunctionRef::parse(&target)?;
    let input = crate::body::read(&headers, body, state.max_body_bytes).await?;
    let (target, io) = state.worker.pin(&target)?;
    let files = io == IoRuntime::Files;
    let input = if files {
        crate::files::from_request(&headers, input).await?
    } else {
        input
    };
    let done = state.worker.invoke(&target, input).await?;
    let mut resp = if files {
        let set = FileSet::decode(&done.output).map_err(|e| {
            ApiError::from(colony_worker::Error::Internal(format!(
                "a files function's result is not a file set: {e}"
            )))
        })?;
        (StatusCode::OK, Json(crate::files::listing(&set))).into_response()
    } else {
        let mut resp = (StatusCode::OK, done.output).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        resp
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(done.revision.as_str()) {
        h.insert(HEADER_REVISION, v);
    }
    h.insert(
        HEADER_DURATION_US,
        HeaderValue::from(done.duration.as_micros() as u64),
    );
    h.insert(HEADER_EXIT_CODE, HeaderValue::from_static("0"));
    Ok(resp)
}
