//! `GET /openapi.json`: the document lists exactly the router's routes, and
//! real answers have the statuses and content types it documents.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::StatusCode;
use colony_testsupport::guests;
use serde_json::{Value, json};

use super::{Api, Reply};

/// Every route of `router()`, as the document spells them.
const ROUTES: &[(&str, &[&str])] = &[
    ("/run/{target}", &["post"]),
    ("/http/{target}", &["get", "post", "put", "delete", "patch"]),
    (
        "/http/{target}/{path}",
        &["get", "post", "put", "delete", "patch"],
    ),
    ("/functions", &["get"]),
    ("/functions/{name}", &["put", "get", "delete"]),
    ("/functions/{name}/default", &["put"]),
    ("/tasks", &["post", "get"]),
    ("/tasks/{id}", &["get", "delete"]),
    ("/tasks/{id}/result", &["get"]),
    ("/tasks/{id}/files/{file}", &["get"]),
    ("/directives/{id}/events", &["get"]),
    ("/status", &["get"]),
    ("/workers", &["get"]),
    ("/metrics", &["get"]),
    ("/openapi.json", &["get"]),
];

/// The token scope each operation needs (README, Operating): the rest
/// need `invoke`.
const PUBLIC: &[&str] = &["get /status", "get /openapi.json"];
const ADMIN: &[&str] = &[
    "put /functions/{name}",
    "delete /functions/{name}",
    "put /functions/{name}/default",
    "get /metrics",
];

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// The paths `router()` routes, read from its source, so a route added
/// there without a document fails here.
fn router_paths() -> BTreeSet<String> {
    let src = include_str!("../../src/lib.rs");
    let body = src
        .split("pub fn router(")
        .nth(1)
        .expect("lib.rs has router()");
    let body = &body[..body.find("\n}\n").expect("router() ends")];
    body.split(".route(")
        .skip(1)
        .map(|s| {
            let s = s.trim_start().strip_prefix('"').expect("a literal path");
            // The document spells the router's catch-all `{*path}` `{path}`,
            // and documents `/x/` (the same handler) as `/x`.
            let path = s[..s.find('"').unwrap()].replace("{*path}", "{path}");
            match path.strip_suffix('/') {
                Some(p) if !p.is_empty() => p.to_owned(),
                _ => path,
            }
        })
        .collect()
}

async fn document(api: &Api) -> Value {
    let r = api.send("GET", "/openapi.json", Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    r.json()
}

/// `path` with every `{param}` filled with something the route matches.
fn concrete(path: &str) -> String {
    path.replace("{target}", "ghost")
        .replace("{name}", "ghost")
        .replace("{id}", "01k00000000000000000000000")
        .replace("{file}", "out.txt")
}

#[tokio::test]
async fn the_document_lists_every_route_with_its_answers() {
    let api = Api::new().await;
    let doc = document(&api).await;
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3."), "{version}");
    assert_eq!(doc["info"]["title"], "Colony");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (&bearer["type"], &bearer["scheme"]),
        (&json!("http"), &json!("bearer"))
    );

    let paths = doc["paths"].as_object().unwrap();
    let mut ids = BTreeSet::new();
    let documented: BTreeSet<String> = paths.keys().cloned().collect();
    let expected: BTreeSet<String> = ROUTES.iter().map(|(p, _)| (*p).to_owned()).collect();
    assert_eq!(documented, expected, "the document's paths");
    assert_eq!(router_paths(), expected, "router()'s paths");

    for (path, methods) in ROUTES {
        let item = &paths[*path];
        let have: BTreeSet<&str> = METHODS
            .into_iter()
            .filter(|m| item.get(*m).is_some())
            .collect();
        assert_eq!(have, methods.iter().copied().collect(), "{path}");
        for method in *methods {
            let op = &item[*method];
            let what = format!("{method} {path}");
            let id = op["operationId"].as_str().unwrap();
            assert!(ids.insert(id), "{what}: operationId {id} is not unique");
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{what}: no success answer"
            );
            // The layer in front of every route: URL and header limits, tokens.
            for shared in ["414", "431"] {
                assert!(responses.contains_key(shared), "{what}: no {shared}");
            }
            let public = PUBLIC.contains(&what.as_str());
            let admin = ADMIN.contains(&what.as_str());
            assert_eq!(responses.contains_key("401"), !public, "{what}: 401");
            assert_eq!(responses.contains_key("403"), admin, "{what}: 403");
            let role = match (public, admin) {
                (true, _) => json!([{}]),
                (false, true) => json!([{}, {"bearer": ["admin"]}]),
                (false, false) => json!([{}, {"bearer": ["invoke"]}]),
            };
            assert_eq!(op["security"], role, "{what}: security");
            for (status, resp) in responses {
                let resp = resolve(&doc, resp);
                assert!(resp["description"].is_string(), "{what} {status}");
                // Every error is JSON with the ErrorBody schema.
                if status.starts_with('4') || (status.starts_with('5') && *path != "/status") {
                    let schema = &resp["content"]["application/json"]["schema"];
                    assert_eq!(
                        schema["$ref"], "#/components/schemas/ErrorBody",
                        "{what} {status}: {resp}"
                    );
                }
            }
            // Every `{param}` of the path is a documented path parameter.
            let params: Vec<&Value> = op["parameters"]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                let name = seg.trim_matches(['{', '}']);
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true),
                    "{what}: path parameter {name}"
                );
            }

            // The router answers it: neither the fallback's 404 nor a 405.
            // (A directive's stream does not end: asked with a bad id.)
            let uri = match *path {
                "/directives/{id}/events" => "/directives/bad.id/events".to_owned(),
                _ => concrete(path),
            };
            let r = api.send(&method.to_uppercase(), &uri, Body::empty()).await;
            let fallback = r.status == StatusCode::METHOD_NOT_ALLOWED
                || (r.status == StatusCode::NOT_FOUND && r.json()["code"] == "not_found");
            assert!(!fallback, "{what}: not routed: {} {}", r.status, r.text());
        }
    }

    // The deploy parameters are the ones the query parser reads.
    let deploy = &paths["/functions/{name}"]["put"]["parameters"];
    let names: Vec<&str> = deploy
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for known in [
        "executor",
        "io",
        "timeout",
        "timeout_ms",
        "memory",
        "output",
        "env",
        "arg",
        "max_attempts",
        "retry_on",
        "backoff",
        "max_backoff",
        "concurrency",
        "default",
    ] {
        assert!(
            names.contains(&known),
            "deploy parameter {known}: {names:?}"
        );
    }
    let r = api
        .send("PUT", "/functions/x?nonsense=1", guests::ECHO)
        .await;
    let message = r.expect_error(StatusCode::BAD_REQUEST, "invalid_manifest")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    let listed = message.split("known: ").nth(1).unwrap();
    let listed: BTreeSet<&str> = listed.split(',').map(str::trim).collect();
    assert_eq!(listed, names.iter().copied().collect(), "{message}");
}

/// Follows a `$ref` to `#/components/responses/...`.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => {
            let name = r.strip_prefix("#/components/responses/").unwrap();
            &doc["components"]["responses"][name]
        }
        None => v,
    }
}

/// Asserts that `reply` to `method path` has a documented status and, for
/// a body, the documented content type.
#[track_caller]
fn conforms(doc: &Value, method: &str, path: &str, reply: &Reply) {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    let status = reply.status.as_str();
    let resp = op["responses"].get(status).unwrap_or_else(|| {
        panic!(
            "{method} {path}: {status} is not documented: {}",
            reply.text()
        )
    });
    let resp = resolve(doc, resp);
    if reply.body.is_empty() {
        return;
    }
    let ct = reply.header("content-type").unwrap_or_default();
    let content = resp["content"].as_object().unwrap_or_else(|| {
        panic!(
            "{method} {path} {status}: a body, none documented: {}",
            reply.text()
        )
    });
    assert!(
        content.keys().any(|k| ct.starts_with(k.as_str())),
        "{method} {path} {status}: content type {ct}, documented {:?}",
        content.keys().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn real_answers_are_documented() {
    let api = Api::new().await;
    let doc = document(&api).await;

    let r = api
        .send("PUT", "/functions/echo?executor=builtin", "echo")
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    conforms(&doc, "put", "/functions/{name}", &r);
    let r = api
        .send("PUT", "/functions/echo?executor=builtin", "echo")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    conforms(&doc, "put", "/functions/{name}", &r);

    let r = api.run("echo", "hello").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    conforms(&doc, "post", "/run/{target}", &r);

    let r = api
        .send(
            "POST",
            "/tasks",
            json!({"function": "echo", "input": "later"}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    conforms(&doc, "post", "/tasks", &r);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let r = api
        .send("GET", &format!("/tasks/{id}?wait=10"), Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    conforms(&doc, "get", "/tasks/{id}", &r);
    let r = api
        .send("GET", &format!("/tasks/{id}/result"), Body::empty())
        .await;
    conforms(&doc, "get", "/tasks/{id}/result", &r);
    let r = api
        .send("DELETE", &format!("/tasks/{id}"), Body::empty())
        .await;
    r.expect_error(StatusCode::CONFLICT, "task_finished");
    conforms(&doc, "delete", "/tasks/{id}", &r);

    // Errors.
    let r = api.send("GET", "/functions/ghost", Body::empty()).await;
    r.expect_error(StatusCode::NOT_FOUND, "function_not_found");
    conforms(&doc, "get", "/functions/{name}", &r);
    let r = api.run("ghost", "x").await;
    r.expect_error(StatusCode::NOT_FOUND, "function_not_found");
    conforms(&doc, "post", "/run/{target}", &r);
    let r = api.run("Bad", "x").await;
    r.expect_error(StatusCode::BAD_REQUEST, "invalid_name");
    conforms(&doc, "post", "/run/{target}", &r);
    let r = api.send("POST", "/tasks", "{").await;
    r.expect_error(StatusCode::BAD_REQUEST, "bad_request");
    conforms(&doc, "post", "/tasks", &r);
    let r = api.send("GET", "/tasks?limit=0", Body::empty()).await;
    r.expect_error(StatusCode::BAD_REQUEST, "bad_request");
    conforms(&doc, "get", "/tasks", &r);
    let r = api
        .send("GET", "/tasks/01k00000000000000000000000", Body::empty())
        .await;
    r.expect_error(StatusCode::NOT_FOUND, "task_not_found");
    conforms(&doc, "get", "/tasks/{id}", &r);
    let r = api
        .send("PUT", "/functions/echo/default", "{\"revision\": 1}")
        .await;
    r.expect_error(StatusCode::BAD_REQUEST, "bad_request");
    conforms(&doc, "put", "/functions/{name}/default", &r);

    let r = api.send("GET", "/functions", Body::empty()).await;
    conforms(&doc, "get", "/functions", &r);
    let r = api.send("GET", "/status", Body::empty()).await;
    conforms(&doc, "get", "/status", &r);
    let r = api.send("DELETE", "/functions/echo", Body::empty()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    conforms(&doc, "delete", "/functions/{name}", &r);
}

#[tokio::test]
async fn gate_answers_are_documented() {
    const ADMIN: &str = "admin-token-0123456789";
    const APP: &str = "app-token-0123456789";
    let auth = colony_api::Auth::new([
        ("ops".to_owned(), ADMIN.to_owned(), colony_api::Scope::Admin),
        ("app".to_owned(), APP.to_owned(), colony_api::Scope::Invoke),
    ])
    .unwrap();
    let api = Api::with_auth(|_| {}, auth).await;
    let doc = document(&api).await;
    // With tokens, only the public operations take no credentials.
    let security = |method: &str, path: &str| doc["paths"][path][method]["security"].clone();
    assert_eq!(
        security("post", "/run/{target}"),
        json!([{"bearer": ["invoke"]}])
    );
    assert_eq!(security("get", "/metrics"), json!([{"bearer": ["admin"]}]));
    assert_eq!(security("get", "/status"), json!([{}]));

    let r = api.send("POST", "/run/echo", "x").await;
    r.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    conforms(&doc, "post", "/run/{target}", &r);
    let r = api
        .send_as(Some(APP), "PUT", "/functions/echo?executor=builtin", "echo")
        .await;
    r.expect_error(StatusCode::FORBIDDEN, "forbidden");
    conforms(&doc, "put", "/functions/{name}", &r);
    let r = api
        .send_as(
            Some(ADMIN),
            "PUT",
            "/functions/echo?executor=builtin",
            "echo",
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    conforms(&doc, "put", "/functions/{name}", &r);
    let r = api.send_as(Some(APP), "POST", "/run/echo", "x").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    conforms(&doc, "post", "/run/{target}", &r);
    let r = api.send("GET", "/status", Body::empty()).await;
    conforms(&doc, "get", "/status", &r);

    let long = format!("/functions/echo?{}", "a".repeat(colony_api::MAX_URI_BYTES));
    let r = api.send_as(Some(ADMIN), "GET", &long, Body::empty()).await;
    r.expect_error(StatusCode::URI_TOO_LONG, "uri_too_long");
    conforms(&doc, "get", "/functions/{name}", &r);
}
