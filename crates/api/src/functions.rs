//! The function registry routes.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use colony_core::units::{parse_duration, parse_size};
use colony_core::wire::{DefaultSet, Deployed, ErrorBody, FunctionInfo, FunctionList, SetDefault};
use colony_core::{ErrorCode, FunctionName, IoRuntime, Manifest, RetryOn};

use crate::AppState;
use crate::error::ApiError;
use crate::openapi::RawBytes;

/// Largest JSON body of the small JSON routes.
const MAX_JSON_BYTES: usize = 64 << 10;

fn invalid_manifest(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidManifest, message)
}

/// The deploy parameters, as the API document shows them; the names are
/// the ones [`manifest_from_query`] reads (a test holds them equal).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct DeployQuery {
    /// The executor: `wasm` (the default) runs a WebAssembly module; `cgi`
    /// one that serves HTTP at `/http/{name}` (CGI); `component` a
    /// wasi:http proxy component served there; `builtin` a native function
    /// named by the body.
    #[param(value_type = Option<String>, pattern = "^(wasm|cgi|component|builtin)$", example = "builtin")]
    executor: Option<String>,
    /// How input and output reach the code: `stdio` (the default: the
    /// payload is stdin, stdout the result) or `files` (named files in
    /// `/input`, the result the files written to `/output`).
    io: Option<colony_core::IoRuntime>,
    /// With `io=files`: an input file a call must give (letters, digits,
    /// `.`, `_`, `-`); repeatable. Without any, calls may give any files.
    #[param(style = Form, explode, max_items = 64, example = json!(["a.txt", "b.txt"]))]
    input_file: Option<Vec<String>>,
    /// With `io=files`: an output file collected from `/output`;
    /// repeatable. Without any, every regular file there is collected.
    #[param(style = Form, explode, max_items = 64, example = json!(["merged.txt"]))]
    output_file: Option<Vec<String>>,
    /// Timeout of one invocation, like `500ms`, `2s` or `1m` (default 10 s; at
    /// most the worker's `max_timeout`).
    #[param(example = "2s")]
    timeout: Option<String>,
    /// The timeout in milliseconds, instead of `timeout`.
    #[param(minimum = 1, maximum = 18446744073709551615_u64)]
    timeout_ms: Option<u64>,
    /// Linear-memory cap, like `64MiB` (default 128 MiB; at least 64 KiB, at
    /// most the worker's `max_memory`).
    #[param(example = "64MiB")]
    memory: Option<String>,
    /// Stdout cap, like `1MiB` (default 8 MiB; at most the worker's `max_output`).
    #[param(example = "1MiB")]
    output: Option<String>,
    /// An environment variable `KEY=VALUE` for the guest; repeatable.
    #[param(style = Form, explode, max_items = 256, value_type = Option<Vec<EnvVar>>, inline)]
    env: Option<Vec<String>>,
    /// An argument after `argv[0]`; repeatable.
    #[param(style = Form, explode, max_items = 256)]
    arg: Option<Vec<String>>,
    /// A host directory the guest sees, `HOST:GUEST` (read-write) or
    /// `HOST:GUEST:ro`; the host path must lie under one of the worker's
    /// `allowed_dirs`; repeatable.
    #[param(style = Form, explode, max_items = 16, example = json!(["/srv/data:/data:ro"]))]
    dir: Option<Vec<String>>,
    /// Task attempts (default 3).
    #[param(minimum = 1, maximum = 100)]
    max_attempts: Option<u32>,
    /// Failure kinds tasks retry, comma-separated (default
    /// `timeout,worker_lost`); empty retries nothing.
    #[param(style = Form, explode = false)]
    retry_on: Option<Vec<RetryOn>>,
    /// Delay before a task's first retry, like `1s` (the default); it doubles
    /// each attempt.
    #[param(example = "1s")]
    backoff: Option<String>,
    /// Ceiling on the retry delay (default `1m`); at least `backoff`.
    #[param(example = "1m")]
    max_backoff: Option<String>,
    /// Most invocations of the function running at once on this worker,
    /// calls and tasks together; 0 (the default) for no limit of its own.
    #[param(minimum = 0, maximum = 4294967295_u32)]
    concurrency: Option<u32>,
    /// `false` (or `0`, `no`) to deploy without making the revision the
    /// function's default.
    #[param(value_type = Option<String>, pattern = "^(true|1|yes|false|0|no)$", example = "false")]
    default: Option<bool>,
}

/// One `env` deploy parameter: `KEY=VALUE`, no NUL bytes, a non-empty key.
#[derive(Debug)]
pub(crate) struct EnvVar;

impl utoipa::PartialSchema for EnvVar {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[^=\\u0000]+=[^\\u0000]*$"))
            .examples(["GREETING=hi"])
            .into()
    }
}

impl utoipa::ToSchema for EnvVar {}

/// Builds a manifest from deploy query parameters:
/// `executor`, `io`, `timeout` (`2s`) or `timeout_ms`, `memory` (`64MiB`),
/// `output` (`8MiB`), `env=K=V`, `arg=A` and `dir=HOST:GUEST[:ro]`
/// (repeatable), the task retry
/// policy (`max_attempts`, `retry_on=timeout,trap`, `backoff`,
/// `max_backoff`), `concurrency` (per-function limit), and `default`.
/// Returns the manifest and whether to make the revision the default.
pub(crate) fn manifest_from_query(query: &str) -> Result<(Manifest, bool), ApiError> {
    let mut m = Manifest::default();
    let mut make_default = true;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let bad = |reason: String| invalid_manifest(format!("parameter `{key}`: {reason}"));
        match &*key {
            "executor" => m.executor = value.into_owned(),
            "io" => {
                m.io = match &*value {
                    "stdio" => IoRuntime::Stdio,
                    "files" => IoRuntime::Files,
                    other => {
                        return Err(bad(format!(
                            "unknown I/O runtime {other:?}; known: stdio, files"
                        )));
                    }
                }
            }
            "timeout" => {
                let d = parse_duration(&value).map_err(bad)?;
                m.limits.timeout_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            }
            "timeout_ms" => {
                m.limits.timeout_ms = value
                    .parse()
                    .map_err(|_| bad(format!("{value:?} is not a number")))?
            }
            "memory" => m.limits.memory_bytes = parse_size(&value).map_err(bad)?,
            "output" => m.limits.output_bytes = parse_size(&value).map_err(bad)?,
            "env" => {
                let (k, v) = value
                    .split_once('=')
                    .ok_or_else(|| bad(format!("{value:?} is not KEY=VALUE")))?;
                m.env.insert(k.to_owned(), v.to_owned());
            }
            "arg" => m.args.push(value.into_owned()),
            "input_file" => m.inputs.push(value.into_owned()),
            "output_file" => m.outputs.push(value.into_owned()),
            "dir" => m
                .dirs
                .push(colony_core::DirMount::parse(&value).map_err(bad)?),
            "max_attempts" => {
                m.retry.max_attempts = value
                    .parse()
                    .map_err(|_| bad(format!("{value:?} is not a number")))?
            }
            "retry_on" => {
                m.retry.on = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse::<colony_core::RetryOn>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(bad)?;
                m.retry.on.sort();
                m.retry.on.dedup();
            }
            "backoff" => {
                let d = parse_duration(&value).map_err(bad)?;
                m.retry.backoff_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            }
            "max_backoff" => {
                let d = parse_duration(&value).map_err(bad)?;
                m.retry.max_backoff_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            }
            "concurrency" => {
                m.concurrency = value
                    .parse()
                    .map_err(|_| bad(format!("{value:?} is not a number")))?
            }
            "default" => {
                make_default = match &*value {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    other => return Err(bad(format!("{other:?} is not true or false"))),
                }
            }
            _ => {
                return Err(invalid_manifest(format!(
                    "unknown parameter `{key}`; known: executor, io, input_file, output_file, timeout, \
                     timeout_ms, memory, output, env, arg, dir, max_attempts, retry_on, backoff, max_backoff, concurrency, default"
                )));
            }
        }
    }
    Ok((m, make_default))
}

/// `PUT /functions/{name}`: the body is the code (a wasm binary, WAT text,
/// or a builtin's name); the query is the manifest. 201 with the new
/// revision, or 200 when identical code and manifest were already deployed.
#[utoipa::path(
    put,
    path = "/functions/{name}",
    operation_id = "deploy_function",
    summary = "Deploy a revision of a function",
    tag = "functions",
    params(("name" = FunctionName, Path, description = "The function."), DeployQuery),
    request_body(
        description = "The code: a wasm binary, WAT text, or (with `executor=builtin`) a \
                       builtin's name (`echo`, `sha256`, `wordcount`); at most the worker's \
                       `max_code` (64 MiB by default).",
        content(
            (inline(RawBytes) = "application/octet-stream"),
            (String = "text/plain", example = "echo"),
        ),
    ),
    responses(
        (status = 201, description = "A new revision.", body = Deployed, links(
            ("run" = (operation_id = "run", parameters(("target" = "$response.body#/function")))),
            ("get_function" = (operation_id = "get_function",
                parameters(("name" = "$response.body#/function")))),
            ("delete_function" = (operation_id = "delete_function",
                parameters(("name" = "$response.body#/function")))),
        )),
        (status = 200, description = "Identical code and manifest were already deployed: \
            that revision (made the default unless `default=false`).", body = Deployed),
        (status = 400, description = "`invalid_name`; `invalid_manifest`: a bad parameter or a \
            limit above the worker's ceiling; `invalid_module`: empty, malformed or not a \
            WASI command, or an unknown builtin.", body = ErrorBody),
        (status = 409, description = "`too_many_functions`: a new function on a worker that \
            holds as many as it allows.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the code is over `max_code`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
    ),
)]
pub(crate) async fn deploy(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path(name) = name?;
    let name = FunctionName::new(name)?;
    let (manifest, make_default) = manifest_from_query(query.as_deref().unwrap_or(""))?;
    let limit = usize::try_from(state.worker.config().max_code_bytes).unwrap_or(usize::MAX);
    let code = crate::body::read(&headers, body, limit).await?;
    if code.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidModule,
            "the request body is empty; send the module (or the builtin's name) as the body",
        ));
    }
    let deployed = state
        .worker
        .deploy(name, code, manifest, make_default)
        .await?;
    let status = if deployed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(deployed)).into_response())
}

/// `GET /functions`.
#[utoipa::path(
    get,
    path = "/functions",
    operation_id = "list_functions",
    summary = "List every function",
    tag = "functions",
    responses((status = 200, description = "Every function, sorted by name.", body = FunctionList)),
)]
pub(crate) async fn list(State(state): State<AppState>) -> Json<FunctionList> {
    Json(FunctionList {
        functions: state.worker.functions(),
    })
}

/// `GET /functions/{name}`.
#[utoipa::path(
    get,
    path = "/functions/{name}",
    operation_id = "get_function",
    summary = "Show a function, its revisions and default",
    tag = "functions",
    params(("name" = FunctionName, Path, description = "The function.")),
    responses(
        (status = 200, description = "The function, its revisions and default.", body = FunctionInfo),
        (status = 400, description = "`invalid_name`.", body = ErrorBody),
        (status = 404, description = "`function_not_found`.", body = ErrorBody),
    ),
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<FunctionInfo>, ApiError> {
    let Path(name) = name?;
    let name = FunctionName::new(name)?;
    Ok(Json(state.worker.function(&name)?))
}

/// `PUT /functions/{name}/default` with `{"revision": "<id or prefix>"}`.
#[utoipa::path(
    put,
    path = "/functions/{name}/default",
    operation_id = "set_default_revision",
    summary = "Switch a function's default revision",
    tag = "functions",
    params(("name" = FunctionName, Path, description = "The function.")),
    request_body = SetDefault,
    responses(
        (status = 200, description = "The default revision now.", body = DefaultSet),
        (status = 400, description = "`invalid_name`; `bad_request`: malformed JSON; \
            `ambiguous_revision`: a prefix matching several revisions.", body = ErrorBody),
        (status = 404, description = "`function_not_found`, `revision_not_found`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 64 KiB.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
    ),
)]
pub(crate) async fn set_default(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<DefaultSet>, ApiError> {
    let Path(name) = name?;
    let name = FunctionName::new(name)?;
    let bytes = crate::body::read(&headers, body, MAX_JSON_BYTES).await?;
    let req: SetDefault = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid JSON body: {e}; expected {{\"revision\": \"<id>\"}}"
        ))
    })?;
    let id = state.worker.set_default(&name, req.revision.trim()).await?;
    Ok(Json(DefaultSet {
        function: name,
        default_revision: id,
    }))
}

/// `DELETE /functions/{name}`: 204.
#[utoipa::path(
    delete,
    path = "/functions/{name}",
    operation_id = "delete_function",
    summary = "Delete a function and its revisions",
    tag = "functions",
    params(("name" = FunctionName, Path, description = "The function.")),
    responses(
        (status = 204, description = "Deleted, with its revisions."),
        (status = 400, description = "`invalid_name`.", body = ErrorBody),
        (status = 404, description = "`function_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
    ),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(name) = name?;
    let name = FunctionName::new(name)?;
    state.worker.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn query_builds_the_manifest() {
        let (m, d) = manifest_from_query(
            "executor=builtin&timeout=2s&memory=64MiB&output=1MiB&env=A%3D1&env=B=two%3Dx&arg=-v&arg=x+y&default=false",
        )
        .unwrap();
        assert_eq!(m.executor, "builtin");
        assert_eq!(m.limits.timeout_ms, 2000);
        assert_eq!(m.limits.memory_bytes, 64 << 20);
        assert_eq!(m.limits.output_bytes, 1 << 20);
        assert_eq!(m.env.get("A").map(String::as_str), Some("1"));
        assert_eq!(m.env.get("B").map(String::as_str), Some("two=x"));
        assert_eq!(m.args, ["-v", "x y"]);
        assert!(!d);
    }

    #[test]
    fn query_errors_name_the_parameter() {
        for (q, needle) in [
            ("timeout=soon", "`timeout`"),
            ("memory=lots", "`memory`"),
            ("env=novalue", "`env`"),
            ("colour=red", "unknown parameter `colour`"),
            ("io=tape", "`io`"),
        ] {
            let err = manifest_from_query(q).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidManifest);
            assert!(err.message().contains(needle), "{q}: {}", err.message());
            assert_eq!(err.into_response().status(), StatusCode::BAD_REQUEST);
        }
    }

    /// Query strings: anything, percent-encoded bytes, and pairs of the
    /// real parameters with plausible or arbitrary values.
    fn query() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            4 => prop::sample::select(vec![
                "executor", "io", "input_file", "output_file", "timeout", "timeout_ms", "memory",
                "output", "env", "arg", "dir",
                "max_attempts", "retry_on", "backoff", "max_backoff", "concurrency", "default",
            ])
            .prop_map(str::to_owned),
            1 => "\\PC{0,12}",
        ];
        let value = prop_oneof![
            "[0-9]{1,25}",
            "[0-9]{1,12}(ms|s|m|h|d|KiB|MiB|GiB|K|M|G|MB|B| parsecs)?",
            "[A-Za-z_]{0,6}=?\\PC{0,12}",
            "((trap|timeout|exit|worker_lost|limit|x| ),?){0,6}",
            "true|false|0|1|yes|no|maybe|wasm|builtin|stdio",
            any::<String>(),
        ];
        let pairs = prop::collection::vec((key, value), 0..12).prop_map(|pairs| {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &pairs {
                q.append_pair(k, v);
            }
            q.finish()
        });
        prop_oneof![
            4 => pairs,
            1 => any::<String>(),
            1 => prop::collection::vec(any::<u8>(), 0..64)
                .prop_map(|b| form_urlencoded::byte_serialize(&b).collect()),
        ]
    }

    proptest! {
        /// Any query either builds a manifest (which the worker then checks
        /// with `validate()` and its ceilings) or is refused as
        /// `invalid_manifest` naming the parameter; nothing panics.
        #[test]
        fn any_query_builds_a_manifest_or_is_invalid_manifest(q in query()) {
            match manifest_from_query(&q) {
                Ok((m, _)) => {
                    let _ = m.validate();
                    let _ = m.canonical_json();
                }
                Err(e) => {
                    prop_assert_eq!(e.code(), ErrorCode::InvalidManifest);
                    prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST);
                    prop_assert!(e.message().contains("parameter `"), "{}", e.message());
                }
            }
        }

        /// Parameters written the documented way land in the manifest.
        #[test]
        fn documented_parameters_land_in_the_manifest(
            timeout_ms in 1u64..10_000_000,
            memory in (1u64..1 << 20, prop::sample::select(vec![("KiB", 1u64 << 10), ("MiB", 1 << 20), ("", 1)])),
            output in 1u64..1 << 40,
            env in prop::collection::btree_map("[A-Z_]{1,8}", "\\PC{0,16}", 0..5),
            args in prop::collection::vec("\\PC{0,16}", 0..5),
            max_attempts in 1u32..=100,
            retry_on in prop::sample::subsequence(RetryOn::ALL.to_vec(), 0..=5),
            backoff_ms in 0u64..1 << 30,
            concurrency in any::<u32>(),
            default in prop::sample::select(vec![("true", true), ("1", true), ("yes", true), ("false", false), ("0", false), ("no", false)]),
        ) {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("executor", "builtin")
                .append_pair("timeout", &format!("{timeout_ms}ms"))
                .append_pair("memory", &format!("{}{}", memory.0, memory.1.0))
                .append_pair("output", &output.to_string())
                .append_pair("max_attempts", &max_attempts.to_string())
                .append_pair("retry_on", &retry_on.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(","))
                .append_pair("backoff", &format!("{backoff_ms}ms"))
                .append_pair("max_backoff", &format!("{}ms", backoff_ms * 2))
                .append_pair("concurrency", &concurrency.to_string())
                .append_pair("default", default.0);
            for (k, v) in &env {
                q.append_pair("env", &format!("{k}={v}"));
            }
            for a in &args {
                q.append_pair("arg", a);
            }
            let q = q.finish();
            let (m, make_default) = manifest_from_query(&q).unwrap();
            prop_assert_eq!(m.executor.as_str(), "builtin");
            prop_assert_eq!(m.limits.timeout_ms, timeout_ms);
            prop_assert_eq!(m.limits.memory_bytes, memory.0 * memory.1.1);
            prop_assert_eq!(m.limits.output_bytes, output);
            prop_assert_eq!(&m.env, &env);
            prop_assert_eq!(&m.args, &args);
            prop_assert_eq!(m.retry.max_attempts, max_attempts);
            prop_assert_eq!(&m.retry.on, &retry_on);
            prop_assert_eq!(m.retry.backoff_ms, backoff_ms);
            prop_assert_eq!(m.retry.max_backoff_ms, backoff_ms * 2);
            prop_assert_eq!(m.concurrency, concurrency);
            prop_assert_eq!(make_default, default.1);
        }
    }
}
