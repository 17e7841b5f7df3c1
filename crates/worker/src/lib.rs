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
//! - `builtin`: the `builtin` executor: native functions compiled in.
//! - `scheduler`: bounded concurrency with a bounded wait queue.
//! - `error`: [`Error`], each variant mapped to a stable [`ErrorCode`].
//!
//! # Data directory
//!
//! ```text
//! <data-dir>/colony.db        SQLite (WAL): functions and revisions
//! <data-dir>/blobs/ab/<sha>   code, addressed by sha256
//! <data-dir>/compiled/...     compiled artifacts (see colony-engine)
//! ```
//!
//! [`ErrorCode`]: colony_core::ErrorCode
#![forbid(unsafe_code)]

mod blobs;
mod builtin;
pub mod config;
mod error;
mod executor;
mod registry;
mod scheduler;
mod store;
mod wasm;
mod worker;

pub use builtin::{BUILTINS, BuiltinExecutor, BuiltinFn};
pub use colony_core::wire::{Deployed, FunctionInfo, RevisionInfo, Status, WorkerState};
pub use config::WorkerConfig;
pub use error::{Error, Result};
pub use executor::{Call, Executor, ExecutorRegistry, PrepareError, Runnable};
pub use wasm::WasmExecutor;
pub use worker::{Invoked, Worker};
