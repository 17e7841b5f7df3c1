//! `POST /run/{name}` and `POST /run/{name}@{rev}`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use colony_core::FunctionRef;

use crate::error::ApiError;
use crate::{AppState, HEADER_DURATION_US, HEADER_EXIT_CODE, HEADER_REVISION};

/// Runs the function once: the body is its stdin, its stdout the response.
pub(crate) async fn run(
    State(state): State<AppState>,
    Path(target): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let target = FunctionRef::parse(&target)?;
    let input = crate::body::read(&headers, body, state.max_body_bytes).await?;
    let done = state.worker.invoke(&target, input).await?;
    let mut resp = (StatusCode::OK, done.output).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
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
