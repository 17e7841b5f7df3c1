//! Colony's core types, shared by every other crate.
//!
//! This crate knows nothing of tokio, axum or wasmtime: it defines the
//! vocabulary the engine, the worker, the HTTP API and the client speak.
//!
//! # Layout
//!
//! - [`name`]: validated function names and `name@rev` references.
//! - [`revision`]: content-addressed revision ids.
//! - [`manifest`]: what a revision declares: executor, I/O runtime, limits,
//!   environment and arguments.
//! - [`units`]: human spellings of durations (`500ms`) and sizes (`64MiB`).
//! - [`task`]: task ids, states, the state machine, retry policies.
//! - [`failure`]: why one invocation failed, in terms a caller can act on.
//! - [`code`]: the stable machine-readable error codes of the API.
//! - [`wire`]: the JSON bodies of the HTTP API, shared by server and client.
//!
//! # Concepts
//!
//! A **function** is a name and an ordered list of immutable **revisions**.
//! A revision's id is the sha256 of its code and its canonical manifest, so
//! deploying the same bytes and manifest twice yields the same revision.
#![forbid(unsafe_code)]

pub mod code;
pub mod failure;
pub mod files;
pub mod manifest;
pub mod name;
pub mod revision;
pub mod task;
pub mod units;
pub mod wire;

pub use code::ErrorCode;
pub use failure::Failure;
pub use manifest::{DirMount, IoRuntime, Limits, Manifest, ManifestError};
pub use name::{FunctionName, FunctionRef, NameError};
pub use revision::RevisionId;
pub use task::{RetryOn, RetryPolicy, TaskError, TaskEvent, TaskId, TaskState};
