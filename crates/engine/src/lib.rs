//! Colony's WebAssembly engine — the only crate that imports wasmtime.
//!
//! It compiles WASI preview1 *command* modules once, caches the compiled
//! artifacts on disk (content-addressed, so a restart never recompiles an
//! unchanged module), pre-links each module into an `InstancePre`, and runs
//! one fresh, sandboxed instance per invocation from a pooling allocator:
//! request bytes on stdin, stdout as the result, a bounded tail of stderr for
//! error reports, arguments and environment from the revision's manifest.
//!
//! # Layout
//!
//! - `config`: [`EngineConfig`], the knobs of the wasmtime engine.
//! - `engine`: [`Engine`], the shared wasmtime engine, linker, epoch ticker
//!   and compile cache; [`Engine::prepare`] turns bytes into a [`Program`].
//! - `cache`: the on-disk cache of compiled artifacts.
//! - `program`: [`Program`], one pre-linked module; [`Program::run`] runs it.
//! - `stdio`: the capped stdout and the stderr tail given to guests.
//! - `limiter`: the per-invocation memory cap.
//! - `error`: [`Error`], why a module could not be prepared.
//!
//! # Sandbox
//!
//! Deny by default: no preopened directories, no sockets, no inherited host
//! environment or arguments. Every invocation is bounded by an epoch-based
//! deadline (the guest yields to the async runtime at every epoch tick and
//! is interrupted once its deadline passes), a linear-memory cap and an
//! output cap. wasmtime's error types never leave this crate: failures are
//! reported as [`colony_core::Failure`] and [`Error`].

mod cache;
mod component;
mod config;
mod engine;
mod error;
mod guard;
mod limiter;
mod program;
mod stdio;

pub use component::{HttpComponent, HttpRequest, HttpResponse};
pub use config::{DEFAULT_EPOCH_TICK, DEFAULT_INSTANCES, DEFAULT_MAX_MEMORY_BYTES, EngineConfig};
pub use engine::{Engine, EngineStats};
pub use error::{Error, Result};
pub use program::{Invocation, Output, Preopen, Program};
pub use tokio_util::sync::CancellationToken;
