//! What every invocation shares, module or component: the memory cap, the
//! deadline and cancellation (checked at each epoch), the backstop for a
//! guest blocked in a host call, and turning the way a run ended into a
//! [`Failure`].

use std::time::{Duration, Instant};

use colony_core::{Failure, Limits};
use tokio_util::sync::CancellationToken;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::I32Exit;

use crate::engine::Engine;
use crate::limiter::MemoryCap;

/// The most of a trap report kept in a [`Failure::Trap`] message.
const MAX_TRAP_MESSAGE: usize = 4096;

/// Per-store limits and what stopped the guest, if anything did.
pub(crate) struct Guard {
    pub(crate) cap: MemoryCap,
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

/// How a run ended, before it is judged.
pub(crate) enum Outcome {
    /// The guest's own end (or an error on the way).
    Done(Result<(), Stage>),
    /// The backstop fired: the guest sat in a host call past its deadline.
    Backstop,
    /// The cancel token fired while the guest sat in a host call.
    Cancelled,
}

/// Where a run failed.
pub(crate) enum Stage {
    Instantiate(wasmtime::Error),
    Run(wasmtime::Error),
}

impl Guard {
    pub(crate) fn new(limits: &Limits, cancel: Option<&CancellationToken>) -> Self {
        Self {
            cap: MemoryCap {
                limit: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
                exceeded: false,
                total: 0,
            },
            deadline: Instant::now() + limits.timeout(),
            cancel: cancel.cloned(),
            interrupted: None,
        }
    }

    /// Caps the store's memories and checks the deadline and the cancel
    /// token at every epoch, interrupting the guest when either passed.
    pub(crate) fn arm<T: Send + 'static>(store: &mut Store<T>, get: fn(&mut T) -> &mut Guard) {
        store.limiter(move |h| &mut get(h).cap);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut ctx| {
            let g = get(ctx.data_mut());
            let why = if g.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
                Interrupt::Cancelled
            } else if Instant::now() >= g.deadline {
                Interrupt::Timeout
            } else {
                return Ok(UpdateDeadline::Yield(1));
            };
            g.interrupted = Some(why);
            Err(wasmtime::Error::new(Interrupted(why)))
        });
    }

    /// Sleeps until a little after the deadline. A guest blocked inside a
    /// host call (sleeping in poll_oneoff, waiting on a stream) does not
    /// see epochs; the backstop stops it by dropping its future.
    pub(crate) fn backstop(&self, engine: &Engine) -> tokio::time::Sleep {
        let grace = engine.config().epoch_tick * 2 + Duration::from_millis(5);
        tokio::time::sleep_until((self.deadline + grace).into())
    }

    /// Judges how a run ended. `output_overflowed` says whether the guest
    /// wrote past its output cap; `tail` gives the end of its stderr.
    pub(crate) fn judge(
        &self,
        outcome: Outcome,
        limits: &Limits,
        output_overflowed: bool,
        tail: impl Fn() -> String,
    ) -> Result<(), Failure> {
        match outcome {
            Outcome::Backstop => Err(Failure::Timeout {
                limit_ms: limits.timeout_ms,
            }),
            Outcome::Cancelled => Err(Failure::Cancelled),
            Outcome::Done(Ok(())) => Ok(()),
            Outcome::Done(Err(_)) if self.cap.exceeded => Err(Failure::MemoryLimit {
                limit_bytes: limits.memory_bytes,
            }),
            Outcome::Done(Err(_)) if output_overflowed => Err(Failure::OutputLimit {
                limit_bytes: limits.output_bytes,
            }),
            Outcome::Done(Err(_)) if self.interrupted.is_some() => match self.interrupted {
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
        }
    }
}

/// Resolves when `token` is cancelled; never without one.
pub(crate) async fn cancelled(token: Option<&CancellationToken>) {
    match token {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
}

/// `msg` cut to at most [`MAX_TRAP_MESSAGE`] bytes.
pub(crate) fn bounded(mut msg: String) -> String {
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

fn trap_message(e: &wasmtime::Error) -> String {
    let mut msg = e.root_cause().to_string();
    if let Some(bt) = e.downcast_ref::<wasmtime::WasmBacktrace>() {
        let bt = bt.to_string();
        if !bt.trim().is_empty() {
            msg.push('\n');
            msg.push_str(bt.trim_end());
        }
    }
    bounded(msg)
}
