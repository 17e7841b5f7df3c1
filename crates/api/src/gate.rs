//! The layer every request passes: size limits on the request line and
//! headers, authentication, then one access-log line and the HTTP metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use colony_core::ErrorCode;
use tracing::info;

use crate::AppState;
use crate::error::ApiError;

/// Longest request target (path and query).
pub const MAX_URI_BYTES: usize = 8 << 10;
/// Largest total of header names and values.
pub const MAX_HEADER_BYTES: usize = 32 << 10;

fn limits(req: &Request) -> Result<(), ApiError> {
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return Err(ApiError::new(
            StatusCode::URI_TOO_LONG,
            ErrorCode::UriTooLong,
            format!("the request target is {uri_len} bytes; the limit is {MAX_URI_BYTES}"),
        ));
    }
    let header_len: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_len > MAX_HEADER_BYTES {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::HeadersTooLarge,
            format!("the request headers take {header_len} bytes; the limit is {MAX_HEADER_BYTES}"),
        ));
    }
    Ok(())
}

/// The routes, as `'static` metric labels.
const ROUTES: &[&str] = &[
    "/run/{target}",
    "/http/{target}",
    "/http/{target}/",
    "/http/{target}/{*path}",
    "/functions",
    "/functions/{name}",
    "/functions/{name}/default",
    "/tasks",
    "/tasks/{id}",
    "/tasks/{id}/result",
    "/tasks/{id}/files/{file}",
    "/directives/{id}/events",
    "/status",
    "/workers",
    "/metrics",
    "/openapi.json",
];

fn static_route(route: Option<&str>) -> &'static str {
    route
        .and_then(|r| ROUTES.iter().find(|k| **k == r).copied())
        .unwrap_or("unmatched")
}

fn static_method(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The middleware.
pub(crate) async fn gate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    // Both by reference count, without allocating.
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let uri = req.uri().clone();
    let checked = limits(&req).and_then(|()| {
        // The scope comes from the matched route itself, so a route
        // missing from the metric labels still needs a token.
        let need = crate::auth::required(&method, matched.as_ref().map(MatchedPath::as_str));
        state.auth.check(req.headers(), need)
    });
    let (resp, caller) = match checked {
        Ok(caller) => {
            let name = caller.name.clone();
            match state.auth.admit(&caller) {
                Ok(_inflight) => {
                    req.extensions_mut().insert(caller);
                    (next.run(req).await, name)
                }
                Err(e) => (e.into_response(), name),
            }
        }
        Err(e) => (e.into_response(), None),
    };
    let took = started.elapsed();
    let status = resp.status().as_u16();
    let route_label = static_route(matched.as_ref().map(MatchedPath::as_str));
    state
        .worker
        .metrics()
        .http_request(static_method(&method), route_label, status, took);
    info!(
        target: "colony::access",
        method = %method,
        path = uri.path(),
        route = route_label,
        status,
        duration_us = took.as_micros() as u64,
        caller = caller.as_deref().unwrap_or("-"),
        revision = resp.headers().get(crate::HEADER_REVISION).and_then(|v| v.to_str().ok()).unwrap_or("-"),
        "request"
    );
    resp
}
