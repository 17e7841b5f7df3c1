//! The `wasm` executor: WASI preview1 command modules on [`colony_engine`].

use std::sync::Arc;

use bytes::Bytes;
use colony_core::{Failure, FunctionName, Limits, Manifest};
use colony_engine::{Engine, Invocation, Preopen, Program};

use crate::executor::{Call, Executor, PrepareError, Runnable};

/// Runs WASI command modules: payload on stdin, result on stdout.
#[derive(Debug, Clone)]
pub struct WasmExecutor {
    engine: Engine,
    /// Host directories manifests may mount (canonical paths), and what
    /// is under them.
    allowed_dirs: Vec<std::path::PathBuf>,
}

impl WasmExecutor {
    /// An executor over `engine`; manifests may mount no directory.
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            allowed_dirs: Vec::new(),
        }
    }

    /// Lets manifests mount these host directories and what is under them.
    pub fn with_allowed_dirs(mut self, dirs: &[std::path::PathBuf]) -> Self {
        self.allowed_dirs = canonical_dirs(dirs);
        self
    }
}

/// Canonical forms of the allowed directories that exist.
pub(crate) fn canonical_dirs(dirs: &[std::path::PathBuf]) -> Vec<std::path::PathBuf> {
    dirs.iter()
        .filter_map(|d| std::fs::canonicalize(d).ok())
        .collect()
}

/// A manifest's mounts, each checked against `allowed` (canonical paths):
/// the host directory must exist and lie under one of them.
pub(crate) fn preopens(
    allowed: &[std::path::PathBuf],
    manifest: &Manifest,
) -> Result<Vec<Preopen>, String> {
    manifest
        .dirs
        .iter()
        .map(|d| {
            let refuse = |why: String| format!("directory {}: {why}", d.host);
            let host = std::fs::canonicalize(&d.host)
                .map_err(|e| refuse(format!("cannot be opened on this worker: {e}")))?;
            if !host.is_dir() {
                return Err(refuse("is not a directory".into()));
            }
            if !allowed.iter().any(|a| host.starts_with(a)) {
                return Err(refuse(if allowed.is_empty() {
                    "this worker allows no directories (serve --allow-dir)".into()
                } else {
                    format!(
                        "is not under a directory this worker allows ({})",
                        allowed
                            .iter()
                            .map(|a| a.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }));
            }
            Ok(Preopen {
                host,
                guest: d.guest.clone(),
                read_only: d.read_only,
            })
        })
        .collect()
}

impl Executor for WasmExecutor {
    fn prepare(
        &self,
        name: &FunctionName,
        code: &[u8],
        manifest: &Manifest,
    ) -> Result<Arc<dyn Runnable>, PrepareError> {
        let dirs = preopens(&self.allowed_dirs, manifest)
            .map_err(|reason| PrepareError::InvalidCode { reason })?;
        let program = self.engine.prepare(code).map_err(|e| match e {
            colony_engine::Error::Setup { .. } => PrepareError::Internal(e.to_string()),
            _ => PrepareError::InvalidCode {
                reason: e.to_string(),
            },
        })?;
        let argv = std::iter::once(name.to_string())
            .chain(manifest.args.iter().cloned())
            .collect();
        let env = manifest
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Arc::new(WasmRunnable {
            program,
            argv,
            env,
            limits: manifest.limits,
            dirs,
        }))
    }
}

#[derive(Debug)]
struct WasmRunnable {
    program: Program,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    limits: Limits,
    dirs: Vec<Preopen>,
}

#[async_trait::async_trait]
impl Runnable for WasmRunnable {
    async fn run(&self, call: Call<'_>) -> Result<Bytes, Failure> {
        let merged;
        let env = if call.env.is_empty() {
            &self.env
        } else {
            // The call's variables win over the manifest's.
            merged = self
                .env
                .iter()
                .filter(|(k, _)| !call.env.iter().any(|(c, _)| c == k))
                .chain(call.env)
                .cloned()
                .collect::<Vec<_>>();
            &merged
        };
        let out = self
            .program
            .run(Invocation {
                stdin: call.input,
                argv: &self.argv,
                env,
                limits: Limits {
                    timeout_ms: call.timeout_ms.unwrap_or(self.limits.timeout_ms),
                    ..self.limits
                },
                cancel: call.cancel,
                dirs: &self.dirs,
            })
            .await?;
        Ok(out.stdout)
    }
}
