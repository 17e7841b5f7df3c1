//! `ANY /http/{name}[@{rev}]/{*path}`: HTTP-native functions. A function
//! deployed with `executor=cgi` gets the request as CGI 1.1 and answers
//! with a CGI response (Wagi-compatible).

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use colony_core::FunctionRef;
use colony_core::wire::ErrorBody;
use colony_worker::cgi::CgiRequest;

use crate::error::ApiError;
use crate::openapi::RawBytes;
use crate::{AppState, HEADER_DURATION_US, HEADER_REVISION};

/// Response headers a guest may not set: the server owns the framing and
/// the connection (hop-by-hop headers).
const FRAMING: [&str; 9] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "proxy-authenticate",
];

/// Serves the request with the function at the route's root.
#[utoipa::path(
    method(get, post, put, delete, patch),
    path = "/http/{target}",
    operation_id = "http_root",
    summary = "Serve an HTTP request with a cgi function (PATH_INFO empty; `/` with a trailing slash)",
    tag = "run",
    params(("target" = FunctionRef, Path,
        description = "A function deployed with `executor=cgi`: `name` or `name@rev`.")),
    request_body(content = inline(RawBytes), content_type = "application/octet-stream",
        description = "The request body: the guest's stdin (up to `max_body`)."),
    responses(
        (status = 200, description = "What the guest answered: its `Status` (200 without \
            one; 302 with a `Location` and no `Status`), its headers and body.",
            content_type = "application/octet-stream", body = inline(RawBytes),
            headers(("colony-revision" = String, description = "The revision that ran."))),
        (status = 400, description = "`bad_request`: the function is not a cgi function; \
            `invalid_name`, `ambiguous_revision`.", body = ErrorBody),
        (status = 404, description = "`function_not_found`, `revision_not_found`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over `max_body`.", body = ErrorBody),
        (status = 500, description = "The guest failed (`guest_trap`, `guest_exit`, \
            `memory_limit_exceeded`, `output_limit_exceeded`) or `internal`.", body = ErrorBody),
        (status = 502, description = "`invalid_cgi_response`: the guest's stdout is not a CGI \
            response (header lines, a blank line, the body; with a `Content-Type`, \
            `Location` or `Status`).", body = ErrorBody),
        (status = 503, description = "`overloaded`, `draining`.", body = ErrorBody,
            headers(("retry-after" = u64, description = "Seconds to wait before retrying."))),
        (status = 504, description = "`timeout`: the guest ran past its timeout.", body = ErrorBody),
    ),
)]
pub(crate) async fn root(
    state: State<AppState>,
    target: Result<Path<String>, PathRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path(target) = target?;
    // Also `/http/{target}/` (the catch-all needs a non-empty rest): its
    // trailing-slash form, `PATH_INFO` `/`.
    let path_info = if uri.path().ends_with('/') { "/" } else { "" };
    serve(
        state,
        target,
        path_info.to_owned(),
        method,
        uri,
        headers,
        body,
    )
    .await
}

/// Serves the request with the function, the rest of the path as
/// `PATH_INFO`.
#[utoipa::path(
    method(get, post, put, delete, patch),
    path = "/http/{target}/{path}",
    operation_id = "http_path",
    summary = "Serve an HTTP request with a cgi function",
    tag = "run",
    params(
        ("target" = FunctionRef, Path,
            description = "A function deployed with `executor=cgi`: `name` or `name@rev`."),
        ("path" = String, Path, description = "The rest of the path: the guest's `PATH_INFO`."),
    ),
    request_body(content = inline(RawBytes), content_type = "application/octet-stream",
        description = "The request body: the guest's stdin (up to `max_body`)."),
    responses(
        (status = 200, description = "What the guest answered: its `Status` (200 without \
            one; 302 with a `Location` and no `Status`), its headers and body.",
            content_type = "application/octet-stream", body = inline(RawBytes),
            headers(("colony-revision" = String, description = "The revision that ran."))),
        (status = 400, description = "`bad_request`: the function is not a cgi function; \
            `invalid_name`, `ambiguous_revision`.", body = ErrorBody),
        (status = 404, description = "`function_not_found`, `revision_not_found`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over `max_body`.", body = ErrorBody),
        (status = 500, description = "The guest failed (`guest_trap`, `guest_exit`, \
            `memory_limit_exceeded`, `output_limit_exceeded`) or `internal`.", body = ErrorBody),
        (status = 502, description = "`invalid_cgi_response`: the guest's stdout is not a CGI \
            response.", body = ErrorBody),
        (status = 503, description = "`overloaded`, `draining`.", body = ErrorBody,
            headers(("retry-after" = u64, description = "Seconds to wait before retrying."))),
        (status = 504, description = "`timeout`: the guest ran past its timeout.", body = ErrorBody),
    ),
)]
pub(crate) async fn path(
    state: State<AppState>,
    params: Result<Path<(String, String)>, PathRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path((target, rest)) = params?;
    serve(
        state,
        target,
        format!("/{rest}"),
        method,
        uri,
        headers,
        body,
    )
    .await
}

async fn serve(
    State(state): State<AppState>,
    target: String,
    path_info: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let function = FunctionRef::parse(&target)?;
    if path_info.contains('\0') {
        return Err(ApiError::bad_request(
            "the path has a NUL byte, which a CGI variable cannot carry",
        ));
    }
    let body = crate::body::read(&headers, body, state.max_body_bytes).await?;
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let (server_name, server_port) = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            (name.to_owned(), port.to_owned())
        }
        _ => (host.to_owned(), "80".to_owned()),
    };
    let request = CgiRequest {
        method: method.as_str().to_owned(),
        script_name: format!("/http/{target}"),
        path_info,
        query: uri.query().unwrap_or("").to_owned(),
        request_uri: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        server_name,
        server_port,
        body,
    };
    let (done, cgi) = state.worker.invoke_http(&function, request).await?;
    let status = StatusCode::from_u16(cgi.status).unwrap_or(StatusCode::OK);
    // No default Content-Type: the guest's own, or none. 204 and 304
    // have no body.
    let body = match status {
        StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED => Body::empty(),
        _ => Body::from(cgi.body),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    // Headers the guest's `Connection` names are hop-by-hop too.
    let named: Vec<String> = cgi
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    for (name, value) in &cgi.headers {
        let lower = name.to_ascii_lowercase();
        if FRAMING.contains(&lower.as_str())
            || named.contains(&lower)
            || lower.starts_with("colony-")
        {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            h.append(n, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(done.revision.as_str()) {
        h.insert(HEADER_REVISION, v);
    }
    h.insert(
        HEADER_DURATION_US,
        HeaderValue::from(done.duration.as_micros() as u64),
    );
    Ok(resp)
}
