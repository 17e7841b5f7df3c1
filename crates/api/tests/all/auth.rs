//! Tokens: every route, with no token, the wrong scope, and the right one.

use axum::body::Body;
use axum::http::StatusCode;
use colony_api::{Auth, Scope};
use colony_testsupport::guests;
use serde_json::json;

use super::{Api, next_line};

const ADMIN: &str = "admin-token-0123456789";
const APP: &str = "app-token-0123456789";
const OTHER: &str = "other-token-0123456789";

async fn api() -> Api {
    let auth = Auth::new([
        ("ops".to_owned(), ADMIN.to_owned(), Scope::Admin),
        ("app".to_owned(), APP.to_owned(), Scope::Invoke),
        ("other".to_owned(), OTHER.to_owned(), Scope::Invoke),
    ])
    .unwrap();
    Api::with_auth(|_| {}, auth).await
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Needs {
    Public,
    Invoke,
    Admin,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_its_scope() {
    let api = api().await;
    // Fixtures, made as admin.
    let r = api
        .send_as(
            Some(ADMIN),
            "PUT",
            "/functions/echo?executor=builtin",
            "echo",
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = api
        .send_as(
            Some(APP),
            "POST",
            "/tasks",
            json!({"function": "echo", "input": "x"}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let task = r.json()["id"].as_str().unwrap().to_owned();
    let r = api
        .send_as(
            Some(APP),
            "GET",
            &format!("/tasks/{task}?wait=5"),
            Body::empty(),
        )
        .await;
    assert_eq!(r.json()["state"], "succeeded");
    assert_eq!(r.json()["owner"], "app");
    let rev = api
        .send_as(Some(ADMIN), "GET", "/functions/echo", Body::empty())
        .await
        .json()["default_revision"]
        .as_str()
        .unwrap()
        .to_owned();

    // (method, path, body, scope needed, status with the right token)
    let routes: Vec<(&str, String, String, Needs, u16)> = vec![
        ("GET", "/status".into(), String::new(), Needs::Public, 200),
        (
            "GET",
            "/openapi.json".into(),
            String::new(),
            Needs::Public,
            200,
        ),
        ("GET", "/metrics".into(), String::new(), Needs::Admin, 200),
        ("POST", "/run/echo".into(), "hi".into(), Needs::Invoke, 200),
        (
            "GET",
            "/functions".into(),
            String::new(),
            Needs::Invoke,
            200,
        ),
        (
            "GET",
            "/functions/echo".into(),
            String::new(),
            Needs::Invoke,
            200,
        ),
        (
            "PUT",
            "/functions/hash?executor=builtin".into(),
            "sha256".into(),
            Needs::Admin,
            201,
        ),
        (
            "PUT",
            "/functions/echo/default".into(),
            json!({"revision": rev}).to_string(),
            Needs::Admin,
            200,
        ),
        (
            "POST",
            "/tasks".into(),
            json!({"function": "echo"}).to_string(),
            Needs::Invoke,
            202,
        ),
        ("GET", "/tasks".into(), String::new(), Needs::Invoke, 200),
        (
            "GET",
            format!("/tasks/{task}"),
            String::new(),
            Needs::Invoke,
            200,
        ),
        (
            "GET",
            format!("/tasks/{task}/result"),
            String::new(),
            Needs::Invoke,
            200,
        ),
        (
            "DELETE",
            format!("/tasks/{task}"),
            String::new(),
            Needs::Invoke,
            409,
        ),
        (
            "DELETE",
            "/functions/hash".into(),
            String::new(),
            Needs::Admin,
            204,
        ),
    ];
    for (method, path, body, needs, ok) in routes {
        // No token.
        let r = api.send_as(None, method, &path, body.clone()).await;
        if needs == Needs::Public {
            assert_eq!(
                r.status.as_u16(),
                ok,
                "{method} {path} without a token: {}",
                r.text()
            );
        } else {
            r.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
            assert!(
                r.header("www-authenticate").unwrap().starts_with("Bearer"),
                "{method} {path}"
            );
            // A wrong token is 401 too.
            api.send_as(Some("not-a-token-at-all-xx"), method, &path, body.clone())
                .await
                .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
        }
        // The wrong scope.
        if needs == Needs::Admin {
            let r = api.send_as(Some(APP), method, &path, body.clone()).await;
            r.expect_error(StatusCode::FORBIDDEN, "forbidden");
        }
        // The right scope (an admin token covers everything).
        let token = if needs == Needs::Admin { ADMIN } else { APP };
        let r = api.send_as(Some(token), method, &path, body.clone()).await;
        assert_eq!(
            r.status.as_u16(),
            ok,
            "{method} {path} with the right token: {}",
            r.text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_tokens_see_only_their_own_tasks() {
    let api = api().await;
    api.send_as(
        Some(ADMIN),
        "PUT",
        "/functions/loop?timeout=60s",
        guests::LOOP,
    )
    .await;
    let r = api
        .send_as(
            Some(APP),
            "POST",
            "/tasks",
            json!({"function": "loop"}).to_string(),
        )
        .await;
    let mine = r.json()["id"].as_str().unwrap().to_owned();

    // Another invoke token: the task does not exist for it.
    for (method, path) in [
        ("GET", format!("/tasks/{mine}")),
        ("GET", format!("/tasks/{mine}/result")),
        ("DELETE", format!("/tasks/{mine}")),
    ] {
        api.send_as(Some(OTHER), method, &path, Body::empty())
            .await
            .expect_error(StatusCode::NOT_FOUND, "task_not_found");
    }
    let list = api
        .send_as(Some(OTHER), "GET", "/tasks", Body::empty())
        .await
        .json();
    assert_eq!(list["tasks"], json!([]));
    // Its owner sees it; the admin sees everything and may cancel it.
    let list = api
        .send_as(Some(APP), "GET", "/tasks", Body::empty())
        .await
        .json();
    assert_eq!(list["tasks"][0]["id"], mine.as_str());
    let list = api
        .send_as(Some(ADMIN), "GET", "/tasks", Body::empty())
        .await
        .json();
    assert_eq!(list["tasks"].as_array().unwrap().len(), 1);
    let r = api
        .send_as(
            Some(ADMIN),
            "DELETE",
            &format!("/tasks/{mine}"),
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["state"], "cancelled");
}

#[tokio::test]
async fn oversized_urls_headers_and_too_many_functions_are_refused() {
    let api = Api::with(|c| c.max_functions = 2).await;
    let long = format!("/functions/{}", "a".repeat(9000));
    api.send("GET", &long, Body::empty())
        .await
        .expect_error(StatusCode::URI_TOO_LONG, "uri_too_long");

    let req = axum::http::Request::builder()
        .uri("/status")
        .header("x-big", "v".repeat(40 << 10))
        .body(Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(api.router.clone(), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    api.deploy("one", "executor=builtin", "echo").await;
    api.deploy("two", "executor=builtin", "echo").await;
    api.send("PUT", "/functions/three?executor=builtin", "echo")
        .await
        .expect_error(StatusCode::CONFLICT, "too_many_functions");
    // A new revision of an existing function is still fine.
    let r = api
        .send("PUT", "/functions/two?executor=builtin", "sha256")
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    // JSON nested past serde_json's depth limit is a 400, not a crash.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    api.send("POST", "/tasks", deep)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_has_a_bounded_number_of_requests_in_flight() {
    let auth = Auth::new([
        ("ops".to_owned(), ADMIN.to_owned(), Scope::Admin),
        ("app".to_owned(), APP.to_owned(), Scope::Invoke),
    ])
    .unwrap()
    .with_max_inflight(2);
    let api = std::sync::Arc::new(Api::with_auth(|_| {}, auth).await);
    api.send_as(
        Some(ADMIN),
        "PUT",
        "/functions/loop?timeout=60s",
        guests::LOOP,
    )
    .await;
    let r = api
        .send_as(
            Some(APP),
            "POST",
            "/tasks",
            json!({"function": "loop"}).to_string(),
        )
        .await;
    let id = r.json()["id"].as_str().unwrap().to_owned();
    // Two long polls hold the token's two slots.
    let polls: Vec<_> = (0..2)
        .map(|_| {
            let (api, id) = (api.clone(), id.clone());
            tokio::spawn(async move {
                api.send_as(
                    Some(APP),
                    "GET",
                    &format!("/tasks/{id}?wait=1"),
                    Body::empty(),
                )
                .await
                .status
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = api
        .send_as(Some(APP), "GET", "/functions", Body::empty())
        .await;
    r.expect_error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    // Another token is not affected.
    assert_eq!(
        api.send_as(Some(ADMIN), "GET", "/functions", Body::empty())
            .await
            .status,
        StatusCode::OK
    );
    for p in polls {
        assert_eq!(p.await.unwrap(), StatusCode::OK);
    }
    // The slots are back.
    assert_eq!(
        api.send_as(Some(APP), "GET", "/functions", Body::empty())
            .await
            .status,
        StatusCode::OK
    );
    api.send_as(
        Some(ADMIN),
        "DELETE",
        &format!("/tasks/{id}"),
        Body::empty(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_hears_only_its_own_directive_channels() {
    let api = api().await;
    let r = api
        .send_as(
            Some(ADMIN),
            "PUT",
            "/functions/echo?executor=builtin",
            "echo",
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(
        api.listen(None, "d1").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let mut theirs = api.listen(Some(OTHER), "d1").await.into_body();
    let mut mine = api.listen(Some(APP), "d1").await.into_body();
    assert_eq!(next_line(&mut theirs).await.unwrap()["event"], "open");
    assert_eq!(next_line(&mut mine).await.unwrap()["event"], "open");
    let r = api
        .send_as(
            Some(APP),
            "POST",
            "/tasks",
            json!({"function": "echo", "input": "for app", "directive": "d1"}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let done = next_line(&mut mine).await.unwrap();
    assert_eq!(done["event"], "done");
    assert_eq!(done["id"], id.as_str());
    assert_eq!(done["state"], "succeeded");
    // "for app", base64.
    assert_eq!(done["output_base64"], "Zm9yIGFwcA==");
    // The other token listens on the same id and hears nothing.
    let heard = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        next_line(&mut theirs),
    )
    .await;
    assert!(heard.is_err(), "another token's channel heard {heard:?}");
    // A malformed id is refused.
    let r = api
        .send_as(Some(APP), "GET", "/directives/bad.id/events", Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
}
