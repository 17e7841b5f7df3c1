//! Worker errors.

use std::time::Duration;

use colony_core::{ErrorCode, Failure, NameError, RevisionId};

/// Result of worker operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a worker operation failed. Each variant maps to one stable
/// [`ErrorCode`] and says what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A function name or reference is malformed: fix it.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// No function has this name: deploy it first.
    #[error("no function named {name:?}")]
    FunctionNotFound {
        /// The name asked for.
        name: String,
    },
    /// The function has no revision matching `rev`.
    #[error("function {name:?} has no revision {rev:?}")]
    RevisionNotFound {
        /// The function.
        name: String,
        /// The revision asked for.
        rev: String,
    },
    /// A revision prefix matches several revisions: give more digits.
    #[error("revision prefix {rev:?} of {name:?} matches {matches} revisions; give more digits")]
    AmbiguousRevision {
        /// The function.
        name: String,
        /// The prefix.
        rev: String,
        /// How many revisions it matches.
        matches: usize,
    },
    /// The manifest is invalid or asks for more than the worker allows.
    #[error("{0}")]
    InvalidManifest(String),
    /// The code is not valid for its executor.
    #[error("{reason}")]
    InvalidModule {
        /// Why, in the executor's words.
        reason: String,
    },
    /// At the concurrency limit with a full queue: retry after the delay.
    #[error("the worker is at its concurrency limit and its queue is full; retry in {}s", retry_after.as_secs().max(1))]
    Overloaded {
        /// When a retry is likely to succeed.
        retry_after: Duration,
    },
    /// The worker is shutting down: go to another worker.
    #[error("the worker is shutting down")]
    Draining,
    /// The function ran and failed.
    #[error("{failure}")]
    Failed {
        /// Why it failed.
        failure: Failure,
        /// The revision that ran.
        revision: RevisionId,
        /// How long it ran.
        duration: Duration,
    },
    /// No task has this id (or it expired).
    #[error("no task with id {id}")]
    TaskNotFound {
        /// The id asked for.
        id: String,
    },
    /// The task is already finished.
    #[error("task {id} already finished ({state})")]
    TaskFinished {
        /// The task.
        id: String,
        /// Its final state.
        state: colony_core::TaskState,
    },
    /// The task has no result: it has not succeeded (yet).
    #[error("task {id} has no result: it is {state}")]
    ResultNotFound {
        /// The task.
        id: String,
        /// Its state.
        state: colony_core::TaskState,
    },
    /// The worker holds as many functions as it allows: delete some.
    #[error("this worker holds its limit of {limit} functions; delete one first")]
    TooManyFunctions {
        /// The limit.
        limit: usize,
    },
    /// A `cgi` function's stdout is not a CGI response.
    #[error("the function's output is not a CGI response: {reason}")]
    InvalidCgiResponse {
        /// What is wrong with it.
        reason: String,
        /// The revision that ran.
        revision: RevisionId,
    },
    /// The cluster's NATS did not answer: retry shortly; nothing was
    /// accepted.
    #[error("the cluster is unavailable: {0}")]
    ClusterUnavailable(String),
    /// The request is malformed: fix it.
    #[error("{0}")]
    BadRequest(String),
    /// The worker failed on its own side (storage, I/O); see its log.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidName(NameError::InvalidRevision { .. }) => ErrorCode::InvalidName,
            Error::InvalidName(_) => ErrorCode::InvalidName,
            Error::FunctionNotFound { .. } => ErrorCode::FunctionNotFound,
            Error::RevisionNotFound { .. } => ErrorCode::RevisionNotFound,
            Error::AmbiguousRevision { .. } => ErrorCode::AmbiguousRevision,
            Error::InvalidManifest(_) => ErrorCode::InvalidManifest,
            Error::InvalidModule { .. } => ErrorCode::InvalidModule,
            Error::Overloaded { .. } => ErrorCode::Overloaded,
            Error::Draining => ErrorCode::Draining,
            Error::Failed { failure, .. } => failure.code(),
            Error::Internal(_) => ErrorCode::Internal,
            Error::TaskNotFound { .. } => ErrorCode::TaskNotFound,
            Error::TaskFinished { .. } => ErrorCode::TaskFinished,
            Error::ResultNotFound { .. } => ErrorCode::ResultNotFound,
            Error::BadRequest(_) => ErrorCode::BadRequest,
            Error::TooManyFunctions { .. } => ErrorCode::TooManyFunctions,
            Error::ClusterUnavailable(_) => ErrorCode::ClusterUnavailable,
            Error::InvalidCgiResponse { .. } => ErrorCode::InvalidCgiResponse,
        }
    }

    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        Error::Internal(e.to_string())
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Internal(format!("store: {e}"))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Internal(format!("I/O: {e}"))
    }
}
