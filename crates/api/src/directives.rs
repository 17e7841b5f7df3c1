//! The directive route: a directive's result channel as a stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use colony_core::wire::{DirectiveEvent, ErrorBody};
use futures_util::StreamExt;
use futures_util::stream;

use colony_worker::event_line as line;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// How often a quiet stream says it is alive.
const PING_EVERY: Duration = Duration::from_secs(10);

/// `GET /directives/{id}/events`: leases the directive's result channel
/// and streams how its tasks end, as newline-delimited JSON, until the
/// client goes away or the worker drains.
#[utoipa::path(
    get,
    path = "/directives/{id}/events",
    operation_id = "directive_events",
    summary = "Stream how the tasks of a directive end",
    description = "Leases the result channel of directive `id`: every task submitted with \
        `directive: id` that ends from now on (in a cluster: on any worker) is told here once, \
        as one line of newline-delimited JSON (`event: done`, with the result inline up to \
        64 KiB). The first line is `event: open`; `event: ping` follows every 10 s of quiet. \
        A newer lease of the same id on this worker ends this stream. With tokens, each \
        token has its own channels: it hears the tasks it submitted itself. Tasks that ended while \
        nobody listened are read with `GET /tasks?directive=id`. The stream ends when the \
        worker begins to drain.",
    tag = "tasks",
    params(("id" = String, Path, description = "The directive: 1 to 64 of `A-Z a-z 0-9 _ -`.",
        pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 200, description = "The stream, one `DirectiveEvent` per line.",
            content_type = "application/x-ndjson", body = DirectiveEvent),
        (status = 400, description = "`bad_request`: a malformed id.", body = ErrorBody),
        (status = 503, description = "`cluster_unavailable`: the channel cannot be leased \
            now.", body = ErrorBody),
    ),
)]
pub(crate) async fn events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::bad_request(e.body_text()))?;
    // With tokens, each token has its own channels: it hears the tasks it
    // submitted.
    let owner = caller.owner();
    let listener = state.worker.listen(&id, owner.as_deref()).await?;
    // Ends when the worker drains (at once if it already does: the stream
    // then says it listens, and ends).
    let drain = state.worker.drain_signal();
    let open = line(&DirectiveEvent::Open { directive: id });
    let ping = line(&DirectiveEvent::Ping);
    let start = tokio::time::Instant::now() + PING_EVERY;
    let ticks = tokio::time::interval_at(start, PING_EVERY);
    let events = stream::unfold(
        (listener, ticks, drain),
        move |(mut listener, mut ticks, mut drain)| {
            let ping = ping.clone();
            async move {
                let next = tokio::select! {
                    biased;
                    _ = drain.wait_for(|d| *d) => return None,
                    line = listener.next() => line?,
                    _ = ticks.tick() => ping,
                };
                ticks.reset();
                Some((Ok::<_, Infallible>(next), (listener, ticks, drain)))
            }
        },
    );
    let body = stream::once(async move { Ok(open) }).chain(events);
    let mut resp = Body::from_stream(body).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}
