//! API errors: a status, a stable code, a message, and details.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use colony_core::{ErrorCode, Failure};
use colony_worker::Error;
use serde_json::{Map, Value, json};
use tracing::{error, warn};

/// The error of every handler, rendered as
/// `{"code": "...", "message": "...", ...details}`.
///
/// Client mistakes are 4xx with a message saying what to fix; guest
/// failures are 5xx with the guest's exit code and stderr tail; internal
/// failures are a generic 500 whose cause goes to the log, not the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    details: Map<String, Value>,
    retry_after: Option<u64>,
    revision: Option<String>,
    www_authenticate: bool,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Map::new(),
            retry_after: None,
            revision: None,
            www_authenticate: false,
        }
    }

    /// Adds `Retry-After: secs`.
    pub(crate) fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Adds `WWW-Authenticate: Bearer` (for 401s).
    pub(crate) fn with_www_authenticate(mut self) -> Self {
        self.www_authenticate = true;
        self
    }

    /// A 400 with code `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }
}

fn failure_status(f: &Failure) -> StatusCode {
    match f {
        Failure::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        Failure::Cancelled => StatusCode::CONFLICT,
        Failure::MemoryLimit { .. }
        | Failure::OutputLimit { .. }
        | Failure::Trap { .. }
        | Failure::Exit { .. }
        | Failure::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let code = e.code();
        let message = e.to_string();
        match e {
            Error::InvalidName(_)
            | Error::InvalidManifest(_)
            | Error::InvalidModule { .. }
            | Error::AmbiguousRevision { .. } => Self::new(StatusCode::BAD_REQUEST, code, message),
            Error::BadRequest(_) => Self::new(StatusCode::BAD_REQUEST, code, message),
            Error::TaskFinished { .. } | Error::TooManyFunctions { .. } => {
                Self::new(StatusCode::CONFLICT, code, message)
            }
            Error::FunctionNotFound { .. }
            | Error::RevisionNotFound { .. }
            | Error::TaskNotFound { .. }
            | Error::ResultNotFound { .. } => Self::new(StatusCode::NOT_FOUND, code, message),
            Error::Overloaded { retry_after } => {
                let mut err = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
                err.retry_after = Some(retry_after.as_secs().max(1));
                err
            }
            Error::InvalidCgiResponse { revision, .. } => {
                let mut err = Self::new(StatusCode::BAD_GATEWAY, code, message)
                    .detail("revision", revision.as_str());
                err.revision = Some(revision.to_string());
                err
            }
            Error::ClusterUnavailable(_) => {
                warn!(cause = %message, "cluster unavailable");
                let mut err = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
                err.retry_after = Some(1);
                err
            }
            Error::Draining => {
                let mut err = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
                err.retry_after = Some(1);
                err
            }
            Error::Failed {
                failure,
                revision,
                duration,
            } => {
                if let Failure::Internal { message } = &failure {
                    error!(cause = %message, revision = %revision, "invocation failed internally");
                    let mut err = internal();
                    err.revision = Some(revision.to_string());
                    return err;
                }
                let mut err = Self::new(failure_status(&failure), code, message)
                    .detail("revision", revision.as_str())
                    .detail("duration_ms", duration.as_secs_f64() * 1000.0);
                err.revision = Some(revision.to_string());
                let Value::Object(fields) =
                    serde_json::to_value(&failure).expect("failure serializes")
                else {
                    unreachable!("a tagged enum serializes to an object")
                };
                for (k, v) in fields {
                    if k != "kind" {
                        err.details.insert(k, v);
                    }
                }
                err
            }
            Error::Internal(cause) => {
                error!(cause = %cause, "internal error");
                internal()
            }
        }
    }
}

fn internal() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Internal,
        "internal error; the worker's log has the details",
    )
}

impl From<colony_core::NameError> for ApiError {
    fn from(e: colony_core::NameError) -> Self {
        Error::from(e).into()
    }
}

/// A path parameter that is not UTF-8 once percent-decoded: a JSON 400
/// like every other error, not axum's plain-text rejection.
impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(e: axum::extract::rejection::PathRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let exit_code = self.details.get("exit_code").and_then(Value::as_i64);
        let mut body = Map::new();
        body.insert("code".into(), json!(self.code.as_str()));
        body.insert("message".into(), json!(self.message));
        body.extend(self.details);
        let mut resp = (self.status, axum::Json(Value::Object(body))).into_response();
        let headers = resp.headers_mut();
        if self.www_authenticate {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"colony\""),
            );
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(rev) = self.revision.and_then(|r| HeaderValue::from_str(&r).ok()) {
            headers.insert(crate::HEADER_REVISION, rev);
        }
        if let Some(code) = exit_code {
            headers.insert(crate::HEADER_EXIT_CODE, HeaderValue::from(code));
        }
        resp
    }
}

pub(crate) async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no route for {}", uri.path()),
    )
}

pub(crate) async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
