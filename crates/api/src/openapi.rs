//! The OpenAPI 3 description of the API, served at `GET /openapi.json`.
//!
//! It is generated from the handlers' `#[utoipa::path]` annotations and
//! the wire types' `ToSchema` derives (colony-core's `openapi` feature), so
//! a changed body or parameter changes the document with it. The tests
//! (`tests/all/openapi.rs`) check that it lists exactly the router's
//! routes and that real answers have documented statuses, and
//! `scripts/schemathesis.sh` fuzzes a running worker against it.
//!
//! What the layer in front of every route adds (the token an operation
//! needs, from the same table the gate checks; 401, 403, 414 and 431) is
//! added to each operation by [`Common`], in one place, so a new route
//! gets it too. A worker with tokens serves the document with tokens
//! required ([`tokens_required`]).

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use colony_core::wire::ErrorBody;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    Components, Content, HeaderBuilder, Ref, RefOr, ResponseBuilder, SecurityRequirement,
};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::AppState;
use crate::auth::Scope;

/// The API document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Colony",
        description = "A serverless WebAssembly worker: deploy functions, run them over HTTP, \
                       submit durable tasks. Every error is JSON with a stable `code` \
                       (see `ErrorBody`).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        crate::run::run,
        crate::http::root,
        crate::http::path,
        crate::functions::list,
        crate::functions::deploy,
        crate::functions::show,
        crate::functions::delete,
        crate::functions::set_default,
        crate::tasks::submit,
        crate::tasks::list,
        crate::tasks::show,
        crate::tasks::cancel,
        crate::tasks::result,
        crate::tasks::file,
        crate::directives::events,
        crate::status::status,
        crate::status::workers,
        metrics,
        openapi,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Common),
    tags(
        (name = "run", description = "Run a function once, synchronously."),
        (name = "functions", description = "Deploy, inspect and delete functions and revisions."),
        (name = "tasks", description = "Durable asynchronous invocations with retries."),
        (name = "worker", description = "The worker's health, metrics and this document."),
    ),
)]
struct ApiDoc;

/// The OpenAPI document of the whole API, as a worker without tokens
/// serves it (every operation also allows no credentials).
pub fn spec() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "get_openapi",
    summary = "This OpenAPI document",
    tag = "worker",
    responses(
        (status = 200, description = "This document (OpenAPI 3.1).",
            content_type = "application/json", body = Object),
    ),
)]
pub(crate) async fn openapi(State(state): State<AppState>) -> Response {
    static OPEN: OnceLock<String> = OnceLock::new();
    static TOKENS: OnceLock<String> = OnceLock::new();
    let body = if state.auth.is_open() {
        OPEN.get_or_init(|| json(spec()))
    } else {
        TOKENS.get_or_init(|| json(tokens_required(spec())))
    };
    ([(header::CONTENT_TYPE, "application/json")], body.as_str()).into_response()
}

fn json(doc: utoipa::openapi::OpenApi) -> String {
    doc.to_json().expect("the OpenAPI document serializes")
}

/// The document as a worker with tokens serves it: an operation that needs
/// a token has no anonymous alternative.
fn tokens_required(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let anonymous = SecurityRequirement::default();
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            if let Some(security) = &mut op.security
                && security.len() > 1
            {
                security.retain(|r| *r != anonymous);
            }
        }
    }
    doc
}

/// `GET /metrics`: documented here; the handler lives in the metrics module.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "get_metrics",
    summary = "Prometheus metrics",
    tag = "worker",
    responses(
        (status = 200, description = "The worker's metrics in the OpenMetrics text format \
            (which Prometheus scrapes).",
            content_type = "application/openmetrics-text", body = String),
    ),
)]
#[allow(dead_code)]
fn metrics() {}

/// The name of the bearer-token security scheme.
pub(crate) const BEARER: &str = "bearer";

/// Answers of the layer in front of every route (the gate): (status,
/// component name, description). 401 only where a token is needed, 403
/// only where an `invoke` token is not enough.
const SHARED: [(&str, &str, &str); 7] = [
    (
        "408",
        "RequestTimeout",
        "`request_timeout`: the request body did not arrive within 60 s.",
    ),
    (
        "401",
        "Unauthorized",
        "`unauthorized`: tokens are configured and the request has no valid \
         `Authorization: Bearer <token>`.",
    ),
    (
        "403",
        "Forbidden",
        "`forbidden`: the token is valid but its scope (`invoke`) does not allow this; \
         it needs an `admin` token.",
    ),
    (
        "429",
        "TooManyRequests",
        "`too_many_requests`: the token has as many requests in flight as the worker allows \
         it (`max_inflight_per_token`); `Retry-After` says when to retry.",
    ),
    (
        "414",
        "UriTooLong",
        "`uri_too_long`: the path and query are over the worker's limit.",
    ),
    (
        "431",
        "HeadersTooLarge",
        "`headers_too_large`: the request headers are over the worker's limit.",
    ),
    (
        "503",
        "ClusterUnavailable",
        "`cluster_unavailable` (in a cluster): NATS did not answer; nothing was changed \
         or accepted; `Retry-After` says when to retry. (`draining` where the operation \
         says so.)",
    ),
];

/// Adds what every operation shares: its token scope, from the same
/// table the gate checks (`auth::required`), and the gate's answers.
/// Without tokens a worker is open, so [`spec`] also allows no
/// credentials; a worker with tokens serves [`tokens_required`].
#[derive(Debug)]
struct Common;

impl Modify for Common {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer <token>`, required when the worker is \
                         configured with tokens (without tokens every request is allowed). \
                         An operation's role is the scope it needs: `invoke` or `admin` \
                         (which may do everything).",
                    ))
                    .build(),
            ),
        );
        for (status, name, description) in SHARED {
            let mut response = error_response(description);
            if status == "401" {
                response.headers.insert(
                    "www-authenticate".to_owned(),
                    HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(Type::String))
                        .description(Some("`Bearer realm=\"colony\"`."))
                        .build(),
                );
            }
            components
                .responses
                .insert(name.to_owned(), response.into());
        }
        forbid_both(components, "SubmitTask", "input", "input_base64");
        for (path, item) in doc.paths.paths.iter_mut() {
            let ops = [
                (Method::GET, &mut item.get),
                (Method::PUT, &mut item.put),
                (Method::POST, &mut item.post),
                (Method::DELETE, &mut item.delete),
                (Method::PATCH, &mut item.patch),
            ];
            let shared_id = ops
                .iter()
                .filter_map(|(_, op)| op.as_ref()?.operation_id.clone())
                .collect::<Vec<_>>();
            let shared_id = shared_id.len() > 1 && shared_id.windows(2).all(|w| w[0] == w[1]);
            for (method, op) in ops {
                if let Some(op) = op {
                    // One handler for several methods (`/http`): an
                    // operation id per method, as OpenAPI wants them unique.
                    if shared_id && let Some(id) = &mut op.operation_id {
                        *id = format!("{id}_{}", method.as_str().to_ascii_lowercase());
                    }
                    // The router spells a catch-all `{*path}`.
                    let route = path.replace("{path}", "{*path}");
                    add_shared(op, path, crate::auth::required(&method, Some(&route)));
                    camel_case_links(op);
                }
            }
        }
    }
}

fn add_shared(op: &mut Operation, path: &str, scope: Option<Scope>) {
    let role = match scope {
        None => None,
        Some(Scope::Invoke) => Some("invoke"),
        Some(Scope::Admin) => Some("admin"),
    };
    for (status, name, _) in SHARED {
        let applies = match status {
            "401" => scope.is_some(),
            "403" => scope == Some(Scope::Admin),
            "429" => scope.is_some(),
            // What reads or writes the cluster's state.
            "503" => ["/run", "/functions", "/tasks", "/workers"]
                .iter()
                .any(|p| path.starts_with(p)),
            _ => true,
        };
        if applies {
            op.responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
        }
    }
    // No credentials (a public route, or a worker without tokens), or a
    // bearer token of the role.
    let mut security = vec![SecurityRequirement::default()];
    if let Some(role) = role {
        security.push(SecurityRequirement::new(BEARER, [role]));
    }
    op.security.get_or_insert(security);
}

/// utoipa 5 writes a link's `operationId` and `requestBody` in snake case,
/// which no OpenAPI tool reads; moves them to their OpenAPI names.
fn camel_case_links(op: &mut Operation) {
    for response in op.responses.responses.values_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        for link in response.links.values_mut() {
            let RefOr::T(link) = link else { continue };
            let fields = link.extensions.get_or_insert_with(Default::default);
            if !link.operation_id.is_empty() {
                let id = std::mem::take(&mut link.operation_id);
                fields.insert("operationId".to_owned(), id.into());
            }
            if let Some(body) = link.request_body.take() {
                fields.insert("requestBody".to_owned(), body);
            }
        }
    }
}

/// Adds `not: both fields are strings` to the object schema `name`
/// (utoipa has no `not`; the keyword goes in through the extensions map).
fn forbid_both(components: &mut Components, name: &str, a: &str, b: &str) {
    let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(name) else {
        panic!("no object schema {name}");
    };
    let string = serde_json::json!({"type": "string"});
    object
        .extensions
        .get_or_insert_with(Default::default)
        .insert(
            "not".to_owned(),
            serde_json::json!({"required": [a, b], "properties": {a: string, b: string}}),
        );
}

/// A JSON error response with `description`.
fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name(ErrorBody::name()))),
        )
        .build()
}

/// Raw bytes: `/run` input and output, deployed code, task results.
#[derive(Debug)]
pub(crate) struct RawBytes;

impl PartialSchema for RawBytes {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl ToSchema for RawBytes {}
