//! Durable tasks through the HTTP API, on a real worker.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::StatusCode;
use colony_testsupport::guests;
use serde_json::{Value, json};

use super::{Api, Reply, next_line};

impl Api {
    pub(crate) async fn submit(&self, body: Value) -> Reply {
        self.send("POST", "/tasks", body.to_string()).await
    }

    /// Submits and returns the id, asserting a 202.
    pub(crate) async fn submit_ok(&self, body: Value) -> String {
        let r = self.submit(body).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
        let v = r.json();
        assert_eq!(v["state"], "queued");
        assert_eq!(v["created"], true);
        v["id"].as_str().unwrap().to_owned()
    }

    async fn task(&self, id: &str) -> Value {
        let r = self
            .send("GET", &format!("/tasks/{id}"), Body::empty())
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()
    }

    /// Long-polls until the task is terminal.
    pub(crate) async fn finished(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self
                .send("GET", &format!("/tasks/{id}?wait=10"), Body::empty())
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            let v = r.json();
            if ["succeeded", "failed", "cancelled", "dead"].contains(&v["state"].as_str().unwrap())
            {
                return v;
            }
            assert!(Instant::now() < deadline, "task never finished: {v}");
        }
    }

    async fn wait_state(&self, id: &str, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let t = self.task(id).await;
            if t["state"] == state {
                break;
            }
            assert!(Instant::now() < deadline, "task never became {state}: {t}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_and_keeps_its_result() {
    let api = Api::new().await;
    api.deploy("echo", "", guests::ECHO).await;
    api.deploy("hash", "executor=builtin", "sha256").await;
    let id = api
        .submit_ok(json!({"function": "echo", "input": "hello task"}))
        .await;
    let t = api.finished(&id).await;
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(t["attempts"], 1);
    assert_eq!(t["max_attempts"], 3);
    assert_eq!(t["input_size"], 10);
    assert_eq!(t["output_size"], 10);
    assert!(t["worker"].as_str().unwrap().contains(':'), "{t}");
    for k in ["created_ms", "started_ms", "finished_ms", "expires_ms"] {
        assert!(t[k].as_i64().unwrap() > 0, "{k}: {t}");
    }
    let r = api
        .send("GET", &format!("/tasks/{id}/result"), Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "hello task");

    // Raw bytes through input_base64, a pinned revision.
    let rev = api
        .send("GET", "/functions/hash", Body::empty())
        .await
        .json()["default_revision"]
        .as_str()
        .unwrap()[..8]
        .to_owned();
    let id = api
        .submit_ok(json!({"function": format!("hash@{rev}"), "input_base64": "YWJj"}))
        .await;
    assert_eq!(api.finished(&id).await["state"], "succeeded");
    let r = api
        .send("GET", &format!("/tasks/{id}/result"), Body::empty())
        .await;
    assert_eq!(
        r.text(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_back_off_then_the_task_dies() {
    let api = Api::new().await;
    // Exits 3 every time; retried on exit, 3 attempts, 40 ms base backoff.
    api.deploy(
        "flaky",
        "retry_on=exit&max_attempts=3&backoff=40ms",
        guests::EXIT3,
    )
    .await;
    let t0 = Instant::now();
    let id = api.submit_ok(json!({"function": "flaky"})).await;
    let t = api.finished(&id).await;
    let took = t0.elapsed();
    assert_eq!(t["state"], "dead", "{t}");
    assert_eq!(t["attempts"], 3);
    assert_eq!(t["error"]["code"], "guest_exit");
    assert_eq!(t["error"]["exit_code"], 3);
    assert!(
        t["error"]["stderr_tail"]
            .as_str()
            .unwrap()
            .contains("bad input"),
        "{t}"
    );
    // Two backoffs: at least half of 40 ms, then half of 80 ms.
    assert!(took >= Duration::from_millis(60), "{took:?}");
    let r = api
        .send("GET", &format!("/tasks/{id}/result"), Body::empty())
        .await;
    r.expect_error(StatusCode::NOT_FOUND, "result_not_found");

    // The default policy does not retry an exit: failed after one attempt.
    api.deploy("once", "", guests::EXIT3).await;
    let id = api.submit_ok(json!({"function": "once"})).await;
    let t = api.finished(&id).await;
    assert_eq!(
        (t["state"].as_str(), t["attempts"].as_u64()),
        (Some("failed"), Some(1)),
        "{t}"
    );

    // It retries a timeout; the task's own max_attempts and timeout win.
    api.deploy("loop", "backoff=10ms", guests::LOOP).await;
    let id = api
        .submit_ok(json!({"function": "loop", "max_attempts": 2, "timeout_ms": 50}))
        .await;
    let t = api.finished(&id).await;
    assert_eq!(t["state"], "dead", "{t}");
    assert_eq!(t["attempts"], 2);
    assert_eq!(t["error"]["code"], "timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_queued_and_running_tasks() {
    let api = Api::new().await;
    // One at a time, so the second task stays queued.
    api.deploy("loop", "concurrency=1&timeout=60s", guests::LOOP)
        .await;
    let running = api.submit_ok(json!({"function": "loop"})).await;
    api.wait_state(&running, "running").await;
    let queued = api.submit_ok(json!({"function": "loop"})).await;
    assert_eq!(api.task(&queued).await["state"], "queued");

    let r = api
        .send("DELETE", &format!("/tasks/{queued}"), Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["state"], "cancelled");
    assert_eq!(r.json()["attempts"], 0);

    let t = Instant::now();
    let r = api
        .send("DELETE", &format!("/tasks/{running}"), Body::empty())
        .await;
    let took = t.elapsed();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["state"], "cancelled");
    assert!(
        took < Duration::from_millis(100),
        "cancelling a running task took {took:?}"
    );

    // Finished, unknown, malformed.
    api.send("DELETE", &format!("/tasks/{running}"), Body::empty())
        .await
        .expect_error(StatusCode::CONFLICT, "task_finished");
    api.send("DELETE", "/tasks/01m89mvdqma9dyznh6qxqt0000", Body::empty())
        .await
        .expect_error(StatusCode::NOT_FOUND, "task_not_found");
    api.send("GET", "/tasks/01m89mvdqma9dyznh6qxqt0000", Body::empty())
        .await
        .expect_error(StatusCode::NOT_FOUND, "task_not_found");
    api.send("DELETE", "/tasks/..%2F..%2Fetc", Body::empty())
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    // The worker goes on: the function runs again.
    let again = api
        .submit_ok(json!({"function": "loop", "timeout_ms": 20, "max_attempts": 1}))
        .await;
    assert_eq!(api.finished(&again).await["state"], "dead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_return_the_first_task() {
    let api = Api::new().await;
    api.deploy("echo", "executor=builtin", "echo").await;
    let body = json!({"function": "echo", "input": "once", "idempotency_key": "order-42"});
    let first = api.submit_ok(body.clone()).await;
    let r = api.submit(body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["id"], first.as_str());
    assert_eq!(r.json()["created"], false);
    let other = api
        .submit_ok(json!({"function": "echo", "idempotency_key": "order-43"}))
        .await;
    assert_ne!(other, first);
    let list = api
        .send("GET", "/tasks?function=echo", Body::empty())
        .await
        .json();
    assert_eq!(list["tasks"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_waits_for_the_end() {
    let api = Api::new().await;
    api.deploy("spin", "", guests::c_guest("spin")).await;
    let id = api
        .submit_ok(json!({"function": "spin", "input": "300"}))
        .await;
    // A short wait ends with the task still going.
    let t = Instant::now();
    let v = api
        .send("GET", &format!("/tasks/{id}?wait=0.1"), Body::empty())
        .await
        .json();
    assert!(t.elapsed() >= Duration::from_millis(90));
    assert!(
        ["queued", "running"].contains(&v["state"].as_str().unwrap()),
        "{v}"
    );
    // A long one ends when the task does.
    let v = api
        .send("GET", &format!("/tasks/{id}?wait=20"), Body::empty())
        .await
        .json();
    assert_eq!(v["state"], "succeeded", "{v}");
    assert!(t.elapsed() < Duration::from_secs(20));
    api.send("GET", &format!("/tasks/{id}?wait=soon"), Body::empty())
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_newest_first_with_a_stable_cursor() {
    let api = Api::new().await;
    api.deploy("echo", "executor=builtin", "echo").await;
    api.deploy("hash", "executor=builtin", "sha256").await;
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(
            api.submit_ok(json!({"function": "echo", "input": i.to_string()}))
                .await,
        );
    }
    let hash = api.submit_ok(json!({"function": "hash"})).await;
    for id in &ids {
        api.finished(id).await;
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let v = api
            .send(
                "GET",
                &format!("/tasks?function=echo&limit=10&after={after}"),
                Body::empty(),
            )
            .await
            .json();
        pages += 1;
        seen.extend(
            v["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_owned()),
        );
        match v["next"].as_str() {
            Some(n) => after = n.to_owned(),
            None => break,
        }
        // A task submitted meanwhile does not shift the pages.
        if pages == 1 {
            api.submit_ok(json!({"function": "echo"})).await;
        }
    }
    assert_eq!(pages, 3);
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 25);

    let v = api
        .send("GET", "/tasks?state=succeeded&function=hash", Body::empty())
        .await
        .json();
    assert_eq!(v["tasks"][0]["id"], hash.as_str());
    assert_eq!(v["tasks"].as_array().unwrap().len(), 1);
    api.send("GET", "/tasks?state=done", Body::empty())
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    api.send("GET", "/tasks?limit=0", Body::empty())
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    api.send("GET", "/tasks?colour=red", Body::empty())
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tasks_and_their_result_files_are_swept() {
    let api = Api::with(|c| {
        c.tasks.ttl = Duration::ZERO;
        c.tasks.result_inline_max = 16;
    })
    .await;
    api.deploy("echo", "executor=builtin", "echo").await;
    let big = "x".repeat(1000);
    let id = api
        .submit_ok(json!({"function": "echo", "input": big}))
        .await;
    assert_eq!(api.finished(&id).await["state"], "succeeded");
    let results = api.worker.config().data_dir.join("results");
    let files = |dir: &std::path::Path| walk(dir);
    assert_eq!(files(&results), 1, "the big result is a file");
    assert_eq!(
        api.send("GET", &format!("/tasks/{id}/result"), Body::empty())
            .await
            .text(),
        big
    );

    let swept = api.worker.sweep_tasks().await.unwrap();
    assert_eq!(swept, 1);
    api.send("GET", &format!("/tasks/{id}"), Body::empty())
        .await
        .expect_error(StatusCode::NOT_FOUND, "task_not_found");
    assert_eq!(files(&results), 0, "its file is gone");
}

fn walk(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                walk(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submissions_get_specific_errors() {
    let api = Api::new().await;
    api.deploy("echo", "executor=builtin", "echo").await;
    api.submit(json!({"function": "ghost"}))
        .await
        .expect_error(StatusCode::NOT_FOUND, "function_not_found");
    api.submit(json!({"function": "echo@deadbeef00"}))
        .await
        .expect_error(StatusCode::NOT_FOUND, "revision_not_found");
    api.submit(json!({"function": "Bad Name"}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_name");
    let v = api
        .submit(json!({"function": "echo", "max_attempts": "three"}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(
        v["message"].as_str().unwrap().contains("max_attempts"),
        "{v}"
    );
    let v = api
        .submit(json!({"function": "echo", "colour": 1}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(v["message"].as_str().unwrap().contains("colour"), "{v}");
    let v = api
        .send("POST", "/tasks", "{not json")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(v["message"].as_str().unwrap().contains("JSON"), "{v}");
    let v = api
        .submit(json!({"input": "x"}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(v["message"].as_str().unwrap().contains("function"), "{v}");
    api.submit(json!({"function": "echo", "input": "a", "input_base64": "YQ=="}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    let v = api
        .submit(json!({"function": "echo", "input_base64": "***"}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(
        v["message"].as_str().unwrap().contains("input_base64"),
        "{v}"
    );
    api.submit(json!({"function": "echo", "max_attempts": 0}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    api.submit(json!({"function": "echo", "timeout_ms": 0}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    // Over the body limit (16 MiB).
    let big = "x".repeat(17 << 20);
    api.submit(json!({"function": "echo", "input": big}))
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // Nothing was created by any of these.
    let list = api.send("GET", "/tasks", Body::empty()).await.json();
    assert_eq!(list["tasks"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_orders_queued_tasks() {
    let api = Api::new().await;
    api.deploy("spin", "concurrency=1", guests::c_guest("spin"))
        .await;
    let blocker = api
        .submit_ok(json!({"function": "spin", "input": "200"}))
        .await;
    api.wait_state(&blocker, "running").await;
    let low: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(
                api.submit_ok(json!({"function": "spin", "input": "1", "priority": -1}))
                    .await,
            );
        }
        v
    };
    let high = api
        .submit_ok(json!({"function": "spin", "input": "1", "priority": 5}))
        .await;
    let high_started = api.finished(&high).await["started_ms"].as_i64().unwrap();
    for id in &low {
        let t = api.finished(id).await;
        assert!(
            t["started_ms"].as_i64().unwrap() >= high_started,
            "low started before high: {t}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_not_starved_by_a_flood_of_tasks() {
    let api = Api::with(|c| c.concurrency = 2).await;
    api.deploy("spin", "", guests::c_guest("spin")).await;
    api.deploy("echo", "executor=builtin", "echo").await;
    let api = std::sync::Arc::new(api);
    let submits: Vec<_> = (0..100)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move {
                api.submit_ok(json!({"function": "spin", "input": "50"}))
                    .await
            })
        })
        .collect();
    for s in submits {
        s.await.unwrap();
    }
    // The call gets a turn long before the 100 tasks (5 s of work on two
    // slots) are done.
    let r = api.run("echo", "through").await;
    assert_eq!(r.text(), "through");
    let s = api.send("GET", "/status", Body::empty()).await.json();
    assert!(s["tasks"]["queued"].as_u64().unwrap() > 50, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_whose_client_went_away_still_runs() {
    let api = Api::new().await;
    api.deploy("echo", "executor=builtin", "echo").await;
    // Hold the database's write lock so the submit waits for its commit.
    let db = api.worker.config().data_dir.join("colony.db");
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let body = json!({"function": "echo", "input": "late", "idempotency_key": "gone"}).to_string();
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        api.send("POST", "/tasks", body.clone()),
    )
    .await;
    assert!(
        gave_up.is_err(),
        "the submit should still be waiting for the lock"
    );
    lock.execute_batch("COMMIT").unwrap();
    drop(lock);
    // The task was committed after its client left; it runs all the same.
    let r = api.submit(serde_json::from_str(&body).unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let t = api.finished(&id).await;
    assert_eq!(t["state"], "succeeded", "{t}");
    let s = api.send("GET", "/status", Body::empty()).await.json();
    assert_eq!(s["tasks"]["queued"], 0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_that_cannot_be_stored_fails_the_task_cleanly() {
    let api = Api::with(|c| c.tasks.result_inline_max = 16).await;
    api.deploy("echo", "executor=builtin", "echo").await;
    // Make the results directory unusable.
    let results = api.worker.config().data_dir.join("results");
    std::fs::remove_dir_all(&results).unwrap();
    std::fs::write(&results, b"not a directory").unwrap();
    let id = api
        .submit_ok(json!({"function": "echo", "input": "x".repeat(100)}))
        .await;
    let t = api.finished(&id).await;
    assert_eq!(t["state"], "failed", "{t}");
    assert_eq!(t["error"]["code"], "internal");
    assert!(
        t["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not store the result"),
        "{t}"
    );
    let s = api.send("GET", "/status", Body::empty()).await.json();
    assert_eq!(
        (
            s["tasks"]["running"].as_u64(),
            s["tasks"]["queued"].as_u64()
        ),
        (Some(0), Some(0)),
        "{s}"
    );
    // Small results still work.
    let id = api
        .submit_ok(json!({"function": "echo", "input": "ok"}))
        .await;
    assert_eq!(api.finished(&id).await["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directive_stream_tells_cancels_and_ends_when_the_worker_drains() {
    let api = Api::new().await;
    api.deploy("sleep", "", guests::SLEEP).await;
    let mut stream = api.listen(None, "d2").await.into_body();
    assert_eq!(next_line(&mut stream).await.unwrap()["event"], "open");
    // A cancelled task is told, with its state.
    let id = api
        .submit_ok(json!({"function": "sleep", "directive": "d2", "priority": -1}))
        .await;
    let r = api
        .send("DELETE", &format!("/tasks/{id}"), Body::empty())
        .await;
    assert!(r.status.is_success(), "{}", r.text());
    let done = next_line(&mut stream).await.unwrap();
    assert_eq!((&done["event"], &done["id"]), (&json!("done"), &json!(id)));
    assert_eq!(done["state"], "cancelled");
    // Draining ends the stream; one opened while draining says it
    // listens, then ends.
    api.worker.begin_drain();
    let end = tokio::time::timeout(Duration::from_secs(5), next_line(&mut stream)).await;
    assert!(matches!(end, Ok(None)), "{end:?}");
    let mut late = api.listen(None, "d3").await.into_body();
    assert_eq!(next_line(&mut late).await.unwrap()["event"], "open");
    let end = tokio::time::timeout(Duration::from_secs(5), next_line(&mut late)).await;
    assert!(matches!(end, Ok(None)), "{end:?}");
}
