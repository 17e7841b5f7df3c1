//! The task routes: submit, show (with long poll), result, list, cancel.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use colony_core::files::FileSet;
use colony_core::wire::{ErrorBody, FileInput, SubmitTask, Submitted, TaskInfo, TaskList};
use colony_core::{ErrorCode, FunctionName, FunctionRef, TaskId, TaskState};
use colony_worker::Submission;
use serde::Deserialize;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::RawBytes;

/// Longest long poll.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Default and largest page of `GET /tasks`.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 1000;

fn task_id(s: &str) -> Result<TaskId, ApiError> {
    TaskId::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Tasks of other owners do not exist for an `invoke` token: 404, so
/// ids of other clients' tasks cannot be probed.
/// Returns the task when it had to read it, so callers need not read it
/// again.
async fn visible(
    state: &AppState,
    caller: &Caller,
    id: &TaskId,
) -> Result<Option<TaskInfo>, ApiError> {
    if caller.admin {
        return Ok(None);
    }
    let info = state.worker.task(id).await?;
    if caller.may_see(info.owner.as_deref()) {
        Ok(Some(info))
    } else {
        Err(colony_worker::Error::TaskNotFound { id: id.to_string() }.into())
    }
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
#[utoipa::path(
    post,
    path = "/tasks",
    operation_id = "submit_task",
    summary = "Submit a task",
    tag = "tasks",
    request_body = SubmitTask,
    responses(
        (status = 202, description = "The task is durably committed and queued.", body = Submitted,
            headers(("location" = String, description = "`/tasks/{id}`.")),
            links(
                ("get_task" = (operation_id = "get_task", parameters(("id" = "$response.body#/id")))),
                ("get_task_result" = (operation_id = "get_task_result",
                    parameters(("id" = "$response.body#/id")))),
                ("cancel_task" = (operation_id = "cancel_task",
                    parameters(("id" = "$response.body#/id")))),
            )),
        (status = 200, description = "The idempotency key matched a retained task: that task \
            (`created: false`).", body = Submitted,
            headers(("location" = String, description = "`/tasks/{id}`."))),
        (status = 400, description = "`bad_request`: malformed JSON, an unknown field, both \
            `input` and `input_base64`, bad base64, `max_attempts`, `timeout_ms` or \
            `idempotency_key` out of range (the message names the field); `invalid_name`: a \
            malformed `function`; `ambiguous_revision`.", body = ErrorBody),
        (status = 404, description = "`function_not_found`, `revision_not_found`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the input is over `max_body`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`draining`: the worker is shutting down.", body = ErrorBody,
            headers(("retry-after" = u64, description = "Seconds to wait before retrying."))),
    ),
)]
pub(crate) async fn submit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
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
        (text, b64) if req.files.is_some() => {
            if text.is_some() || b64.is_some() {
                return Err(ApiError::bad_request(
                    "give `files` or `input`/`input_base64`, not both",
                ));
            }
            let files = req.files.unwrap_or_default();
            input_files(&state, &caller, files, limit).await?
        }
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
            owner: caller.owner(),
            directive: req.directive,
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShowQuery {
    /// Long poll: answer as soon as the task is finished, or after this
    /// many seconds (at most 60 are waited) with the task as it is then.
    #[param(minimum = 0)]
    wait: Option<f64>,
}

/// `GET /tasks/{id}[?wait=SECONDS]`.
#[utoipa::path(
    get,
    path = "/tasks/{id}",
    operation_id = "get_task",
    summary = "Show a task, optionally after a long poll",
    tag = "tasks",
    params(("id" = TaskId, Path, description = "The task."), ShowQuery),
    responses(
        (status = 200, description = "The task.", body = TaskInfo),
        (status = 400, description = "`bad_request`: a malformed id or `wait`.", body = ErrorBody),
        (status = 404, description = "`task_not_found`: never submitted, or deleted after its \
            retention.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
    ),
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<ShowQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TaskInfo>, ApiError> {
    let Path(id) = id?;
    let id = task_id(&id)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let seen = visible(&state, &caller, &id).await?;
    let info = match q.wait {
        Some(w) if w.is_finite() && w > 0.0 => {
            // Clamped before converting: a huge `wait` would overflow a Duration.
            let wait = Duration::from_secs_f64(w.min(MAX_WAIT.as_secs_f64()));
            state.worker.wait_task(&id, wait).await?
        }
        Some(w) if !(w.is_finite() && w >= 0.0) => {
            return Err(ApiError::bad_request(format!(
                "wait: {w} is not a number of seconds"
            )));
        }
        _ => match seen {
            Some(info) => info,
            None => state.worker.task(&id).await?,
        },
    };
    Ok(Json(info))
}

/// A task's input files: content given inline, or output files of
/// earlier succeeded tasks the caller may see.
async fn input_files(
    state: &AppState,
    caller: &Caller,
    files: std::collections::BTreeMap<String, FileInput>,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    let mut set = FileSet::new();
    let mut total = 0usize;
    let mut results: std::collections::HashMap<TaskId, FileSet> = Default::default();
    for (name, f) in files {
        let field = |what: &str| ApiError::bad_request(format!("field `files.{name}`: {what}"));
        let data = match (f.text, f.base64, f.task) {
            (Some(text), None, None) if f.file.is_none() => bytes::Bytes::from(text),
            (None, Some(b64), None) if f.file.is_none() => {
                base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map(bytes::Bytes::from)
                    .map_err(|e| field(&format!("base64: {e}")))?
            }
            (None, None, Some(task)) => {
                let id =
                    task_id(&task).map_err(|_| field(&format!("{task:?} is not a task id")))?;
                if !results.contains_key(&id) {
                    visible(state, caller, &id).await?;
                    let bytes = state.worker.task_result(&id).await?;
                    let outputs = FileSet::decode(&bytes)
                        .map_err(|_| field(&format!("task {id} is not of a files function")))?;
                    results.insert(id.clone(), outputs);
                }
                let from = f.file.as_deref().unwrap_or(&name);
                results[&id]
                    .get(from)
                    .cloned()
                    .ok_or_else(|| field(&format!("task {id} has no output file {from}")))?
            }
            _ => {
                return Err(field(
                    "give one of `text`, `base64` or `task` (with `file` only beside `task`)",
                ));
            }
        };
        // Refused before anything is copied: files referenced many times
        // would otherwise add up far past the limit.
        total = total.saturating_add(data.len());
        if total > limit {
            return Err(too_large(limit));
        }
        set.insert(&name, data).map_err(|e| field(&e))?;
    }
    Ok(set.encode())
}

/// `GET /tasks/{id}/result`: the output bytes of a succeeded task.
#[utoipa::path(
    get,
    path = "/tasks/{id}/result",
    operation_id = "get_task_result",
    summary = "A succeeded task's output",
    tag = "tasks",
    params(("id" = TaskId, Path, description = "The task.")),
    responses(
        (status = 200, description = "The task's output.",
            content_type = "application/octet-stream", body = inline(RawBytes)),
        (status = 400, description = "`bad_request`: a malformed id.", body = ErrorBody),
        (status = 404, description = "`task_not_found`; `result_not_found`: the task has not \
            succeeded (yet).", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
    ),
)]
pub(crate) async fn result(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let id = task_id(&id)?;
    visible(&state, &caller, &id).await?;
    let bytes = state.worker.task_result(&id).await?;
    // The result of a files function: its files, listed.
    if let Ok(set) = FileSet::decode(&bytes) {
        return Ok(Json(crate::files::listing(&set)).into_response());
    }
    let mut resp = (StatusCode::OK, bytes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}

/// `GET /tasks/{id}/files/{file}`: one output file of a succeeded task of
/// a `files` function.
#[utoipa::path(
    get,
    path = "/tasks/{id}/files/{file}",
    operation_id = "get_task_file",
    summary = "One output file of a succeeded task",
    tag = "tasks",
    params(
        ("id" = TaskId, Path, description = "The task."),
        ("file" = String, Path, description = "The file's name."),
    ),
    responses(
        (status = 200, description = "The file's content.",
            content_type = "application/octet-stream", body = inline(RawBytes)),
        (status = 400, description = "`bad_request`: a malformed id.", body = ErrorBody),
        (status = 404, description = "`task_not_found`; `result_not_found`: the task has not \
            succeeded (yet), is not of a `files` function, or wrote no such file.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
    ),
)]
pub(crate) async fn file(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((id, name)) = params?;
    let id = task_id(&id)?;
    visible(&state, &caller, &id).await?;
    let bytes = state.worker.task_result(&id).await?;
    let not_found =
        |why: String| ApiError::new(StatusCode::NOT_FOUND, ErrorCode::ResultNotFound, why);
    let set = FileSet::decode(&bytes)
        .map_err(|_| not_found(format!("task {id} is not of a files function")))?;
    let data = set
        .get(&name)
        .cloned()
        .ok_or_else(|| not_found(format!("task {id} wrote no file {name:?}")))?;
    let mut resp = (StatusCode::OK, data).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only tasks in this state; empty for any.
    #[param(value_type = Option<StateFilter>, inline)]
    state: Option<String>,
    /// Only tasks of this function; empty for any.
    #[param(value_type = Option<NameFilter>, inline)]
    function: Option<String>,
    /// Page size: 1 to 1000, 50 by default.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` of the previous page; empty for the first page.
    #[param(value_type = Option<CursorFilter>, inline)]
    after: Option<String>,
    /// Only tasks of this directive; empty for any.
    #[param(value_type = Option<DirectiveFilter>, inline)]
    directive: Option<String>,
}

/// The `directive` filter: a directive id, or empty for any.
#[derive(Debug)]
pub(crate) struct DirectiveFilter;

impl utoipa::PartialSchema for DirectiveFilter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_or_empty("^[A-Za-z0-9_-]{1,64}$")
    }
}

impl utoipa::ToSchema for DirectiveFilter {}

/// The `state` filter: a task state, or empty for any.
#[derive(Debug)]
pub(crate) struct StateFilter;

impl utoipa::PartialSchema for StateFilter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let states = std::iter::once("").chain(TaskState::ALL.map(TaskState::as_str));
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(states))
            .into()
    }
}

impl utoipa::ToSchema for StateFilter {}

/// The `function` filter: a function name, or empty for any.
#[derive(Debug)]
pub(crate) struct NameFilter;

impl utoipa::PartialSchema for NameFilter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_or_empty(colony_core::name::NAME_PATTERN)
    }
}

impl utoipa::ToSchema for NameFilter {}

/// The `after` cursor: a task id, or empty for the first page.
#[derive(Debug)]
pub(crate) struct CursorFilter;

impl utoipa::PartialSchema for CursorFilter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_or_empty(colony_core::task::TASK_ID_PATTERN)
    }
}

/// A string matching `pattern`, or empty.
fn string_or_empty(pattern: &str) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(or_empty(pattern)))
        .into()
}

impl utoipa::ToSchema for CursorFilter {}

/// `^x$` to `^(x)?$`.
fn or_empty(pattern: &str) -> String {
    let inner = pattern.trim_start_matches('^').trim_end_matches('$');
    format!("^({inner})?$")
}

/// `GET /tasks?state=&function=&limit=&after=&directive=`: newest first.
#[utoipa::path(
    get,
    path = "/tasks",
    operation_id = "list_tasks",
    summary = "List tasks, newest first",
    tag = "tasks",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of tasks, newest first.", body = TaskList),
        (status = 400, description = "`bad_request`: a bad `state`, `limit`, `after` or \
            `directive`, or an unknown parameter; `invalid_name`: a malformed `function`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
    ),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
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
    let directive = q.directive.filter(|s| !s.is_empty());
    if let Some(d) = &directive
        && !colony_core::wire::valid_directive(d)
    {
        return Err(ApiError::bad_request(
            "directive: must be 1 to 64 of A-Z a-z 0-9 _ -",
        ));
    }
    // Non-admin tokens see their own tasks only.
    let owner = if caller.admin {
        None
    } else {
        Some(caller.owner().unwrap_or_default())
    };
    Ok(Json(
        state
            .worker
            .tasks(task_state, function, limit, after, owner, directive)
            .await?,
    ))
}

/// `DELETE /tasks/{id}`: cancel. 200 with the cancelled task; 202 when a
/// running guest has not stopped yet (its cancel stands); 409 when the
/// task had already finished.
#[utoipa::path(
    delete,
    path = "/tasks/{id}",
    operation_id = "cancel_task",
    summary = "Cancel a task",
    tag = "tasks",
    params(("id" = TaskId, Path, description = "The task.")),
    responses(
        (status = 200, description = "Cancelled; the task.", body = TaskInfo),
        (status = 202, description = "The cancel stands, but a running guest has not stopped \
            within 5 s; the task.", body = TaskInfo),
        (status = 400, description = "`bad_request`: a malformed id.", body = ErrorBody),
        (status = 404, description = "`task_not_found`.", body = ErrorBody),
        (status = 409, description = "`task_finished`: the task had already finished; the \
            message names its state.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
    ),
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let id = task_id(&id)?;
    visible(&state, &caller, &id).await?;
    let info = state.worker.cancel_task(&id).await?;
    let status = if info.state == TaskState::Cancelled {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(info)).into_response())
}
