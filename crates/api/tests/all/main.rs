//! End-to-end tests of the HTTP API over a real worker (real engine, real
//! SQLite store, real guests), driven in-process through the router.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use colony_api::{AppState, DEFAULT_MAX_BODY_BYTES, router};
use colony_testsupport::guests;
use colony_worker::{Worker, WorkerConfig};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

mod auth;
mod cgi;
mod component;
mod conn;
mod dirs;
mod files;
mod hostile;
mod metrics;
mod openapi;
mod tasks;

struct Api {
    router: Router,
    worker: Arc<Worker>,
    _dir: tempfile::TempDir,
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: bytes::Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// Asserts an error reply: status and stable code.
    #[track_caller]
    fn expect_error(&self, status: StatusCode, code: &str) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        let v = self.json();
        assert_eq!(v["code"], code, "body: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "body: {v}"
        );
        v
    }
}

/// A request, with `Authorization: Bearer <token>` when given.
fn request_as(
    token: Option<&str>,
    method: &str,
    uri: &str,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    req.body(body.into()).unwrap()
}

/// The next line of a streamed body, as JSON; `None` once it ended.
async fn next_line(body: &mut Body) -> Option<Value> {
    let frame = body.frame().await?.unwrap();
    let data = frame.into_data().unwrap();
    Some(serde_json::from_slice(data.trim_ascii_end()).unwrap())
}

impl Api {
    async fn new() -> Self {
        Self::with(|_| {}).await
    }

    async fn with(tune: impl FnOnce(&mut WorkerConfig)) -> Self {
        Self::with_auth(tune, colony_api::Auth::open()).await
    }

    async fn with_auth(tune: impl FnOnce(&mut WorkerConfig), auth: colony_api::Auth) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = WorkerConfig::new(dir.path().join("data"));
        config.instances = 64;
        config.max_memory_bytes = 256 << 20;
        tune(&mut config);
        let worker = Worker::open(config).await.unwrap();
        let router = router(AppState {
            worker: worker.clone(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            auth: std::sync::Arc::new(auth),
        });
        Self {
            router,
            worker,
            _dir: dir,
        }
    }

    async fn send(&self, method: &str, uri: &str, body: impl Into<Body>) -> Reply {
        self.send_as(None, method, uri, body).await
    }

    /// Sends with `Authorization: Bearer <token>` when given.
    async fn send_as(
        &self,
        token: Option<&str>,
        method: &str,
        uri: &str,
        body: impl Into<Body>,
    ) -> Reply {
        self.request(request_as(token, method, uri, body)).await
    }

    /// Leases a directive's channel (`GET /directives/{id}/events`), as
    /// `token` when given: the answer with its body not read (it does not
    /// end); read it with [`next_line`].
    async fn listen(&self, token: Option<&str>, id: &str) -> axum::response::Response {
        let uri = format!("/directives/{id}/events");
        let req = request_as(token, "GET", &uri, Body::empty());
        self.router.clone().oneshot(req).await.unwrap()
    }

    /// Sends a request built by the caller (for headers of its own).
    /// The worker's data directory.
    fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }

    async fn request(&self, req: Request<Body>) -> Reply {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn deploy(&self, name: &str, query: &str, code: impl Into<Body>) -> Value {
        let r = self
            .send("PUT", &format!("/functions/{name}?{query}"), code)
            .await;
        assert!(
            r.status == StatusCode::CREATED || r.status == StatusCode::OK,
            "deploy {name}: {}",
            r.text()
        );
        r.json()
    }

    async fn run(&self, target: &str, input: impl Into<Body>) -> Reply {
        self.send("POST", &format!("/run/{target}"), input).await
    }

    /// A normal call still works: the worker keeps serving after bad input.
    async fn still_serving(&self) {
        if self.worker.function(&"echo".parse().unwrap()).is_err() {
            self.deploy("echo", "", guests::ECHO).await;
        }
        let r = self.run("echo", "still here").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.text(), "still here");
    }
}

#[tokio::test]
async fn deploy_and_run_wasm_and_builtin() {
    let api = Api::new().await;
    let d = api.deploy("echo", "", guests::ECHO).await;
    assert_eq!(d["function"], "echo");
    assert_eq!(d["created"], true);
    assert_eq!(d["number"], 1);
    let rev = d["revision"].as_str().unwrap().to_owned();
    assert_eq!(rev.len(), 64);

    let r = api.run("echo", "hello colony").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.text(), "hello colony");
    assert_eq!(r.header("colony-revision").as_deref(), Some(rev.as_str()));
    assert_eq!(r.header("colony-exit-code").as_deref(), Some("0"));
    assert!(
        r.header("colony-duration-us")
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );

    // Binary input round-trips untouched.
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let r = api.run("echo", bytes.clone()).await;
    assert_eq!(r.body.as_ref(), bytes.as_slice());

    // The same bytes and manifest again: the existing revision, 200.
    let r = api.send("PUT", "/functions/echo", guests::ECHO).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["revision"], rev.as_str());
    assert_eq!(r.json()["created"], false);

    // Builtins.
    api.deploy("hash", "executor=builtin", "sha256").await;
    let r = api.run("hash", "abc").await;
    assert_eq!(
        r.text(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    api.deploy("wc", "executor=builtin", "wordcount").await;
    let r = api.run("wc", "the cat and the hat").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"lines": 0, "words": 5, "bytes": 19}));

    // An unknown builtin is refused at deploy.
    let r = api
        .send("PUT", "/functions/nope?executor=builtin", "md5")
        .await;
    r.expect_error(StatusCode::BAD_REQUEST, "invalid_module");
    // So is an unknown executor.
    let r = api
        .send("PUT", "/functions/nope?executor=python", "x")
        .await;
    r.expect_error(StatusCode::BAD_REQUEST, "invalid_manifest");
}

#[tokio::test]
async fn c_example_runs_with_args_and_env_from_the_manifest() {
    let api = Api::new().await;
    let upper = guests::c_guest("json-upper");
    api.deploy("upper", "", upper).await;
    let r = api.run("upper", r#"{"name":"ada"}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.text().trim(), r#"{"name":"ADA"}"#);

    api.deploy(
        "env",
        "env=GREETING%3Dhi&env=MODE=test&arg=first&arg=two+words",
        guests::c_guest("printenv"),
    )
    .await;
    let r = api.run("env", "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let out = r.text();
    assert_eq!(
        out,
        "arg[0]=env\narg[1]=first\narg[2]=two words\nenv:GREETING=hi\nenv:MODE=test\n"
    );
}

#[tokio::test]
async fn revisions_pinning_default_switch_and_delete() {
    let api = Api::new().await;
    let v1 = api.deploy("greet", "executor=builtin", "echo").await["revision"]
        .as_str()
        .unwrap()
        .to_owned();
    let v2 = api
        .deploy("greet", "executor=builtin&default=false", "sha256")
        .await;
    assert_eq!(v2["number"], 2);
    assert_eq!(v2["default"], false);
    let v2 = v2["revision"].as_str().unwrap().to_owned();
    assert_ne!(v1, v2);

    // The default is still v1; v2 runs when pinned, by full id or prefix.
    assert_eq!(api.run("greet", "abc").await.text(), "abc");
    let r = api.run(&format!("greet@{v2}"), "abc").await;
    assert_eq!(r.text().len(), 64);
    assert_eq!(r.header("colony-revision").as_deref(), Some(v2.as_str()));
    assert_eq!(
        api.run(&format!("greet@{}", &v2[..10]), "abc")
            .await
            .text()
            .len(),
        64
    );

    // Unknown and too-short revisions.
    api.run("greet@deadbeefdeadbeef", "")
        .await
        .expect_error(StatusCode::NOT_FOUND, "revision_not_found");
    api.run("greet@abc", "")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_name");

    // Show lists both revisions and the default.
    let r = api.send("GET", "/functions/greet", Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    let info = r.json();
    assert_eq!(info["default_revision"], v1.as_str(), "{info}");
    assert_eq!(info["revisions"].as_array().unwrap().len(), 2, "{info}");

    // Switch the default by prefix.
    let r = api
        .send(
            "PUT",
            "/functions/greet/default",
            json!({"revision": &v2[..12]}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["default_revision"], v2.as_str());
    assert_eq!(api.run("greet", "abc").await.text().len(), 64);
    let r = api
        .send("PUT", "/functions/greet/default", "{\"rev\": 1}")
        .await;
    r.expect_error(StatusCode::BAD_REQUEST, "bad_request");

    // The list.
    api.deploy("other", "executor=builtin", "echo").await;
    let r = api.send("GET", "/functions", Body::empty()).await;
    let names: Vec<String> = r.json()["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["greet", "other"]);

    // Delete.
    let r = api.send("DELETE", "/functions/greet", Body::empty()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    api.run("greet", "abc")
        .await
        .expect_error(StatusCode::NOT_FOUND, "function_not_found");
    api.send("DELETE", "/functions/greet", Body::empty())
        .await
        .expect_error(StatusCode::NOT_FOUND, "function_not_found");
    api.send("GET", "/functions/greet", Body::empty())
        .await
        .expect_error(StatusCode::NOT_FOUND, "function_not_found");
    assert_eq!(api.run("other", "ok").await.text(), "ok");
}

#[tokio::test]
async fn bad_requests_get_specific_errors() {
    let api = Api::new().await;
    api.run("ghost", "x")
        .await
        .expect_error(StatusCode::NOT_FOUND, "function_not_found");

    // Malformed wasm: wasmtime's reason is in the message.
    let v = api
        .send(
            "PUT",
            "/functions/broken",
            &b"\0asm\x01\0\0\0\x01\x05garbage"[..],
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_module");
    assert!(v["message"].as_str().unwrap().len() > 20, "{v}");
    api.send("PUT", "/functions/broken", "not wasm at all")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_module");
    // Valid modules that are not WASI commands.
    let v = api
        .send("PUT", "/functions/nostart", guests::NO_START)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_module");
    assert!(v["message"].as_str().unwrap().contains("_start"), "{v}");
    let v = api
        .send("PUT", "/functions/foreign", guests::ENV_IMPORT)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_module");
    assert!(v["message"].as_str().unwrap().contains("host_magic"), "{v}");
    api.send("PUT", "/functions/empty", Body::empty())
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_module");
    // Nothing was stored for any of them.
    assert_eq!(
        api.send("GET", "/functions", Body::empty()).await.json()["functions"],
        json!([])
    );

    // Invalid names: path tricks, capitals, too long.
    let long = "x".repeat(64);
    for name in ["..", "Upper", "a.b", long.as_str(), "-lead", "%2e%2e"] {
        api.send("PUT", &format!("/functions/{name}"), guests::ECHO)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "invalid_name");
    }
    api.run("Bad%20Name", "")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_name");

    // Bad manifests.
    let v = api
        .send("PUT", "/functions/echo?timeout=forever", guests::ECHO)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_manifest");
    assert!(v["message"].as_str().unwrap().contains("timeout"), "{v}");
    api.send("PUT", "/functions/echo?memory=2GiB", guests::ECHO)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_manifest");

    // Unknown routes and methods.
    api.send("GET", "/nowhere", Body::empty())
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    api.send("GET", "/run/echo", Body::empty())
        .await
        .expect_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");

    // A 20 MB body is refused with 413, declared or streamed.
    api.deploy("echo", "", guests::ECHO).await;
    let big = vec![b'x'; 20_000_000];
    api.run("echo", big.clone())
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let stream = futures_stream(big);
    api.run("echo", stream)
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    api.still_serving().await;
}

/// A body of unknown length, sent in 1 MiB chunks.
fn futures_stream(data: Vec<u8>) -> Body {
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = data
        .chunks(1 << 20)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    Body::from_stream(tokio_stream_iter(chunks))
}

fn tokio_stream_iter<T: Send + 'static>(
    items: Vec<T>,
) -> impl futures_core::Stream<Item = T> + Send + 'static {
    struct Iter<T>(std::vec::IntoIter<T>);
    impl<T> Unpin for Iter<T> {}
    impl<T> futures_core::Stream for Iter<T> {
        type Item = T;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    Iter(items.into_iter())
}

#[tokio::test]
async fn misbehaving_guests_fail_cleanly() {
    let api = Api::new().await;

    // An infinite loop: 504 within timeout + 1 s.
    api.deploy("loop", "timeout=500ms", guests::LOOP).await;
    let t = Instant::now();
    let v = api
        .run("loop", "")
        .await
        .expect_error(StatusCode::GATEWAY_TIMEOUT, "timeout");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert_eq!(v["limit_ms"], 500, "{v}");
    api.still_serving().await;

    // Growing memory past the cap.
    api.deploy("grow", "memory=4MiB", guests::GROW).await;
    let v = api
        .run("grow", "")
        .await
        .expect_error(StatusCode::INTERNAL_SERVER_ERROR, "memory_limit_exceeded");
    assert_eq!(v["limit_bytes"], 4 << 20, "{v}");
    api.still_serving().await;

    // A trap: 500 with the trap message and stderr tail.
    api.deploy("trap", "", guests::TRAP).await;
    let v = api
        .run("trap", "")
        .await
        .expect_error(StatusCode::INTERNAL_SERVER_ERROR, "guest_trap");
    assert!(
        v["message"].as_str().unwrap().contains("unreachable"),
        "{v}"
    );
    assert!(
        v["stderr_tail"].as_str().unwrap().contains("about to trap"),
        "{v}"
    );
    assert!(v["revision"].as_str().is_some(), "{v}");

    // A non-zero exit: 500 with the exit code, in the body and a header.
    api.deploy("exit3", "", guests::EXIT3).await;
    let r = api.run("exit3", "").await;
    let v = r.expect_error(StatusCode::INTERNAL_SERVER_ERROR, "guest_exit");
    assert_eq!(v["exit_code"], 3, "{v}");
    assert!(
        v["stderr_tail"].as_str().unwrap().contains("bad input"),
        "{v}"
    );
    assert_eq!(r.header("colony-exit-code").as_deref(), Some("3"));

    // 100 MB on stdout: the output cap stops it.
    api.deploy("spam", "output=1MiB", guests::SPAM).await;
    let v = api
        .run("spam", "")
        .await
        .expect_error(StatusCode::INTERNAL_SERVER_ERROR, "output_limit_exceeded");
    assert_eq!(v["limit_bytes"], 1 << 20, "{v}");
    api.still_serving().await;

    let status = api.send("GET", "/status", Body::empty()).await.json();
    assert_eq!(status["invocations"]["failed"], 5, "{status}");
    assert_eq!(status["invocations"]["succeeded"], 3, "{status}");
}

#[tokio::test]
async fn the_sandbox_denies_host_files_and_env() {
    let api = Api::new().await;
    api.deploy("sandbox", "", guests::c_guest("sandbox")).await;
    let r = api.run("sandbox", "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let out = r.text();
    assert!(!out.contains("OPENED"), "{out}");
    for what in [
        "/etc/passwd",
        "../../../../etc/passwd",
        "etc/passwd",
        "/proc/self/environ",
        "/:",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(what) && l.contains("denied")),
            "{what}: {out}"
        );
    }
    assert!(out.contains("HOME=(unset) PATH=(unset)"), "{out}");
}

#[tokio::test]
async fn saturation_sheds_load_with_retry_after() {
    let api = Api::with(|c| {
        c.concurrency = 8;
        c.queue = 32;
    })
    .await;
    api.deploy("spin", "", guests::c_guest("spin")).await;
    // Warm the revision so the burst measures scheduling, not loading.
    assert_eq!(api.run("spin", "1").await.text(), "done\n");

    let api = Arc::new(api);
    let started = Instant::now();
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move {
                let r = api.run("spin", "100").await;
                (r.status, r.header("retry-after"), r.json_or_text())
            })
        })
        .collect();

    // The worker stays responsive while saturated.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    let status = api.send("GET", "/status", Body::empty()).await;
    let status_took = t.elapsed();
    assert_eq!(status.status, StatusCode::OK);
    let s = status.json();
    assert_eq!(s["concurrency"], 8);
    assert!(s["running"].as_u64().unwrap() <= 8, "{s}");
    assert!(s["queued"].as_u64().unwrap() <= 32, "{s}");

    let mut ok = 0;
    let mut shed = 0;
    for call in calls {
        let (status, retry_after, body) = tokio::time::timeout(Duration::from_secs(60), call)
            .await
            .expect("a call hung")
            .unwrap();
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(body["code"], "overloaded", "{body}");
                assert_eq!(retry_after.as_deref(), Some("1"));
                shed += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ok + shed, 200);
    assert!((8..=40).contains(&ok), "ok={ok} shed={shed}");
    assert!(shed >= 160, "ok={ok} shed={shed}");
    let s = api.send("GET", "/status", Body::empty()).await.json();
    assert_eq!(s["invocations"]["rejected"], shed, "{s}");
    assert_eq!(s["running"], 0, "{s}");
    assert_eq!(s["queued"], 0, "{s}");
    eprintln!(
        "200 calls: {ok} ok, {shed} shed in {:?}; /status answered in {status_took:?}",
        started.elapsed()
    );
    api.still_serving().await;
}

impl Reply {
    fn json_or_text(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| Value::String(self.text()))
    }
}

#[tokio::test]
async fn draining_refuses_new_calls_and_reports_it() {
    let api = Api::new().await;
    api.deploy("echo", "", guests::ECHO).await;
    api.worker.begin_drain();
    let r = api.send("GET", "/status", Body::empty()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["state"], "draining");
    let r = api.run("echo", "x").await;
    r.expect_error(StatusCode::SERVICE_UNAVAILABLE, "draining");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert!(api.worker.drained(Duration::from_secs(1)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_at_a_function_limit_counts_against_the_queue() {
    let api = Arc::new(
        Api::with(|c| {
            c.concurrency = 4;
            c.queue = 1;
        })
        .await,
    );
    api.deploy("spin", "concurrency=1", guests::c_guest("spin"))
        .await;
    assert_eq!(api.run("spin", "1").await.text(), "done\n");
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move { api.run("spin", "300").await.status })
        })
        .collect();
    let mut ok = 0;
    let mut shed = 0;
    for c in calls {
        match c.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => shed += 1,
            other => panic!("{other}"),
        }
    }
    // One runs, one waits in the (one-place) queue; the rest are shed at once.
    assert_eq!((ok, shed), (2, 6));
}
