//! Executors: how code runs, chosen per revision by its manifest.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use colony_core::{Failure, FunctionName, Manifest};
use colony_engine::CancellationToken;

/// Why an executor refused code at deploy time.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PrepareError {
    /// The code is not valid for this executor (a malformed module, an
    /// unknown builtin): the deployer should fix it.
    #[error("{reason}")]
    InvalidCode {
        /// Why, in words a deployer can act on.
        reason: String,
    },
    /// The executor failed on its own side.
    #[error("{0}")]
    Internal(String),
}

impl From<colony_engine::Error> for PrepareError {
    /// The engine's own failures are internal; anything else is the code's.
    fn from(e: colony_engine::Error) -> Self {
        match e {
            colony_engine::Error::Setup { .. } => PrepareError::Internal(e.to_string()),
            _ => PrepareError::InvalidCode {
                reason: e.to_string(),
            },
        }
    }
}

/// One invocation handed to a [`Runnable`].
#[derive(Debug)]
pub struct Call<'a> {
    /// The request payload.
    pub input: Bytes,
    /// Cancels the invocation.
    pub cancel: Option<&'a CancellationToken>,
    /// Overrides the manifest's timeout (a task's `timeout_ms`).
    pub timeout_ms: Option<u64>,
    /// Environment variables of this call only, over the manifest's (a
    /// CGI request's meta-variables).
    pub env: &'a [(String, String)],
}

/// An executor: turns a revision's code and manifest into something that
/// runs. Implementations are registered by name in an [`ExecutorRegistry`];
/// developers add their own the same way.
pub trait Executor: Send + Sync + fmt::Debug {
    /// Validates and prepares `code` (for wasm: compiles and pre-links it).
    /// May be CPU-heavy; the worker calls it on a blocking thread.
    fn prepare(
        &self,
        name: &FunctionName,
        code: &[u8],
        manifest: &Manifest,
    ) -> Result<Arc<dyn Runnable>, PrepareError>;
}

/// A prepared revision, ready to be invoked many times concurrently.
#[async_trait::async_trait]
pub trait Runnable: Send + Sync + fmt::Debug {
    /// Runs one invocation: the output bytes, or why it failed.
    async fn run(&self, call: Call<'_>) -> Result<Bytes, Failure>;
}

/// Maps executor names (a manifest's `executor`) to implementations.
#[derive(Debug, Clone, Default)]
pub struct ExecutorRegistry {
    executors: HashMap<String, Arc<dyn Executor>>,
}

impl ExecutorRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `executor` under `name`, replacing any previous one.
    pub fn register(&mut self, name: impl Into<String>, executor: Arc<dyn Executor>) -> &mut Self {
        self.executors.insert(name.into(), executor);
        self
    }

    /// The executor registered under `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Executor>> {
        self.executors.get(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<_> = self.executors.keys().cloned().collect();
        v.sort();
        v
    }
}
