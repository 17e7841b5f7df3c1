//! `/metrics` after a scripted workload shows exactly that workload.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::StatusCode;
use colony_testsupport::guests;
use serde_json::json;

use super::Api;

/// Samples by `name{labels}` as printed.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_workload_exactly() {
    let api = Api::new().await;
    api.deploy("echo", "", guests::ECHO).await;
    api.deploy("exit3", "", guests::EXIT3).await;
    for _ in 0..5 {
        assert_eq!(api.run("echo", "x").await.status, StatusCode::OK);
    }
    for _ in 0..2 {
        api.run("exit3", "")
            .await
            .expect_error(StatusCode::INTERNAL_SERVER_ERROR, "guest_exit");
    }
    api.run("ghost", "")
        .await
        .expect_error(StatusCode::NOT_FOUND, "function_not_found");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = api
            .send(
                "POST",
                "/tasks",
                json!({"function": "echo", "input": "t"}).to_string(),
            )
            .await;
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let v = api
            .send("GET", &format!("/tasks/{id}?wait=10"), Body::empty())
            .await
            .json();
        assert_eq!(v["state"], "succeeded");
    }

    // A task's slot is released just after its end is recorded: wait
    // for the worker to be idle before reading the gauges.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while api.worker.status().running > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never went idle"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let r = api.send("GET", "/metrics", Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header("content-type")
            .unwrap()
            .contains("openmetrics-text")
    );
    let text = r.text();
    let m = samples(&text);
    let get = |k: &str| {
        m.get(k)
            .copied()
            .unwrap_or_else(|| panic!("no sample {k} in:\n{text}"))
    };
    assert_eq!(
        get(r#"colony_invocations_total{function="echo",kind="call",outcome="succeeded"}"#),
        5.0
    );
    assert_eq!(
        get(r#"colony_invocations_total{function="exit3",kind="call",outcome="guest_exit"}"#),
        2.0
    );
    assert_eq!(
        get(r#"colony_invocations_total{function="echo",kind="task",outcome="succeeded"}"#),
        3.0
    );
    assert_eq!(
        get(r#"colony_invocation_duration_seconds_count{function="echo",kind="call"}"#),
        5.0
    );
    assert_eq!(get(r#"colony_tasks_submitted_total{function="echo"}"#), 3.0);
    assert_eq!(
        get(r#"colony_tasks_finished_total{function="echo",state="succeeded"}"#),
        3.0
    );
    assert_eq!(
        get(r#"colony_http_requests_total{method="POST",route="/run/{target}",status="200"}"#),
        5.0
    );
    assert_eq!(
        get(r#"colony_http_requests_total{method="POST",route="/run/{target}",status="500"}"#),
        2.0
    );
    assert_eq!(
        get(r#"colony_http_requests_total{method="POST",route="/run/{target}",status="404"}"#),
        1.0
    );
    assert_eq!(
        get(r#"colony_http_requests_total{method="POST",route="/tasks",status="202"}"#),
        3.0
    );
    assert_eq!(
        get(r#"colony_http_requests_total{method="PUT",route="/functions/{name}",status="201"}"#),
        2.0
    );
    assert_eq!(get(r#"colony_queue_wait_seconds_count"#), 7.0);
    assert_eq!(get("colony_functions"), 2.0);
    assert_eq!(get("colony_revisions"), 2.0);
    assert_eq!(get("colony_running"), 0.0);
    assert_eq!(get("colony_tasks_queued"), 0.0);
    assert_eq!(get("colony_compile_cache_misses_total"), 2.0);
    assert!(get("colony_compile_cache_size_bytes") > 0.0);
    assert!(get("colony_store_commit_duration_seconds_count") >= 1.0);
    assert!(text.contains("colony_worker_info{version=\""), "{text}");
    assert!(text.trim_end().ends_with("# EOF"));
}
