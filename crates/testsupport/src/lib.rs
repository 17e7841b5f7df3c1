//! Shared test fixtures for Colony.
//!
//! It depends on no Colony crate, so every crate's tests can use it without
//! a dependency cycle.
//!
//! # Layout
//!
//! - [`guests`]: test and example guest functions, built from source: WAT
//!   text (compiled by the worker itself) and C (compiled to wasm32-wasi by
//!   `scripts/build-examples.sh`).
//! - [`server`]: a real `colony serve` process on a free loopback port with
//!   a temporary data directory.

pub mod guests;
pub mod server;
pub use server::TestServer;
