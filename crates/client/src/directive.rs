//! Directives: many tasks of one function composed on the client, with
//! their results coming back on a channel leased for the directive alone.
//!
//! A [`Directive`] opens its channel (`GET /directives/{id}/events`)
//! before it submits anything, submits its inputs as durable tasks tagged
//! with its id, at most `window` of them unfinished at a time, and hears
//! each one end on the channel (the result inline when small). It polls
//! nothing in the normal course: only when the channel broke and came
//! back, or stayed silent for 15 s while tasks were out, does it read the
//! tasks it still waits for.
//!
//! Retryable failures are retried by the task system; what reaches a
//! directive as failed is final. [`Directive::abort`] cancels every task
//! of the directive that has not ended.
//!
//! Every task gets an idempotency key: `<prefix>:<n>:<digest>` for the
//! `n`th input, the digest naming its function and its bytes (the prefix
//! is the directive id unless given), or the input's own key; a fold's
//! combinations likewise.
//! A submission lost in transit is retried under the same key, so it never
//! runs twice; a directive run again with the same keys reuses the tasks
//! that already ran (while the server retains them).
//!
//! The typed layer, [`crate::Operation`] and [`Map`], encodes inputs and
//! decodes results, and folds them.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use colony_core::wire::{DirectiveEvent, SubmitTask, Submitted, TaskDone};
use colony_core::{TaskError, TaskId, TaskState};
use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, FuturesUnordered};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::{Client, Error, Result};

/// Default most tasks of a directive unfinished at once.
pub const DEFAULT_WINDOW: usize = 256;
/// Silence on the channel, with tasks out, after which they are read.
const RECONCILE_AFTER: Duration = Duration::from_secs(15);
/// A channel with no line (not even a ping) for this long is broken.
const STREAM_IDLE: Duration = Duration::from_secs(30);
/// Submissions and result reads tried this many times on transport
/// errors and 503/429.
const RETRIES: u32 = 10;

/// How a directive runs its tasks.
#[derive(Debug, Clone)]
pub struct DirectiveOptions {
    /// The directive id (1 to 64 of `A-Z a-z 0-9 _ -`); a fresh one when
    /// `None`.
    pub id: Option<String>,
    /// Most tasks unfinished at once (submitted and not yet heard of).
    pub window: usize,
    /// Prefix of the idempotency keys of inputs without their own key;
    /// the directive id when `None`. Reusing a prefix reuses the tasks of
    /// an earlier run with the same inputs.
    pub key_prefix: Option<String>,
    /// Attempts per task, overriding the function's retry policy.
    pub max_attempts: Option<u32>,
    /// Timeout of each attempt, overriding the function's.
    pub timeout: Option<Duration>,
    /// Priority of the tasks among queued ones.
    pub priority: Option<i32>,
}

impl Default for DirectiveOptions {
    fn default() -> Self {
        Self {
            id: None,
            window: DEFAULT_WINDOW,
            key_prefix: None,
            max_attempts: None,
            timeout: None,
            priority: None,
        }
    }
}

/// One input of a raw directive.
#[derive(Debug, Clone)]
pub struct Input {
    /// What the function reads.
    pub bytes: Bytes,
    /// Its idempotency key; `<prefix>:<n>` when `None`.
    pub key: Option<String>,
    /// How errors name it; `input #<n>` and a preview when `None`.
    pub label: Option<String>,
}

impl Input {
    /// An input with the default key and label.
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Self {
            bytes: bytes.into(),
            key: None,
            label: None,
        }
    }
}

/// Which task of a directive an outcome belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tag {
    /// The `n`th input (from 0).
    Input(u64),
    /// A combination of the results of inputs `start..end`.
    Combine(u64, u64),
}

impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tag::Input(n) => write!(f, "{n}"),
            Tag::Combine(s, e) => write!(f, "c{s}-{e}"),
        }
    }
}

/// How far a directive got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Tasks submitted (including reused ones).
    pub submitted: u64,
    /// Tasks that succeeded.
    pub succeeded: u64,
    /// Tasks that failed, died or were cancelled.
    pub failed: u64,
    /// Tasks an abort cancelled (or found ended meanwhile).
    pub cancelled: u64,
    /// Submissions that found an existing task by its key.
    pub reused: u64,
    /// Tasks submitted and not yet ended.
    pub in_flight: u64,
}

/// Stops a running directive from elsewhere: it cancels its tasks and
/// returns [`Error::Aborted`].
#[derive(Debug, Clone, Default)]
pub struct AbortHandle(Arc<(AtomicBool, Notify)>);

impl AbortHandle {
    /// Aborts the directive.
    pub fn abort(&self) {
        self.0.0.store(true, Ordering::Release);
        self.0.1.notify_waiters();
        self.0.1.notify_one();
    }

    /// Whether it was aborted.
    pub fn is_aborted(&self) -> bool {
        self.0.0.load(Ordering::Acquire)
    }

    async fn aborted(&self) {
        while !self.is_aborted() {
            self.0.1.notified().await;
        }
    }
}

/// A task to submit.
#[derive(Debug, Clone)]
struct Job {
    tag: Tag,
    function: Arc<str>,
    input: Bytes,
    key: String,
    label: Arc<str>,
}

enum Step {
    /// A submission answered; the channel's generation when it was sent.
    Submitted(Job, Result<Submitted>, u64),
    /// A task's outcome, read rather than heard.
    Read(TaskId, Result<Bytes>),
    /// A task read and found unfinished.
    Unfinished(TaskId),
    /// A large result, fetched.
    Fetched(Job, Result<Bytes>),
}

enum Feed {
    Done(TaskDone),
    /// The channel broke and is back: what ended meanwhile was not heard.
    Reconnected,
    Alive,
}

/// A running directive over raw bytes: see the module docs. Typed
/// directives are built with [`Client::map`].
pub struct Directive {
    client: Client,
    id: String,
    options: DirectiveOptions,
    prefix: String,
    function: Arc<str>,
    inputs: Option<BoxStream<'static, Result<Input>>>,
    next_index: u64,
    queue: VecDeque<Job>,
    feed: mpsc::UnboundedReceiver<Feed>,
    reader: tokio::task::JoinHandle<()>,
    submitting: usize,
    /// Large results being fetched: ended, not yet returned.
    fetching: usize,
    in_flight: HashMap<TaskId, Job>,
    reading: HashSet<TaskId>,
    /// Tasks of other directives (found by their key): read, not heard.
    foreign: HashSet<TaskId>,
    /// Reconnections of the channel so far.
    generation: u64,
    /// When a task last ended (or the directive last submitted): after
    /// `RECONCILE_AFTER` of nothing, the tasks out are read.
    last_progress: tokio::time::Instant,
    early: HashMap<TaskId, TaskDone>,
    pending: FuturesUnordered<BoxFuture<'static, Step>>,
    ready: VecDeque<(Tag, Result<Bytes>)>,
    abort: AbortHandle,
    stats: Stats,
}

impl std::fmt::Debug for Directive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directive")
            .field("id", &self.id)
            .field("function", &self.function)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Drop for Directive {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]);
    let more = if bytes.len() > 80 { "…" } else { "" };
    format!("{:?}{more}", text.trim_end())
}

impl Directive {
    /// Leases the directive's channel, then returns the directive, ready
    /// to submit `inputs` to `function` (`name` or `name@rev`) as
    /// [`Directive::next`] is polled.
    pub async fn open(
        client: &Client,
        function: &str,
        inputs: BoxStream<'static, Result<Input>>,
        options: DirectiveOptions,
    ) -> Result<Self> {
        let id = options
            .id
            .clone()
            .unwrap_or_else(|| format!("d{}", TaskId::generate()));
        if !colony_core::wire::valid_directive(&id) {
            return Err(Error::Protocol {
                url: client.base().to_owned(),
                reason: format!("directive id {id:?}: must be 1 to 64 of A-Z a-z 0-9 _ -"),
            });
        }
        let (tx, feed) = mpsc::unbounded_channel();
        let (opened_tx, opened) = oneshot::channel();
        let reader = tokio::spawn(read_channel(client.clone(), id.clone(), tx, opened_tx));
        match opened.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(Error::Protocol {
                    url: client.base().to_owned(),
                    reason: "the directive channel closed before it opened".into(),
                });
            }
        }
        let window = options.window.max(1);
        Ok(Self {
            client: client.clone(),
            prefix: options.key_prefix.clone().unwrap_or_else(|| id.clone()),
            id,
            options: DirectiveOptions { window, ..options },
            function: Arc::from(function),
            inputs: Some(inputs),
            next_index: 0,
            queue: VecDeque::new(),
            feed,
            reader,
            submitting: 0,
            fetching: 0,
            in_flight: HashMap::new(),
            reading: HashSet::new(),
            foreign: HashSet::new(),
            generation: 0,
            last_progress: tokio::time::Instant::now(),
            early: HashMap::new(),
            pending: FuturesUnordered::new(),
            ready: VecDeque::new(),
            abort: AbortHandle::default(),
            stats: Stats::default(),
        })
    }

    /// The directive id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How far it got.
    pub fn stats(&self) -> Stats {
        Stats {
            in_flight: self.busy() as u64,
            ..self.stats
        }
    }

    /// A handle that aborts this directive from elsewhere.
    pub fn abort_handle(&self) -> AbortHandle {
        self.abort.clone()
    }

    /// Aborts on `abort` (made before the directive opened).
    pub(crate) fn set_abort(&mut self, abort: AbortHandle) {
        self.abort = abort;
    }

    /// Submits one more task, of `function`, ahead of the remaining
    /// inputs (the remote fold's combinations).
    pub fn push(&mut self, tag: Tag, function: Arc<str>, input: Bytes, label: String) {
        self.queue.push_back(Job {
            tag,
            key: format!("{}:{tag}:{}", self.prefix, key_digest(&function, &input)),
            function,
            input,
            label: Arc::from(label),
        });
    }

    fn busy(&self) -> usize {
        self.submitting + self.fetching + self.in_flight.len()
    }

    fn job(&mut self, input: Input) -> Job {
        let n = self.next_index;
        self.next_index += 1;
        let tag = Tag::Input(n);
        Job {
            tag,
            key: input.key.unwrap_or_else(|| {
                let d = key_digest(&self.function, &input.bytes);
                format!("{}:{tag}:{d}", self.prefix)
            }),
            label: Arc::from(
                input
                    .label
                    .unwrap_or_else(|| format!("input #{n} {}", preview(&input.bytes))),
            ),
            function: self.function.clone(),
            input: input.bytes,
        }
    }

    fn submit(&mut self, job: Job) {
        self.submitting += 1;
        self.stats.submitted += 1;
        let client = self.client.clone();
        let generation = self.generation;
        let (input, input_base64) = match std::str::from_utf8(&job.input) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(&job.input)),
            ),
        };
        let task = SubmitTask {
            function: job.function.to_string(),
            input,
            input_base64,
            idempotency_key: Some(job.key.clone()),
            max_attempts: self.options.max_attempts,
            timeout_ms: self.options.timeout.map(|t| t.as_millis().max(1) as u64),
            priority: self.options.priority,
            files: None,
            directive: Some(self.id.clone()),
        };
        self.pending.push(
            async move {
                let answer = retrying(|| client.submit(&task)).await;
                Step::Submitted(job, answer, generation)
            }
            .boxed(),
        );
    }

    /// Reads a task and, when it ended, its outcome; `wait` long-polls.
    fn read(&mut self, id: TaskId, wait: Option<Duration>) {
        if !self.reading.insert(id.clone()) {
            return;
        }
        let client = self.client.clone();
        self.pending.push(
            async move {
                let info = match wait {
                    Some(w) => client.wait_task(id.as_str(), w).await,
                    None => client.task(id.as_str()).await,
                };
                match info {
                    Ok(info) if info.state == TaskState::Succeeded => {
                        let out = fetch(&client, &id).await;
                        Step::Read(id, out)
                    }
                    Ok(info) if info.state.is_terminal() => {
                        let failed = failed(&id, info.state, info.error);
                        Step::Read(id, Err(failed))
                    }
                    // Unfinished, or unreadable now: read again later.
                    _ => Step::Unfinished(id),
                }
            }
            .boxed(),
        );
    }

    fn finish(&mut self, job: Job, outcome: Result<Bytes>) {
        match &outcome {
            Ok(_) => self.stats.succeeded += 1,
            Err(_) => self.stats.failed += 1,
        }
        let outcome = outcome.map_err(|e| match e {
            Error::TaskFailed {
                task, state, error, ..
            } => Error::TaskFailed {
                input: job.label.to_string(),
                task,
                state,
                error,
            },
            other => Error::Rejected {
                input: job.label.to_string(),
                source: Box::new(other),
            },
        });
        self.ready.push_back((job.tag, outcome));
    }

    fn done(&mut self, done: TaskDone) {
        self.last_progress = tokio::time::Instant::now();
        self.foreign.remove(&done.id);
        let Some(job) = self.in_flight.remove(&done.id) else {
            if self.submitting > 0 {
                self.early.insert(done.id.clone(), done);
            }
            return;
        };
        self.reading.remove(&done.id);
        match done.state {
            TaskState::Succeeded => match done.output_base64 {
                Some(b64) => {
                    let out = base64::engine::general_purpose::STANDARD
                        .decode(b64.as_bytes())
                        .map(Bytes::from)
                        .map_err(|e| Error::Protocol {
                            url: self.client.base().to_owned(),
                            reason: format!("a result that is not base64: {e}"),
                        });
                    self.finish(job, out);
                }
                None if done.output_size.unwrap_or(0) == 0 => self.finish(job, Ok(Bytes::new())),
                None => {
                    let (client, id) = (self.client.clone(), done.id.clone());
                    self.fetching += 1;
                    self.pending.push(
                        async move {
                            let out = fetch(&client, &id).await;
                            Step::Fetched(job, out)
                        }
                        .boxed(),
                    );
                }
            },
            state => self.finish(job, Err(failed(&done.id, state, done.error))),
        }
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::Submitted(job, Ok(s), generation) => {
                self.submitting -= 1;
                if !s.created {
                    self.stats.reused += 1;
                }
                let id = s.id.clone();
                if let Some(other) = self.in_flight.get(&id) {
                    // Two inputs with one key are one task: refuse the
                    // second rather than lose one of the two results.
                    let reason = format!(
                        "its idempotency key {:?} is also the key of {}",
                        job.key, other.label
                    );
                    let url = self.client.base().to_owned();
                    self.finish(job, Err(Error::Protocol { url, reason }));
                } else {
                    self.in_flight.insert(id.clone(), job);
                    if let Some(done) = self.early.remove(&id) {
                        self.done(done);
                    } else if !s.created {
                        // It may belong to another directive, whose
                        // channel this one does not hear: long-polled
                        // until it ends.
                        self.foreign.insert(id.clone());
                        self.read(id, Some(crate::MAX_POLL_WAIT));
                    } else if generation != self.generation {
                        // Sent before the channel broke: its end may have
                        // fallen in the gap.
                        self.read(id, None);
                    }
                }
                if self.submitting == 0 {
                    self.early.clear();
                }
            }
            Step::Submitted(job, Err(e), _) => {
                self.submitting -= 1;
                if self.submitting == 0 {
                    self.early.clear();
                }
                self.finish(job, Err(e));
            }
            Step::Read(id, outcome) => {
                self.reading.remove(&id);
                self.foreign.remove(&id);
                if let Some(job) = self.in_flight.remove(&id) {
                    self.last_progress = tokio::time::Instant::now();
                    self.finish(job, outcome);
                }
            }
            Step::Unfinished(id) => {
                self.reading.remove(&id);
                if self.foreign.contains(&id) && self.in_flight.contains_key(&id) {
                    self.read(id, Some(crate::MAX_POLL_WAIT));
                }
            }
            Step::Fetched(job, outcome) => {
                self.fetching -= 1;
                self.finish(job, outcome);
            }
        }
    }

    /// Reads every task still out: the channel may have missed them.
    fn reconcile(&mut self) {
        self.last_progress = tokio::time::Instant::now();
        let ids: Vec<TaskId> = self.in_flight.keys().cloned().collect();
        for id in ids {
            self.read(id, None);
        }
    }

    /// The next task to end, with its outcome: its output, or why it
    /// failed ([`Error::TaskFailed`], or [`Error::Rejected`] when it could
    /// not be submitted). `None` once every input (and every pushed task)
    /// has ended. `Some(Err(_))` when the directive itself cannot go on
    /// (it was aborted; the channel cannot be reached).
    pub async fn next(&mut self) -> Option<Result<(Tag, Result<Bytes>)>> {
        loop {
            if let Some(out) = self.ready.pop_front() {
                return Some(Ok(out));
            }
            if self.abort.is_aborted() {
                self.abort().await;
                return Some(Err(Error::Aborted {
                    directive: self.id.clone(),
                }));
            }
            while self.busy() < self.options.window {
                match self.queue.pop_front() {
                    Some(job) => self.submit(job),
                    None => break,
                }
            }
            let want_input = self.busy() < self.options.window && self.inputs.is_some();
            if self.busy() == 0 && self.queue.is_empty() && self.inputs.is_none() {
                return None;
            }
            let abort = self.abort.clone();
            let quiet = self.in_flight.is_empty();
            let reconcile_at = self.last_progress + RECONCILE_AFTER;
            tokio::select! {
                biased;
                () = abort.aborted() => {}
                feed = self.feed.recv() => match feed {
                    Some(Feed::Done(done)) => self.done(done),
                    Some(Feed::Reconnected) => {
                        self.generation += 1;
                        self.reconcile();
                    }
                    Some(Feed::Alive) => {}
                    None => {
                        return Some(Err(Error::Protocol {
                            url: self.client.base().to_owned(),
                            reason: "the directive channel ended".into(),
                        }));
                    }
                },
                Some(step) = self.pending.next(), if !self.pending.is_empty() => self.step(step),
                input = next_input(&mut self.inputs), if want_input => match input {
                    Some(Ok(input)) => {
                        let job = self.job(input);
                        if self.in_flight.is_empty() {
                            self.last_progress = tokio::time::Instant::now();
                        }
                        self.submit(job);
                    }
                    Some(Err(e)) => {
                        self.abort().await;
                        return Some(Err(e));
                    }
                    None => self.inputs = None,
                },
                () = tokio::time::sleep_until(reconcile_at), if !quiet => self.reconcile(),
            }
        }
    }

    /// Runs the directive to its end and folds its results with the
    /// remote function `combine`, as they arrive: two neighbouring ranges
    /// of results (`init` first, when given) are combined by one more task
    /// of the directive, whose input `pair(left, right)` makes, so
    /// `combine` need only be associative. `each` sees every result of an
    /// input first and may replace it. Returns the fold (`None`: no input
    /// and no `init`). A failed task, or an error of `pair` or `each`,
    /// aborts the directive.
    pub async fn fold(
        &mut self,
        combine: &str,
        init: Option<Bytes>,
        mut pair: impl FnMut(Bytes, Bytes) -> Result<Bytes>,
        mut each: impl FnMut(u64, Bytes) -> Result<Bytes>,
    ) -> Result<Option<Bytes>> {
        let function: Arc<str> = Arc::from(combine);
        let base = u64::from(init.is_some());
        let mut ranges = Ranges::default();
        if let Some(init) = init {
            let _ = ranges.add(0, 1, init);
        }
        let mut n = 0;
        while let Some(next) = self.next().await {
            let (tag, outcome) = next?;
            let step = outcome.and_then(|out| match tag {
                Tag::Input(i) => {
                    n = n.max(i + 1);
                    Ok((i + base, i + base + 1, each(i, out)?))
                }
                Tag::Combine(s, e) => Ok((s, e, out)),
            });
            let (start, end, out) = match step {
                Ok(x) => x,
                Err(e) => {
                    self.abort().await;
                    return Err(e);
                }
            };
            if let Some(p) = ranges.add(start, end, out) {
                let input = match pair(p.left, p.right) {
                    Ok(b) => b,
                    Err(e) => {
                        self.abort().await;
                        return Err(e);
                    }
                };
                let label = format!(
                    "the combination of the results of inputs #{}..=#{}",
                    p.start.saturating_sub(base),
                    p.end - 1 - base
                );
                self.push(Tag::Combine(p.start, p.end), function.clone(), input, label);
            }
        }
        Ok(ranges.whole(n + base))
    }

    /// Stops: submits nothing more and cancels every task of the
    /// directive that has not ended (those being submitted once they are).
    pub async fn abort(&mut self) {
        self.inputs = None;
        self.queue.clear();
        self.abort.0.0.store(true, Ordering::Release);
        // Only submissions are waited for, not reads (long polls).
        while self.submitting > 0 {
            match self.pending.next().await {
                Some(step @ Step::Submitted(..)) => self.step(step),
                Some(Step::Fetched(..)) => self.fetching -= 1,
                Some(_) => {}
                None => break,
            }
        }
        self.fetching = 0;
        let out: Vec<TaskId> = self.in_flight.keys().cloned().collect();
        self.pending = FuturesUnordered::new();
        let client = self.client.clone();
        futures_util::stream::iter(out)
            .for_each_concurrent(64, |id| {
                let client = client.clone();
                async move {
                    // Finished meanwhile (409) or gone (404): nothing to do.
                    let _ = client.cancel_task(id.as_str()).await;
                }
            })
            .await;
        self.stats.cancelled += self.in_flight.len() as u64;
        self.in_flight.clear();
    }
}

async fn next_input(
    inputs: &mut Option<BoxStream<'static, Result<Input>>>,
) -> Option<Result<Input>> {
    match inputs {
        Some(s) => s.next().await,
        None => None,
    }
}

/// 16 bytes of sha256 of `name`, a zero byte and `bytes`, in hex: how
/// idempotency keys name what they run (a function and its input, or an
/// input's own name and content).
pub fn key_digest(name: &str, bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(name.as_bytes());
    h.update([0]);
    h.update(bytes);
    hex::encode(&h.finalize()[..16])
}

/// A succeeded task's result, read again on transient errors.
async fn fetch(client: &Client, id: &TaskId) -> Result<Bytes> {
    retrying(|| client.task_result(id.as_str())).await
}

/// `call`, made again with a growing delay on transient errors, up to
/// `RETRIES` times in all.
async fn retrying<T, F: std::future::Future<Output = Result<T>>>(
    mut call: impl FnMut() -> F,
) -> Result<T> {
    let mut delay = Duration::from_millis(100);
    let mut tries = 1;
    loop {
        match call().await {
            Err(e) if tries < RETRIES && transient(&e) => {
                tries += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            out => return out,
        }
    }
}

fn failed(id: &TaskId, state: TaskState, error: Option<TaskError>) -> Error {
    Error::TaskFailed {
        input: String::new(),
        task: id.to_string(),
        state,
        error: error.map(Box::new),
    }
}

/// Worth submitting again: the server may not have seen it, or asked to
/// come back.
fn transient(e: &Error) -> bool {
    match e {
        Error::Transport { .. } => true,
        Error::Api { status, .. } => *status == 503 || *status == 429,
        _ => false,
    }
}

/// Keeps the directive's channel open, reconnecting when it breaks, and
/// feeds what it hears to the directive.
async fn read_channel(
    client: Client,
    id: String,
    tx: mpsc::UnboundedSender<Feed>,
    opened: oneshot::Sender<Result<()>>,
) {
    let mut opened = Some(opened);
    let mut delay = Duration::from_millis(100);
    loop {
        let resp = match client.directive_events(&id).await {
            Ok(resp) => resp,
            Err(e) => {
                if let Some(o) = opened.take() {
                    let _ = o.send(Err(e));
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let mut lines = Lines::new(resp);
        let opened_at = Instant::now();
        loop {
            let line = match tokio::time::timeout(STREAM_IDLE, lines.next()).await {
                Ok(Ok(Some(line))) => line,
                // Ended, broke, or went silent: reconnect.
                _ => break,
            };
            let Ok(event) = serde_json::from_slice::<DirectiveEvent>(&line) else {
                continue;
            };
            let feed = match event {
                DirectiveEvent::Open { .. } => match opened.take() {
                    Some(o) => {
                        let _ = o.send(Ok(()));
                        Feed::Alive
                    }
                    None => Feed::Reconnected,
                },
                DirectiveEvent::Done(done) => Feed::Done(done),
                DirectiveEvent::Ping => Feed::Alive,
            };
            if tx.send(feed).is_err() {
                return;
            }
        }
        if tx.is_closed() {
            return;
        }
        // A stream that ends at once (a draining worker) is not retried
        // at full speed.
        if opened_at.elapsed() >= Duration::from_secs(5) {
            delay = Duration::from_millis(100);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// The lines of a streamed response body.
struct Lines {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Lines {
    fn new(resp: reqwest::Response) -> Self {
        Self {
            resp,
            buf: Vec::new(),
        }
    }

    async fn next(&mut self) -> std::result::Result<Option<Vec<u8>>, reqwest::Error> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let rest = self.buf.split_off(i + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                line.pop();
                return Ok(Some(line));
            }
            match self.resp.chunk().await? {
                Some(chunk) => self.buf.extend_from_slice(&chunk),
                None => return Ok(None),
            }
        }
    }
}

/// Results of a range of inputs, combined only with their neighbours, so
/// an associative operation folds them in any order of arrival.
#[derive(Debug)]
pub(crate) struct Ranges<V> {
    by_start: BTreeMap<u64, (u64, V)>,
    by_end: HashMap<u64, u64>,
}

impl<V> Default for Ranges<V> {
    fn default() -> Self {
        Self {
            by_start: BTreeMap::new(),
            by_end: HashMap::new(),
        }
    }
}

/// Two neighbouring ranges to combine: `left` covers `start..mid`, `right`
/// `mid..end`.
pub(crate) struct Pair<V> {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) left: V,
    pub(crate) right: V,
}

impl<V> Ranges<V> {
    /// Adds the result of `start..end`; returns it with a free neighbour
    /// to combine with, if there is one (both are then taken out).
    pub(crate) fn add(&mut self, start: u64, end: u64, v: V) -> Option<Pair<V>> {
        if let Some(s0) = self.by_end.remove(&start) {
            let (_, left) = self.by_start.remove(&s0).expect("indexed");
            return Some(Pair {
                start: s0,
                end,
                left,
                right: v,
            });
        }
        if let Some((e2, right)) = self.by_start.remove(&end) {
            self.by_end.remove(&e2);
            return Some(Pair {
                start,
                end: e2,
                left: v,
                right,
            });
        }
        self.by_start.insert(start, (end, v));
        self.by_end.insert(end, start);
        None
    }

    /// Adds the result of `start..end` and combines it with `f` as far as
    /// its free neighbours allow.
    pub(crate) fn add_with(&mut self, start: u64, end: u64, v: V, mut f: impl FnMut(V, V) -> V) {
        let mut next = self.add(start, end, v);
        while let Some(p) = next {
            next = self.add(p.start, p.end, f(p.left, p.right));
        }
    }

    /// The one result covering `0..end`, once everything is combined.
    pub(crate) fn whole(&mut self, end: u64) -> Option<V> {
        match self.by_start.first_key_value() {
            Some((0, (e, _))) if *e == end && self.by_start.len() == 1 => {
                self.by_end.clear();
                self.by_start.pop_first().map(|(_, (_, v))| v)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// String concatenation is associative, not commutative: adjacency
    /// keeps the order whatever the arrival order.
    #[test]
    fn ranges_fold_in_input_order_whatever_the_arrival_order() {
        let words = ["a", "b", "c", "d", "e", "f", "g"];
        for seed in 0..50u64 {
            let mut order: Vec<usize> = (0..words.len()).collect();
            let mut rng = fastrand::Rng::with_seed(seed);
            rng.shuffle(&mut order);
            let mut ranges = Ranges::default();
            let mut combines = 0;
            for i in order {
                let (s, e) = (i as u64, i as u64 + 1);
                ranges.add_with(s, e, words[i].to_owned(), |a, b| {
                    combines += 1;
                    a + &b
                });
            }
            assert_eq!(ranges.whole(7).as_deref(), Some("abcdefg"), "seed {seed}");
            assert_eq!(combines, 6);
        }
    }

    #[test]
    fn ranges_are_not_whole_while_a_gap_remains() {
        let mut ranges = Ranges::default();
        assert!(ranges.add(0, 1, 1).is_none());
        assert!(ranges.add(2, 3, 3).is_none());
        assert_eq!(ranges.whole(3), None);
        let p = ranges.add(1, 2, 2).expect("a neighbour");
        assert_eq!((p.start, p.end, p.left, p.right), (0, 2, 1, 2));
    }

    #[test]
    fn previews_are_short_and_quoted() {
        assert_eq!(preview(b"7"), "\"7\"");
        let long = vec![b'x'; 200];
        assert!(preview(&long).ends_with('…'));
        assert!(preview(&long).len() < 100);
    }
}
