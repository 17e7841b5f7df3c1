//! Stable, machine-readable error codes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The `code` field of every API error. The spellings are part of the API:
/// clients and scripts match on them, so they never change meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No function has that name.
    FunctionNotFound,
    /// The function exists but has no revision matching the reference.
    RevisionNotFound,
    /// A revision prefix matches more than one revision.
    AmbiguousRevision,
    /// A function name or reference is malformed.
    InvalidName,
    /// A manifest field is invalid or exceeds the worker's ceilings.
    InvalidManifest,
    /// Uploaded code is not a valid module for its executor.
    InvalidModule,
    /// The request is malformed in some other way.
    BadRequest,
    /// The request body exceeds the configured limit.
    PayloadTooLarge,
    /// The guest trapped.
    GuestTrap,
    /// The guest exited with a non-zero status.
    GuestExit,
    /// The invocation ran past its timeout.
    Timeout,
    /// The guest tried to grow its memory past its cap.
    MemoryLimitExceeded,
    /// The guest wrote more output than its cap.
    OutputLimitExceeded,
    /// The invocation was cancelled.
    Cancelled,
    /// The worker is at its concurrency limit and its queue is full.
    Overloaded,
    /// The worker is shutting down.
    Draining,
    /// No route matches the request.
    NotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// An internal failure; details are in the worker's log.
    Internal,
    /// No task has this id (or it expired).
    TaskNotFound,
    /// The task already finished; it cannot be cancelled.
    TaskFinished,
    /// The task has no result (yet, or it did not succeed).
    ResultNotFound,
    /// The worker running a task was lost mid-attempt.
    WorkerLost,
    /// No valid token was given (tokens are configured).
    Unauthorized,
    /// The token is valid but its scope does not allow this.
    Forbidden,
    /// The request line (URL) is too long.
    UriTooLong,
    /// The request headers are too large.
    HeadersTooLarge,
    /// The worker holds as many functions as it allows.
    TooManyFunctions,
    /// This client (token) has as many requests in flight as it may.
    TooManyRequests,
    /// The request body did not arrive in time.
    RequestTimeout,
    /// The cluster's NATS is unreachable just now: retry shortly.
    ClusterUnavailable,
    /// A `cgi` function wrote something that is not a CGI response.
    InvalidCgiResponse,
}

impl ErrorCode {
    /// The code's wire spelling.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            FunctionNotFound => "function_not_found",
            RevisionNotFound => "revision_not_found",
            AmbiguousRevision => "ambiguous_revision",
            InvalidName => "invalid_name",
            InvalidManifest => "invalid_manifest",
            InvalidModule => "invalid_module",
            BadRequest => "bad_request",
            PayloadTooLarge => "payload_too_large",
            GuestTrap => "guest_trap",
            GuestExit => "guest_exit",
            Timeout => "timeout",
            MemoryLimitExceeded => "memory_limit_exceeded",
            OutputLimitExceeded => "output_limit_exceeded",
            Cancelled => "cancelled",
            Overloaded => "overloaded",
            Draining => "draining",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            Internal => "internal",
            TaskNotFound => "task_not_found",
            TaskFinished => "task_finished",
            ResultNotFound => "result_not_found",
            WorkerLost => "worker_lost",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            UriTooLong => "uri_too_long",
            HeadersTooLarge => "headers_too_large",
            TooManyFunctions => "too_many_functions",
            TooManyRequests => "too_many_requests",
            RequestTimeout => "request_timeout",
            ClusterUnavailable => "cluster_unavailable",
            InvalidCgiResponse => "invalid_cgi_response",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_spelling_matches_as_str() {
        for c in [
            ErrorCode::FunctionNotFound,
            ErrorCode::OutputLimitExceeded,
            ErrorCode::Internal,
        ] {
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                format!("\"{}\"", c.as_str())
            );
        }
    }
}
