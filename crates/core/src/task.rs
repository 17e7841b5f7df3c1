//! Tasks: durable asynchronous invocations with ids, states and retries.
//!
//! The state machine lives here, in [`TaskState::apply`], and nowhere
//! else: every store and scheduler moves a task only through it, so an
//! invalid transition cannot be written.
//!
//! ```text
//!             start                succeed
//!   queued ─────────▶ running ─────────────▶ succeeded
//!     ▲  │               │  │   fail (not retryable)
//!     │  │ cancel        │  ├──────────────────────▶ failed
//!     │  ▼               │  │   fail (retryable, no attempts left)
//!  cancelled ◀───────────┘  ├──────────────────────▶ dead
//!     (cancel)              │   fail (retryable, attempts left)
//!     ▲                     │   or worker lost
//!     └──── queued ◀────────┘
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::failure::Failure;

/// A task's id: 26 characters, lower-case Crockford base32 of a 48-bit
/// millisecond timestamp and 80 bits that are random per process and
/// increase within a millisecond (a monotonic ULID). Ids sort by creation
/// time, which gives task lists a stable cursor.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskId(String);

const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Why a string is not a task id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a task id (26 characters of lower-case Crockford base32)")]
pub struct TaskIdError(pub String);

impl TaskId {
    /// A new id, later than every id this process made before.
    pub fn generate() -> Self {
        static LAST: monotonic::Last = monotonic::Last::new();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let (ms, low) = LAST.next(now);
        Self::encode(ms, low)
    }

    fn encode(ms: u64, low: u128) -> Self {
        let value: u128 = (u128::from(ms & 0xFFFF_FFFF_FFFF) << 80) | (low & ((1u128 << 80) - 1));
        let mut out = [0u8; 26];
        for (i, c) in out.iter_mut().enumerate() {
            let shift = 125 - 5 * i as u32;
            *c = CROCKFORD[((value >> shift) & 31) as usize];
        }
        Self(String::from_utf8(out.to_vec()).expect("ascii"))
    }

    /// Parses an id.
    pub fn parse(s: &str) -> Result<Self, TaskIdError> {
        let ok =
            s.len() == 26 && s.bytes().all(|b| CROCKFORD.contains(&b)) && s.as_bytes()[0] <= b'7';
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(TaskIdError(s.to_owned()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Process-wide monotonic state for [`TaskId::generate`], without locks.
mod monotonic {
    use super::*;

    pub(super) struct Last {
        /// (ms << 20) | counter within the millisecond.
        state: AtomicU64,
        seed: std::sync::OnceLock<u128>,
    }

    impl Last {
        pub(super) const fn new() -> Self {
            Self {
                state: AtomicU64::new(0),
                seed: std::sync::OnceLock::new(),
            }
        }

        /// The millisecond to use and the 80 low bits: a per-process random
        /// prefix of 60 bits and a 20-bit counter that restarts each ms.
        pub(super) fn next(&self, now_ms: u64) -> (u64, u128) {
            let seed = *self.seed.get_or_init(|| {
                let mut b = [0u8; 16];
                for chunk in b.chunks_mut(8) {
                    chunk.copy_from_slice(&fastrand::u64(..).to_le_bytes());
                }
                u128::from_le_bytes(b) & ((1u128 << 60) - 1)
            });
            let mut cur = self.state.load(Ordering::Relaxed);
            loop {
                let (last_ms, counter) = (cur >> 20, cur & 0xF_FFFF);
                let next = if now_ms > last_ms {
                    now_ms << 20
                } else if counter < 0xF_FFFF {
                    cur + 1
                } else {
                    (last_ms + 1) << 20
                };
                match self.state.compare_exchange_weak(
                    cur,
                    next,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return (next >> 20, (seed << 20) | u128::from(next & 0xF_FFFF)),
                    Err(seen) => cur = seen,
                }
            }
        }
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for TaskId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A task id: 26 characters of lower-case Crockford base32 (a monotonic ULID).",
            ))
            .pattern(Some(TASK_ID_PATTERN))
            .min_length(Some(26))
            .max_length(Some(26))
            .examples(["01k0000000000000000000000a"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for TaskId {}

/// [`TaskId::parse`]'s rule as an ECMA-262 regular expression (for OpenAPI).
pub const TASK_ID_PATTERN: &str = "^[0-7][0-9a-hjkmnp-tv-z]{25}$";

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TaskId {
    type Err = TaskIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for TaskId {
    type Error = TaskIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<TaskId> for String {
    fn from(id: TaskId) -> Self {
        id.0
    }
}

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting to run (first time, or again after a retryable failure).
    Queued,
    /// Running on a worker.
    Running,
    /// Finished; its result is available.
    Succeeded,
    /// Finished with a failure that is not retried.
    Failed,
    /// Cancelled by a caller.
    Cancelled,
    /// Failed retryably on every allowed attempt.
    Dead,
}

/// What happens to a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskEvent {
    /// A worker starts an attempt.
    Start,
    /// The attempt succeeded.
    Succeed,
    /// The attempt failed (or its worker was lost).
    Fail {
        /// Whether the failure is one this task retries.
        retryable: bool,
        /// Whether an attempt is left after this one.
        attempts_left: bool,
    },
    /// A caller cancelled the task.
    Cancel,
}

/// A transition the state machine forbids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from} task cannot {event:?}")]
pub struct InvalidTransition {
    /// The state the task was in.
    pub from: TaskState,
    /// What was attempted.
    pub event: TaskEvent,
}

impl TaskState {
    /// Every state.
    pub const ALL: [TaskState; 6] = [
        TaskState::Queued,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
        TaskState::Dead,
    ];

    /// Whether the task is finished for good.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled | TaskState::Dead
        )
    }

    /// The one place where task states change.
    pub fn apply(self, event: TaskEvent) -> Result<TaskState, InvalidTransition> {
        use TaskEvent::*;
        use TaskState::*;
        let next = match (self, event) {
            (Queued, Start) => Running,
            (Running, Succeed) => Succeeded,
            (
                Running,
                Fail {
                    retryable: false, ..
                },
            ) => Failed,
            (
                Running,
                Fail {
                    retryable: true,
                    attempts_left: true,
                },
            ) => Queued,
            (
                Running,
                Fail {
                    retryable: true,
                    attempts_left: false,
                },
            ) => Dead,
            (Queued | Running, Cancel) => Cancelled,
            (from, event) => return Err(InvalidTransition { from, event }),
        };
        Ok(next)
    }

    /// The state's name, as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::Dead => "dead",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a task state; states: queued, running, succeeded, failed, cancelled, dead"))
    }
}

/// A kind of failure a task policy can retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// The guest trapped.
    Trap,
    /// The guest ran past its timeout.
    Timeout,
    /// The guest exited with a non-zero status.
    Exit,
    /// The worker running the task died (or restarted) mid-attempt.
    WorkerLost,
    /// The guest hit its memory or output cap.
    Limit,
}

impl RetryOn {
    /// Every kind, in a stable order.
    pub const ALL: [RetryOn; 5] = [
        RetryOn::Trap,
        RetryOn::Timeout,
        RetryOn::Exit,
        RetryOn::WorkerLost,
        RetryOn::Limit,
    ];

    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryOn::Trap => "trap",
            RetryOn::Timeout => "timeout",
            RetryOn::Exit => "exit",
            RetryOn::WorkerLost => "worker_lost",
            RetryOn::Limit => "limit",
        }
    }

    /// The kind of an invocation failure; `None` for cancellation and
    /// internal errors, which are never retried.
    pub fn of(failure: &Failure) -> Option<RetryOn> {
        match failure {
            Failure::Timeout { .. } => Some(RetryOn::Timeout),
            Failure::Trap { .. } => Some(RetryOn::Trap),
            Failure::Exit { .. } => Some(RetryOn::Exit),
            Failure::MemoryLimit { .. } | Failure::OutputLimit { .. } => Some(RetryOn::Limit),
            Failure::Cancelled | Failure::Internal { .. } => None,
        }
    }
}

impl FromStr for RetryOn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RetryOn::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a retryable failure; known: trap, timeout, exit, worker_lost, limit"))
    }
}

/// Default attempts of a task.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Most attempts a task may ask for.
pub const MAX_ATTEMPTS_CEILING: u32 = 100;
/// Default first retry delay.
pub const DEFAULT_BACKOFF_MS: u64 = 1_000;
/// Default longest retry delay.
pub const DEFAULT_MAX_BACKOFF_MS: u64 = 60_000;

/// How a function's tasks retry: part of the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts per task unless the task asks otherwise.
    pub max_attempts: u32,
    /// Which failures are retried. By default the ones that may pass:
    /// timeouts and lost workers; traps, exits and limits are taken as
    /// the function's answer.
    pub on: Vec<RetryOn>,
    /// Delay before the first retry; doubles each attempt.
    pub backoff_ms: u64,
    /// Ceiling on the delay.
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            on: vec![RetryOn::Timeout, RetryOn::WorkerLost],
            backoff_ms: DEFAULT_BACKOFF_MS,
            max_backoff_ms: DEFAULT_MAX_BACKOFF_MS,
        }
    }
}

impl RetryPolicy {
    /// Whether the policy retries this kind of failure.
    pub fn retries(&self, kind: Option<RetryOn>) -> bool {
        kind.is_some_and(|k| self.on.contains(&k))
    }

    /// The delay before attempt `next_attempt` (2 for the first retry):
    /// `backoff * 2^(next_attempt-2)`, capped, with "equal jitter" (a
    /// uniformly random half of it) so retries of many tasks spread out.
    pub fn backoff(&self, next_attempt: u32) -> Duration {
        let exp = next_attempt.saturating_sub(2).min(32);
        let full = self
            .backoff_ms
            .saturating_mul(1u64 << exp)
            .min(self.max_backoff_ms);
        let half = full / 2;
        Duration::from_millis(half + fastrand::u64(0..=half))
    }
}

/// Why a task failed, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskError {
    /// The stable error code (as in the HTTP API).
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// The guest's exit status, when it exited non-zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The end of the guest's stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_tail: Option<String>,
}

impl TaskError {
    /// The error of an invocation failure.
    pub fn from_failure(f: &Failure) -> Self {
        let (exit_code, stderr_tail) = match f {
            Failure::Exit {
                exit_code,
                stderr_tail,
            } => (Some(*exit_code), Some(stderr_tail.clone())),
            Failure::Trap { stderr_tail, .. } => (None, Some(stderr_tail.clone())),
            _ => (None, None),
        };
        Self {
            code: f.code().as_str().to_owned(),
            message: f.to_string(),
            exit_code,
            stderr_tail,
        }
    }

    /// The error of a task whose worker was lost mid-attempt.
    pub fn worker_lost() -> Self {
        Self {
            code: "worker_lost".to_owned(),
            message: "the worker running this task stopped before it finished".to_owned(),
            exit_code: None,
            stderr_tail: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_unique_and_ordered() {
        let ids: Vec<TaskId> = (0..10_000).map(|_| TaskId::generate()).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1], "{} !< {}", w[0], w[1]);
        }
        for id in &ids[..10] {
            assert_eq!(TaskId::parse(id.as_str()).unwrap(), *id);
        }
        for bad in [
            "",
            "x",
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "zzzzzzzzzzzzzzzzzzzzzzzzzz",
            "../../../etc/passwd-xxxxxx",
        ] {
            assert!(TaskId::parse(bad).is_err(), "{bad}");
        }
        let json = serde_json::to_string(&ids[0]).unwrap();
        assert_eq!(serde_json::from_str::<TaskId>(&json).unwrap(), ids[0]);
        assert!(serde_json::from_str::<TaskId>("\"nope\"").is_err());
    }

    #[test]
    fn every_transition_is_as_drawn() {
        use TaskEvent::*;
        use TaskState::*;
        let events = [
            Start,
            Succeed,
            Fail {
                retryable: false,
                attempts_left: true,
            },
            Fail {
                retryable: false,
                attempts_left: false,
            },
            Fail {
                retryable: true,
                attempts_left: true,
            },
            Fail {
                retryable: true,
                attempts_left: false,
            },
            Cancel,
        ];
        let allowed = [
            (Queued, Start, Running),
            (Queued, Cancel, Cancelled),
            (Running, Succeed, Succeeded),
            (
                Running,
                Fail {
                    retryable: false,
                    attempts_left: true,
                },
                Failed,
            ),
            (
                Running,
                Fail {
                    retryable: false,
                    attempts_left: false,
                },
                Failed,
            ),
            (
                Running,
                Fail {
                    retryable: true,
                    attempts_left: true,
                },
                Queued,
            ),
            (
                Running,
                Fail {
                    retryable: true,
                    attempts_left: false,
                },
                Dead,
            ),
            (Running, Cancel, Cancelled),
        ];
        for from in TaskState::ALL {
            for event in events {
                let want = allowed
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event)
                    .map(|a| a.2);
                match (from.apply(event), want) {
                    (Ok(got), Some(want)) => assert_eq!(got, want, "{from} {event:?}"),
                    (Err(e), None) => assert_eq!(e, InvalidTransition { from, event }),
                    (got, want) => panic!("{from} {event:?}: got {got:?}, want {want:?}"),
                }
            }
            // Nothing leaves a terminal state.
            if from.is_terminal() {
                assert!(events.iter().all(|e| from.apply(*e).is_err()), "{from}");
            }
        }
    }

    #[test]
    fn states_and_retry_kinds_parse() {
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!("done".parse::<TaskState>().is_err());
        for r in RetryOn::ALL {
            assert_eq!(r.as_str().parse::<RetryOn>().unwrap(), r);
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_a_ceiling() {
        let p = RetryPolicy {
            backoff_ms: 100,
            max_backoff_ms: 1000,
            ..Default::default()
        };
        for _ in 0..200 {
            let b2 = p.backoff(2).as_millis() as u64;
            assert!((50..=100).contains(&b2), "{b2}");
            let b3 = p.backoff(3).as_millis() as u64;
            assert!((100..=200).contains(&b3), "{b3}");
            let b9 = p.backoff(9).as_millis() as u64;
            assert!((500..=1000).contains(&b9), "{b9}");
            assert!(p.backoff(200).as_millis() as u64 <= 1000);
        }
    }

    #[test]
    fn default_policy_retries_what_may_pass() {
        let p = RetryPolicy::default();
        assert!(p.retries(RetryOn::of(&Failure::Timeout { limit_ms: 1 })));
        assert!(p.retries(Some(RetryOn::WorkerLost)));
        assert!(!p.retries(RetryOn::of(&Failure::Exit {
            exit_code: 1,
            stderr_tail: String::new()
        })));
        assert!(!p.retries(RetryOn::of(&Failure::Cancelled)));
        let e = TaskError::from_failure(&Failure::Exit {
            exit_code: 3,
            stderr_tail: "bad".into(),
        });
        assert_eq!(
            (e.code.as_str(), e.exit_code, e.stderr_tail.as_deref()),
            ("guest_exit", Some(3), Some("bad"))
        );
    }
}
