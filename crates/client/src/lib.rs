//! A typed async client of Colony's HTTP API.
//!
//! Every method maps to one route; bodies are the [`colony_core::wire`]
//! types the server itself serializes. A failed call returns
//! [`Error::Api`] with the server's HTTP status and stable `code`, so
//! callers branch on codes, not on message text.
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

use std::time::Duration;

use bytes::Bytes;
use colony_core::wire::{
    DefaultSet, Deployed, ErrorBody, FunctionInfo, FunctionList, SetDefault, Status,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

/// Response header naming the revision that ran.
pub const HEADER_REVISION: &str = "colony-revision";
/// Response header with the run time in microseconds.
pub const HEADER_DURATION_US: &str = "colony-duration-us";

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
            _ => None,
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to deploy a revision: the manifest fields the API takes.
/// `None` leaves the server's default.
#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    /// The executor: `wasm` (default) or `builtin`.
    pub executor: Option<String>,
    /// The I/O runtime: `stdio` (default).
    pub io: Option<String>,
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
    /// Whether the new revision becomes the default (server default: yes).
    pub make_default: Option<bool>,
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
        if let Some(d) = self.make_default {
            q.push(("default", d.to_string()));
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
        let bytes = resp.bytes().await.map_err(|e| transport(url.to_owned(), e))?;
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
    Error::Transport { url: url.into(), cause: cause.to_string(), hint, error }
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
            ]
        );
    }
}
