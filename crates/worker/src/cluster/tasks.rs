//! Tasks over JetStream: a work-queue stream carries one message per task
//! (its spec in a header, its input as payload), every worker pulls from
//! one durable consumer, and a KV bucket holds each task's record.
//!
//! - Submit publishes the message (deduplicated by task id) and answers
//!   202 once JetStream acknowledged it; the record is written after.
//!   Whoever comes first (submitter or the worker that got the message)
//!   creates the record.
//! - A worker claims a delivery by a compare-and-set of the record to
//!   `running`, sends progress acks while the task runs, stores the
//!   terminal record, and only then acknowledges the message. A retry is
//!   a negative ack with the backoff as delay.
//! - A delivery that finds the record `running` means its worker was
//!   lost (the ack wait expired): the retry policy decides between
//!   another attempt and `dead`, as at an embedded worker's restart.
//! - Cancel marks the record and tells every worker on `colony.cancel`;
//!   the one running the task interrupts it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, kv};
use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use colony_core::wire::{Submitted, TaskInfo, TaskList};
use colony_core::{ErrorCode, FunctionName, RevisionId, TaskError, TaskEvent, TaskId, TaskState};
use colony_engine::CancellationToken;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tracing::{debug, error, info, warn};

use super::{
    CANCEL_SUBJECT, MAX_DELIVERIES, Nats, TASK_SUBJECT, read_json, read_object, unavailable,
    write_object,
};
use crate::directives::Directives;
use crate::error::{Error, Result};
use crate::seams::TaskBackend;
use crate::store::now_ms;
use crate::tasks::{Outcome, Submission, TaskConfig, judge};
use crate::taskstore::ListQuery;
use crate::worker::Worker;

/// The header carrying a task message's spec (its first record, JSON).
const SPEC: &str = "Colony-Task";
/// A task handed back by a stopping worker is redelivered after this
/// (elsewhere: the worker stopped pulling).
const HAND_BACK: Duration = Duration::from_millis(200);
/// A task whose code or input could not be read (NATS away) is tried
/// again after this, without counting an attempt.
const RETRY_LATER: Duration = Duration::from_secs(1);
/// Results above this go to the object store, not into the record (the
/// record must fit in one NATS message).
const INLINE_RESULT_MAX: usize = 256 << 10;
/// Inputs above this go to the object store, not into the message.
const INLINE_INPUT_MAX: usize = 256 << 10;

/// A task's record in the KV bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    #[serde(flatten)]
    info: TaskInfo,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    cancel_requested: bool,
    /// A small result, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<String>,
    /// The result is the object `out-<id>`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    result_object: bool,
    /// The input is the object `in-<id>`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    input_object: bool,
    /// The JetStream delivery that started the latest attempt.
    #[serde(default)]
    delivery: u64,
}

fn json(rec: &Record) -> Bytes {
    Bytes::from(serde_json::to_vec(rec).expect("a record serializes"))
}

/// The cluster's task backend.
#[derive(Debug)]
pub(crate) struct ClusterTasks {
    nats: Nats,
    config: TaskConfig,
    worker_id: Arc<str>,
    /// Tasks running here, to interrupt on cancel.
    here: Mutex<HashMap<TaskId, CancellationToken>>,
    running: AtomicUsize,
    finished: AtomicU64,
    /// Tasks waiting in the stream, as of the last heartbeat.
    pending: AtomicUsize,
    metrics: Arc<crate::metrics::Metrics>,
    directives: Arc<Directives>,
}

/// Removes a task from `here` when its handling ends.
struct Here<'a>(&'a ClusterTasks, TaskId);

impl Drop for Here<'_> {
    fn drop(&mut self) {
        self.0.here.lock().remove(&self.1);
    }
}

/// Aborts a background job when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Start {
    Started(Box<Record>, u64),
    /// Finished or cancelled: ack the message.
    Done,
    /// Another delivery has it: leave the message alone.
    Stale,
    /// The record changed since it was read: claim again.
    Conflict,
}

enum Claim {
    /// Run it: the record (now running) and its KV revision.
    Run(Box<Record>, u64),
    /// Nothing to run; the message is settled as said.
    Settled,
}

impl ClusterTasks {
    pub(crate) fn new(
        nats: Nats,
        config: TaskConfig,
        worker_id: Arc<str>,
        metrics: Arc<crate::metrics::Metrics>,
        directives: Arc<Directives>,
    ) -> Self {
        Self {
            nats,
            config,
            worker_id,
            here: Mutex::new(HashMap::new()),
            running: AtomicUsize::new(0),
            finished: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            metrics,
            directives,
        }
    }

    async fn load(&self, id: &TaskId) -> Result<Option<(Record, u64)>> {
        read_json(&self.nats.tasks, id.as_str(), || {
            format!("the record of task {id}")
        })
        .await
    }

    async fn must_load(&self, id: &TaskId) -> Result<(Record, u64)> {
        self.load(id)
            .await?
            .ok_or_else(|| Error::TaskNotFound { id: id.to_string() })
    }

    /// Compare-and-set: `Ok(None)` when the record changed meanwhile.
    async fn put(&self, rec: &Record, last: u64) -> Result<Option<u64>> {
        match self
            .nats
            .tasks
            .update(rec.info.id.as_str(), json(rec), last)
            .await
        {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Refreshes the count of tasks waiting in the stream.
    pub(crate) async fn refresh_pending(&self) {
        let mut consumer = self.nats.consumer.clone();
        // Bounded: a slow JetStream API must not delay the heartbeat.
        if let Ok(Ok(info)) =
            tokio::time::timeout(Duration::from_millis(500), consumer.info()).await
        {
            self.pending
                .store(info.num_pending as usize, Ordering::Relaxed);
        }
    }

    /// Hears cancels from every worker for the worker's life.
    pub(crate) async fn hear_cancels(self: Arc<Self>, worker: Weak<Worker>) {
        loop {
            match self.nats.client.subscribe(CANCEL_SUBJECT).await {
                Ok(mut sub) => {
                    while let Some(msg) = sub.next().await {
                        if worker.strong_count() == 0 {
                            return;
                        }
                        if let Ok(id) = std::str::from_utf8(&msg.payload)
                            && let Ok(id) = id.parse::<TaskId>()
                        {
                            self.interrupt(&id);
                        }
                    }
                }
                Err(e) => warn!(cause = %e, "cannot listen for cancels; retrying"),
            }
            if worker.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn interrupt(&self, id: &TaskId) -> bool {
        match self.here.lock().get(id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Pulls tasks and runs them while the worker takes work.
    pub(crate) async fn dispatch(self: Arc<Self>, worker: Weak<Worker>) {
        let Some((concurrency, mut stop)) = worker
            .upgrade()
            .map(|w| (w.config().concurrency.max(1), w.drain_signal()))
        else {
            return;
        };
        // Deliveries held at once: running plus as many waiting for a
        // slot. Only as many are fetched as there are permits, so none
        // waits unacknowledged in a client buffer (where its ack wait
        // would run out and JetStream would give it to another worker).
        let held = Arc::new(tokio::sync::Semaphore::new(concurrency * 2));
        loop {
            if *stop.borrow() {
                return;
            }
            let first = tokio::select! {
                biased;
                _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
                p = held.clone().acquire_owned() => p.expect("never closed"),
            };
            let mut permits = vec![first];
            while permits.len() < concurrency
                && let Ok(p) = held.clone().try_acquire_owned()
            {
                permits.push(p);
            }
            let batch = self
                .nats
                .consumer
                .fetch()
                .max_messages(permits.len())
                .expires(Duration::from_secs(5))
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    debug!(cause = %e, "cannot pull tasks; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    biased;
                    _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                        // Stop pulling before handing anything back, so
                        // JetStream gives it to another worker, not here.
                        let mut pulled = Vec::new();
                        while let Ok(Some(Ok(m))) =
                            tokio::time::timeout(Duration::from_millis(10), batch.next()).await
                        {
                            pulled.push(m);
                        }
                        drop(batch);
                        for m in pulled {
                            let _ = m.ack_with(AckKind::Nak(Some(HAND_BACK))).await;
                        }
                        return;
                    }
                    next = batch.next() => next,
                };
                let msg = match next {
                    None => break,
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        debug!(cause = %e, "task pull interrupted; resuming");
                        break;
                    }
                };
                let Some(w) = worker.upgrade() else { return };
                let Some(permit) = permits.pop() else {
                    // More than asked for: hand it back.
                    let _ = msg.ack_with(AckKind::Nak(None)).await;
                    continue;
                };
                let me = self.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    me.handle(w, msg).await;
                });
            }
        }
    }

    /// Ends a task delivered `deliveries` times without finishing: its
    /// record says `dead` (unless it finished meanwhile). `Err` when NATS
    /// does not answer (the message comes back).
    async fn bury(&self, spec: &Record, deliveries: u64) -> Result<()> {
        let id = spec.info.id.clone();
        loop {
            let (mut rec, rev) = match self.load(&id).await? {
                Some(x) => x,
                None => match self.nats.tasks.create(id.as_str(), json(spec)).await {
                    Ok(rev) => (spec.clone(), rev),
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(unavailable(e)),
                },
            };
            if rec.info.state.is_terminal() {
                return Ok(());
            }
            if rec.info.state == TaskState::Queued {
                // Delivered, never finished: as if each delivery were lost.
                rec.info.state = TaskState::Running;
            }
            let now = now_ms();
            rec.info.state = rec
                .info
                .state
                .apply(TaskEvent::Fail {
                    retryable: true,
                    attempts_left: false,
                })
                .map_err(Error::internal)?;
            rec.info.finished_ms = Some(now);
            rec.info.expires_ms = Some(self.expires(now));
            rec.info.error = Some(TaskError {
                code: ErrorCode::WorkerLost.as_str().to_owned(),
                message: format!("delivered {deliveries} times without finishing"),
                exit_code: None,
                stderr_tail: None,
            });
            if self.put(&rec, rev).await?.is_some() {
                error!(target: "colony::task", task = %id, deliveries, "task dead: delivered too often without finishing");
                self.finished(&rec).await;
                return Ok(());
            }
        }
    }

    /// Settles one delivery: runs the task or recognizes a duplicate.
    async fn handle(self: Arc<Self>, worker: Arc<Worker>, msg: jetstream::Message) {
        let msg = Arc::new(msg);
        // Holds the delivery while it waits and runs.
        let every = self.nats.config.ack_wait / 3;
        let progress = {
            let msg = msg.clone();
            AbortOnDrop(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let _ = msg.ack_with(AckKind::Progress).await;
                }
            }))
        };
        let spec = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(SPEC))
            .and_then(|v| serde_json::from_str::<Record>(v.as_str()).ok());
        let Some(spec) = spec else {
            error!("a task message without a readable spec; dropping it");
            let _ = msg.ack_with(AckKind::Term).await;
            return;
        };
        let delivered = msg.info().map(|i| i.delivered.max(1) as u64).unwrap_or(1);
        let id = spec.info.id.clone();
        let token = CancellationToken::new();
        self.here.lock().insert(id.clone(), token.clone());
        let _here = Here(&self, id.clone());
        // Submitted right after a deploy elsewhere: this worker's
        // registry may be a moment behind.
        worker
            .await_revision(&spec.info.function, &spec.info.revision)
            .await;
        let (rec, rev) = match self.claim(&worker, &msg, spec.clone(), delivered).await {
            Ok(Claim::Run(rec, rev)) => (*rec, rev),
            Ok(Claim::Settled) => return,
            Err(e) => {
                // NATS is away: the message comes back after the ack wait.
                warn!(task = %id, cause = %e, "cannot start a task; it is redelivered");
                return;
            }
        };
        // Waits for room here (the function's limit, then a slot),
        // holding the delivery with progress acks.
        let gate = worker
            .task_gate(&rec.info.function, &rec.info.revision)
            .await;
        let Some(slot) = worker.task_slot().await else {
            // Draining: another worker takes it (this one stopped pulling).
            let _ = msg.ack_with(AckKind::Nak(Some(HAND_BACK))).await;
            return;
        };
        // The code may have to come from the object store: a NATS outage
        // there is no attempt of the task's.
        if let Err(e) = worker
            .prepare_revision(&rec.info.function, &rec.info.revision)
            .await
        {
            warn!(task = %id, cause = %e, "cannot load a task's code; handing it back");
            let _ = msg.ack_with(AckKind::Nak(Some(RETRY_LATER))).await;
            return;
        }
        let (mut rec, mut rev) = (rec, rev);
        let (rec, rev) = loop {
            match self.start(rec, rev, delivered).await {
                Ok(Start::Started(r, v)) => break (*r, v),
                Ok(Start::Done) => {
                    let _ = msg.double_ack().await;
                    return;
                }
                Ok(Start::Stale) => return,
                Ok(Start::Conflict) => {
                    match self.claim(&worker, &msg, spec.clone(), delivered).await {
                        Ok(Claim::Run(r, v)) => (rec, rev) = (*r, v),
                        Ok(Claim::Settled) => return,
                        Err(e) => {
                            warn!(task = %id, cause = %e, "cannot start a task; it is redelivered");
                            return;
                        }
                    }
                }
                Err(e) => {
                    warn!(task = %id, cause = %e, "cannot start a task; it is redelivered");
                    return;
                }
            }
        };
        let input = if rec.input_object {
            match read_object(&self.nats.data, &format!("in-{id}")).await {
                Ok(Some(b)) => b,
                Ok(None) => Bytes::new(),
                Err(e) => {
                    // Not the task's failure: undo the start, try later.
                    warn!(task = %id, cause = %e, "cannot read a task's input; handing it back");
                    self.unstart(rec, rev).await;
                    let _ = msg.ack_with(AckKind::Nak(Some(RETRY_LATER))).await;
                    return;
                }
            }
        } else {
            msg.payload.clone()
        };
        self.running.fetch_add(1, Ordering::AcqRel);
        let input = Ok(input);
        let (outcome, policy) = worker
            .execute(
                &rec.info.function,
                &rec.info.revision,
                input,
                &token,
                rec.info.timeout_ms,
            )
            .await;
        drop(gate);
        self.finish(&msg, rec, rev, outcome, &policy, token.is_cancelled())
            .await;
        // Held until the task is recorded, so a drain waits for that.
        drop(slot);
        self.running.fetch_sub(1, Ordering::AcqRel);
        drop(progress);
    }

    /// Reads (or creates) the record of a delivery and decides what to do.
    async fn claim(
        &self,
        worker: &Worker,
        msg: &jetstream::Message,
        spec: Record,
        delivered: u64,
    ) -> Result<Claim> {
        let id = spec.info.id.clone();
        if delivered > MAX_DELIVERIES {
            // Colony bounds deliveries itself (JetStream's own limit would
            // leave the message in the stream with no one to settle it).
            self.bury(&spec, delivered).await?;
            let _ = msg.double_ack().await;
            return Ok(Claim::Settled);
        }
        loop {
            let (mut rec, rev) = match self.load(&id).await? {
                Some(x) => x,
                None => match self.nats.tasks.create(id.as_str(), json(&spec)).await {
                    Ok(rev) => (spec.clone(), rev),
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(unavailable(e)),
                },
            };
            let state = rec.info.state;
            if state.is_terminal() {
                // A duplicate delivery of a settled task.
                let _ = msg.double_ack().await;
                return Ok(Claim::Settled);
            }
            if rec.delivery > delivered {
                // A later delivery has it (running, or queued for a retry):
                // this copy is stale; the message is not this one's to ack.
                return Ok(Claim::Settled);
            }
            if rec.cancel_requested {
                self.settle(msg, rec, rev, TaskEvent::Cancel, None).await;
                return Ok(Claim::Settled);
            }
            if state == TaskState::Running {
                // Its worker was lost while it ran.
                let retries = worker.retries_lost(&rec.info.function, &rec.info.revision);
                let event = TaskEvent::Fail {
                    retryable: retries,
                    attempts_left: rec.info.attempts < rec.info.max_attempts,
                };
                let lost = TaskError {
                    code: ErrorCode::WorkerLost.as_str().to_owned(),
                    message: format!(
                        "worker {} was lost while attempt {} ran",
                        rec.info.worker.as_deref().unwrap_or("?"),
                        rec.info.attempts
                    ),
                    exit_code: None,
                    stderr_tail: None,
                };
                let next = state.apply(event).map_err(Error::internal)?;
                if next != TaskState::Queued {
                    self.settle(msg, rec, rev, event, Some(lost)).await;
                    return Ok(Claim::Settled);
                }
                info!(target: "colony::task", task = %id, function = %rec.info.function, attempt = rec.info.attempts, "task's worker was lost; running it again");
                rec.info.state = TaskState::Queued;
                rec.info.error = Some(lost);
            }
            return Ok(Claim::Run(Box::new(rec), rev));
        }
    }

    /// Marks the record running for this delivery (compare-and-set on
    /// the revision `claim` read).
    async fn start(&self, mut rec: Record, rev: u64, delivered: u64) -> Result<Start> {
        if rec.cancel_requested {
            let now = now_ms();
            rec.info.state = TaskState::Cancelled;
            rec.info.finished_ms = Some(now);
            rec.info.expires_ms = Some(self.expires(now));
            return Ok(match self.put(&rec, rev).await? {
                Some(_) => {
                    self.finished(&rec).await;
                    Start::Done
                }
                None => Start::Conflict,
            });
        }
        let Ok(state) = rec.info.state.apply(TaskEvent::Start) else {
            return Ok(Start::Stale);
        };
        rec.info.state = state;
        rec.info.attempts += 1;
        rec.info.started_ms = Some(now_ms());
        rec.info.not_before_ms = None;
        rec.info.worker = Some(self.worker_id.to_string());
        rec.delivery = delivered;
        Ok(match self.put(&rec, rev).await? {
            Some(r) => {
                info!(target: "colony::task", task = %rec.info.id, function = %rec.info.function, attempt = rec.info.attempts, state = "running", "task started");
                Start::Started(Box::new(rec), r)
            }
            None => Start::Conflict,
        })
    }

    /// Undoes `start` (its attempt never ran); best effort: if it fails,
    /// the next delivery counts a lost attempt.
    async fn unstart(&self, mut rec: Record, rev: u64) {
        rec.info.state = TaskState::Queued;
        rec.info.attempts = rec.info.attempts.saturating_sub(1);
        rec.info.worker = None;
        rec.info.started_ms = None;
        let _ = self.put(&rec, rev).await;
    }

    fn expires(&self, now: i64) -> i64 {
        now.saturating_add(self.config.ttl.as_millis() as i64)
    }

    async fn finished(&self, rec: &Record) {
        self.finished.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .task_finished(rec.info.function.as_str(), rec.info.state.as_str());
        info!(target: "colony::task", task = %rec.info.id, function = %rec.info.function, attempts = rec.info.attempts, state = rec.info.state.as_str(), "task finished");
        self.directives
            .done_record(&rec.info, rec.result.as_deref())
            .await;
    }

    /// Ends a task that does not run (cancelled, or lost for good):
    /// stores the terminal record, then acknowledges the message.
    async fn settle(
        &self,
        msg: &jetstream::Message,
        mut rec: Record,
        mut rev: u64,
        event: TaskEvent,
        error: Option<TaskError>,
    ) {
        while let Ok(next) = rec.info.state.apply(event) {
            let now = now_ms();
            rec.info.state = next;
            rec.info.finished_ms = Some(now);
            rec.info.expires_ms = Some(self.expires(now));
            if error.is_some() {
                rec.info.error = error.clone();
            }
            match self.put(&rec, rev).await {
                Ok(Some(_)) => {
                    self.finished(&rec).await;
                    break;
                }
                Ok(None) => match self.load(&rec.info.id).await {
                    Ok(Some((r, v))) if !r.info.state.is_terminal() => (rec, rev) = (r, v),
                    // Settled elsewhere.
                    _ => break,
                },
                // The message comes back after the ack wait.
                Err(_) => return,
            }
        }
        let _ = msg.double_ack().await;
    }

    /// Records how an attempt ended, then settles the message: ack when
    /// terminal, negative ack with the backoff when it runs again.
    async fn finish(
        &self,
        msg: &jetstream::Message,
        mut rec: Record,
        mut rev: u64,
        outcome: Outcome,
        retry: &colony_core::RetryPolicy,
        cancelled: bool,
    ) {
        let id = rec.info.id.clone();
        let judged = judge(
            outcome,
            cancelled,
            rec.info.attempts,
            rec.info.max_attempts,
            retry,
        );
        let (next, mut error, output) = match judged {
            Ok(x) => x,
            Err(e) => {
                error!(task = %id, cause = %e, "cannot judge a task attempt");
                return;
            }
        };
        let now = now_ms();
        let mut retry_in = None;
        let mut result = None;
        let mut result_object = false;
        let mut output_size = None;
        let mut state = next;
        if next == TaskState::Queued {
            retry_in = Some(retry.backoff(rec.info.attempts + 1));
        } else if let Some(out) = output {
            output_size = Some(out.len() as u64);
            if out.len() <= self.config.result_inline_max.min(INLINE_RESULT_MAX) {
                result = Some(base64::engine::general_purpose::STANDARD.encode(&out));
            } else {
                let name = format!("out-{id}");
                if let Err(cause) = self.write_with_retry(&name, &out).await {
                    state = TaskState::Failed;
                    output_size = None;
                    error = Some(TaskError {
                        code: ErrorCode::Internal.as_str().to_owned(),
                        message: format!(
                            "the worker could not store the result ({} bytes): {cause}",
                            out.len()
                        ),
                        exit_code: None,
                        stderr_tail: None,
                    });
                } else {
                    result_object = true;
                }
            }
        }
        // Stores it, retrying while NATS is away (the progress acks hold
        // the message meanwhile); a cancel request that came in between
        // is kept.
        let mut delay = Duration::from_millis(50);
        loop {
            let mut r = rec.clone();
            r.info.state = state;
            r.info.error = error.clone().or(r.info.error);
            if state == TaskState::Succeeded {
                r.info.error = None;
            }
            match retry_in {
                Some(d) => {
                    if r.cancel_requested {
                        r.info.state = TaskState::Cancelled;
                        r.info.finished_ms = Some(now);
                        r.info.expires_ms = Some(self.expires(now));
                    } else {
                        r.info.not_before_ms = Some(now + d.as_millis() as i64);
                    }
                }
                None => {
                    r.info.finished_ms = Some(now);
                    r.info.expires_ms = Some(self.expires(now));
                    r.info.output_size = output_size;
                    r.result = result.clone();
                    r.result_object = result_object;
                }
            }
            match self.put(&r, rev).await {
                Ok(Some(_)) => {
                    rec = r;
                    break;
                }
                Ok(None) => match self.load(&id).await {
                    Ok(Some((fresh, v))) => {
                        if fresh.delivery != rec.delivery || fresh.info.worker != rec.info.worker {
                            // Another delivery took the task over (this
                            // worker was taken for lost): its record wins.
                            warn!(task = %id, "a task attempt ended after another took over; its outcome is dropped");
                            return;
                        }
                        rec.cancel_requested |= fresh.cancel_requested;
                        rev = v;
                        if fresh.info.state.is_terminal() {
                            let _ = msg.double_ack().await;
                            return;
                        }
                    }
                    Ok(None) => {
                        // Expired meanwhile (the task TTL): gone.
                        warn!(task = %id, "a task's record expired while it ran");
                        let _ = msg.double_ack().await;
                        return;
                    }
                    Err(e) => {
                        warn!(task = %id, cause = %e, "cannot reread a task record; retrying");
                        tokio::time::sleep(delay).await;
                    }
                },
                Err(e) => {
                    error!(task = %id, cause = %e, retry_in = ?delay, "cannot record how a task attempt ended; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        if rec.info.state == TaskState::Queued {
            let d = retry_in.unwrap_or_default();
            self.metrics.task_retried(rec.info.function.as_str());
            info!(target: "colony::task", task = %id, function = %rec.info.function, attempt = rec.info.attempts, state = "queued", retry_in_ms = d.as_millis() as u64, "task queued again after a failure");
            let _ = msg.ack_with(AckKind::Nak(Some(d))).await;
            return;
        }
        self.finished(&rec).await;
        // Acknowledged only now that the record is stored; if the ack is
        // lost, the redelivery finds the task finished.
        for _ in 0..3 {
            if msg.double_ack().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn write_with_retry(&self, name: &str, bytes: &[u8]) -> std::result::Result<(), String> {
        let mut last = String::new();
        for _ in 0..5 {
            match write_object(&self.nats.data, name, bytes).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(last)
    }

    async fn submit_task(
        &self,
        function: FunctionName,
        revision: RevisionId,
        max_attempts: u32,
        s: Submission,
    ) -> Result<Submitted> {
        let kv = &self.nats.tasks;
        let mut id = TaskId::generate();
        if let Some(key) = &s.idempotency_key {
            let ikey = idempotency_key(s.owner.as_deref(), key);
            match kv.create(&ikey, Bytes::from(id.to_string())).await {
                Ok(_) => {}
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    let existing = kv
                        .get(&ikey)
                        .await
                        .map_err(unavailable)?
                        .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<TaskId>().ok())
                        .ok_or_else(|| unavailable("idempotency key changed meanwhile"))?;
                    if let Some((rec, _)) = self.load(&existing).await? {
                        return Ok(Submitted {
                            id: existing,
                            state: rec.info.state,
                            created: false,
                        });
                    }
                    // A submit with this key stopped half-way: finish it
                    // under the same id (JetStream drops a duplicate).
                    id = existing;
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        let input_object = s.input.len() > INLINE_INPUT_MAX;
        if input_object {
            write_object(&self.nats.data, &format!("in-{id}"), &s.input)
                .await
                .map_err(unavailable)?;
        }
        let rec = Record {
            info: TaskInfo {
                id: id.clone(),
                function: function.clone(),
                revision,
                state: TaskState::Queued,
                priority: s.priority,
                attempts: 0,
                max_attempts,
                timeout_ms: s.timeout_ms,
                created_ms: now_ms(),
                started_ms: None,
                finished_ms: None,
                not_before_ms: None,
                worker: None,
                error: None,
                input_size: s.input.len() as u64,
                output_size: None,
                idempotency_key: s.idempotency_key.clone(),
                owner: s.owner.clone(),
                directive: s.directive.clone(),
                expires_ms: None,
            },
            cancel_requested: false,
            result: None,
            result_object: false,
            input_object,
            delivery: 0,
        };
        let spec = serde_json::to_string(&rec).map_err(Error::internal)?;
        let payload = if input_object { Bytes::new() } else { s.input };
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(id.as_str())
            .header(SPEC, spec.as_str());
        self.nats
            .js
            .send_publish(TASK_SUBJECT, publish)
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        // Durable from here: the message is the commitment. The record is
        // created by whoever comes first; if this write fails, the worker
        // that takes the message writes it.
        match kv.create(id.as_str(), json(&rec)).await {
            Ok(_) => {}
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => {
                warn!(task = %id, cause = %e, "cannot write a new task's record; its worker will")
            }
        }
        info!(target: "colony::task", task = %id, function = %function, state = "queued", "task submitted");
        self.metrics.task_submitted(function.as_str());
        Ok(Submitted {
            id,
            state: TaskState::Queued,
            created: true,
        })
    }

    /// Waits up to `wait` for the record to reach a terminal state.
    async fn wait_terminal(&self, id: &TaskId, wait: Duration) -> Result<()> {
        let mut watch = self
            .nats
            .tasks
            .watch_with_history(id.as_str())
            .await
            .map_err(unavailable)?;
        let _ = tokio::time::timeout(wait, async {
            while let Some(Ok(entry)) = watch.next().await {
                if entry.operation != kv::Operation::Put {
                    return;
                }
                if let Ok(rec) = serde_json::from_slice::<Record>(&entry.value)
                    && rec.info.state.is_terminal()
                {
                    return;
                }
            }
        })
        .await;
        Ok(())
    }
}

/// The bucket key of an idempotency key (per owner).
fn idempotency_key(owner: Option<&str>, key: &str) -> String {
    let mut material = Vec::with_capacity(key.len() + 64);
    material.extend_from_slice(owner.unwrap_or("").as_bytes());
    material.push(0);
    material.extend_from_slice(key.as_bytes());
    format!("idem.{}", colony_core::revision::sha256_hex(&material))
}

#[async_trait]
impl TaskBackend for Arc<ClusterTasks> {
    async fn submit(
        &self,
        function: FunctionName,
        revision: RevisionId,
        max_attempts: u32,
        s: Submission,
    ) -> Result<Submitted> {
        self.submit_task(function, revision, max_attempts, s).await
    }

    async fn get(&self, id: &TaskId) -> Result<TaskInfo> {
        Ok(self.must_load(id).await?.0.info)
    }

    async fn wait(&self, id: &TaskId, wait: Duration) -> Result<TaskInfo> {
        let (rec, _) = self.must_load(id).await?;
        if rec.info.state.is_terminal() || wait.is_zero() {
            return Ok(rec.info);
        }
        self.wait_terminal(id, wait).await?;
        self.get(id).await
    }

    async fn list(&self, q: ListQuery) -> Result<TaskList> {
        let mut keys = self.nats.tasks.keys().await.map_err(unavailable)?;
        let mut ids = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(unavailable)?;
            if let Ok(id) = k.parse::<TaskId>()
                && q.after.as_ref().is_none_or(|a| &id < a)
            {
                ids.push(id);
            }
        }
        ids.sort_unstable_by(|a, b| b.cmp(a));
        let limit = q.limit as usize;
        let mut tasks = Vec::new();
        let mut loads = futures_util::stream::iter(ids)
            .map(|id| async move { self.load(&id).await })
            .buffered(32);
        let mut more = false;
        while let Some(loaded) = loads.next().await {
            let Some((rec, _)) = loaded? else { continue };
            let i = rec.info;
            if q.state.is_some_and(|s| s != i.state)
                || q.function.as_ref().is_some_and(|f| f != &i.function)
                || q.owner
                    .as_ref()
                    .is_some_and(|o| Some(o) != i.owner.as_ref())
                || q.directive
                    .as_ref()
                    .is_some_and(|d| Some(d) != i.directive.as_ref())
            {
                continue;
            }
            if tasks.len() == limit {
                more = true;
                break;
            }
            tasks.push(i);
        }
        let next = more
            .then(|| tasks.last().map(|t: &TaskInfo| t.id.to_string()))
            .flatten();
        Ok(TaskList { tasks, next })
    }

    async fn result(&self, id: &TaskId) -> Result<Bytes> {
        let (rec, _) = self.must_load(id).await?;
        if rec.info.state != TaskState::Succeeded {
            return Err(Error::ResultNotFound {
                id: id.to_string(),
                state: rec.info.state,
            });
        }
        if rec.result_object {
            return read_object(&self.nats.data, &format!("out-{id}"))
                .await
                .map_err(unavailable)?
                .ok_or_else(|| Error::Internal(format!("the result of task {id} is missing")));
        }
        match rec.result {
            None => Ok(Bytes::new()),
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(Bytes::from)
                .map_err(|e| {
                    Error::Internal(format!("the result of task {id} is unreadable: {e}"))
                }),
        }
    }

    async fn cancel(&self, id: &TaskId) -> Result<TaskInfo> {
        loop {
            let (mut rec, rev) = self.must_load(id).await?;
            let state = rec.info.state;
            if state.is_terminal() {
                return Err(Error::TaskFinished {
                    id: id.to_string(),
                    state,
                });
            }
            if state == TaskState::Queued {
                let now = now_ms();
                rec.info.state = state.apply(TaskEvent::Cancel).map_err(Error::internal)?;
                rec.info.finished_ms = Some(now);
                rec.info.expires_ms = Some(self.expires(now));
                rec.cancel_requested = true;
                if self.put(&rec, rev).await?.is_some() {
                    // Its message is acknowledged when next delivered.
                    self.finished(&rec).await;
                    return Ok(rec.info);
                }
                continue;
            }
            if !rec.cancel_requested {
                rec.cancel_requested = true;
                if self.put(&rec, rev).await?.is_none() {
                    continue;
                }
            }
            break;
        }
        // Running: the worker that runs it interrupts it.
        if !self.interrupt(id) {
            self.nats
                .client
                .publish(CANCEL_SUBJECT, Bytes::from(id.to_string()))
                .await
                .map_err(unavailable)?;
            self.nats.client.flush().await.map_err(unavailable)?;
        }
        self.wait_terminal(id, Duration::from_secs(5)).await?;
        let info = self.get(id).await?;
        match info.state {
            TaskState::Cancelled | TaskState::Queued | TaskState::Running => Ok(info),
            state => Err(Error::TaskFinished {
                id: id.to_string(),
                state,
            }),
        }
    }

    async fn sweep(&self) -> Result<usize> {
        // The bucket's max age (the task TTL) expires records.
        Ok(0)
    }

    fn counts(&self) -> (usize, usize, u64) {
        (
            self.pending.load(Ordering::Relaxed),
            self.running.load(Ordering::Acquire),
            self.finished.load(Ordering::Relaxed),
        )
    }
}
