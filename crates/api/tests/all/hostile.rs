//! Hostile input through the whole router, as property tests: whatever
//! the bytes of a body, a query or a path segment, the answer is a 2xx or
//! a 4xx with a JSON error body (`code`, `message`), never a 5xx, and the
//! worker keeps serving. `PROPTEST_CASES` cases each (default 256).

use axum::body::Body;
use axum::http::StatusCode;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::{Value, json};

use super::{Api, Reply};

/// A runtime, a worker with `echo` (builtin) deployed, and a finished task.
struct Fixture {
    rt: tokio::runtime::Runtime,
    api: Api,
    revision: String,
    finished_task: String,
}

impl Fixture {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (api, revision, finished_task) = rt.block_on(async {
            let api = Api::new().await;
            let d = api.deploy("echo", "executor=builtin", "echo").await;
            let revision = d["revision"].as_str().unwrap().to_owned();
            let r = api
                .send(
                    "POST",
                    "/tasks",
                    json!({"function": "echo", "input": "x"}).to_string(),
                )
                .await;
            let id = r.json()["id"].as_str().unwrap().to_owned();
            let r = api
                .send("GET", &format!("/tasks/{id}?wait=30"), Body::empty())
                .await;
            assert_eq!(r.json()["state"], "succeeded", "{}", r.text());
            (api, revision, id)
        });
        Self {
            rt,
            api,
            revision,
            finished_task,
        }
    }

    /// Runs `strategy`'s cases through `send`, checking every answer.
    fn check<S: Strategy>(
        &self,
        strategy: S,
        send: impl Fn(&Api, S::Value) -> std::pin::Pin<Box<dyn Future<Output = Reply> + '_>>,
    ) where
        S::Value: std::fmt::Debug,
    {
        let mut runner = TestRunner::default();
        let result = runner.run(&strategy, |input| {
            let reply = self.rt.block_on(send(&self.api, input));
            well_formed(&reply)
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        let r = self.rt.block_on(self.api.run("echo", "still here"));
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
}

/// A 2xx, or a 4xx whose body is `{"code", "message", ...}`.
fn well_formed(r: &Reply) -> Result<(), TestCaseError> {
    let status = r.status;
    prop_assert!(
        status.is_success() || status.is_client_error(),
        "{status}: {}",
        r.text()
    );
    if status.is_client_error() {
        let v: Value = serde_json::from_slice(&r.body)
            .map_err(|e| TestCaseError::fail(format!("{status}, not JSON ({e}): {}", r.text())))?;
        prop_assert!(v["code"].as_str().is_some_and(|c| !c.is_empty()), "{v}");
        prop_assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    Ok(())
}

/// Short text near the rules, or anything.
fn text() -> impl Strategy<Value = String> + Clone {
    prop_oneof!["[a-z0-9@_.=-]{0,20}", "[0-9a-fA-F]{0,70}", any::<String>(),]
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    colony_testsupport::strategies::any_json(text())
}

/// `POST /tasks` bodies: task-shaped JSON with right or wrong values, any
/// JSON, and any bytes.
fn task_body(revision: String) -> impl Strategy<Value = Vec<u8>> {
    let function = prop_oneof![
        6 => Just(json!("echo")),
        1 => Just(json!(format!("echo@{}", &revision[..8]))),
        1 => Just(json!(format!("echo@{}", revision.to_uppercase()))),
        1 => Just(json!("ghost")),
        1 => Just(json!("echo@00000000")),
        1 => text().prop_map(Value::from),
        1 => any_json(),
    ];
    let field = |name: &'static str, right: BoxedStrategy<Value>| {
        (
            Just(name),
            prop_oneof![6 => right, 1 => any_json()],
            any::<bool>(),
        )
    };
    let fields = (
        field("function", function.boxed()),
        field("input", text().prop_map(Value::from).boxed()),
        field(
            "input_base64",
            prop::collection::vec(any::<u8>(), 0..32)
                .prop_map(|b| {
                    use base64::Engine as _;
                    Value::from(base64::engine::general_purpose::STANDARD.encode(b))
                })
                .boxed(),
        ),
        field("idempotency_key", text().prop_map(Value::from).boxed()),
        field(
            "max_attempts",
            prop_oneof![
                6 => (0u64..120).prop_map(Value::from),
                1 => any::<u64>().prop_map(Value::from)
            ]
            .boxed(),
        ),
        field(
            "timeout_ms",
            prop_oneof![
                6 => (0u64..2_000_000).prop_map(Value::from),
                1 => any::<u64>().prop_map(Value::from)
            ]
            .boxed(),
        ),
        field(
            "priority",
            prop_oneof![
                6 => any::<i32>().prop_map(Value::from),
                1 => any::<i64>().prop_map(Value::from)
            ]
            .boxed(),
        ),
        (Just("surprise"), any_json(), prop::bool::weighted(0.1)),
    );
    let task = fields.prop_map(|(a, b, c, d, e, f, g, h)| {
        let object: serde_json::Map<String, Value> = [a, b, c, d, e, f, g, h]
            .into_iter()
            .filter(|(name, _, keep)| *keep || *name == "function")
            .map(|(name, v, _)| (name.to_owned(), v))
            .collect();
        Value::Object(object).to_string().into_bytes()
    });
    prop_oneof![
        6 => task,
        1 => any_json().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

#[test]
fn task_submissions_never_fail_the_server() {
    let f = Fixture::new();
    f.check(task_body(f.revision.clone()), |api, body| {
        Box::pin(api.send("POST", "/tasks", body))
    });
}

/// Query values: numbers of every size and spelling, states, ids, text.
fn query_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,22}",
        "-?[0-9]{0,400}(\\.[0-9]{0,5})?(e[+-]?[0-9]{1,4})?",
        "-?(NaN|nan|inf|infinity|Infinity|1e309|0x10|1_000)",
        "queued|running|succeeded|failed|cancelled|dead|done",
        "[0-7][0-9a-z]{25}",
        text(),
    ]
}

/// A query of `keys` (or any key) with values of [`query_value`], or any text.
fn query(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    let key = prop_oneof![
        4 => prop::sample::select(keys).prop_map(str::to_owned),
        1 => text(),
    ];
    prop_oneof![
        4 => prop::collection::vec((key, query_value()), 0..5).prop_map(|pairs| {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &pairs {
                q.append_pair(k, v);
            }
            q.finish()
        }),
        1 => any::<String>().prop_map(|s| form_urlencoded::byte_serialize(s.as_bytes()).collect()),
    ]
}

#[test]
fn task_list_queries_never_fail_the_server() {
    let f = Fixture::new();
    f.check(
        query(&["state", "function", "limit", "after"]),
        |api, query| {
            Box::pin(async move {
                api.send("GET", &format!("/tasks?{query}"), Body::empty())
                    .await
            })
        },
    );
}

#[test]
fn long_poll_waits_never_fail_the_server() {
    let f = Fixture::new();
    let task = f.finished_task.clone();
    let wait = prop_oneof![
        3 => query_value().prop_map(|v| {
            form_urlencoded::Serializer::new(String::new()).append_pair("wait", &v).finish()
        }),
        1 => query(&["wait"]),
    ];
    // A finished task answers a long poll at once, whatever `wait` is.
    f.check(wait, move |api, query| {
        let uri = format!("/tasks/{task}?{query}");
        Box::pin(async move { api.send("GET", &uri, Body::empty()).await })
    });
}

#[test]
fn deploy_queries_never_fail_the_server() {
    let f = Fixture::new();
    let key = prop_oneof![
        4 => prop::sample::select(vec![
            "io", "timeout", "timeout_ms", "memory", "output", "env", "arg", "max_attempts",
            "retry_on", "backoff", "max_backoff", "concurrency", "default",
        ])
        .prop_map(str::to_owned),
        1 => text(),
    ];
    let value = prop_oneof![
        "[0-9]{1,25}",
        "[0-9]{1,12}(ms|s|m|h|d|w|y|KiB|MiB|GiB|K|M|G|MB|B)?",
        "[A-Z_]{0,4}=?[a-z\\x00]{0,4}",
        "((trap|timeout|exit|worker_lost|limit|x),?){0,6}",
        text(),
    ];
    let query = prop::collection::vec((key, value), 0..8).prop_map(|pairs| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
        // The builtin executor (last wins) so the body `echo` is valid code.
        q.append_pair("executor", "builtin");
        q.finish()
    });
    f.check(query, |api, query| {
        Box::pin(async move {
            let r = api
                .send("PUT", &format!("/functions/props?{query}"), "echo")
                .await;
            // A manifest either deploys or is refused as invalid_manifest.
            if r.status.is_client_error() {
                assert_eq!(
                    r.json()["code"],
                    "invalid_manifest",
                    "{query}: {}",
                    r.text()
                );
            }
            r
        })
    });
}

#[test]
fn path_segments_never_fail_the_server() {
    let f = Fixture::new();
    let segment = prop_oneof![
        text().prop_map(|s| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()),
        // Percent-encoded bytes, including ones that decode to bad UTF-8.
        prop::collection::vec(any::<u8>(), 1..12)
            .prop_map(|b| b.iter().map(|x| format!("%{x:02X}")).collect::<String>()),
    ];
    let route = prop::sample::select(vec![
        ("POST", "/run/"),
        ("PUT", "/functions/"),
        ("GET", "/functions/"),
        ("DELETE", "/functions/"),
        ("GET", "/tasks/"),
        ("DELETE", "/tasks/"),
    ]);
    f.check((route, segment), |api, ((method, prefix), segment)| {
        Box::pin(async move {
            let mut uri = format!("{prefix}{segment}");
            if method == "PUT" {
                uri.push_str("/default");
            }
            api.send(method, &uri, "{}").await
        })
    });
}
