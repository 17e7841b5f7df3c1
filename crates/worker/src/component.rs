//! The `component` executor: wasi:http proxy components (what `wasmtime
//! serve` and Spin run), served at `/http/{name}/...` like `cgi`
//! functions.
//!
//! An HTTP request reaches every executor, and other workers of a
//! cluster, as CGI meta-variables and a body (see [`crate::cgi`]); this
//! executor turns them back into a request for the component and its
//! response into a CGI response, which `/http` parses as it parses a CGI
//! guest's.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use colony_core::{Failure, FunctionName, Limits, Manifest};
use colony_engine::{Engine, HttpComponent, HttpRequest, HttpResponse};

use crate::executor::{Call, Executor, PrepareError, Runnable};

/// Runs wasi:http proxy components.
#[derive(Debug, Clone)]
pub struct ComponentExecutor {
    engine: Engine,
}

impl ComponentExecutor {
    /// An executor over `engine`.
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

impl Executor for ComponentExecutor {
    fn prepare(
        &self,
        _name: &FunctionName,
        code: &[u8],
        manifest: &Manifest,
    ) -> Result<Arc<dyn Runnable>, PrepareError> {
        if !manifest.dirs.is_empty() {
            return Err(PrepareError::InvalidCode {
                reason: "component functions cannot mount directories; use a wasm or cgi \
                         function for that"
                    .to_owned(),
            });
        }
        let component = self.engine.prepare_component(code)?;
        let env = manifest
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Arc::new(ComponentRunnable {
            component,
            env,
            limits: manifest.limits,
        }))
    }
}

#[derive(Debug)]
struct ComponentRunnable {
    component: HttpComponent,
    env: Vec<(String, String)>,
    limits: Limits,
}

#[async_trait::async_trait]
impl Runnable for ComponentRunnable {
    async fn run(&self, call: Call<'_>) -> Result<Bytes, Failure> {
        let Some(request) = request_from_cgi(call.env, call.input) else {
            return Err(Failure::Internal {
                message: "a component function serves HTTP requests only (at /http/{name})"
                    .to_owned(),
            });
        };
        let response = self
            .component
            .handle(
                request,
                &self.env,
                Limits {
                    timeout_ms: call.timeout_ms.unwrap_or(self.limits.timeout_ms),
                    ..self.limits
                },
                call.cancel,
            )
            .await?;
        Ok(cgi_response(&response))
    }
}

/// The request that CGI meta-variables describe; `None` without
/// `REQUEST_METHOD`. The component sees the path below its mount point
/// (`PATH_INFO`, `/` when empty), as a component served alone would.
pub(crate) fn request_from_cgi(env: &[(String, String)], body: Bytes) -> Option<HttpRequest> {
    let var = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let method = var("REQUEST_METHOD");
    if method.is_empty() {
        return None;
    }
    // The path below the mount point as received (percent-encoding
    // kept), from `REQUEST_URI` (`/http/{target}/{rest}?{query}`).
    let path_with_query = match var("REQUEST_URI").strip_prefix("/http/") {
        Some(rest) => match rest.find(['/', '?']) {
            Some(at) if rest[at..].starts_with('/') => rest[at..].to_owned(),
            Some(at) => format!("/{}", &rest[at..]),
            None => "/".to_owned(),
        },
        None => {
            let path = match var("PATH_INFO") {
                "" => "/",
                p => p,
            };
            match var("QUERY_STRING") {
                "" => path.to_owned(),
                q => format!("{path}?{q}"),
            }
        }
    };
    let authority = match var("HTTP_HOST") {
        "" => format!("{}:{}", var("SERVER_NAME"), var("SERVER_PORT")),
        h => h.to_owned(),
    };
    let mut headers = Vec::new();
    for (k, v) in env {
        let name = match k.as_str() {
            "CONTENT_TYPE" | "CONTENT_LENGTH" if !v.is_empty() => k.replace('_', "-"),
            _ => match k.strip_prefix("HTTP_") {
                Some(rest) => rest.replace('_', "-"),
                None => continue,
            },
        };
        headers.push((name.to_ascii_lowercase(), v.clone()));
    }
    Some(HttpRequest {
        method: method.to_owned(),
        path_with_query,
        authority,
        headers,
        body,
    })
}

/// A response as a CGI response: `Status`, the headers, a blank line and
/// the body.
pub(crate) fn cgi_response(r: &HttpResponse) -> Bytes {
    let head: usize = r.headers.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
    let mut out = BytesMut::with_capacity(16 + head + r.body.len());
    out.put_slice(format!("Status: {}\r\n", r.status).as_bytes());
    for (k, v) in &r.headers {
        out.put_slice(k.as_bytes());
        out.put_slice(b": ");
        out.put_slice(v.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    out.put_slice(&r.body);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgi::{CgiRequest, parse_response};

    #[test]
    fn a_request_survives_cgi_variables() {
        let cgi = CgiRequest {
            method: "PUT".into(),
            script_name: "/http/hello".into(),
            path_info: "/a/b".into(),
            query: "x=1&y=2".into(),
            request_uri: "/http/hello/a/b?x=1&y=2".into(),
            headers: vec![
                ("Host".into(), "example.com:8080".into()),
                ("Content-Type".into(), "text/plain".into()),
                ("X-Trace-Id".into(), "abc".into()),
                ("Authorization".into(), "Bearer secret".into()),
            ],
            server_name: "example.com".into(),
            server_port: "8080".into(),
            body: Bytes::from_static(b"body"),
        };
        let r = request_from_cgi(&cgi.env(), cgi.body.clone()).unwrap();
        assert_eq!(r.method, "PUT");
        assert_eq!(r.path_with_query, "/a/b?x=1&y=2");
        assert_eq!(r.authority, "example.com:8080");
        let mut h = r.headers.clone();
        h.sort();
        assert_eq!(
            h,
            vec![
                ("content-length".to_owned(), "4".to_owned()),
                ("content-type".to_owned(), "text/plain".to_owned()),
                ("host".to_owned(), "example.com:8080".to_owned()),
                ("x-trace-id".to_owned(), "abc".to_owned()),
            ]
        );
        assert_eq!(&r.body[..], b"body");
        assert!(request_from_cgi(&[], Bytes::new()).is_none());
    }

    #[test]
    fn a_response_survives_cgi() {
        let r = HttpResponse {
            status: 201,
            headers: vec![
                ("x-a".into(), "1".into()),
                ("x-a".into(), "2".into()),
                ("content-type".into(), "text/plain".into()),
            ],
            body: Bytes::from_static(b"\r\nbody\n"),
        };
        let parsed = parse_response(cgi_response(&r)).unwrap();
        assert_eq!(parsed.status, 201);
        assert_eq!(parsed.headers, r.headers);
        assert_eq!(parsed.body, r.body);
    }
}
