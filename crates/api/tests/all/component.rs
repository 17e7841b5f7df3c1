//! The `component` executor at `/http/{name}`: a wasi:http proxy component
//! (`examples/rust/http-hello`, the same binary `wasmtime serve` runs)
//! serves requests with the limits modules have.

use axum::body::Body;
use axum::http::StatusCode;
use colony_testsupport::guests;

use super::Api;

/// An API with `examples/rust/http-hello` deployed as `hello` (with
/// `query` added to its manifest); its revision.
async fn hello(query: &str) -> (Api, String) {
    let api = Api::new().await;
    let d = api
        .deploy(
            "hello",
            &format!("executor=component&{query}"),
            guests::c_guest("http-hello"),
        )
        .await;
    let rev = d["revision"].as_str().unwrap().to_owned();
    (api, rev)
}

#[tokio::test]
async fn the_hello_component_serves_get_with_its_path_headers_and_status() {
    let (api, rev) = hello("").await;
    for (uri, seen) in [
        ("/http/hello", "/"),
        ("/http/hello/", "/"),
        ("/http/hello/a/b?x=1&y=%20", "/a/b?x=1&y=%20"),
    ] {
        let r = api.send("GET", uri, Body::empty()).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text());
        assert_eq!(r.text(), format!("Hello, world! You asked for {seen}\n"));
        assert_eq!(r.header("x-hello").as_deref(), Some("component"));
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(r.header("colony-revision").as_deref(), Some(rev.as_str()));
    }
    // A pinned revision is served too.
    let r = api
        .send("GET", &format!("/http/hello@{rev}/pinned"), Body::empty())
        .await;
    assert_eq!(r.text(), "Hello, world! You asked for /pinned\n");
}

#[tokio::test]
async fn the_hello_component_echoes_a_post_body_and_its_type() {
    let (api, _) = hello("").await;
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let r = api
        .request(
            axum::http::Request::post("/http/hello/echo")
                .header("content-type", "application/x-test")
                .body(Body::from(body.clone()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.body.len(), body.len());
    assert!(r.body[..] == body[..], "the echoed body differs");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/x-test")
    );
}

#[tokio::test]
async fn a_trapping_component_is_a_500_and_the_worker_keeps_serving() {
    let (api, _) = hello("").await;
    let r = api.send("GET", "/http/hello/trap", Body::empty()).await;
    r.expect_error(StatusCode::INTERNAL_SERVER_ERROR, "guest_trap");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("unreachable")
            || r.json()["stderr_tail"]
                .as_str()
                .is_some_and(|t| t.contains("asked to trap")),
        "{}",
        r.text()
    );
    let r = api.send("GET", "/http/hello/", Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    api.still_serving().await;
}

#[tokio::test]
async fn a_looping_component_is_stopped_at_its_timeout() {
    let (api, _) = hello("timeout=300ms").await;
    let started = std::time::Instant::now();
    let r = api.send("GET", "/http/hello/spin", Body::empty()).await;
    r.expect_error(StatusCode::GATEWAY_TIMEOUT, "timeout");
    // Stopped, not left running: the worker answers the next request.
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let r = api.send("GET", "/http/hello/", Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn a_response_over_the_output_limit_is_refused() {
    let (api, _) = hello("output=64KiB").await;
    let r = api
        .send("POST", "/http/hello/echo", vec![b'x'; 200_000])
        .await;
    r.expect_error(StatusCode::INTERNAL_SERVER_ERROR, "output_limit_exceeded");
    let r = api.send("POST", "/http/hello/echo", vec![b'y'; 1000]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.body.len(), 1000);
}

#[tokio::test]
async fn a_component_serves_http_only() {
    let (api, _) = hello("").await;
    let r = api.run("hello", "input").await;
    r.expect_error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(r.text().contains("/http/hello/"), "{}", r.text());
    let r = api
        .send(
            "POST",
            "/tasks",
            serde_json::json!({"function": "hello", "input": "x"}).to_string(),
        )
        .await;
    r.expect_error(StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn modules_and_components_are_refused_on_each_others_executor() {
    let api = Api::new().await;
    let r = api
        .send(
            "PUT",
            "/functions/m?executor=component",
            guests::c_guest("json-upper"),
        )
        .await;
    r.expect_error(StatusCode::BAD_REQUEST, "invalid_module");
    assert!(r.text().contains("core module"), "{}", r.text());
    let r = api
        .send("PUT", "/functions/c", guests::c_guest("http-hello"))
        .await;
    r.expect_error(StatusCode::BAD_REQUEST, "invalid_module");
    assert!(r.text().contains("executor=component"), "{}", r.text());
    // Not a wasi:http component: a module WAT is not a component either.
    let r = api
        .send("PUT", "/functions/w?executor=component", guests::ECHO)
        .await;
    r.expect_error(StatusCode::BAD_REQUEST, "invalid_module");
    api.still_serving().await;
}

#[tokio::test]
async fn the_component_sees_the_path_as_sent() {
    let (api, _) = hello("").await;
    for (uri, seen) in [
        ("/http/hello/a%20b", "/a%20b"),
        ("/http/hello/a%3Fb?c=d", "/a%3Fb?c=d"),
        ("/http/hello/x%2Fy/%23z", "/x%2Fy/%23z"),
        ("/http/hello?q=1", "/?q=1"),
    ] {
        let r = api.send("GET", uri, Body::empty()).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text());
        assert_eq!(
            r.text(),
            format!("Hello, world! You asked for {seen}\n"),
            "{uri}"
        );
    }
}

#[tokio::test]
async fn a_component_that_answers_no_response_is_a_guest_failure() {
    let (api, _) = hello("").await;
    for (uri, needle) in [
        ("/http/hello/error", "an error instead of a response"),
        ("/http/hello/silent", "without setting a response"),
    ] {
        let r = api.send("GET", uri, Body::empty()).await;
        let v = r.expect_error(StatusCode::INTERNAL_SERVER_ERROR, "guest_trap");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{uri}: {v}"
        );
    }
    let r = api.send("GET", "/http/hello/", Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}
