//! Colony's worker runtime: everything a worker does between the HTTP API
//! and the engine.
//!
//! # Layout
//!
//! - `worker`: [`Worker`], the facade the API calls: deploy, invoke,
//!   list, switch defaults, delete, status, drain.
//! - `config`: [`WorkerConfig`], validated settings.
//! - `registry`: the function registry, an in-memory index over the store
//!   that the hot path reads without touching SQLite.
//! - `store`: the embedded SQLite store (WAL) of functions and revisions.
//! - `blobs`: content-addressed code files in the data directory.
//! - `executor`: the [`Executor`] trait and the [`ExecutorRegistry`] that
//!   maps a manifest's `executor` to an implementation.
//! - `wasm`: the `wasm` executor, over [`colony_engine`].
//! - `cgi`: the `cgi` executor's HTTP side: CGI meta-variables in, a CGI
//!   response out.
//! - `builtin`: the `builtin` executor: native functions compiled in.
//! - `scheduler`: bounded concurrency shared by calls and tasks in turns,
//!   with a bounded wait queue for calls.
//! - `tasks`: durable tasks: submit, dispatch, retry, cancel, wait, sweep.
//! - `directives`: directive result channels: a task's outcome goes to
//!   the client that leased its directive's channel.
//! - `taskstore`: the task table with a group-committing writer thread.
//! - `seams`: the traits between the worker and where its state lives
//!   (tasks, functions), with the embedded implementations.
//! - `cluster`: the same seams over NATS JetStream, membership
//!   heartbeats, cancel broadcast and forwarded calls.
//! - `metrics`: Prometheus counters, histograms and gauges of the worker.
//! - `error`: [`Error`], each variant mapped to a stable [`ErrorCode`].
//!
//! # Data directory
//!
//! ```text
//! <data-dir>/colony.db        SQLite (WAL): functions, revisions, tasks
//! <data-dir>/results/ab/<id>  task results too large for the table
//! <data-dir>/blobs/ab/<sha>   code, addressed by sha256
//! <data-dir>/compiled/...     compiled artifacts (see colony-engine)
//! ```
//!
//! [`ErrorCode`]: colony_core::ErrorCode
#![forbid(unsafe_code)]

mod blobs;
mod builtin;
pub mod cgi;
mod cluster;
mod component;
pub mod config;
mod directives;
mod error;
mod executor;
mod files;
mod metrics;
mod registry;
mod scheduler;
mod seams;
mod store;
mod tasks;
mod taskstore;
mod wasm;
mod worker;

pub use builtin::{BUILTINS, BuiltinExecutor, BuiltinFn};
pub use cluster::{ClusterConfig, MIN_NATS_VERSION};
pub use colony_core::wire::{Deployed, FunctionInfo, RevisionInfo, Status, WorkerState};
pub use component::ComponentExecutor;
pub use config::WorkerConfig;
pub use directives::{Directives, Listener, event_line};
pub use error::{Error, Result};
pub use executor::{Call, Executor, ExecutorRegistry, PrepareError, Runnable};
pub use metrics::Metrics;
pub use tasks::{
    DEFAULT_RESULT_INLINE_MAX, DEFAULT_SWEEP_INTERVAL, DEFAULT_TASK_TTL, Submission, TaskConfig,
};
pub use wasm::WasmExecutor;
pub use worker::{Invoked, Worker};
