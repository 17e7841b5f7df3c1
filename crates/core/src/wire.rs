//! The JSON bodies of the HTTP API, shared by the server and the client so
//! the two cannot drift apart.

use serde::{Deserialize, Serialize};

use crate::{FunctionName, Manifest, RevisionId};

/// A revision as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevisionInfo {
    /// The revision id (sha256 of code and manifest).
    pub id: RevisionId,
    /// 1 for the function's first revision, then 2, 3, ...
    pub number: u32,
    /// Whether this is the function's default revision.
    pub default: bool,
    /// The sha256 of the code.
    pub code_sha256: String,
    /// Size of the code in bytes.
    pub code_size: u64,
    /// The manifest.
    pub manifest: Manifest,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: i64,
}

/// A function as the API shows it (`GET /functions/{name}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunctionInfo {
    /// The function's name.
    pub name: FunctionName,
    /// Its default revision.
    pub default_revision: RevisionId,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// Last change (new revision or default switch).
    pub updated_ms: i64,
    /// Its revisions, oldest first.
    pub revisions: Vec<RevisionInfo>,
}

/// `GET /functions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunctionList {
    /// Every function, sorted by name.
    pub functions: Vec<FunctionInfo>,
}

/// The result of a deploy (`PUT /functions/{name}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Deployed {
    /// The function.
    pub function: FunctionName,
    /// The revision id.
    pub revision: RevisionId,
    /// The revision's number within the function.
    pub number: u32,
    /// False when identical code and manifest were already deployed.
    pub created: bool,
    /// Whether the revision is now the function's default.
    pub default: bool,
}

/// `PUT /functions/{name}/default` request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetDefault {
    /// A revision id or a unique prefix of at least 8 hex digits.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-fA-F]{8,64}$"))]
    pub revision: String,
}

/// `PUT /functions/{name}/default` response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DefaultSet {
    /// The function.
    pub function: FunctionName,
    /// Its default revision now.
    pub default_revision: RevisionId,
}

/// Whether a worker takes new work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Serving.
    Ready,
    /// Shutting down: finishing in-flight work, refusing new work.
    Draining,
}

/// What a worker does in a cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WorkerRole {
    /// Runs functions and tasks, and routes calls it cannot take.
    #[default]
    Worker,
    /// Only routes: forwards calls and submits tasks, runs nothing.
    Gateway,
}

impl WorkerRole {
    /// The name in flags and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerRole::Worker => "worker",
            WorkerRole::Gateway => "gateway",
        }
    }
}

/// One live worker and its load, as its last heartbeat said.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerInfo {
    /// The worker's id (`host:pid`).
    pub id: String,
    /// Where its HTTP API listens, when it told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// What it does.
    pub role: WorkerRole,
    /// Ready or draining.
    pub state: WorkerState,
    /// Its Colony version.
    pub version: String,
    /// Invocations and task attempts running now.
    pub running: usize,
    /// Calls waiting for a slot.
    pub queued: usize,
    /// Its concurrency limit (0 for a gateway).
    pub concurrency: usize,
    /// Task attempts among `running`.
    pub tasks_running: usize,
    /// Functions whose default revision is compiled and ready.
    pub warm_functions: Vec<String>,
    /// When it started (ms since the Unix epoch).
    pub started_ms: i64,
    /// When it last sent a heartbeat (ms since the Unix epoch).
    pub heartbeat_ms: i64,
}

/// `GET /workers` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerList {
    /// Whether this worker is in a cluster (false: only itself is listed).
    pub cluster: bool,
    /// A worker whose last heartbeat is older than this is gone.
    pub heartbeat_ttl_ms: u64,
    /// The live workers, sorted by id.
    pub workers: Vec<WorkerInfo>,
}

/// A worker's health and load (`GET /status`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Status {
    /// Ready or draining.
    pub state: WorkerState,
    /// Colony's version.
    pub version: String,
    /// Seconds since the worker started.
    pub uptime_seconds: f64,
    /// Functions deployed.
    pub functions: usize,
    /// Revisions deployed, across all functions.
    pub revisions: usize,
    /// Invocations running now.
    pub running: usize,
    /// Invocations waiting for a slot now.
    pub queued: usize,
    /// Most invocations running at once.
    pub concurrency: usize,
    /// Most invocations waiting.
    pub queue: usize,
    /// Invocation counters since start.
    pub invocations: InvocationCounts,
    /// Compile-cache counters since start.
    pub engine: EngineCounts,
    /// Tasks on this worker.
    #[serde(default)]
    pub tasks: TaskCounts,
}

/// Invocation counters.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvocationCounts {
    /// Invocations that succeeded.
    pub succeeded: u64,
    /// Invocations that ran and failed (trap, exit, timeout, limits).
    pub failed: u64,
    /// Invocations refused because the worker was saturated.
    pub rejected: u64,
}

/// Compile-cache counters.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EngineCounts {
    /// Modules compiled by this process.
    pub compiled: u64,
    /// Modules loaded from the on-disk compile cache.
    pub cache_hits: u64,
}

/// Every error body: `{"code": "...", "message": "...", ...details}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    /// The stable code (see [`crate::ErrorCode`]); kept as a string so a
    /// client understands codes newer than itself.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// Everything else: `revision`, `exit_code`, `stderr_tail`, limits...
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ErrorBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::ToSchema;
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let text = |d: &str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(d))
        };
        let int = |d: &str| {
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .description(Some(d))
        };
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Every error: a stable `code`, a `message` for people, and details. Clients \
                 should treat a code they do not know by its HTTP status.",
            ))
            .property(
                "code",
                utoipa::openapi::Ref::from_schema_name(crate::ErrorCode::name()),
            )
            .required("code")
            .property("message", text("What went wrong, for people."))
            .required("message")
            .property(
                "revision",
                text("Guest failures: the revision that ran.").pattern(Some("^[0-9a-f]{64}$")),
            )
            .property(
                "duration_ms",
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .description(Some("Guest failures: how long it ran, in milliseconds.")),
            )
            .property(
                "exit_code",
                int("`guest_exit`: the guest's exit status (also the `colony-exit-code` header)."),
            )
            .property(
                "stderr_tail",
                text("`guest_exit`, `guest_trap`: the end of the guest's stderr."),
            )
            .property(
                "limit_ms",
                int("`timeout`: the timeout that was exceeded.").minimum(Some(0)),
            )
            .property(
                "limit_bytes",
                int("`memory_limit_exceeded`, `output_limit_exceeded`: the cap that was hit.")
                    .minimum(Some(0)),
            )
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(true),
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ErrorBody {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema;
        schemas.push((
            crate::ErrorCode::name().into_owned(),
            crate::ErrorCode::schema(),
        ));
    }
}

/// `POST /tasks` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SubmitTask {
    /// The function, `name` or `name@rev`; the revision is fixed at submit.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::FunctionRef))]
    pub function: String,
    /// The input as UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The input as base64 (standard alphabet, padded) for raw bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            content_encoding = "base64",
            pattern = "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$"
        )
    )]
    pub input_base64: Option<String>,
    /// A key that makes the submit idempotent: while a task with this key
    /// is retained, submitting it again returns that task. 1 to 256 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    pub idempotency_key: Option<String>,
    /// Attempts, overriding the function's retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub max_attempts: Option<u32>,
    /// Timeout of each attempt, overriding the function's; at most the
    /// worker's ceiling (`max_timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 1, maximum = 18446744073709551615_u64)
    )]
    pub timeout_ms: Option<u64>,
    /// Higher runs first among queued tasks; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = -2147483648_i64, maximum = 2147483647))]
    pub priority: Option<i32>,
    /// For a function on the `files` I/O runtime: its input files, by
    /// name (instead of `input`); at most 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<std::collections::BTreeMap<String, FileInput>>,
    /// The directive this task belongs to: when it ends, its outcome is
    /// sent to the directive's stream (`GET /directives/{id}/events`).
    /// 1 to 64 of `A-Z a-z 0-9 _ -`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]{1,64}$")
    )]
    pub directive: Option<String>,
}

/// One input file of a task: its content as `text` or `base64`, or an
/// output file of an earlier succeeded task (`task`, and `file` when its
/// name there differs).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FileInput {
    /// The content as UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The content as base64 (standard alphabet, padded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            content_encoding = "base64",
            pattern = "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$"
        )
    )]
    pub base64: Option<String>,
    /// A succeeded task whose output file this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::TaskId>))]
    pub task: Option<String>,
    /// With `task`: the name of the file among its outputs (default: the
    /// same name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// The result of a function on the `files` I/O runtime (a call's answer,
/// a task's result): the files it wrote to `/output`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FilesResult {
    /// The files, by name.
    pub files: Vec<FileOutput>,
}

/// One output file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileOutput {
    /// Its name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its content, base64 (standard alphabet, padded).
    #[cfg_attr(feature = "openapi", schema(content_encoding = "base64"))]
    pub base64: String,
}

/// `POST /tasks` answer (202, once the task is durably committed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Submitted {
    /// The task's id.
    pub id: crate::TaskId,
    /// Its state now.
    pub state: crate::TaskState,
    /// False when an idempotency key matched an existing task.
    pub created: bool,
}

/// A task as the API shows it (`GET /tasks/{id}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskInfo {
    /// The id.
    pub id: crate::TaskId,
    /// The function.
    pub function: FunctionName,
    /// The revision it runs.
    pub revision: RevisionId,
    /// Its state.
    pub state: crate::TaskState,
    /// Its priority.
    pub priority: i32,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Per-attempt timeout override, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// When it was submitted (ms since the Unix epoch).
    pub created_ms: i64,
    /// When its latest attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<i64>,
    /// When it reached its terminal state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<i64>,
    /// While queued for a retry: not before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<i64>,
    /// The worker of its latest attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Why its latest attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::TaskError>,
    /// Size of its input.
    pub input_size: u64,
    /// Size of its result, once it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_size: Option<u64>,
    /// Its idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The name of the token that submitted it, when tokens are configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The directive it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directive: Option<String>,
    /// When the finished task and its result will be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
}

/// `GET /tasks` answer: newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskList {
    /// This page of tasks.
    pub tasks: Vec<TaskInfo>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Task counters in `GET /status`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskCounts {
    /// Tasks waiting to run (including retries waiting for their time).
    pub queued: usize,
    /// Tasks running now.
    pub running: usize,
    /// Tasks that reached a terminal state since start.
    pub finished: u64,
}

/// Whether `s` is a valid directive id: 1 to 64 of `A-Z a-z 0-9 _ -`
/// (so it is one token of a NATS subject).
pub fn valid_directive(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// How a task of a directive ended, as its directive's stream tells it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskDone {
    /// The task.
    pub id: crate::TaskId,
    /// Its terminal state.
    pub state: crate::TaskState,
    /// Attempts it took.
    pub attempts: u32,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::TaskError>,
    /// Size of its result, once it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_size: Option<u64>,
    /// The result, base64, when it is small (up to 64 KiB); a larger one
    /// is read from `GET /tasks/{id}/result`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(content_encoding = "base64"))]
    pub output_base64: Option<String>,
}

/// Largest result a [`TaskDone`] carries itself.
pub const DONE_OUTPUT_MAX: usize = 64 * 1024;

/// One line of a directive's stream (`GET /directives/{id}/events`,
/// newline-delimited JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DirectiveEvent {
    /// The first line: the stream listens; tasks that end from now on
    /// are told.
    Open {
        /// The directive.
        directive: String,
    },
    /// A task of the directive ended.
    Done(TaskDone),
    /// Sent every 10 s when nothing else was, so both sides know the
    /// stream is alive.
    Ping,
}
