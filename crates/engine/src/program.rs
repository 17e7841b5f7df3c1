//! One pre-linked module and its invocations.

use bytes::Bytes;
use colony_core::failure::STDERR_TAIL_BYTES;
use colony_core::{Failure, Limits};
use tokio_util::sync::CancellationToken;
use wasmtime::{InstancePre, Store};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;

use crate::engine::Engine;
use crate::guard::{Guard, Outcome, Stage, cancelled};
use crate::stdio::{CappedOutput, Tail};

/// Per-store state of one invocation.
pub(crate) struct Host {
    pub(crate) wasi: WasiP1Ctx,
    guard: Guard,
}

/// One invocation's inputs.
#[derive(Debug)]
pub struct Invocation<'a> {
    /// The guest's stdin.
    pub stdin: Bytes,
    /// `argv`, including `argv[0]`.
    pub argv: &'a [String],
    /// The guest's environment (nothing else is visible).
    pub env: &'a [(String, String)],
    /// Limits of this invocation.
    pub limits: Limits,
    /// Cancels the invocation: the guest is interrupted at the next epoch.
    pub cancel: Option<&'a CancellationToken>,
    /// Host directories the guest sees; nothing else of the host's
    /// filesystem is reachable (WASI resolves paths under a preopen and
    /// refuses `..` out of it and symlinks leading out).
    pub dirs: &'a [Preopen],
}

/// A host directory made visible to a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    /// The directory on the host.
    pub host: std::path::PathBuf,
    /// Its path in the guest.
    pub guest: String,
    /// Whether the guest may only read.
    pub read_only: bool,
}

/// What a successful invocation produced.
#[derive(Debug)]
pub struct Output {
    /// Everything the guest wrote to stdout.
    pub stdout: Bytes,
    /// The end of what it wrote to stderr.
    pub stderr_tail: String,
}

/// A compiled, pre-linked WASI command module: one per revision. Running it
/// instantiates a fresh instance from the pool for every invocation, so no
/// state leaks between calls.
pub struct Program {
    engine: Engine,
    pre: InstancePre<Host>,
    code_sha256: String,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("code_sha256", &self.code_sha256)
            .finish_non_exhaustive()
    }
}

impl Program {
    pub(crate) fn new(engine: Engine, pre: InstancePre<Host>, code_sha256: String) -> Self {
        Self {
            engine,
            pre,
            code_sha256,
        }
    }

    /// The sha256 of the module's code.
    pub fn code_sha256(&self) -> &str {
        &self.code_sha256
    }

    /// Runs one invocation to completion, interruption or failure.
    pub async fn run(&self, inv: Invocation<'_>) -> Result<Output, Failure> {
        let limits = inv.limits;
        let stdout = CappedOutput::new(usize::try_from(limits.output_bytes).unwrap_or(usize::MAX));
        let stderr = Tail::new(STDERR_TAIL_BYTES);
        let mut builder = WasiCtxBuilder::new();
        builder
            .stdin(MemoryInputPipe::new(inv.stdin))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .args(inv.argv)
            .envs(inv.env);
        for d in inv.dirs {
            let perms = if d.read_only {
                wasmtime_wasi::FsPerms::ReadOnly
            } else {
                wasmtime_wasi::FsPerms::ReadWrite
            };
            builder
                .preopened_dir(&d.host, &d.guest, perms)
                .map_err(|e| Failure::Internal {
                    message: format!("cannot open {} for the guest: {e}", d.host.display()),
                })?;
        }
        let host = Host {
            wasi: builder.build_p1(),
            guard: Guard::new(&limits, inv.cancel),
        };
        let mut store = Store::new(self.engine.wasmtime(), host);
        Guard::arm(&mut store, |h: &mut Host| &mut h.guard);
        let backstop = store.data().guard.backstop(&self.engine);
        let cancel = inv.cancel;
        let outcome = {
            let run = async {
                let instance = self
                    .pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(Stage::Instantiate)?;
                let start = instance
                    .get_typed_func::<(), ()>(&mut store, "_start")
                    .map_err(Stage::Run)?;
                start.call_async(&mut store, ()).await.map_err(Stage::Run)
            };
            tokio::select! {
                biased;
                r = run => Outcome::Done(r),
                () = backstop => Outcome::Backstop,
                () = cancelled(cancel) => Outcome::Cancelled,
            }
        };
        let result = store
            .data()
            .guard
            .judge(outcome, &limits, stdout.overflowed(), || stderr.text());
        drop(store);
        result.map(|()| Output {
            stdout: stdout.take(),
            stderr_tail: stderr.text(),
        })
    }
}
