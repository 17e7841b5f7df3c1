//! A typed async client of Colony's HTTP API.
//!
//! Every method maps to one route; bodies are the [`colony_core::wire`]
//! types the server itself serializes. A failed call returns
//! [`Error::Api`] with the server's HTTP status and stable `code`, so
//! callers branch on codes, not on message text.
//!
//! Tasks are durable asynchronous invocations: [`Client::submit`] returns
//! an id once the server has committed the task, [`Client::wait_task`]
//! long-polls until it is finished, [`Client::task_result`] fetches its
//! output.
//!
//! ```no_run
//! # async fn demo() -> Result<(), colony_client::Error> {
//! let colony = colony_client::Client::new("http://127.0.0.1:8080")?;
//! let wasm = std::fs::read("echo.wasm").unwrap();
//! let deployed = colony.deploy("echo", wasm, &Default::default()).await?;
//! let out = colony.invoke("echo", b"hello".to_vec()).await?;
//! assert_eq!(out.output, "hello");
//! # let _ = deployed; Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod directive;
mod operation;

pub use directive::{
    AbortHandle, DEFAULT_WINDOW, Directive, DirectiveOptions, Input, Stats, Tag, key_digest,
};
pub use operation::{Format, Map, Operation};

use std::time::{Duration, Instant};

use bytes::Bytes;
use colony_core::TaskState;
use colony_core::wire::{
    DefaultSet, Deployed, ErrorBody, FunctionInfo, FunctionList, SetDefault, Status, SubmitTask,
    Submitted, TaskInfo, TaskList, WorkerList,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

/// Response header naming the revision that ran.
pub const HEADER_REVISION: &str = "colony-revision";
/// Response header with the run time in microseconds.
pub const HEADER_DURATION_US: &str = "colony-duration-us";

/// The longest wait the server grants one long poll (`?wait=`).
pub const MAX_POLL_WAIT: Duration = Duration::from_secs(60);

/// How much longer than its `?wait=` a long poll's request may take
/// before the client gives up on it.
const POLL_GRACE: Duration = Duration::from_secs(10);

/// What can go wrong talking to a worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error.
    #[error("{} ({}, HTTP {status})", body.message, body.code)]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error body: the stable `code` (e.g. `function_not_found`),
        /// the `message`, and details such as `exit_code`, `stderr_tail`
        /// or `limit_ms`.
        body: Box<ErrorBody>,
        /// `Retry-After` in seconds, on 503.
        retry_after: Option<u64>,
    },
    /// The server could not be reached, or the exchange broke off.
    #[error("cannot reach the Colony server at {url}: {cause}{hint}")]
    Transport {
        /// The URL called.
        url: String,
        /// The innermost cause, e.g. "Connection refused (os error 111)".
        cause: String,
        /// Advice for people, when there is some.
        hint: &'static str,
        /// The HTTP client's error.
        error: reqwest::Error,
    },
    /// The server's answer was not what this client expects.
    #[error("unexpected answer from {url}: {reason}")]
    Protocol {
        /// The URL called.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// A task of a directive failed for good (after the retries its
    /// policy allows), or was cancelled.
    #[error("{input} failed: task {task} ended {state}{}", why(error.as_deref()))]
    TaskFailed {
        /// The input, as the directive names it (`input #n "..."`, or its
        /// label).
        input: String,
        /// The task.
        task: String,
        /// How it ended: `failed`, `dead` or `cancelled`.
        state: TaskState,
        /// Why.
        error: Option<Box<colony_core::TaskError>>,
    },
    /// A directive's input could not be submitted.
    #[error("{input} could not be submitted: {source}")]
    Rejected {
        /// The input, as the directive names it.
        input: String,
        /// The server's answer.
        source: Box<Error>,
    },
    /// The directive was aborted; its unfinished tasks were cancelled.
    #[error("directive {directive} aborted; its unfinished tasks are cancelled")]
    Aborted {
        /// The directive id.
        directive: String,
    },
    /// An operation's input or output does not fit its types.
    #[error("operation {function} ({format}): {reason}")]
    Codec {
        /// The function.
        function: String,
        /// The wire format.
        format: Format,
        /// What did not fit.
        reason: String,
    },
    /// The server URL is not a valid http(s) URL.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// Why it is invalid.
        reason: String,
    },
}

impl Error {
    /// The server's error code, when the server answered with an error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { body, .. } => Some(&body.code),
            Error::Rejected { source, .. } => source.code(),
            Error::TaskFailed { error, .. } => error.as_ref().map(|e| e.code.as_str()),
            _ => None,
        }
    }
}

/// Why a task failed, for people: the message, the code, and the last
/// line of the guest's stderr.
fn why(error: Option<&colony_core::TaskError>) -> String {
    let Some(e) = error else {
        return String::new();
    };
    let tail = e
        .stderr_tail
        .as_deref()
        .and_then(|t| t.trim_end().lines().next_back())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let l: String = l.chars().take(200).collect();
            format!("; stderr: {l}")
        })
        .unwrap_or_default();
    format!(": {} ({}){tail}", e.message, e.code)
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to deploy a revision: the manifest fields the API takes.
/// `None` leaves the server's default.
#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    /// The executor: `wasm` (default), `cgi`, `component` or `builtin`.
    pub executor: Option<String>,
    /// The I/O runtime: `stdio` (default) or `files`.
    pub io: Option<String>,
    /// With `io = files`: the input files a call must give.
    pub input_files: Vec<String>,
    /// With `io = files`: the output files collected.
    pub output_files: Vec<String>,
    /// The timeout, as a duration spelling (`500ms`, `2s`).
    pub timeout: Option<String>,
    /// The linear memory cap, as a size spelling (`64MiB`).
    pub memory: Option<String>,
    /// The output cap, as a size spelling (`8MiB`).
    pub output: Option<String>,
    /// Environment variables, `KEY=VALUE`.
    pub env: Vec<String>,
    /// Arguments after `argv[0]`.
    pub args: Vec<String>,
    /// Host directories for the guest, `HOST:GUEST[:ro]`.
    pub dirs: Vec<String>,
    /// Whether the new revision becomes the default (server default: yes).
    pub make_default: Option<bool>,
    /// Attempts per task (the retry policy).
    pub max_attempts: Option<u32>,
    /// Which task failures are retried: `trap`, `timeout`, `exit`,
    /// `worker_lost`, `limit`. An empty list retries nothing.
    pub retry_on: Option<Vec<String>>,
    /// Delay before a task's first retry, as a duration spelling (`1s`);
    /// it doubles each attempt.
    pub backoff: Option<String>,
    /// Ceiling on the retry delay, as a duration spelling (`1m`).
    pub max_backoff: Option<String>,
    /// Most tasks of the function running at once; 0 means no limit.
    pub concurrency: Option<u32>,
}

impl DeployOptions {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        let one = [
            ("executor", &self.executor),
            ("io", &self.io),
            ("timeout", &self.timeout),
            ("memory", &self.memory),
            ("output", &self.output),
        ];
        for (k, v) in one {
            if let Some(v) = v {
                q.push((k, v.clone()));
            }
        }
        q.extend(self.env.iter().map(|e| ("env", e.clone())));
        q.extend(self.args.iter().map(|a| ("arg", a.clone())));
        q.extend(self.dirs.iter().map(|d| ("dir", d.clone())));
        q.extend(self.input_files.iter().map(|f| ("input_file", f.clone())));
        q.extend(self.output_files.iter().map(|f| ("output_file", f.clone())));
        if let Some(d) = self.make_default {
            q.push(("default", d.to_string()));
        }
        if let Some(n) = self.max_attempts {
            q.push(("max_attempts", n.to_string()));
        }
        if let Some(kinds) = &self.retry_on {
            q.push(("retry_on", kinds.join(",")));
        }
        for (k, v) in [
            ("backoff", &self.backoff),
            ("max_backoff", &self.max_backoff),
        ] {
            if let Some(v) = v {
                q.push((k, v.clone()));
            }
        }
        if let Some(n) = self.concurrency {
            q.push(("concurrency", n.to_string()));
        }
        q
    }
}

/// Which tasks [`Client::tasks`] lists. `None` leaves the server's default
/// (every state, every function, 50 per page, from the newest).
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks of this function.
    pub function: Option<String>,
    /// Tasks per page (the server caps it at 1000).
    pub limit: Option<u32>,
    /// The cursor of the page to fetch: a previous page's `next`.
    pub after: Option<String>,
    /// Only tasks of this directive.
    pub directive: Option<String>,
}

impl TaskQuery {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(s) = self.state {
            q.push(("state", s.as_str().to_owned()));
        }
        if let Some(f) = &self.function {
            q.push(("function", f.clone()));
        }
        if let Some(n) = self.limit {
            q.push(("limit", n.to_string()));
        }
        if let Some(a) = &self.after {
            q.push(("after", a.clone()));
        }
        if let Some(d) = &self.directive {
            q.push(("directive", d.clone()));
        }
        q
    }
}

/// The result of a successful invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The function's stdout.
    pub output: Bytes,
    /// The revision that ran.
    pub revision: String,
    /// How long it ran on the worker, in microseconds.
    pub duration_us: u64,
}

/// A client of one Colony worker (or a load balancer in front of many).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A client of the server at `base`, e.g. `http://127.0.0.1:8080`.
    pub fn new(base: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::InvalidUrl {
                url: base.to_owned(),
                reason: e.to_string(),
            })?;
        Self::with_http(base, http)
    }

    /// Like [`Client::new`], with a configured `reqwest` client.
    pub fn with_http(base: &str, http: reqwest::Client) -> Result<Self> {
        let trimmed = base.trim_end_matches('/');
        let url = reqwest::Url::parse(trimmed).map_err(|e| Error::InvalidUrl {
            url: base.to_owned(),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(Error::InvalidUrl {
                url: base.to_owned(),
                reason: "expected http://HOST:PORT".into(),
            });
        }
        Ok(Self {
            http,
            base: trimmed.to_owned(),
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> (String, RequestBuilder) {
        let url = format!("{}{path}", self.base);
        (url.clone(), self.http.request(method, url))
    }

    async fn send(url: &str, req: RequestBuilder) -> Result<Response> {
        let resp = req.send().await.map_err(|e| transport(url.to_owned(), e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(Self::api_error(url, resp).await)
    }

    async fn api_error(url: &str, resp: Response) -> Error {
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return transport(url, e),
        };
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Error::Api {
                status: status.as_u16(),
                body: Box::new(body),
                retry_after,
            },
            Err(_) => Error::Protocol {
                url: url.to_owned(),
                reason: format!(
                    "HTTP {status} with a body that is not a Colony error: {:?}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ),
            },
        }
    }

    async fn json<T: DeserializeOwned>(url: &str, resp: Response) -> Result<T> {
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| transport(url.to_owned(), e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
            url: url.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Deploys `code` (a wasm binary, WAT text, or a builtin's name) as a
    /// revision of `name`. Identical code and options return the existing
    /// revision with `created == false`.
    pub async fn deploy(
        &self,
        name: &str,
        code: impl Into<Bytes>,
        options: &DeployOptions,
    ) -> Result<Deployed> {
        let (url, req) = self.request(Method::PUT, &format!("/functions/{}", path_segment(name)));
        let resp = Self::send(&url, req.query(&options.query()).body(code.into())).await?;
        Self::json(&url, resp).await
    }

    /// Runs `target` (`name` or `name@rev`) once with `input` on stdin.
    pub async fn invoke(&self, target: &str, input: impl Into<Bytes>) -> Result<Invocation> {
        let (url, req) = self.request(Method::POST, &format!("/run/{}", path_segment(target)));
        let resp = Self::send(&url, req.body(input.into())).await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let revision = header(HEADER_REVISION).unwrap_or_default();
        let duration_us = header(HEADER_DURATION_US)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let output = resp.bytes().await.map_err(|e| transport(url.clone(), e))?;
        Ok(Invocation {
            output,
            revision,
            duration_us,
        })
    }

    /// Every function.
    pub async fn functions(&self) -> Result<Vec<FunctionInfo>> {
        let (url, req) = self.request(Method::GET, "/functions");
        let list: FunctionList = Self::json(&url, Self::send(&url, req).await?).await?;
        Ok(list.functions)
    }

    /// One function, its revisions and default.
    pub async fn function(&self, name: &str) -> Result<FunctionInfo> {
        let (url, req) = self.request(Method::GET, &format!("/functions/{}", path_segment(name)));
        Self::json(&url, Self::send(&url, req).await?).await
    }

    /// Makes `revision` (an id or unique prefix) the default of `name`.
    pub async fn set_default(&self, name: &str, revision: &str) -> Result<DefaultSet> {
        let (url, req) = self.request(
            Method::PUT,
            &format!("/functions/{}/default", path_segment(name)),
        );
        let body = serde_json::to_vec(&SetDefault {
            revision: revision.to_owned(),
        })
        .expect("serializes");
        let req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        Self::json(&url, Self::send(&url, req).await?).await
    }

    /// Deletes a function and all its revisions.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let (url, req) = self.request(
            Method::DELETE,
            &format!("/functions/{}", path_segment(name)),
        );
        Self::send(&url, req).await?;
        Ok(())
    }

    /// The worker's health and load. A draining worker answers 503 with
    /// the same body; this returns it as a status, not an error.
    pub async fn status(&self) -> Result<Status> {
        let (url, req) = self.request(Method::GET, "/status");
        let resp = req.send().await.map_err(|e| transport(url.clone(), e))?;
        if resp.status() == StatusCode::OK || resp.status() == StatusCode::SERVICE_UNAVAILABLE {
            return Self::json(&url, resp).await;
        }
        Err(Self::api_error(&url, resp).await)
    }

    /// The live workers and their load, as the cluster's heartbeats
    /// tell. A worker outside a cluster lists only itself
    /// (`cluster == false`).
    pub async fn workers(&self) -> Result<WorkerList> {
        let (url, req) = self.request(Method::GET, "/workers");
        Self::json(&url, Self::send(&url, req).await?).await
    }

    /// Submits a task. The answer comes once the server has durably
    /// committed it (`created == true`), or names the existing task when
    /// `idempotency_key` matched one (`created == false`).
    pub async fn submit(&self, task: &SubmitTask) -> Result<Submitted> {
        let (url, req) = self.request(Method::POST, "/tasks");
        let body = serde_json::to_vec(task).expect("serializes");
        let req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        Self::json(&url, Self::send(&url, req).await?).await
    }

    /// A task, as it is now.
    pub async fn task(&self, id: &str) -> Result<TaskInfo> {
        let (url, req) = self.request(Method::GET, &format!("/tasks/{}", path_segment(id)));
        Self::json(&url, Self::send(&url, req).await?).await
    }

    /// Waits up to `timeout` for a task to finish and returns it: finished
    /// ([`TaskState::is_terminal`]), or as it is when the time is up.
    ///
    /// The server holds each request up to [`MAX_POLL_WAIT`]; longer waits
    /// are several long polls in a row.
    pub async fn wait_task(&self, id: &str, timeout: Duration) -> Result<TaskInfo> {
        let deadline = Instant::now() + timeout;
        let path = format!("/tasks/{}", path_segment(id));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = poll_wait(left);
            let (url, req) = self.request(Method::GET, &path);
            let asked = Instant::now();
            let req = req
                .query(&[("wait", wait.as_secs())])
                .timeout(wait + POLL_GRACE);
            let info: TaskInfo = Self::json(&url, Self::send(&url, req).await?).await?;
            if info.state.is_terminal() || Instant::now() >= deadline {
                return Ok(info);
            }
            // A server that answers at once without waiting must not make
            // this a busy loop.
            if wait > Duration::ZERO && asked.elapsed() < Duration::from_millis(50) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The output of a task that succeeded. Before that the server answers
    /// `result_not_found`.
    pub async fn task_result(&self, id: &str) -> Result<Bytes> {
        let (url, req) = self.request(Method::GET, &format!("/tasks/{}/result", path_segment(id)));
        let resp = Self::send(&url, req).await?;
        resp.bytes().await.map_err(|e| transport(url, e))
    }

    /// One page of tasks, newest first; pass its `next` as
    /// [`TaskQuery::after`] for the next page.
    pub async fn tasks(&self, query: &TaskQuery) -> Result<TaskList> {
        let (url, req) = self.request(Method::GET, "/tasks");
        let req = req.query(&query.query());
        Self::json(&url, Self::send(&url, req).await?).await
    }

    /// Every task `query` selects, page after page from its `after`. It
    /// holds them all: for bounded selections (a directive's tasks, a
    /// function's in a test).
    pub async fn all_tasks(&self, query: &TaskQuery) -> Result<Vec<TaskInfo>> {
        let mut query = query.clone();
        let mut all = Vec::new();
        loop {
            let page = self.tasks(&query).await?;
            all.extend(page.tasks);
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// Leases the channel of directive `id` and returns its stream of
    /// newline-delimited [`colony_core::wire::DirectiveEvent`]s (see
    /// [`Directive`], which reads it).
    pub async fn directive_events(&self, id: &str) -> Result<Response> {
        let (url, req) = self.request(
            Method::GET,
            &format!("/directives/{}/events", path_segment(id)),
        );
        Self::send(&url, req).await
    }

    /// Cancels a queued or running task and returns it, cancelled. A task
    /// already finished is `task_finished` (409).
    pub async fn cancel_task(&self, id: &str) -> Result<TaskInfo> {
        let (url, req) = self.request(Method::DELETE, &format!("/tasks/{}", path_segment(id)));
        Self::json(&url, Self::send(&url, req).await?).await
    }
}

/// The `?wait=` of one long poll when `left` remains of the caller's wait:
/// whole seconds, rounded up, at most [`MAX_POLL_WAIT`].
fn poll_wait(left: Duration) -> Duration {
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    Duration::from_secs(secs).min(MAX_POLL_WAIT)
}

fn transport(url: impl Into<String>, error: reqwest::Error) -> Error {
    let mut cause: &dyn std::error::Error = &error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    let hint = if error.is_connect() {
        " (is `colony serve` running there? set --server or COLONY_SERVER)"
    } else {
        ""
    };
    Error::Transport {
        url: url.into(),
        cause: cause.to_string(),
        hint,
        error,
    }
}

/// Percent-encodes what would change a path segment's meaning, so a bad
/// name reaches the server (and its `invalid_name` error) intact.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'@' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(Client::new("http://127.0.0.1:8080/").is_ok());
        assert_eq!(
            Client::new("http://127.0.0.1:8080/").unwrap().base(),
            "http://127.0.0.1:8080"
        );
        for bad in ["127.0.0.1:8080", "ftp://host", "not a url"] {
            assert!(
                matches!(Client::new(bad), Err(Error::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("echo@abcdef12"), "echo@abcdef12");
        assert_eq!(path_segment("../x"), "..%2Fx");
        assert_eq!(path_segment("a b?c"), "a%20b%3Fc");
    }

    #[test]
    fn deploy_options_become_the_query() {
        let o = DeployOptions {
            executor: Some("builtin".into()),
            timeout: Some("2s".into()),
            env: vec!["A=1".into()],
            args: vec!["-v".into(), "x".into()],
            make_default: Some(false),
            max_attempts: Some(5),
            retry_on: Some(vec!["trap".into(), "timeout".into()]),
            backoff: Some("1s".into()),
            max_backoff: Some("1m".into()),
            concurrency: Some(4),
            ..Default::default()
        };
        assert_eq!(
            o.query(),
            [
                ("executor", "builtin".to_owned()),
                ("timeout", "2s".to_owned()),
                ("env", "A=1".to_owned()),
                ("arg", "-v".to_owned()),
                ("arg", "x".to_owned()),
                ("default", "false".to_owned()),
                ("max_attempts", "5".to_owned()),
                ("retry_on", "trap,timeout".to_owned()),
                ("backoff", "1s".to_owned()),
                ("max_backoff", "1m".to_owned()),
                ("concurrency", "4".to_owned()),
            ]
        );
        // An empty list is sent, as "retry nothing"; None is not sent.
        let none = DeployOptions {
            retry_on: Some(vec![]),
            ..Default::default()
        };
        assert_eq!(none.query(), [("retry_on", String::new())]);
        assert!(DeployOptions::default().query().is_empty());
    }

    #[test]
    fn task_queries_become_the_query() {
        assert!(TaskQuery::default().query().is_empty());
        let q = TaskQuery {
            state: Some(TaskState::Succeeded),
            function: Some("echo".into()),
            limit: Some(1000),
            after: Some("cursor".into()),
            directive: Some("d1".into()),
        };
        assert_eq!(
            q.query(),
            [
                ("state", "succeeded".to_owned()),
                ("function", "echo".to_owned()),
                ("limit", "1000".to_owned()),
                ("after", "cursor".to_owned()),
                ("directive", "d1".to_owned()),
            ]
        );
    }

    #[test]
    fn long_polls_ask_for_whole_seconds_up_to_the_servers_maximum() {
        assert_eq!(poll_wait(Duration::ZERO), Duration::ZERO);
        assert_eq!(poll_wait(Duration::from_millis(1)), Duration::from_secs(1));
        assert_eq!(poll_wait(Duration::from_secs(5)), Duration::from_secs(5));
        assert_eq!(
            poll_wait(Duration::from_millis(5_001)),
            Duration::from_secs(6)
        );
        assert_eq!(poll_wait(Duration::from_secs(600)), MAX_POLL_WAIT);
    }

    /// A stand-in server that answers the task routes the way the API
    /// documents them, recording what it was asked.
    mod fake {
        use std::collections::HashMap;
        use std::sync::{Arc, Mutex};

        use axum::Json;
        use axum::extract::{Path, Query, State};
        use axum::http::StatusCode;
        use axum::response::{IntoResponse, Response};
        use axum::routing::get;
        use colony_core::wire::{SubmitTask, Submitted, TaskInfo, TaskList};

        pub(super) const ID: &str = "01jd0000000000000000000000";

        #[derive(Debug, Default)]
        pub(super) struct Seen {
            pub(super) submitted: Vec<SubmitTask>,
            pub(super) waits: Vec<Option<String>>,
            pub(super) list_query: HashMap<String, String>,
        }

        type Shared = Arc<Mutex<Seen>>;

        pub(super) fn info(state: &str) -> TaskInfo {
            serde_json::from_value(serde_json::json!({
                "id": ID,
                "function": "echo",
                "revision": "ab".repeat(32),
                "state": state,
                "priority": 0,
                "attempts": 1,
                "max_attempts": 3,
                "created_ms": 1,
                "input_size": 5,
            }))
            .unwrap()
        }

        fn error(status: StatusCode, code: &str) -> Response {
            let body = serde_json::json!({"code": code, "message": format!("it is {code}")});
            (status, Json(body)).into_response()
        }

        async fn submit(State(seen): State<Shared>, Json(task): Json<SubmitTask>) -> Response {
            let again = task.idempotency_key.is_some()
                && seen
                    .lock()
                    .unwrap()
                    .submitted
                    .iter()
                    .any(|t| t.idempotency_key == task.idempotency_key);
            seen.lock().unwrap().submitted.push(task);
            let body = Submitted {
                id: ID.parse().unwrap(),
                state: colony_core::TaskState::Queued,
                created: !again,
            };
            let status = if again {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            (status, Json(body)).into_response()
        }

        async fn task(
            State(seen): State<Shared>,
            Path(id): Path<String>,
            Query(q): Query<HashMap<String, String>>,
        ) -> Response {
            if id != ID {
                return error(StatusCode::NOT_FOUND, "task_not_found");
            }
            let mut seen = seen.lock().unwrap();
            seen.waits.push(q.get("wait").cloned());
            // Running for the first two polls, then done.
            let state = if seen.waits.len() < 3 {
                "running"
            } else {
                "succeeded"
            };
            Json(info(state)).into_response()
        }

        async fn cancel(Path(id): Path<String>) -> Response {
            if id != ID {
                return error(StatusCode::NOT_FOUND, "task_not_found");
            }
            error(StatusCode::CONFLICT, "task_finished")
        }

        async fn result(Path(id): Path<String>) -> Response {
            if id != ID {
                return error(StatusCode::NOT_FOUND, "result_not_found");
            }
            (StatusCode::OK, &b"out\x00put"[..]).into_response()
        }

        async fn list(
            State(seen): State<Shared>,
            Query(q): Query<HashMap<String, String>>,
        ) -> Json<TaskList> {
            seen.lock().unwrap().list_query = q;
            Json(TaskList {
                tasks: vec![info("succeeded")],
                next: Some("next-page".into()),
            })
        }

        async fn workers() -> Json<serde_json::Value> {
            Json(serde_json::json!({
                "cluster": true,
                "heartbeat_ttl_ms": 3000,
                "workers": [{
                    "id": "host-a:41",
                    "address": "http://127.0.0.1:8080",
                    "role": "worker",
                    "state": "ready",
                    "version": "0.1.0",
                    "running": 2,
                    "queued": 1,
                    "concurrency": 8,
                    "tasks_running": 1,
                    "warm_functions": ["echo"],
                    "started_ms": 1,
                    "heartbeat_ms": 2,
                }, {
                    "id": "host-b:42",
                    "role": "gateway",
                    "state": "draining",
                    "version": "0.1.0",
                    "running": 0,
                    "queued": 0,
                    "concurrency": 0,
                    "tasks_running": 0,
                    "warm_functions": [],
                    "started_ms": 1,
                    "heartbeat_ms": 2,
                }],
            }))
        }

        /// Serves on a free loopback port; returns its URL.
        pub(super) async fn start() -> (String, Shared) {
            let seen = Shared::default();
            let app = axum::Router::new()
                .route("/workers", get(workers))
                .route("/tasks", get(list).post(submit))
                .route("/tasks/{id}", get(task).delete(cancel))
                .route("/tasks/{id}/result", get(result))
                .with_state(seen.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            (format!("http://{addr}"), seen)
        }
    }

    #[tokio::test]
    async fn task_routes_round_trip() {
        let (url, seen) = fake::start().await;
        let client = Client::new(&url).unwrap();

        let task = SubmitTask {
            function: "echo@abcdef12".into(),
            input: Some("hello".into()),
            idempotency_key: Some("k1".into()),
            priority: Some(7),
            ..Default::default()
        };
        let first = client.submit(&task).await.unwrap();
        assert!(first.created);
        assert_eq!(first.id.as_str(), fake::ID);
        let again = client.submit(&task).await.unwrap();
        assert!(!again.created);
        assert_eq!(again.id, first.id);
        assert_eq!(seen.lock().unwrap().submitted[0], task);

        // Waiting polls until the task is finished, each poll a long one.
        let done = client
            .wait_task(fake::ID, Duration::from_secs(90))
            .await
            .unwrap();
        assert_eq!(done.state, TaskState::Succeeded);
        let waits = seen.lock().unwrap().waits.clone();
        assert_eq!(waits.len(), 3, "{waits:?}");
        assert_eq!(waits[0].as_deref(), Some("60"));

        assert_eq!(client.task(fake::ID).await.unwrap().id.as_str(), fake::ID);
        assert_eq!(
            client.task_result(fake::ID).await.unwrap(),
            &b"out\x00put"[..]
        );

        let page = client
            .tasks(&TaskQuery {
                state: Some(TaskState::Succeeded),
                limit: Some(10),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.next.as_deref(), Some("next-page"));
        assert_eq!(page.tasks.len(), 1);
        let q = seen.lock().unwrap().list_query.clone();
        assert_eq!(q.get("state").map(String::as_str), Some("succeeded"));
        assert_eq!(q.get("limit").map(String::as_str), Some("10"));
        assert!(!q.contains_key("function"));

        // Errors carry the server's codes.
        let err = client.cancel_task(fake::ID).await.unwrap_err();
        assert_eq!(err.code(), Some("task_finished"), "{err}");
        assert!(matches!(err, Error::Api { status: 409, .. }));
        let other = "7zzzzzzzzzzzzzzzzzzzzzzzzz";
        let err = client.task(other).await.unwrap_err();
        assert_eq!(err.code(), Some("task_not_found"));
        let err = client.task_result(other).await.unwrap_err();
        assert_eq!(err.code(), Some("result_not_found"));
    }

    #[tokio::test]
    async fn workers_lists_the_cluster() {
        use colony_core::wire::{WorkerRole, WorkerState};

        let (url, _) = fake::start().await;
        let list = Client::new(&url).unwrap().workers().await.unwrap();
        assert!(list.cluster);
        assert_eq!(list.heartbeat_ttl_ms, 3000);
        let ids: Vec<&str> = list.workers.iter().map(|w| w.id.as_str()).collect();
        assert_eq!(ids, ["host-a:41", "host-b:42"]);
        let (a, b) = (&list.workers[0], &list.workers[1]);
        assert_eq!(a.address.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!((a.role, a.running, a.queued), (WorkerRole::Worker, 2, 1));
        assert_eq!(a.warm_functions, ["echo"]);
        assert_eq!(
            (b.role, b.state),
            (WorkerRole::Gateway, WorkerState::Draining)
        );
        assert_eq!(b.address, None);
    }

    #[tokio::test]
    async fn a_wait_ends_when_its_time_is_up() {
        let (url, seen) = fake::start().await;
        let client = Client::new(&url).unwrap();
        // A zero wait is a single poll, whatever the state.
        let now = client.wait_task(fake::ID, Duration::ZERO).await.unwrap();
        assert_eq!(now.state, TaskState::Running);
        assert_eq!(seen.lock().unwrap().waits, [Some("0".to_owned())]);
    }
}
