//! Durable tasks on one worker: submit, dispatch, run, retry, cancel,
//! wait, sweep.
//!
//! The task table ([`TaskStore`]) is the source of truth; this module
//! keeps, for every task that is not finished, a [`Live`] entry (its
//! state, cancel token and a watch for long polls) and a ready queue
//! ordered by priority then age. The dispatcher takes one scheduler slot
//! at a time (sharing the worker's slots with calls, in turns), pops the
//! best runnable task and runs it. Every state change goes through
//! [`TaskState::apply`] and is committed before anyone can observe it.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use colony_core::wire::{Submitted, TaskInfo, TaskList};
use colony_core::{
    Failure, FunctionName, FunctionRef, RetryOn, RevisionId, TaskError, TaskEvent, TaskId,
    TaskState,
};
use colony_engine::CancellationToken;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use crate::blobs::Blobs;
use crate::directives::{Directives, channel_of};
use crate::error::{Error, Result};
use crate::taskstore::{
    Change, Inserted, ListQuery, NewTask, QueuedRow, ResultRow, StoredOutput, TaskStore,
};

/// Inputs up to this size stay in memory until their task runs; larger
/// ones are read back from the store.
const KEEP_INPUT_MAX: usize = 64 << 10;

/// Task settings of a worker.
#[derive(Debug, Clone)]
pub struct TaskConfig {
    /// How long finished tasks and their results are kept.
    pub ttl: Duration,
    /// How often expired tasks are deleted.
    pub sweep_interval: Duration,
    /// Results larger than this are stored as files, not in the table.
    pub result_inline_max: usize,
}

/// Default retention of finished tasks: 7 days.
pub const DEFAULT_TASK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default sweep interval: 1 minute.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Default largest result kept inline in the table: 64 KiB.
pub const DEFAULT_RESULT_INLINE_MAX: usize = 64 << 10;

impl Default for TaskConfig {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_TASK_TTL,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            result_inline_max: DEFAULT_RESULT_INLINE_MAX,
        }
    }
}

/// A validated submission.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The function, optionally pinned.
    pub target: FunctionRef,
    /// The input.
    pub input: Bytes,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// Attempts override.
    pub max_attempts: Option<u32>,
    /// Per-attempt timeout override.
    pub timeout_ms: Option<u64>,
    /// Priority (higher first).
    pub priority: i32,
    /// Who submits it (a token's name), when tokens are configured.
    pub owner: Option<String>,
    /// The directive it belongs to, whose channel hears how it ends.
    pub directive: Option<String>,
}

#[derive(Debug)]
pub(crate) struct LiveState {
    pub(crate) state: TaskState,
    pub(crate) attempts: u32,
    /// When the latest attempt started.
    pub(crate) started: Option<std::time::Instant>,
    /// Cancel asked while queued: the dispatcher must not start it.
    pub(crate) cancelling: bool,
}

/// A task that is not finished.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) id: TaskId,
    pub(crate) function: FunctionName,
    pub(crate) revision: RevisionId,
    pub(crate) priority: i32,
    pub(crate) max_attempts: u32,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) input: Mutex<Option<Bytes>>,
    pub(crate) state: Mutex<LiveState>,
    /// Committed states, for long polls.
    pub(crate) watch: watch::Sender<TaskState>,
    pub(crate) cancel: CancellationToken,
    /// The directive channel that hears how it ends.
    pub(crate) directive: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
struct Ready {
    priority: i32,
    seq: u64,
    id: TaskId,
}

impl Ord for Ready {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // Max-heap: higher priority first, then lower seq (older) first.
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Ready {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Default)]
struct Queue {
    ready: BinaryHeap<Ready>,
    /// Retries waiting for their time: (not_before_ms, seq).
    delayed: BinaryHeap<Reverse<(i64, u64, i32, TaskId)>>,
    /// Tasks whose function is at its concurrency limit.
    parked: Vec<Ready>,
    seq: u64,
}

impl Queue {
    /// Queues a task: ready now, or (a retry) not before a time; due
    /// retries move to the ready heap in `promote`.
    fn push(&mut self, id: TaskId, priority: i32, not_before_ms: Option<i64>) {
        self.seq += 1;
        match not_before_ms {
            Some(t) => self.delayed.push(Reverse((t, self.seq, priority, id))),
            None => self.ready.push(Ready {
                priority,
                seq: self.seq,
                id,
            }),
        }
    }

    /// Moves due retries to the ready heap; returns when the next is due.
    fn promote(&mut self, now_ms: i64) -> Option<i64> {
        while let Some(Reverse((t, ..))) = self.delayed.peek() {
            if *t > now_ms {
                return Some(*t);
            }
            let Reverse((_, seq, priority, id)) = self.delayed.pop().expect("peeked");
            self.ready.push(Ready { priority, seq, id });
        }
        None
    }

    fn unpark(&mut self) {
        for r in self.parked.drain(..) {
            self.ready.push(r);
        }
    }
}

/// The task side of a worker.
#[derive(Debug)]
pub(crate) struct Tasks {
    pub(crate) store: TaskStore,
    results: Blobs,
    live: Mutex<HashMap<TaskId, Arc<Live>>>,
    queue: Mutex<Queue>,
    /// Wakes the dispatcher: a new task, a retry, a freed function slot.
    pub(crate) wake: Notify,
    pub(crate) config: TaskConfig,
    pub(crate) worker_id: Arc<str>,
    running: AtomicUsize,
    finished: AtomicU64,
    metrics: Arc<crate::metrics::Metrics>,
    directives: Arc<Directives>,
}

fn now_ms() -> i64 {
    crate::store::now_ms()
}

/// What a finished attempt leads to.
#[derive(Debug)]
pub(crate) enum Outcome {
    Succeeded(Bytes),
    Failed(Failure),
    /// The task cannot run at all (its function was deleted): not retried.
    Unrunnable(TaskError),
}

/// What an ended attempt leads to: the next state (by the one state
/// machine), the error to record and the output to keep. `cancelled`:
/// the caller cancelled this attempt.
pub(crate) fn judge(
    outcome: Outcome,
    cancelled: bool,
    attempts: u32,
    max_attempts: u32,
    retry: &colony_core::RetryPolicy,
) -> Result<(TaskState, Option<TaskError>, Option<Bytes>)> {
    let (event, error, output) = match outcome {
        Outcome::Succeeded(out) => (TaskEvent::Succeed, None, Some(out)),
        Outcome::Failed(Failure::Cancelled) if cancelled => (TaskEvent::Cancel, None, None),
        Outcome::Failed(f) => {
            let retryable = retry.retries(RetryOn::of(&f));
            let event = TaskEvent::Fail {
                retryable,
                attempts_left: attempts < max_attempts,
            };
            (event, Some(TaskError::from_failure(&f)), None)
        }
        Outcome::Unrunnable(e) => (
            TaskEvent::Fail {
                retryable: false,
                attempts_left: attempts < max_attempts,
            },
            Some(e),
            None,
        ),
    };
    let next = TaskState::Running.apply(event).map_err(Error::internal)?;
    Ok((next, error, output))
}

impl Tasks {
    pub(crate) fn new(
        store: TaskStore,
        queued: Vec<QueuedRow>,
        results: Blobs,
        config: TaskConfig,
        worker_id: Arc<str>,
        metrics: Arc<crate::metrics::Metrics>,
        directives: Arc<Directives>,
    ) -> Self {
        let tasks = Self {
            store,
            results,
            live: Mutex::new(HashMap::new()),
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            config,
            worker_id,
            running: AtomicUsize::new(0),
            finished: AtomicU64::new(0),
            metrics,
            directives,
        };
        {
            let mut live = tasks.live.lock();
            let mut queue = tasks.queue.lock();
            for row in queued {
                let (watch, _) = watch::channel(TaskState::Queued);
                queue.push(row.id.clone(), row.priority, row.not_before_ms);
                live.insert(
                    row.id.clone(),
                    Arc::new(Live {
                        id: row.id,
                        function: row.function,
                        revision: row.revision,
                        priority: row.priority,
                        max_attempts: row.max_attempts,
                        timeout_ms: row.timeout_ms,
                        input: Mutex::new(None),
                        state: Mutex::new(LiveState {
                            state: TaskState::Queued,
                            attempts: row.attempts,
                            cancelling: false,
                            started: None,
                        }),
                        watch,
                        cancel: CancellationToken::new(),
                        directive: channel_of(row.directive.as_deref(), row.owner.as_deref()),
                    }),
                );
            }
        }
        tasks
    }

    /// (queued, running, finished since start).
    pub(crate) fn counts(&self) -> (usize, usize, u64) {
        let live = self.live.lock().len();
        let running = self.running.load(Ordering::Acquire);
        (
            live.saturating_sub(running),
            running,
            self.finished.load(Ordering::Relaxed),
        )
    }

    /// Inserts a task for `revision`; resolves once it is committed. The
    /// worker runs it apart from the request (see `Worker::submit`).
    pub(crate) async fn submit(
        &self,
        function: FunctionName,
        revision: RevisionId,
        max_attempts: u32,
        s: Submission,
    ) -> Result<Submitted> {
        let id = TaskId::generate();
        let function_name = function.to_string();
        let (watch, _) = watch::channel(TaskState::Queued);
        let keep_input = (s.input.len() <= KEEP_INPUT_MAX).then(|| s.input.clone());
        let live = Arc::new(Live {
            id: id.clone(),
            function: function.clone(),
            revision: revision.clone(),
            priority: s.priority,
            max_attempts,
            timeout_ms: s.timeout_ms,
            input: Mutex::new(keep_input),
            state: Mutex::new(LiveState {
                state: TaskState::Queued,
                attempts: 0,
                cancelling: false,
                started: None,
            }),
            watch,
            cancel: CancellationToken::new(),
            directive: channel_of(s.directive.as_deref(), s.owner.as_deref()),
        });
        // Known before it is committed, so a cancel racing the submit
        // answer finds it; queued for dispatch only once committed.
        self.live.lock().insert(id.clone(), live);
        let inserted = self
            .store
            .insert(NewTask {
                id: id.clone(),
                function,
                revision,
                priority: s.priority,
                max_attempts,
                timeout_ms: s.timeout_ms,
                created_ms: now_ms(),
                input: s.input,
                idempotency_key: s.idempotency_key,
                owner: s.owner,
                directive: s.directive,
            })
            .await;
        match inserted {
            Ok(Inserted::Created) => {
                info!(target: "colony::task", task = %id, function = %function_name, state = "queued", priority = s.priority, "task submitted");
                self.metrics.task_submitted(&function_name);
                self.queue.lock().push(id.clone(), s.priority, None);
                self.wake.notify_one();
                Ok(Submitted {
                    id,
                    state: TaskState::Queued,
                    created: true,
                })
            }
            Ok(Inserted::Existing(existing, state)) => {
                self.live.lock().remove(&id);
                Ok(Submitted {
                    id: existing,
                    state,
                    created: false,
                })
            }
            Err(e) => {
                self.live.lock().remove(&id);
                Err(e)
            }
        }
    }

    /// Pops the best task that may start now, marking it running.
    /// `has_room(function)` says whether its function may run one more.
    /// Returns the task, or when the next delayed one is due.
    pub(crate) fn next(
        &self,
        mut has_room: impl FnMut(&Live) -> bool,
    ) -> (Option<Arc<Live>>, Option<i64>) {
        let now = now_ms();
        let mut q = self.queue.lock();
        let due = q.promote(now);
        while let Some(r) = q.ready.pop() {
            let Some(live) = self.live.lock().get(&r.id).cloned() else {
                continue;
            };
            let mut st = live.state.lock();
            if st.state != TaskState::Queued || st.cancelling {
                continue;
            }
            if !has_room(&live) {
                drop(st);
                q.parked.push(r);
                continue;
            }
            st.state = st
                .state
                .apply(TaskEvent::Start)
                .expect("queued tasks start");
            st.attempts += 1;
            st.started = Some(std::time::Instant::now());
            let attempts = st.attempts;
            drop(st);
            self.running.fetch_add(1, Ordering::AcqRel);
            self.store.change_later(
                live.id.clone(),
                Change::Start {
                    attempts,
                    started_ms: now,
                    worker: self.worker_id.clone(),
                },
            );
            let _ = live.watch.send(TaskState::Running);
            info!(target: "colony::task", task = %live.id, function = %live.function, revision = %live.revision.short(), attempt = attempts, state = "running", "task started");
            return (Some(live), due);
        }
        (None, due)
    }

    /// A function slot freed: parked tasks may run.
    pub(crate) fn unpark(&self) {
        let mut q = self.queue.lock();
        if !q.parked.is_empty() {
            q.unpark();
            drop(q);
            self.wake.notify_one();
        }
    }

    /// The input of a task about to run.
    pub(crate) async fn input(self: &Arc<Self>, live: &Live) -> Result<Bytes> {
        if let Some(input) = live.input.lock().take() {
            return Ok(input);
        }
        let (me, id) = (self.clone(), live.id.clone());
        tokio::task::spawn_blocking(move || me.store.input(&id))
            .await
            .map_err(Error::internal)??
            .ok_or_else(|| Error::Internal(format!("task {} has no stored input", live.id)))
    }

    /// Records how an attempt ended: succeeded, failed for good, dead, or
    /// queued again after a backoff.
    pub(crate) async fn finish(
        self: &Arc<Self>,
        live: &Arc<Live>,
        outcome: Outcome,
        retry: &colony_core::RetryPolicy,
    ) -> Result<TaskState> {
        let attempts = live.state.lock().attempts;
        let now = now_ms();
        let (next, error, output) = judge(
            outcome,
            live.cancel.is_cancelled(),
            attempts,
            live.max_attempts,
            retry,
        )?;
        if next == TaskState::Queued {
            let not_before = now + retry.backoff(attempts + 1).as_millis() as i64;
            let change = Change::Requeue {
                not_before_ms: not_before,
                error,
            };
            self.record(live, change).await;
            live.state.lock().state = TaskState::Queued;
            self.running.fetch_sub(1, Ordering::AcqRel);
            let _ = live.watch.send(TaskState::Queued);
            self.metrics.task_retried(live.function.as_str());
            info!(target: "colony::task", task = %live.id, function = %live.function, revision = %live.revision.short(), attempt = attempts, state = "queued", retry_in_ms = not_before - now, "task queued again after a failure");
            self.queue
                .lock()
                .push(live.id.clone(), live.priority, Some(not_before));
            self.wake.notify_one();
            if live.cancel.is_cancelled() {
                // A cancel arrived while this attempt was ending.
                self.cancel_queued(live).await?;
                return Ok(TaskState::Cancelled);
            }
            return Ok(next);
        }
        // The result as the directive's channel tells it.
        let kept = live.directive.as_ref().and(output.clone());
        let (next, error, stored) = match output {
            None => (next, error, StoredOutput::None),
            Some(out) if out.len() <= self.config.result_inline_max => {
                (next, error, StoredOutput::Inline(out))
            }
            Some(out) => {
                let (results, id, len) = (self.results.clone(), live.id.clone(), out.len() as u64);
                let put = tokio::task::spawn_blocking(move || results.put(id.as_str(), &out)).await;
                match put {
                    Ok(Ok(())) => (next, error, StoredOutput::File(len)),
                    // The result cannot be kept: the task fails (for good:
                    // rerunning would not make room) with the reason.
                    failed => {
                        let cause = match failed {
                            Ok(Err(e)) => e.to_string(),
                            Err(e) => e.to_string(),
                            Ok(Ok(())) => unreachable!(),
                        };
                        error!(task = %live.id, cause = %cause, "cannot store a task result");
                        let event = TaskEvent::Fail {
                            retryable: false,
                            attempts_left: false,
                        };
                        let failed = TaskState::Running.apply(event).map_err(Error::internal)?;
                        let e = TaskError {
                            code: colony_core::ErrorCode::Internal.as_str().to_owned(),
                            message: format!(
                                "the worker could not store the result ({len} bytes): {cause}"
                            ),
                            exit_code: None,
                            stderr_tail: None,
                        };
                        (failed, Some(e), StoredOutput::None)
                    }
                }
            }
        };
        let expires = now.saturating_add(self.config.ttl.as_millis() as i64);
        // Told the channel after the commit (a result that could not be
        // stored is not told).
        let told = live.directive.as_ref().map(|_| {
            let output = kept.filter(|_| !matches!(stored, StoredOutput::None));
            (error.clone(), output)
        });
        let change = Change::Finish {
            from: TaskState::Running,
            to: next,
            at_ms: now,
            expires_ms: expires,
            error,
            output: stored,
        };
        self.record(live, change).await;
        self.running.fetch_sub(1, Ordering::AcqRel);
        self.settle(live, next);
        if let (Some(d), Some((error, output))) = (&live.directive, told) {
            let attempts = live.state.lock().attempts;
            self.directives
                .done(
                    d,
                    &live.id,
                    next,
                    attempts,
                    error.as_ref(),
                    output.as_deref(),
                )
                .await;
        }
        Ok(next)
    }

    /// Commits how an attempt ended, retrying (with a capped backoff) as
    /// long as the store refuses: the task stays `running` in memory and
    /// in the store meanwhile, so nothing disagrees and nothing is lost;
    /// if the process dies first, recovery requeues it.
    async fn record(&self, live: &Live, change: Change) {
        let mut delay = Duration::from_millis(50);
        loop {
            match self.store.change(live.id.clone(), change.clone()).await {
                Ok(true) => return,
                Ok(false) => {
                    warn!(task = %live.id, "the task store did not have this task running; recorded its end anyway");
                    return;
                }
                Err(e) => {
                    error!(task = %live.id, cause = %e, retry_in = ?delay, "cannot record how a task attempt ended; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// A task reached `state` (committed): forget it and tell waiters.
    fn settle(&self, live: &Live, state: TaskState) {
        live.state.lock().state = state;
        self.live.lock().remove(&live.id);
        self.finished.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .task_finished(live.function.as_str(), state.as_str());
        let (attempts, started) = {
            let st = live.state.lock();
            (st.attempts, st.started)
        };
        let duration_ms = started.map_or(0, |t| t.elapsed().as_millis() as u64);
        info!(target: "colony::task", task = %live.id, function = %live.function, revision = %live.revision.short(), attempts, duration_ms, state = state.as_str(), "task finished");
        let _ = live.watch.send(state);
    }

    /// One task, from the store.
    pub(crate) async fn get(self: &Arc<Self>, id: &TaskId) -> Result<TaskInfo> {
        let (me, id2) = (self.clone(), id.clone());
        tokio::task::spawn_blocking(move || me.store.get(&id2))
            .await
            .map_err(Error::internal)??
            .ok_or_else(|| Error::TaskNotFound { id: id.to_string() })
    }

    /// Waits up to `wait` for the task to finish, then returns it.
    pub(crate) async fn wait(self: &Arc<Self>, id: &TaskId, wait: Duration) -> Result<TaskInfo> {
        let live = self.live.lock().get(id).cloned();
        if let Some(live) = live {
            let mut rx = live.watch.subscribe();
            let _ = tokio::time::timeout(wait, rx.wait_for(|s| s.is_terminal())).await;
        }
        self.get(id).await
    }

    /// A page of tasks.
    pub(crate) async fn list(self: &Arc<Self>, q: ListQuery) -> Result<TaskList> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.store.list(&q))
            .await
            .map_err(Error::internal)?
    }

    /// The result of a succeeded task.
    pub(crate) async fn result(self: &Arc<Self>, id: &TaskId) -> Result<Bytes> {
        let (me, id2) = (self.clone(), id.clone());
        let found = tokio::task::spawn_blocking(move || me.store.result(&id2))
            .await
            .map_err(Error::internal)??;
        let not_yet = |state: TaskState| Error::ResultNotFound {
            id: id.to_string(),
            state,
        };
        match found {
            None => Err(Error::TaskNotFound { id: id.to_string() }),
            Some((TaskState::Succeeded, Some(ResultRow::Inline(bytes)))) => Ok(Bytes::from(bytes)),
            Some((TaskState::Succeeded, Some(ResultRow::File))) => {
                let (results, id2) = (self.results.clone(), id.clone());
                let bytes = tokio::task::spawn_blocking(move || results.get(id2.as_str()))
                    .await
                    .map_err(Error::internal)?
                    .map_err(|e| Error::Internal(format!("result file of task {id}: {e}")))?;
                Ok(Bytes::from(bytes))
            }
            Some((TaskState::Succeeded, None)) => Ok(Bytes::new()),
            Some((state, _)) => Err(not_yet(state)),
        }
    }

    /// Cancels a task: a queued one at once; a running one is interrupted
    /// and this returns once it stopped (or, if it has not within 5 s,
    /// with the task still running and its cancel pending). Tasks that
    /// finished otherwise: `TaskFinished`.
    pub(crate) async fn cancel(self: &Arc<Self>, id: &TaskId) -> Result<TaskInfo> {
        let live = self.live.lock().get(id).cloned();
        let Some(live) = live else {
            let info = self.get(id).await?;
            return Err(Error::TaskFinished {
                id: id.to_string(),
                state: info.state,
            });
        };
        let was = live.state.lock().state;
        if was == TaskState::Running {
            // Kept, so a crash before the guest stops does not rerun it.
            let (me, id2) = (self.clone(), id.clone());
            let _ = tokio::spawn(async move { me.store.change(id2, Change::RequestCancel).await })
                .await;
        }
        live.cancel.cancel();
        if was == TaskState::Queued {
            // Apart from the request, so a dropped request cannot leave the
            // cancel committed but not applied in memory.
            let (me, l) = (self.clone(), live.clone());
            tokio::spawn(async move { me.cancel_queued(&l).await })
                .await
                .map_err(Error::internal)??;
        }
        // Running (or it started meanwhile): the guest stops at the next
        // epoch and its runner records the cancellation.
        let mut rx = live.watch.subscribe();
        let _ =
            tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| s.is_terminal())).await;
        let info = self.get(id).await?;
        match info.state {
            // Cancelled; or still stopping (the caller sees it running and
            // may poll): either way the cancel stands.
            TaskState::Cancelled | TaskState::Queued | TaskState::Running => Ok(info),
            state => Err(Error::TaskFinished {
                id: id.to_string(),
                state,
            }),
        }
    }

    /// Cancels a queued task (committed), unless it started meanwhile.
    async fn cancel_queued(&self, live: &Arc<Live>) -> Result<()> {
        {
            let mut st = live.state.lock();
            if st.state != TaskState::Queued {
                return Ok(());
            }
            st.cancelling = true;
        }
        let now = now_ms();
        let expires = now.saturating_add(self.config.ttl.as_millis() as i64);
        let next = TaskState::Queued
            .apply(TaskEvent::Cancel)
            .map_err(Error::internal)?;
        let change = Change::Finish {
            from: TaskState::Queued,
            to: next,
            at_ms: now,
            expires_ms: expires,
            error: None,
            output: StoredOutput::None,
        };
        match self.store.change(live.id.clone(), change).await {
            Ok(true) => {
                self.settle(live, next);
                if let Some(d) = &live.directive {
                    let attempts = live.state.lock().attempts;
                    self.directives
                        .done(d, &live.id, next, attempts, None, None)
                        .await;
                }
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) => {
                // Not cancelled after all: it may run again.
                live.state.lock().cancelling = false;
                self.queue.lock().push(live.id.clone(), live.priority, None);
                self.wake.notify_one();
                Err(e)
            }
        }
    }

    /// Whether a task is ready to run now, and when the next delayed
    /// one is due.
    pub(crate) fn peek(&self) -> (bool, Option<i64>) {
        let mut q = self.queue.lock();
        let due = q.promote(now_ms());
        (!q.ready.is_empty(), due)
    }

    /// Deletes expired tasks and their result files; returns how many.
    pub(crate) async fn sweep(&self) -> Result<usize> {
        let now = now_ms();
        let mut total = 0;
        loop {
            let deleted = self.store.sweep(now).await?;
            for (id, in_file) in &deleted {
                if *in_file {
                    self.results.remove(id.as_str());
                }
            }
            total += deleted.len();
            if deleted.len() < crate::taskstore::SWEEP_BATCH {
                return Ok(total);
            }
        }
    }
}
