//! One pre-linked module and its invocations.

use std::time::{Duration, Instant};

use bytes::Bytes;
use colony_core::failure::STDERR_TAIL_BYTES;
use colony_core::{Failure, Limits};
use tokio_util::sync::CancellationToken;
use wasmtime::{InstancePre, Store, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use crate::engine::Engine;
use crate::limiter::MemoryCap;
use crate::stdio::{CappedOutput, Tail};

/// The most of a trap report kept in a [`Failure::Trap`] message.
const MAX_TRAP_MESSAGE: usize = 4096;

/// Per-store state of one invocation.
pub(crate) struct Host {
    pub(crate) wasi: WasiP1Ctx,
    cap: MemoryCap,
    deadline: Instant,
    cancel: Option<CancellationToken>,
    interrupted: Option<Interrupt>,
}

#[derive(Clone, Copy, Debug)]
enum Interrupt {
    Timeout,
    Cancelled,
}

#[derive(Debug, thiserror::Error)]
#[error("interrupted: {0:?}")]
struct Interrupted(Interrupt);

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

enum Outcome {
    Done(Result<(), Stage>),
    Backstop,
    Cancelled,
}

enum Stage {
    Instantiate(wasmtime::Error),
    Run(wasmtime::Error),
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
        let wasi = builder.build_p1();
        let deadline = Instant::now() + limits.timeout();
        let memory_limit = usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX);
        let host = Host {
            wasi,
            cap: MemoryCap {
                limit: memory_limit,
                exceeded: false,
            },
            deadline,
            cancel: inv.cancel.cloned(),
            interrupted: None,
        };
        let mut store = Store::new(self.engine.wasmtime(), host);
        store.limiter(|h| &mut h.cap);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| {
            let h = ctx.data_mut();
            let why = if h.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
                Interrupt::Cancelled
            } else if Instant::now() >= h.deadline {
                Interrupt::Timeout
            } else {
                return Ok(UpdateDeadline::Yield(1));
            };
            h.interrupted = Some(why);
            Err(wasmtime::Error::new(Interrupted(why)))
        });

        // A guest blocked inside a host call (say, sleeping in poll_oneoff)
        // does not see epochs; the backstop and the cancel branch stop it
        // by dropping its future.
        let grace = self.engine.config().epoch_tick * 2 + Duration::from_millis(5);
        let backstop = tokio::time::sleep_until((deadline + grace).into());
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

        let h = store.data();
        let tail = || stderr.text();
        let result = match outcome {
            Outcome::Backstop => Err(Failure::Timeout {
                limit_ms: limits.timeout_ms,
            }),
            Outcome::Cancelled => Err(Failure::Cancelled),
            Outcome::Done(Ok(())) => Ok(()),
            Outcome::Done(Err(_)) if h.cap.exceeded => Err(Failure::MemoryLimit {
                limit_bytes: limits.memory_bytes,
            }),
            Outcome::Done(Err(_)) if stdout.overflowed() => Err(Failure::OutputLimit {
                limit_bytes: limits.output_bytes,
            }),
            Outcome::Done(Err(_)) if h.interrupted.is_some() => match h.interrupted {
                Some(Interrupt::Cancelled) => Err(Failure::Cancelled),
                _ => Err(Failure::Timeout {
                    limit_ms: limits.timeout_ms,
                }),
            },
            Outcome::Done(Err(Stage::Instantiate(e))) => Err(Failure::Internal {
                message: format!("cannot instantiate: {e:#}"),
            }),
            Outcome::Done(Err(Stage::Run(e))) => match e.downcast_ref::<I32Exit>() {
                Some(I32Exit(0)) => Ok(()),
                Some(I32Exit(code)) => Err(Failure::Exit {
                    exit_code: *code,
                    stderr_tail: tail(),
                }),
                None => Err(Failure::Trap {
                    message: trap_message(&e),
                    stderr_tail: tail(),
                }),
            },
        };
        drop(store);
        result.map(|()| Output {
            stdout: stdout.take(),
            stderr_tail: stderr.text(),
        })
    }
}

async fn cancelled(token: Option<&CancellationToken>) {
    match token {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
}

fn trap_message(e: &wasmtime::Error) -> String {
    let mut msg = e.root_cause().to_string();
    if let Some(bt) = e.downcast_ref::<wasmtime::WasmBacktrace>() {
        let bt = bt.to_string();
        if !bt.trim().is_empty() {
            msg.push('\n');
            msg.push_str(bt.trim_end());
        }
    }
    if msg.len() > MAX_TRAP_MESSAGE {
        let mut cut = MAX_TRAP_MESSAGE;
        while !msg.is_char_boundary(cut) {
            cut -= 1;
        }
        msg.truncate(cut);
        msg.push('…');
    }
    msg
}
