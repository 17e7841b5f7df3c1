//! The `wasm` executor: WASI preview1 command modules on [`colony_engine`].

use std::sync::Arc;

use bytes::Bytes;
use colony_core::{Failure, FunctionName, Limits, Manifest};
use colony_engine::{Engine, Invocation, Program};

use crate::executor::{Call, Executor, PrepareError, Runnable};

/// Runs WASI command modules: payload on stdin, result on stdout.
#[derive(Debug, Clone)]
pub struct WasmExecutor {
    engine: Engine,
}

impl WasmExecutor {
    /// An executor over `engine`.
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

impl Executor for WasmExecutor {
    fn prepare(
        &self,
        name: &FunctionName,
        code: &[u8],
        manifest: &Manifest,
    ) -> Result<Arc<dyn Runnable>, PrepareError> {
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
        }))
    }
}

#[derive(Debug)]
struct WasmRunnable {
    program: Program,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    limits: Limits,
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
            })
            .await?;
        Ok(out.stdout)
    }
}
