//! Why an invocation failed.

use serde::{Deserialize, Serialize};

use crate::code::ErrorCode;

/// The most stderr kept for an error report.
pub const STDERR_TAIL_BYTES: usize = 4096;

/// Why one invocation failed. Every executor reports failures in these terms
/// so that the API, the task system and clients treat them alike.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Failure {
    /// The invocation ran past its timeout and was interrupted.
    #[error("the function ran past its timeout of {limit_ms} ms and was stopped")]
    Timeout {
        /// The timeout that was exceeded.
        limit_ms: u64,
    },
    /// The guest tried to grow its linear memory past its cap.
    #[error("the function tried to use more than its memory limit of {limit_bytes} bytes")]
    MemoryLimit {
        /// The cap that was hit.
        limit_bytes: u64,
    },
    /// The guest wrote more than its output cap.
    #[error("the function wrote more than its output limit of {limit_bytes} bytes")]
    OutputLimit {
        /// The cap that was hit.
        limit_bytes: u64,
    },
    /// The guest trapped.
    #[error("the function trapped: {message}")]
    Trap {
        /// The trap and where it happened.
        message: String,
        /// The end of what the guest wrote to stderr.
        stderr_tail: String,
    },
    /// The guest exited with a non-zero status.
    #[error("the function exited with status {exit_code}")]
    Exit {
        /// The exit status.
        exit_code: i32,
        /// The end of what the guest wrote to stderr.
        stderr_tail: String,
    },
    /// The invocation was cancelled before it finished.
    #[error("the invocation was cancelled")]
    Cancelled,
    /// The worker failed to run the function for a reason of its own.
    #[error("internal error: {message}")]
    Internal {
        /// What went wrong.
        message: String,
    },
}

impl Failure {
    /// The stable error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            Failure::Timeout { .. } => ErrorCode::Timeout,
            Failure::MemoryLimit { .. } => ErrorCode::MemoryLimitExceeded,
            Failure::OutputLimit { .. } => ErrorCode::OutputLimitExceeded,
            Failure::Trap { .. } => ErrorCode::GuestTrap,
            Failure::Exit { .. } => ErrorCode::GuestExit,
            Failure::Cancelled => ErrorCode::Cancelled,
            Failure::Internal { .. } => ErrorCode::Internal,
        }
    }

    /// The guest's exit code, when it exited.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Failure::Exit { exit_code, .. } => Some(*exit_code),
            _ => None,
        }
    }

    /// The end of the guest's stderr, when there is one.
    pub fn stderr_tail(&self) -> Option<&str> {
        match self {
            Failure::Trap { stderr_tail, .. } | Failure::Exit { stderr_tail, .. } => {
                Some(stderr_tail.as_str())
            }
            _ => None,
        }
    }
}
