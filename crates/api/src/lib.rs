//! Colony's HTTP API.
//!
//! [`router`] builds the whole API over a [`colony_worker::Worker`], so
//! tests drive it without a socket; [`serve`] runs it on a listener until a
//! shutdown future resolves.
//!
//! # Layout
//!
//! - `error`: [`ApiError`], the one error type of every handler: a status,
//!   a stable `code` and a message, rendered as JSON.
//! - `body`: reading request bodies under a size limit (413, not a hang).
//! - `run`: `POST /run/{name}` and `POST /run/{name}@{rev}`.
//! - `functions`: deploy, list, show, switch default, delete.
//! - `tasks`: submit, show (long poll), result, list, cancel tasks.
//! - `status`: `GET /status`.
//! - `metrics`: `GET /metrics`, the Prometheus exposition.
//! - `openapi`: `GET /openapi.json`, generated (utoipa) from the handlers'
//!   annotations and the wire types, so it cannot drift from the code.
//! - `auth`: bearer tokens with `admin` and `invoke` scopes.
//! - `gate`: the layer on every route: URL and header limits, auth,
//!   the access log line and HTTP metrics.
//!
//! # Routes
//!
//! | method | path | what |
//! |---|---|---|
//! | POST | `/run/{name}[@{rev}]` | body → stdin; 200 with stdout |
//! | ANY | `/http/{name}[@{rev}]/{*path}` | a `cgi` function serves the request (CGI 1.1) |
//! | PUT | `/functions/{name}` | deploy code (body) with manifest (query) |
//! | GET | `/functions` | every function |
//! | GET | `/functions/{name}` | one function, its revisions and default |
//! | PUT | `/functions/{name}/default` | `{"revision": "<id or prefix>"}` |
//! | DELETE | `/functions/{name}` | delete the function |
//! | POST | `/tasks` | submit a task; 202 once durably committed |
//! | GET | `/tasks` | tasks, newest first: `state`, `function`, `limit`, `after` |
//! | GET | `/tasks/{id}` | one task; `?wait=SECONDS` long-polls until it finishes |
//! | GET | `/tasks/{id}/result` | the output of a succeeded task |
//! | DELETE | `/tasks/{id}` | cancel the task |
//! | GET | `/status` | ready/draining, uptime, counts |
//! | GET | `/workers` | live workers (the cluster's) and their load |
//! | GET | `/metrics` | Prometheus metrics |
//! | GET | `/openapi.json` | the OpenAPI 3 description |
#![forbid(unsafe_code)]

mod auth;
mod body;
mod directives;
mod error;
mod files;
mod functions;
mod gate;
mod http;
mod metrics;
mod openapi;
mod run;
mod status;
mod tasks;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get, post, put};
use colony_worker::Worker;
use tokio::net::TcpListener;

pub use auth::{Auth, Caller, MIN_TOKEN_LEN, Scope};
pub use error::ApiError;
pub use gate::{MAX_HEADER_BYTES, MAX_URI_BYTES};
pub use openapi::spec;

/// Default largest request body for `/run`: 16 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;

/// Response header naming the revision that ran.
pub const HEADER_REVISION: &str = "colony-revision";
/// Response header with the run time in microseconds.
pub const HEADER_DURATION_US: &str = "colony-duration-us";
/// Response header with the guest's exit code.
pub const HEADER_EXIT_CODE: &str = "colony-exit-code";

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The worker.
    pub worker: Arc<Worker>,
    /// Largest request body accepted by `/run`.
    pub max_body_bytes: usize,
    /// The tokens; open when none.
    pub auth: Arc<Auth>,
}

impl AppState {
    /// State for an open API (no tokens) with the default body limit.
    pub fn open(worker: Arc<Worker>) -> Self {
        Self {
            worker,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            auth: Arc::new(Auth::open()),
        }
    }
}

/// Builds the API router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/run/{target}", post(run::run))
        .route("/http/{target}", any(http::root))
        .route("/http/{target}/", any(http::root))
        .route("/http/{target}/{*path}", any(http::path))
        .route("/functions", get(functions::list))
        .route(
            "/functions/{name}",
            put(functions::deploy)
                .get(functions::show)
                .delete(functions::delete),
        )
        .route("/functions/{name}/default", put(functions::set_default))
        .route("/tasks", post(tasks::submit).get(tasks::list))
        .route("/tasks/{id}", get(tasks::show).delete(tasks::cancel))
        .route("/tasks/{id}/result", get(tasks::result))
        .route("/tasks/{id}/files/{file}", get(tasks::file))
        .route("/directives/{id}/events", get(directives::events))
        .route("/status", get(status::status))
        .route("/workers", get(status::workers))
        .route("/openapi.json", get(openapi::openapi))
        .route("/metrics", get(metrics::metrics))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            gate::gate,
        ))
        .with_state(state)
}

/// Limits of the HTTP server on connections, so that slow or idle
/// clients cannot hold the worker's sockets.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Most open connections; beyond it the server stops accepting until
    /// one closes.
    pub max_connections: usize,
    /// Longest time a client may take to send a request's headers
    /// (including an idle keep-alive connection's next request).
    pub header_read_timeout: Duration,
}

/// Default most open connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default header read timeout.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting and lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, shutdown, ConnLimits::default()).await
}

/// [`serve`] with explicit connection limits.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ConnLimits,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        // A free connection slot first: when full, stop accepting (the
        // kernel's backlog holds new clients) instead of failing.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(cause = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
