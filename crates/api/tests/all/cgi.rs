//! The `cgi` executor at `/http/{name}`: the request reaches the guest as
//! CGI 1.1 and its CGI response becomes the HTTP answer; a stdout that is
//! not a CGI response is a 502.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use colony_testsupport::guests;

use super::{Api, Reply};

impl Api {
    /// Sends `method uri` with the given headers and body.
    async fn send_with(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        self.request(req.body(body.into()).unwrap()).await
    }

    async fn get(&self, uri: &str) -> Reply {
        self.send("GET", uri, Body::empty()).await
    }
}

/// An API with `examples/c/cgi-hello.c` deployed as `hello`; its revision.
async fn hello() -> (Api, String) {
    let api = Api::new().await;
    let d = api
        .deploy("hello", "executor=cgi", guests::c_guest("cgi-hello"))
        .await;
    let rev = d["revision"].as_str().unwrap().to_owned();
    (api, rev)
}

#[track_caller]
fn assert_ok_text(r: &Reply) {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("content-type").as_deref(), Some("text/plain"));
}

#[tokio::test]
async fn the_example_gets_method_path_and_query() {
    let (api, _) = hello().await;
    let r = api.get("/http/hello/?a=1").await;
    assert_ok_text(&r);
    let body = r.text();
    assert!(body.contains("method: GET\n"), "{body}");
    assert!(body.contains("script: /http/hello\n"), "{body}");
    assert!(body.contains("path: /\n"), "{body}");
    assert!(body.contains("query: a=1\n"), "{body}");

    // Without the trailing slash PATH_INFO is empty.
    let r = api.get("/http/hello").await;
    assert_ok_text(&r);
    assert!(r.text().contains("path: \n"), "{}", r.text());
    assert!(r.text().contains("query: \n"), "{}", r.text());
}

#[tokio::test]
async fn the_example_echoes_a_post_with_its_status_and_headers() {
    let (api, _) = hello().await;
    let json = r#"{"name":"ada","tags":["x","y"]}"#;
    let r = api
        .send_with(
            "POST",
            "/http/hello/echo",
            &[
                ("content-type", "application/json"),
                ("content-length", &json.len().to_string()),
            ],
            json,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(r.header("x-colony-example").as_deref(), Some("cgi-hello"));
    assert_eq!(r.text(), json);

    // A streamed body (no Content-Length header) still arrives whole, with
    // CONTENT_LENGTH set to its size.
    let bytes: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let r = api
        .send_with(
            "POST",
            "/http/hello/echo",
            &[("content-type", "application/octet-stream")],
            super::futures_stream(bytes.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.body.as_ref(), bytes.as_slice());

    // Any status and header the guest writes is passed on.
    let r = api.get("/http/hello/echo").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{}", r.text());
    assert_eq!(r.header("allow").as_deref(), Some("POST"));
}

#[tokio::test]
async fn request_headers_arrive_as_http_vars_but_not_authorization() {
    let (api, _) = hello().await;
    let r = api
        .send_with(
            "GET",
            "/http/hello/headers",
            &[("x-custom", "v"), ("authorization", "Bearer secret")],
            Body::empty(),
        )
        .await;
    assert_ok_text(&r);
    let body = r.text();
    assert!(body.lines().any(|l| l == "HTTP_X_CUSTOM=v"), "{body}");
    assert!(!body.contains("AUTHORIZATION"), "{body}");
    assert!(!body.contains("secret"), "{body}");
    // One variable a line, sorted.
    let lines: Vec<&str> = body.lines().collect();
    assert!(lines.iter().all(|l| l.starts_with("HTTP_")), "{body}");
    assert!(lines.is_sorted(), "{body}");
}

#[tokio::test]
async fn a_guest_404_reaches_the_client_with_its_body() {
    let (api, _) = hello().await;
    let r = api.get("/http/hello/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    assert_eq!(r.text(), "no such page: /nope\n");
}

#[tokio::test]
async fn a_pinned_revision_serves_and_unknown_functions_are_404() {
    let (api, rev) = hello().await;
    let r = api
        .get(&format!("/http/hello@{}/?pinned=1", &rev[..12]))
        .await;
    assert_ok_text(&r);
    assert!(r.text().contains("path: /\n"), "{}", r.text());
    assert!(r.text().contains("query: pinned=1\n"), "{}", r.text());

    api.get("/http/ghost/")
        .await
        .expect_error(StatusCode::NOT_FOUND, "function_not_found");
}

/// `examples/echo.wat` deployed with `executor=cgi` as `raw`: whatever is
/// posted is the guest's CGI response.
async fn raw() -> Api {
    let api = Api::new().await;
    api.deploy("raw", "executor=cgi", guests::ECHO).await;
    api
}

#[tokio::test]
async fn cgi_responses_set_status_headers_and_body() {
    let api = raw().await;
    let r = api
        .send("POST", "/http/raw", "Content-Type: text/plain\n\nhi")
        .await;
    assert_ok_text(&r);
    assert_eq!(r.text(), "hi");

    let r = api
        .send(
            "POST",
            "/http/raw",
            "Status: 418 I'm a teapot\r\nContent-Type: text/plain\r\n\r\nshort",
        )
        .await;
    assert_eq!(r.status, StatusCode::IM_A_TEAPOT, "{}", r.text());
    assert_eq!(r.header("content-type").as_deref(), Some("text/plain"));
    assert_eq!(r.text(), "short");

    let r = api
        .send("POST", "/http/raw", "Location: /elsewhere\n\n")
        .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
    assert_eq!(r.header("location").as_deref(), Some("/elsewhere"));
}

#[tokio::test]
async fn a_stdout_that_is_not_a_cgi_response_is_502() {
    let api = raw().await;
    for bad in [
        "no blank line",
        "Bad Header Line\n\nx",
        "X-Only: 1\n\nbody",
        "Status: abc\n\n",
    ] {
        let r = api.send("POST", "/http/raw", bad).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{bad:?}: {}", r.text());
        r.expect_error(StatusCode::BAD_GATEWAY, "invalid_cgi_response");
    }
    // The function still answers a good response afterwards.
    let r = api.send("POST", "/http/raw", "Status: 204\n\n").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
}

#[tokio::test]
async fn a_function_that_is_not_cgi_is_refused_at_http() {
    let api = Api::new().await;
    api.deploy("echo", "", guests::ECHO).await;
    api.send("POST", "/http/echo", "Content-Type: text/plain\n\nhi")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    // It still runs at /run.
    api.still_serving().await;
}

#[tokio::test]
async fn a_guest_cannot_switch_protocols_frame_the_response_or_speak_for_colony() {
    let api = raw().await;
    // 1xx would switch protocols (or leave the client waiting).
    for bad in [
        "Status: 101 Switching Protocols\nUpgrade: websocket\nConnection: Upgrade\n\n",
        "Status: 100 Continue\n\n",
    ] {
        api.send("POST", "/http/raw", bad)
            .await
            .expect_error(StatusCode::BAD_GATEWAY, "invalid_cgi_response");
    }
    // Hop-by-hop headers (and those its Connection names), framing and
    // colony-* headers are the server's.
    let r = api
        .send(
            "POST",
            "/http/raw",
            "Content-Type: text/plain\nConnection: X-Hop\nX-Hop: 1\nUpgrade: h2c\n\
             Transfer-Encoding: chunked\nContent-Length: 999\nColony-Exit-Code: 7\n\
             X-Kept: yes\n\nbody",
        )
        .await;
    assert_ok_text(&r);
    assert_eq!(r.text(), "body");
    for gone in ["x-hop", "upgrade", "transfer-encoding", "colony-exit-code"] {
        assert!(r.header(gone).is_none(), "{gone}: {:?}", r.header(gone));
    }
    assert_eq!(r.header("content-length").as_deref(), Some("4"));
    assert_eq!(r.header("x-kept").as_deref(), Some("yes"));
    // 204 carries no body, whatever the guest wrote.
    let r = api.send("POST", "/http/raw", "Status: 204\n\nstray").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.text().is_empty(), "{}", r.text());
    // A huge header block is refused with a short message.
    let huge = format!(
        "Content-Type: text/plain\nX-Big: {}\n\n",
        "a".repeat(40 << 10)
    );
    let v = api
        .send("POST", "/http/raw", huge)
        .await
        .expect_error(StatusCode::BAD_GATEWAY, "invalid_cgi_response");
    assert!(v["message"].as_str().unwrap().len() < 300, "{v}");
}

#[tokio::test]
async fn a_nul_in_the_path_is_refused() {
    let api = raw().await;
    api.send("GET", "/http/raw/a%00b", Body::empty())
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
}
