//! The worker facade.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use std::collections::HashMap;

use colony_core::wire::{
    Deployed, EngineCounts, FunctionInfo, InvocationCounts, Status, Submitted, TaskCounts,
    TaskInfo, TaskList, WorkerState,
};
use colony_core::{FunctionName, FunctionRef, Manifest, RevisionId, TaskError, TaskId, TaskState};
use colony_engine::{CancellationToken, Engine, EngineConfig};
use parking_lot::Mutex;
use tokio::sync::OnceCell;
use tracing::{info, warn};

use crate::blobs::Blobs;
use crate::builtin::BuiltinExecutor;
use crate::config::WorkerConfig;
use crate::error::{Error, Result};
use crate::executor::{Call, ExecutorRegistry, PrepareError, Runnable};
use crate::registry::{FunctionEntry, Index, RevisionEntry};
use crate::scheduler::Scheduler;
use crate::store::{RevisionRow, Store, now_ms};
use crate::tasks::{Live, Outcome, Submission, Tasks};
use crate::taskstore::{ListQuery, TaskStore};
use crate::wasm::WasmExecutor;

/// The result of a successful invocation.
#[derive(Debug, Clone)]
pub struct Invoked {
    /// The revision that ran.
    pub revision: RevisionId,
    /// What it produced.
    pub output: Bytes,
    /// How long it ran (not counting time waiting for a slot).
    pub duration: Duration,
}

#[derive(Debug, Default)]
struct Counters {
    succeeded: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
}

/// One Colony worker on the embedded store: the function registry, the
/// executors, the scheduler and the counters behind `/status`.
#[derive(Debug)]
pub struct Worker {
    config: WorkerConfig,
    engine: Engine,
    executors: ExecutorRegistry,
    store: Arc<Mutex<Store>>,
    blobs: Blobs,
    index: Index,
    scheduler: Scheduler,
    /// Serializes registry writes (deploy, default switch, delete).
    write_lock: tokio::sync::Mutex<()>,
    counters: Counters,
    started: Instant,
    draining: AtomicBool,
    tasks: Arc<Tasks>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Held for the worker's life: one process per data directory.
    _lock: std::fs::File,
    /// Per-function concurrency limits: (limit, permits).
    gates: Mutex<HashMap<FunctionName, Arc<Gate>>>,
}

/// A slot under a function's own concurrency limit; freeing it lets
/// parked tasks of that function run.
#[derive(Debug)]
struct GatePermit {
    gate: Arc<Gate>,
    tasks: Arc<Tasks>,
}

impl Drop for GatePermit {
    fn drop(&mut self) {
        // Free the slot first, so a parked task woken now can take it.
        self.gate.leave();
        self.tasks.unpark();
    }
}

/// How many invocations of one function run now, across its revisions.
/// Each invocation is admitted under the limit of the revision it runs,
/// so revisions with different limits never oversubscribe either.
#[derive(Debug, Default)]
struct Gate {
    running: std::sync::atomic::AtomicUsize,
    freed: tokio::sync::Notify,
}

impl Gate {
    fn try_enter(&self, limit: u32) -> bool {
        let limit = limit as usize;
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    async fn enter(&self, limit: u32) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.try_enter(limit) {
                return;
            }
            freed.await;
        }
    }

    fn leave(&self) {
        self.running.fetch_sub(1, Ordering::AcqRel);
        self.freed.notify_waiters();
    }
}

/// This worker's name in task records: `host:pid`.
fn worker_id() -> Arc<str> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    Arc::from(format!("{host}:{}", std::process::id()))
}

impl Worker {
    /// Opens the worker on its data directory with the default executors
    /// (`wasm`, `builtin`) and loads the registry.
    pub async fn open(config: WorkerConfig) -> Result<Arc<Self>> {
        Self::open_with(config, |_, _| {}).await
    }

    /// Like [`Worker::open`], letting `extend` register more executors.
    pub async fn open_with(
        config: WorkerConfig,
        extend: impl FnOnce(&mut ExecutorRegistry, &Engine),
    ) -> Result<Arc<Self>> {
        config.validate().map_err(Error::Internal)?;
        let data = config.data_dir.clone();
        std::fs::create_dir_all(&data).map_err(|e| {
            Error::Internal(format!(
                "cannot create data directory {}: {e}",
                data.display()
            ))
        })?;
        // One process per data directory: a second would share the store
        // and delete code the first still serves.
        let lock_path = data.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::Internal(format!("cannot open {}: {e}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Internal(format!(
                    "the data directory {} is in use by another colony process",
                    data.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::Internal(format!(
                    "cannot lock {}: {e}",
                    lock_path.display()
                )));
            }
        }
        let engine = Engine::new(EngineConfig {
            cache_dir: Some(data.join("compiled")),
            instances: config.instances,
            max_memory_bytes: config.max_memory_bytes,
            epoch_tick: config.epoch_tick,
        })
        .map_err(Error::internal)?;
        let mut executors = ExecutorRegistry::new();
        executors.register("wasm", Arc::new(WasmExecutor::new(engine.clone())));
        executors.register("builtin", Arc::new(BuiltinExecutor::default()));
        extend(&mut executors, &engine);
        let (store, rows) = tokio::task::spawn_blocking(move || -> Result<_> {
            let store = Store::open(&data.join("colony.db"))?;
            let rows = store.load_all()?;
            Ok((store, rows))
        })
        .await
        .map_err(Error::internal)??;
        let blobs = Blobs::open(&config.data_dir.join("blobs"))?;
        let results = Blobs::open(&config.data_dir.join("results"))?;
        let scheduler = Scheduler::new(config.concurrency, config.queue, config.max_queue_wait);
        let index = Index::load(rows);
        let db = config.data_dir.join("colony.db");
        let ttl_ms = config.tasks.ttl.as_millis() as i64;
        let policies: HashMap<(String, String), bool> = index
            .all()
            .iter()
            .flat_map(|f| {
                f.revisions.iter().map(|r| {
                    let retries = r
                        .row
                        .manifest
                        .retry
                        .retries(Some(colony_core::RetryOn::WorkerLost));
                    ((f.name.to_string(), r.row.id.to_string()), retries)
                })
            })
            .collect();
        let id = worker_id();
        let metrics = crate::metrics::Metrics::new(&id);
        let store_metrics = metrics.clone();
        let (task_store, queued, recovered) = tokio::task::spawn_blocking(move || {
            let retries_lost = |f: &str, r: &str| {
                policies
                    .get(&(f.to_owned(), r.to_owned()))
                    .copied()
                    .unwrap_or(false)
            };
            TaskStore::open(&db, ttl_ms, retries_lost, Some(store_metrics))
        })
        .await
        .map_err(Error::internal)??;
        if recovered > 0 {
            warn!(
                tasks = recovered,
                "recovered tasks left running by a previous process"
            );
        }
        let tasks = Arc::new(Tasks::new(
            task_store,
            queued,
            results,
            config.tasks.clone(),
            id,
            metrics.clone(),
        ));
        let worker = Arc::new(Self {
            engine,
            executors,
            store: Arc::new(Mutex::new(store)),
            blobs,
            index,
            scheduler,
            write_lock: tokio::sync::Mutex::new(()),
            counters: Counters::default(),
            started: Instant::now(),
            draining: AtomicBool::new(false),
            tasks,
            metrics,
            gates: Mutex::new(HashMap::new()),
            _lock: lock,
            config,
        });
        tokio::spawn(worker.clone().dispatch());
        tokio::spawn(sweep(
            Arc::downgrade(&worker.tasks),
            worker.config.tasks.sweep_interval,
        ));
        let (functions, revisions) = worker.index.counts();
        info!(functions, revisions, data_dir = %worker.config.data_dir.display(), "registry loaded");
        Ok(worker)
    }

    /// Prepares every function's default revision in the background, so
    /// first calls after a start do not pay for loading.
    pub fn warm_up(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            for f in me.index.all() {
                if let Ok(rev) = f.resolve(None)
                    && let Err(e) = me.prepared(&rev).await
                {
                    warn!(function = %f.name, cause = %e, "cannot prepare default revision");
                }
            }
        });
    }

    /// The worker's configuration.
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// The executor names this worker knows.
    pub fn executors(&self) -> Vec<String> {
        self.executors.names()
    }

    async fn prepared(&self, rev: &Arc<RevisionEntry>) -> Result<Arc<dyn Runnable>> {
        rev.prepared
            .get_or_try_init(|| async {
                let executor = self
                    .executors
                    .get(&rev.row.manifest.executor)
                    .cloned()
                    .ok_or_else(|| {
                        Error::Internal(format!(
                            "executor {:?} is not registered",
                            rev.row.manifest.executor
                        ))
                    })?;
                let blobs = self.blobs.clone();
                let rev = rev.clone();
                tokio::task::spawn_blocking(move || {
                    let code = blobs.get(&rev.row.code_sha256).map_err(|e| {
                        Error::Internal(format!(
                            "code of {}@{} is unreadable: {e}",
                            rev.function, rev.row.id
                        ))
                    })?;
                    executor
                        .prepare(&rev.function, &code, &rev.row.manifest)
                        .map_err(|e| {
                            Error::Internal(format!(
                                "cannot prepare {}@{}: {e}",
                                rev.function, rev.row.id
                            ))
                        })
                })
                .await
                .map_err(Error::internal)?
            })
            .await
            .cloned()
            .map_err(|e| {
                // The code may be gone because the function was deleted
                // while this call waited: say so, not "internal".
                let target = FunctionRef {
                    name: rev.function.clone(),
                    rev: Some(rev.row.id.to_string()),
                };
                match self.index.resolve(&target) {
                    Err(gone) if matches!(e, Error::Internal(_)) => gone,
                    _ => e,
                }
            })
    }

    /// Runs one invocation of `target` with `input`, waiting for a slot in
    /// the bounded queue.
    pub async fn invoke(&self, target: &FunctionRef, input: Bytes) -> Result<Invoked> {
        self.invoke_cancellable(target, input, None).await
    }

    /// Like [`Worker::invoke`], stopping the guest when `cancel` fires.
    pub async fn invoke_cancellable(
        &self,
        target: &FunctionRef,
        input: Bytes,
        cancel: Option<&CancellationToken>,
    ) -> Result<Invoked> {
        let rev = self.index.resolve(target)?;
        // One deadline for both waits (the function's own limit, then a
        // worker slot): a call waits at most `max_queue_wait` in all.
        let asked = Instant::now();
        let deadline = tokio::time::Instant::now() + self.config.max_queue_wait;
        // Every refusal (queue full, waited too long, draining) counts.
        let rejected = |e: Error| {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            self.metrics
                .invocation(rev.function.as_str(), "call", "rejected", None);
            e
        };
        let too_long = || {
            rejected(Error::Overloaded {
                retry_after: Duration::from_secs(1),
            })
        };
        let _gate = match rev.row.manifest.concurrency {
            0 => None,
            limit => {
                let gate = self.gate(&rev.function);
                if !gate.try_enter(limit) {
                    // Waiting at the function's limit is queueing too.
                    let place = self.scheduler.queue_place().map_err(rejected)?;
                    if tokio::time::timeout_at(deadline, gate.enter(limit))
                        .await
                        .is_err()
                    {
                        return Err(too_long());
                    }
                    drop(place);
                }
                Some(GatePermit {
                    gate,
                    tasks: self.tasks.clone(),
                })
            }
        };
        let _slot = match tokio::time::timeout_at(deadline, self.scheduler.acquire()).await {
            Ok(slot) => slot.map_err(rejected)?,
            Err(_elapsed) => return Err(too_long()),
        };
        self.metrics.queue_wait(asked.elapsed());
        let runnable = self.prepared(&rev).await?;
        let started = Instant::now();
        let result = runnable
            .run(Call {
                input,
                cancel,
                timeout_ms: None,
            })
            .await;
        let duration = started.elapsed();
        match result {
            Ok(output) => {
                self.counters.succeeded.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .invocation(rev.function.as_str(), "call", "succeeded", Some(duration));
                Ok(Invoked {
                    revision: rev.row.id.clone(),
                    output,
                    duration,
                })
            }
            Err(failure) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                self.metrics.invocation(
                    rev.function.as_str(),
                    "call",
                    failure.code().as_str(),
                    Some(duration),
                );
                Err(Error::Failed {
                    failure,
                    revision: rev.row.id.clone(),
                    duration,
                })
            }
        }
    }

    fn check_ceilings(&self, m: &Manifest) -> Result<()> {
        m.validate()
            .map_err(|e| Error::InvalidManifest(e.to_string()))?;
        let c = &self.config;
        if m.limits.timeout() > c.max_timeout {
            return Err(Error::InvalidManifest(format!(
                "timeout of {} ms exceeds this worker's ceiling of {} ms",
                m.limits.timeout_ms,
                c.max_timeout.as_millis()
            )));
        }
        if m.limits.memory_bytes > c.max_memory_bytes {
            return Err(Error::InvalidManifest(format!(
                "memory limit of {} bytes exceeds this worker's ceiling of {} bytes",
                m.limits.memory_bytes, c.max_memory_bytes
            )));
        }
        if m.limits.output_bytes > c.max_output_bytes {
            return Err(Error::InvalidManifest(format!(
                "output limit of {} bytes exceeds this worker's ceiling of {} bytes",
                m.limits.output_bytes, c.max_output_bytes
            )));
        }
        if self.executors.get(&m.executor).is_none() {
            return Err(Error::InvalidManifest(format!(
                "unknown executor {:?}; this worker has: {}",
                m.executor,
                self.executors.names().join(", ")
            )));
        }
        Ok(())
    }

    /// Deploys `code` with `manifest` as a revision of `name`. Identical
    /// code and manifest return the existing revision. The new revision
    /// becomes the default when `make_default` or when the function is new.
    /// The code is validated (compiled, for wasm) before anything is stored.
    pub async fn deploy(
        &self,
        name: FunctionName,
        code: Bytes,
        manifest: Manifest,
        make_default: bool,
    ) -> Result<Deployed> {
        if code.len() as u64 > self.config.max_code_bytes {
            return Err(Error::InvalidModule {
                reason: format!(
                    "code is {} bytes; this worker accepts at most {}",
                    code.len(),
                    self.config.max_code_bytes
                ),
            });
        }
        self.check_ceilings(&manifest)?;
        let id = RevisionId::compute(&code, &manifest);
        let _guard = self.write_lock.lock().await;

        if let Some(existing) = self.index.get(&name)
            && let Some(rev) = existing.revisions.iter().find(|r| r.row.id == id)
        {
            let number = rev.row.number;
            let is_default = existing.default_rev == id;
            if make_default && !is_default {
                self.persist_default(&existing, &id).await?;
            }
            return Ok(Deployed {
                function: name,
                revision: id,
                number,
                created: false,
                default: make_default || is_default,
            });
        }

        if self.index.get(&name).is_none() && self.index.counts().0 >= self.config.max_functions {
            return Err(Error::TooManyFunctions {
                limit: self.config.max_functions,
            });
        }
        let executor = self
            .executors
            .get(&manifest.executor)
            .cloned()
            .expect("checked above");
        let row = RevisionRow {
            id: id.clone(),
            number: 0,
            code_sha256: colony_core::revision::sha256_hex(&code),
            code_size: code.len() as u64,
            manifest,
            created_ms: now_ms(),
        };
        let (blobs, store, fname, row2) = (
            self.blobs.clone(),
            self.store.clone(),
            name.clone(),
            row.clone(),
        );
        let existing = self.index.get(&name);
        let make_default = make_default || existing.is_none();
        let (runnable, number) = tokio::task::spawn_blocking(move || -> Result<_> {
            let runnable =
                executor
                    .prepare(&fname, &code, &row2.manifest)
                    .map_err(|e| match e {
                        PrepareError::InvalidCode { reason } => Error::InvalidModule { reason },
                        PrepareError::Internal(m) => Error::Internal(m),
                    })?;
            blobs.put(&row2.code_sha256, &code)?;
            let number = store.lock().insert_revision(&fname, &row2, make_default)?;
            Ok((runnable, number))
        })
        .await
        .map_err(Error::internal)??;

        let prepared = OnceCell::new_with(Some(runnable));
        let entry = Arc::new(RevisionEntry {
            function: name.clone(),
            row: RevisionRow { number, ..row },
            prepared,
        });
        let now = now_ms();
        let mut f = match existing {
            Some(e) => (*e).clone(),
            None => FunctionEntry {
                name: name.clone(),
                default_rev: id.clone(),
                created_ms: now,
                updated_ms: now,
                revisions: Vec::new(),
            },
        };
        f.revisions.push(entry);
        if make_default {
            f.default_rev = id.clone();
        }
        f.updated_ms = now;
        self.index.put(f);
        info!(function = %name, revision = %id, number, default = make_default, "deployed");
        Ok(Deployed {
            function: name,
            revision: id,
            number,
            created: true,
            default: make_default,
        })
    }

    async fn persist_default(&self, f: &FunctionEntry, id: &RevisionId) -> Result<()> {
        let (store, name, id2) = (self.store.clone(), f.name.clone(), id.clone());
        tokio::task::spawn_blocking(move || store.lock().set_default(&name, &id2))
            .await
            .map_err(Error::internal)??;
        let mut next = f.clone();
        next.default_rev = id.clone();
        next.updated_ms = now_ms();
        self.index.put(next);
        info!(function = %f.name, revision = %id, "default revision switched");
        Ok(())
    }

    /// Makes the revision `rev` (id or unique prefix) the default of `name`.
    pub async fn set_default(&self, name: &FunctionName, rev: &str) -> Result<RevisionId> {
        let r = FunctionRef::parse(&format!("{name}@{rev}"))?;
        let _guard = self.write_lock.lock().await;
        let f = self.index.function(name)?;
        let target = f.resolve(r.rev.as_deref())?;
        if f.default_rev != target.row.id {
            self.persist_default(&f, &target.row.id).await?;
        }
        Ok(target.row.id.clone())
    }

    /// Deletes a function, its revisions, and code no other revision uses.
    pub async fn delete(&self, name: &FunctionName) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        self.index.function(name)?;
        let (store, n) = (self.store.clone(), name.clone());
        let orphaned = tokio::task::spawn_blocking(move || store.lock().delete_function(&n))
            .await
            .map_err(Error::internal)??;
        self.index.remove(name);
        self.gates.lock().remove(name);
        for sha in &orphaned {
            self.blobs.remove(sha);
            self.engine.forget(sha);
        }
        info!(function = %name, "deleted");
        Ok(())
    }

    /// Every function, sorted by name.
    pub fn functions(&self) -> Vec<FunctionInfo> {
        self.index.all().iter().map(|f| f.info()).collect()
    }

    /// One function.
    pub fn function(&self, name: &FunctionName) -> Result<FunctionInfo> {
        Ok(self.index.function(name)?.info())
    }

    /// Health and load.
    pub fn status(&self) -> Status {
        let (functions, revisions) = self.index.counts();
        let es = self.engine.stats();
        Status {
            state: self.state(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            functions,
            revisions,
            running: self.scheduler.running(),
            queued: self.scheduler.queued(),
            concurrency: self.scheduler.concurrency(),
            queue: self.scheduler.queue_limit(),
            invocations: InvocationCounts {
                succeeded: self.counters.succeeded.load(Ordering::Relaxed),
                failed: self.counters.failed.load(Ordering::Relaxed),
                rejected: self.counters.rejected.load(Ordering::Relaxed),
            },
            engine: EngineCounts {
                compiled: es.compiled,
                cache_hits: es.cache_hits,
            },
            tasks: {
                let (queued, running, finished) = self.tasks.counts();
                TaskCounts {
                    queued,
                    running,
                    finished,
                }
            },
        }
    }

    /// Ready or draining.
    pub fn state(&self) -> WorkerState {
        if self.draining.load(Ordering::Acquire) {
            WorkerState::Draining
        } else {
            WorkerState::Ready
        }
    }

    /// Stops taking new invocations and starting tasks; in-flight ones
    /// go on. Queued tasks stay queued in the store for the next start.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
        self.scheduler.close();
        self.tasks.wake.notify_one();
    }

    fn gate(&self, function: &FunctionName) -> Arc<Gate> {
        self.gates
            .lock()
            .entry(function.clone())
            .or_default()
            .clone()
    }

    /// Submits a task; resolves once it is durably committed.
    pub async fn submit(&self, s: Submission) -> Result<Submitted> {
        if self.draining.load(Ordering::Acquire) {
            return Err(Error::Draining);
        }
        let rev = self.index.resolve(&s.target)?;
        let max_attempts = s
            .max_attempts
            .unwrap_or(rev.row.manifest.retry.max_attempts);
        let ceiling = colony_core::task::MAX_ATTEMPTS_CEILING;
        if max_attempts == 0 || max_attempts > ceiling {
            return Err(Error::BadRequest(format!(
                "max_attempts: must be between 1 and {ceiling}"
            )));
        }
        if let Some(t) = s.timeout_ms
            && (t == 0 || Duration::from_millis(t) > self.config.max_timeout)
        {
            return Err(Error::BadRequest(format!(
                "timeout_ms: must be between 1 and this worker's ceiling of {}",
                self.config.max_timeout.as_millis()
            )));
        }
        if let Some(k) = &s.idempotency_key
            && (k.is_empty() || k.len() > 256)
        {
            return Err(Error::BadRequest(
                "idempotency_key: must be 1 to 256 bytes".into(),
            ));
        }
        self.tasks
            .submit(rev.function.clone(), rev.row.id.clone(), max_attempts, s)
            .await
    }

    /// One task.
    pub async fn task(&self, id: &TaskId) -> Result<TaskInfo> {
        self.tasks.get(id).await
    }

    /// One task, after waiting up to `wait` for it to finish.
    pub async fn wait_task(&self, id: &TaskId, wait: Duration) -> Result<TaskInfo> {
        self.tasks.wait(id, wait).await
    }

    /// The output of a succeeded task.
    pub async fn task_result(&self, id: &TaskId) -> Result<Bytes> {
        self.tasks.result(id).await
    }

    /// A page of tasks, newest first: filtered by state and function,
    /// after the cursor `after`.
    pub async fn tasks(
        &self,
        state: Option<TaskState>,
        function: Option<FunctionName>,
        limit: u32,
        after: Option<TaskId>,
        owner: Option<String>,
    ) -> Result<TaskList> {
        self.tasks
            .list(ListQuery {
                state,
                function,
                limit,
                after,
                owner,
            })
            .await
    }

    /// Cancels a task; see the task module.
    pub async fn cancel_task(&self, id: &TaskId) -> Result<TaskInfo> {
        self.tasks.cancel(id).await
    }

    /// Deletes expired tasks now (the background sweep does it every
    /// `sweep_interval`); returns how many.
    pub async fn sweep_tasks(&self) -> Result<usize> {
        self.tasks.sweep().await
    }

    /// The task dispatcher: one slot at a time, best task first.
    async fn dispatch(self: Arc<Self>) {
        loop {
            if self.draining.load(Ordering::Acquire) {
                return;
            }
            let notified = self.tasks.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (ready, due) = self.tasks.peek();
            if !ready {
                match due {
                    Some(t) => {
                        let wait =
                            Duration::from_millis((t - crate::store::now_ms()).max(1) as u64);
                        let _ = tokio::time::timeout(wait, notified).await;
                    }
                    None => notified.await,
                }
                continue;
            }
            let Some(slot) = self.scheduler.acquire_for_task().await else {
                return;
            };
            let mut gate = None;
            let (task, _) = self.tasks.next(|live| match self.try_gate(live) {
                Ok(permit) => {
                    gate = permit;
                    true
                }
                Err(()) => false,
            });
            let Some(live) = task else {
                drop(slot);
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let _gate = gate;
                me.run_task(live).await;
            });
        }
    }

    /// Takes a slot under the task's function limit: `Ok(None)` when it
    /// has none, `Err` when it is full.
    fn try_gate(&self, live: &Live) -> std::result::Result<Option<GatePermit>, ()> {
        let Some(f) = self.index.get(&live.function) else {
            return Ok(None);
        };
        let Some(rev) = f.revisions.iter().find(|r| r.row.id == live.revision) else {
            return Ok(None);
        };
        match rev.row.manifest.concurrency {
            0 => Ok(None),
            limit => {
                let gate = self.gate(&live.function);
                if gate.try_enter(limit) {
                    Ok(Some(GatePermit {
                        gate,
                        tasks: self.tasks.clone(),
                    }))
                } else {
                    Err(())
                }
            }
        }
    }

    async fn run_task(&self, live: Arc<Live>) {
        let target = FunctionRef {
            name: live.function.clone(),
            rev: Some(live.revision.to_string()),
        };
        let (outcome, policy) = match self.index.resolve(&target) {
            Err(e) => (
                Outcome::Unrunnable(TaskError {
                    code: e.code().as_str().to_owned(),
                    message: e.to_string(),
                    exit_code: None,
                    stderr_tail: None,
                }),
                colony_core::RetryPolicy::default(),
            ),
            Ok(rev) => {
                let policy = rev.row.manifest.retry.clone();
                let started = Instant::now();
                let outcome = async {
                    let input = self.tasks.input(&live).await?;
                    let runnable = self.prepared(&rev).await?;
                    let call = Call {
                        input,
                        cancel: Some(&live.cancel),
                        timeout_ms: live.timeout_ms,
                    };
                    Ok::<_, Error>(runnable.run(call).await)
                }
                .await;
                let took = Some(started.elapsed());
                let function = live.function.as_str();
                let outcome = match outcome {
                    Ok(Ok(out)) => {
                        self.counters.succeeded.fetch_add(1, Ordering::Relaxed);
                        self.metrics.invocation(function, "task", "succeeded", took);
                        Outcome::Succeeded(out)
                    }
                    Ok(Err(f)) => {
                        self.counters.failed.fetch_add(1, Ordering::Relaxed);
                        self.metrics
                            .invocation(function, "task", f.code().as_str(), took);
                        Outcome::Failed(f)
                    }
                    Err(e) => Outcome::Failed(colony_core::Failure::Internal {
                        message: e.to_string(),
                    }),
                };
                (outcome, policy)
            }
        };
        if let Err(e) = self.tasks.finish(&live, outcome, &policy).await {
            tracing::error!(task = %live.id, cause = %e, "cannot record how a task ended; it is recovered at the next start");
        }
    }

    /// The worker's metrics (the API records HTTP requests in them).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The Prometheus text exposition of the worker's metrics.
    pub async fn render_metrics(&self) -> String {
        let status = self.status();
        let dir = self.config.data_dir.join("compiled");
        let cache_bytes = tokio::task::spawn_blocking(move || dir_size(&dir))
            .await
            .unwrap_or(0);
        self.metrics.render(crate::metrics::Snapshot {
            running: status.running,
            calls_waiting: status.queued,
            concurrency: status.concurrency,
            tasks_queued: status.tasks.queued,
            tasks_running: status.tasks.running,
            functions: status.functions,
            revisions: status.revisions,
            cache_hits: status.engine.cache_hits,
            cache_misses: status.engine.compiled,
            cache_bytes,
            uptime_seconds: status.uptime_seconds,
        })
    }

    /// Waits for in-flight invocations to finish, at most `timeout`;
    /// returns whether they all did.
    pub async fn drained(&self, timeout: Duration) -> bool {
        self.scheduler.drained(timeout).await
    }
}

/// Deletes expired tasks every `interval` while the worker lives.
async fn sweep(tasks: std::sync::Weak<Tasks>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(tasks) = tasks.upgrade() else { return };
        match tasks.sweep().await {
            Ok(0) => {}
            Ok(n) => info!(tasks = n, "deleted expired tasks"),
            Err(e) => warn!(cause = %e, "task sweep failed"),
        }
    }
}

/// Total size of the files under `dir`.
fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::Gate;

    #[tokio::test]
    async fn a_gate_admits_each_call_under_its_own_limit() {
        let g = Gate::default();
        assert!(g.try_enter(2));
        assert!(
            !g.try_enter(1),
            "a revision limited to 1 waits while another runs"
        );
        assert!(g.try_enter(2));
        assert!(!g.try_enter(2));
        g.leave();
        assert!(g.try_enter(2));
        g.leave();
        g.leave();
        // A waiter is woken when a slot frees.
        assert!(g.try_enter(1));
        let g = std::sync::Arc::new(g);
        let g2 = g.clone();
        let waiter = tokio::spawn(async move { g2.enter(1).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        g.leave();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
