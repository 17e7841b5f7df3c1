//! The worker facade.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use std::collections::HashMap;

use colony_core::wire::{
    Deployed, EngineCounts, FunctionInfo, InvocationCounts, Status, Submitted, TaskCounts,
    TaskInfo, TaskList, WorkerInfo, WorkerList, WorkerRole, WorkerState,
};
use colony_core::{FunctionName, FunctionRef, Manifest, RevisionId, TaskError, TaskId, TaskState};
use colony_engine::{CancellationToken, Engine, EngineConfig};
use parking_lot::Mutex;
use tokio::sync::OnceCell;
use tracing::{info, warn};

use crate::blobs::Blobs;
use crate::builtin::BuiltinExecutor;
use crate::cluster::functions::NatsFunctions;
use crate::cluster::tasks::ClusterTasks;
use crate::cluster::{Nats, forward, members};
use crate::config::WorkerConfig;
use crate::directives::Directives;
use crate::error::{Error, Result};
use crate::executor::{Call, ExecutorRegistry, PrepareError, Runnable};
use crate::registry::{FunctionEntry, Index, RevisionEntry};
use crate::scheduler::{Scheduler, Slot};
use crate::seams::{FunctionStore, LocalFunctions, LocalTasks, TaskBackend};
use crate::store::{FunctionRow, RevisionRow, Store, now_ms};
use crate::tasks::{Live, Outcome, Submission, Tasks};
use crate::taskstore::{ListQuery, TaskStore};
use crate::wasm::WasmExecutor;

/// Executors whose functions `/http` serves.
const HTTP_EXECUTORS: [&str; 2] = ["cgi", "component"];

/// Checks the payload of a call or task of a `files` function: a file set
/// with the files its manifest names (when it names them).
fn check_files_input(manifest: &Manifest, input: &Bytes) -> Result<()> {
    if manifest.io != colony_core::IoRuntime::Files {
        return Ok(());
    }
    let set = colony_core::files::FileSet::decode(input).map_err(|e| {
        Error::BadRequest(format!(
            "this function takes named files (io=files): {e}; send multipart/form-data with \
             one part per file, or `files` in a task"
        ))
    })?;
    if manifest.inputs.is_empty() {
        return Ok(());
    }
    if let Some(missing) = manifest.inputs.iter().find(|n| set.get(n).is_none()) {
        return Err(Error::BadRequest(format!(
            "input file {missing} is missing; this function takes {}",
            manifest.inputs.join(", ")
        )));
    }
    if let Some((extra, _)) = set
        .iter()
        .find(|(n, _)| !manifest.inputs.iter().any(|i| i == n))
    {
        return Err(Error::BadRequest(format!(
            "input file {extra} is not one this function takes ({})",
            manifest.inputs.join(", ")
        )));
    }
    Ok(())
}

/// Refuses a call or task with no HTTP request for a function that only
/// serves HTTP (a wasi:http component).
fn refuse_http_only(rev: &RevisionEntry) -> Result<()> {
    if rev.row.manifest.executor == "component" {
        return Err(Error::BadRequest(format!(
            "function {} is a wasi:http component: it serves HTTP requests at /http/{}/",
            rev.function, rev.function
        )));
    }
    Ok(())
}

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
    /// Where functions and code are kept (SQLite and files, or NATS).
    functions: Arc<dyn FunctionStore>,
    index: Index,
    scheduler: Scheduler,
    /// Serializes registry writes (deploy, default switch, delete).
    write_lock: tokio::sync::Mutex<()>,
    counters: Counters,
    started: Instant,
    draining: AtomicBool,
    /// Tells background loops that the worker is draining.
    drain_tx: tokio::sync::watch::Sender<bool>,
    /// Where tasks are queued and recorded.
    tasks: Arc<dyn TaskBackend>,
    /// The embedded task queue (none in a cluster).
    local_tasks: Option<Arc<Tasks>>,
    /// Directive result channels.
    directives: Arc<Directives>,
    /// The cluster this worker belongs to, if any.
    cluster: Option<Cluster>,
    /// Bucket sequence of each function's latest applied change (cluster).
    applied: Mutex<HashMap<FunctionName, u64>>,
    /// Where the API listens, for the member list.
    address: Mutex<Option<String>>,
    id: Arc<str>,
    started_ms: i64,
    metrics: Arc<crate::metrics::Metrics>,
    /// Held for the worker's life: one process per data directory.
    _lock: std::fs::File,
    /// Per-function concurrency limits: (limit, permits).
    gates: Mutex<HashMap<FunctionName, Arc<Gate>>>,
}

/// A slot under a function's own concurrency limit; freeing it lets
/// parked tasks of that function run.
#[derive(Debug)]
pub(crate) struct GatePermit {
    gate: Arc<Gate>,
    tasks: Option<Arc<Tasks>>,
}

impl Drop for GatePermit {
    fn drop(&mut self) {
        // Free the slot first, so a parked task woken now can take it.
        self.gate.leave();
        if let Some(tasks) = &self.tasks {
            tasks.unpark();
        }
    }
}

/// A worker's cluster side.
#[derive(Debug)]
struct Cluster {
    nats: Nats,
    tasks: Arc<ClusterTasks>,
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
        // Guests must never reach the data directory (compiled code there
        // is loaded as native code): no allowed directory may overlap it.
        let data_canon = std::fs::canonicalize(&data)
            .map_err(|e| Error::Internal(format!("cannot resolve {}: {e}", data.display())))?;
        for allowed in crate::wasm::canonical_dirs(&config.allowed_dirs) {
            if allowed.starts_with(&data_canon) || data_canon.starts_with(&allowed) {
                return Err(Error::Internal(format!(
                    "allowed directory {} overlaps the data directory {}; guests must not \
                     reach the worker's own files",
                    allowed.display(),
                    data_canon.display()
                )));
            }
        }
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
        // Scratch directories of `files` calls: what a crash left is gone.
        let scratch = data.join("scratch");
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch)
            .map_err(|e| Error::Internal(format!("cannot create {}: {e}", scratch.display())))?;
        let wasm = WasmExecutor::new(engine.clone())
            .with_allowed_dirs(&config.allowed_dirs)
            .with_scratch(scratch);
        executors.register("wasm", Arc::new(wasm.clone()));
        executors.register("builtin", Arc::new(BuiltinExecutor::default()));
        // WASI command modules whose stdout is a CGI response (`/http`).
        executors.register("cgi", Arc::new(wasm));
        // wasi:http proxy components (`/http`).
        executors.register(
            "component",
            Arc::new(crate::component::ComponentExecutor::new(engine.clone())),
        );
        extend(&mut executors, &engine);
        let scheduler = Scheduler::new(config.concurrency, config.queue, config.max_queue_wait);
        let id = worker_id();
        let metrics = crate::metrics::Metrics::new(&id);
        let directives = Directives::new();
        // The seams: embedded (SQLite and files) or the cluster's (NATS).
        let mut follow = None;
        let (functions, index, tasks, local_tasks, cluster, applied) = match &config.cluster {
            None => {
                let (functions, tasks, local, index) =
                    Self::open_local(&config, &id, &metrics, &directives).await?;
                (functions, index, tasks, Some(local), None, HashMap::new())
            }
            Some(cc) => {
                let nats = Nats::connect(cc, &id, config.tasks.ttl).await?;
                directives.connect(nats.client.clone());
                let cache = Blobs::open(&config.data_dir.join("blobs"))?;
                let functions = Arc::new(NatsFunctions::new(nats.clone(), cache));
                let (rows, seq) = functions.load_all().await?;
                let tasks = Arc::new(ClusterTasks::new(
                    nats.clone(),
                    config.tasks.clone(),
                    id.clone(),
                    metrics.clone(),
                    directives.clone(),
                ));
                let applied = rows.iter().map(|(r, v)| (r.name.clone(), *v)).collect();
                let index = Index::load(rows.into_iter().map(|(r, _)| r).collect());
                follow = Some((functions.clone(), seq + 1));
                let cluster = Cluster {
                    nats,
                    tasks: tasks.clone(),
                };
                let functions: Arc<dyn FunctionStore> = functions;
                let tasks: Arc<dyn TaskBackend> = Arc::new(tasks);
                (functions, index, tasks, None, Some(cluster), applied)
            }
        };
        let worker = Arc::new(Self {
            engine,
            executors,
            functions,
            index,
            scheduler,
            write_lock: tokio::sync::Mutex::new(()),
            counters: Counters::default(),
            started: Instant::now(),
            started_ms: now_ms(),
            draining: AtomicBool::new(false),
            drain_tx: tokio::sync::watch::Sender::new(false),
            tasks,
            local_tasks,
            directives,
            cluster,
            applied: Mutex::new(applied),
            address: Mutex::new(None),
            id,
            metrics,
            gates: Mutex::new(HashMap::new()),
            _lock: lock,
            config,
        });
        if let (Some(c), Some((functions, from))) = (&worker.cluster, follow) {
            let (nats, tasks, weak) = (c.nats.clone(), c.tasks.clone(), Arc::downgrade(&worker));
            tokio::spawn(functions.follow(weak.clone(), from));
            tokio::spawn(members::heartbeat(nats.clone(), weak.clone()));
            tokio::spawn(members::follow(
                nats.clone(),
                worker.id.to_string(),
                weak.clone(),
            ));
            tokio::spawn(tasks.clone().hear_cancels(weak.clone()));
            if nats.config.role == WorkerRole::Worker {
                tokio::spawn(tasks.dispatch(weak.clone()));
                tokio::spawn(forward::serve(nats, weak));
            }
        }
        if let Some(local) = &worker.local_tasks {
            tokio::spawn(worker.clone().dispatch(local.clone()));
            tokio::spawn(sweep(
                Arc::downgrade(local),
                worker.config.tasks.sweep_interval,
            ));
        }
        let (functions, revisions) = worker.index.counts();
        info!(functions, revisions, data_dir = %worker.config.data_dir.display(), "registry loaded");
        Ok(worker)
    }

    /// The embedded seams: SQLite and files in the data directory.
    async fn open_local(
        config: &WorkerConfig,
        id: &Arc<str>,
        metrics: &Arc<crate::metrics::Metrics>,
        directives: &Arc<Directives>,
    ) -> Result<(
        Arc<dyn FunctionStore>,
        Arc<dyn TaskBackend>,
        Arc<Tasks>,
        Index,
    )> {
        let data = config.data_dir.clone();
        let (store, rows) = tokio::task::spawn_blocking(move || -> Result<_> {
            let store = Store::open(&data.join("colony.db"))?;
            let rows = store.load_all()?;
            Ok((store, rows))
        })
        .await
        .map_err(Error::internal)??;
        let blobs = Blobs::open(&config.data_dir.join("blobs"))?;
        let results = Blobs::open(&config.data_dir.join("results"))?;
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
            id.clone(),
            metrics.clone(),
            directives.clone(),
        ));
        let functions = Arc::new(LocalFunctions {
            store: Arc::new(Mutex::new(store)),
            blobs,
        });
        Ok((functions, Arc::new(LocalTasks(tasks.clone())), tasks, index))
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
                let code =
                    self.functions
                        .code(&rev.row.code_sha256)
                        .await
                        .map_err(|e| match e {
                            // The cluster's store is away: retry, not a fault.
                            Error::ClusterUnavailable(_) => e,
                            e => Error::Internal(format!(
                                "code of {}@{} is unreadable: {e}",
                                rev.function, rev.row.id
                            )),
                        })?;
                let rev = rev.clone();
                tokio::task::spawn_blocking(move || {
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
                let target = rev.pinned();
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
    /// In a cluster, a call this worker has no free slot for (or any call,
    /// at a gateway) goes to a worker that has one.
    pub async fn invoke_cancellable(
        &self,
        target: &FunctionRef,
        input: Bytes,
        cancel: Option<&CancellationToken>,
    ) -> Result<Invoked> {
        if let Some(done) = self.forwarded(target, &input, &[]).await? {
            return Ok(done);
        }
        self.invoke_here(target, input, cancel, &[]).await
    }

    /// In a cluster, runs a call on another worker when this one has no
    /// free slot (or is a gateway): `Ok(None)` to run it here.
    async fn forwarded(
        &self,
        target: &FunctionRef,
        input: &Bytes,
        env: &[(String, String)],
    ) -> Result<Option<Invoked>> {
        let Some(c) = &self.cluster else {
            return Ok(None);
        };
        let gateway = c.nats.config.role == WorkerRole::Gateway;
        let busy =
            self.scheduler.running() >= self.scheduler.concurrency() || self.scheduler.queued() > 0;
        // The environment travels in a header of the same NATS message.
        let env_bytes: usize = env.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
        if !(gateway || busy) || input.len() + env_bytes > forward::max_forward(&c.nats) {
            return Ok(None);
        }
        let rev = self.index.resolve(target)?;
        let pinned = rev.pinned();
        let timeout =
            rev.row.manifest.limits.timeout() + self.config.max_queue_wait + Duration::from_secs(1);
        match forward::call(&c.nats, &pinned, input.clone(), env, timeout).await? {
            Some(done) => Ok(Some(done)),
            // No other worker listens: run it here (a gateway cannot).
            None if !gateway => Ok(None),
            None => Err(Error::Overloaded {
                retry_after: Duration::from_secs(1),
            }),
        }
    }

    /// Serves an HTTP request with a `cgi` function: the request as CGI
    /// meta-variables and stdin, its stdout parsed as a CGI response.
    /// In a cluster it goes to another worker like any call.
    pub async fn invoke_http(
        &self,
        target: &FunctionRef,
        request: crate::cgi::CgiRequest,
    ) -> Result<(Invoked, crate::cgi::CgiResponse)> {
        let rev = self.index.resolve(target)?;
        if !HTTP_EXECUTORS.contains(&rev.row.manifest.executor.as_str()) {
            return Err(Error::BadRequest(format!(
                "function {} runs on the {} executor; /http serves functions deployed with \
                 executor=cgi or executor=component",
                rev.function, rev.row.manifest.executor
            )));
        }
        let pinned = rev.pinned();
        let env = request.env();
        let done = match self.forwarded(&pinned, &request.body, &env).await? {
            Some(done) => done,
            None => self.invoke_here(&pinned, request.body, None, &env).await?,
        };
        match crate::cgi::parse_response(done.output.clone()) {
            Ok(response) => Ok((done, response)),
            Err(reason) => Err(Error::InvalidCgiResponse {
                reason,
                revision: done.revision,
            }),
        }
    }

    /// The revision `target` names now, pinned (`name@id`), and its I/O
    /// runtime: what a caller reads the input by and then invokes, so a
    /// redeploy in between cannot swap the runtime under it.
    pub fn pin(&self, target: &FunctionRef) -> Result<(FunctionRef, colony_core::IoRuntime)> {
        let rev = self.index.resolve(target)?;
        let pinned = rev.pinned();
        Ok((pinned, rev.row.manifest.io))
    }

    /// Runs a call on this worker, waiting for a slot here.
    pub(crate) async fn invoke_here(
        &self,
        target: &FunctionRef,
        input: Bytes,
        cancel: Option<&CancellationToken>,
        env: &[(String, String)],
    ) -> Result<Invoked> {
        let rev = self.index.resolve(target)?;
        if env.is_empty() {
            refuse_http_only(&rev)?;
        }
        check_files_input(&rev.row.manifest, &input)?;
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
                    tasks: self.local_tasks.clone(),
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
                env,
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
        if !m.dirs.is_empty() {
            if m.executor == "builtin" {
                return Err(Error::InvalidManifest(
                    "dirs: builtin functions see no directories".into(),
                ));
            }
            let allowed = crate::wasm::canonical_dirs(&c.allowed_dirs);
            crate::wasm::preopens(&allowed, m)
                .map_err(|e| Error::InvalidManifest(format!("dirs: {e}")))?;
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
        let existing = self.index.get(&name);
        // In a cluster the store decides whether the function is new (this
        // worker's index may be a moment behind).
        let make_default = make_default || (existing.is_none() && self.cluster.is_none());
        let (fname, manifest, code2) = (name.clone(), row.manifest.clone(), code.clone());
        let runnable = tokio::task::spawn_blocking(move || {
            executor
                .prepare(&fname, &code2, &manifest)
                .map_err(|e| match e {
                    PrepareError::InvalidCode { reason } => Error::InvalidModule { reason },
                    PrepareError::Internal(m) => Error::Internal(m),
                })
        })
        .await
        .map_err(Error::internal)??;
        self.functions.put_code(&row.code_sha256, code).await?;
        let number = self
            .functions
            .insert_revision(&name, &row, make_default)
            .await?;
        if self.cluster.is_some() {
            // The registry watch put it in the index already (the store
            // waits for that); keep the compiled form made here.
            let target = FunctionRef {
                name: name.clone(),
                rev: Some(id.to_string()),
            };
            if let Ok(rev) = self.index.resolve(&target) {
                let _ = rev.prepared.set(runnable);
            }
            let default = self.index.get(&name).is_some_and(|f| f.default_rev == id);
            info!(function = %name, revision = %id, number, default, "deployed to the cluster");
            return Ok(Deployed {
                function: name,
                revision: id,
                number,
                created: true,
                default,
            });
        }

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
        self.functions.set_default(&f.name, id).await?;
        if self.cluster.is_some() {
            info!(function = %f.name, revision = %id, "default revision switched in the cluster");
            return Ok(());
        }
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
        let in_use = self
            .index
            .all()
            .iter()
            .filter(|f| &f.name != name)
            .flat_map(|f| f.revisions.iter().map(|r| r.row.code_sha256.clone()))
            .collect();
        let orphaned = self.functions.delete_function(name, in_use).await?;
        if self.cluster.is_none() {
            // In a cluster the registry watch removed it already (and may
            // have applied a newer deploy of the same name since).
            self.index.remove(name);
            self.gates.lock().remove(name);
        }
        for sha in &orphaned {
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
        self.drain_tx.send_replace(true);
        self.scheduler.close();
        if let Some(tasks) = &self.local_tasks {
            tasks.wake.notify_one();
        }
        if let Some(c) = &self.cluster {
            let (nats, id) = (c.nats.clone(), self.id.clone());
            tokio::spawn(async move { members::leave(&nats, &id).await });
        }
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
        refuse_http_only(&rev)?;
        check_files_input(&rev.row.manifest, &s.input)?;
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
        if let Some(d) = &s.directive {
            crate::directives::check(d)?;
        }
        // Apart from the request, whatever the backend: a client that goes
        // away while the submit commits does not cut it in half (the task
        // is queued, or was never accepted).
        let (tasks, function, revision) =
            (self.tasks.clone(), rev.function.clone(), rev.row.id.clone());
        tokio::spawn(async move { tasks.submit(function, revision, max_attempts, s).await })
            .await
            .map_err(Error::internal)?
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
        directive: Option<String>,
    ) -> Result<TaskList> {
        self.tasks
            .list(ListQuery {
                state,
                function,
                limit,
                after,
                owner,
                directive,
            })
            .await
    }

    /// Leases the channel of `directive` for tasks of `owner` (see
    /// [`Directives::listen`]).
    pub async fn listen(&self, directive: &str, owner: Option<&str>) -> Result<crate::Listener> {
        crate::directives::check(directive)?;
        self.directives.listen(directive, owner).await
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
    async fn dispatch(self: Arc<Self>, tasks: Arc<Tasks>) {
        loop {
            if self.draining.load(Ordering::Acquire) {
                return;
            }
            let notified = tasks.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (ready, due) = tasks.peek();
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
            let (task, _) = tasks.next(|live| match self.try_gate(live) {
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
            let (me, tasks) = (self.clone(), tasks.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let _gate = gate;
                me.run_task(&tasks, live).await;
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
                        tasks: self.local_tasks.clone(),
                    }))
                } else {
                    Err(())
                }
            }
        }
    }

    async fn run_task(&self, tasks: &Arc<Tasks>, live: Arc<Live>) {
        let input = tasks.input(&live).await;
        let (outcome, policy) = self
            .execute(
                &live.function,
                &live.revision,
                input,
                &live.cancel,
                live.timeout_ms,
            )
            .await;
        if let Err(e) = tasks.finish(&live, outcome, &policy).await {
            tracing::error!(task = %live.id, cause = %e, "cannot record how a task ended; it is recovered at the next start");
        }
    }

    /// Runs one task attempt here: how it ended, and the retry policy of
    /// its revision.
    pub(crate) async fn execute(
        &self,
        function: &FunctionName,
        revision: &RevisionId,
        input: Result<Bytes>,
        cancel: &CancellationToken,
        timeout_ms: Option<u64>,
    ) -> (Outcome, colony_core::RetryPolicy) {
        let target = FunctionRef {
            name: function.clone(),
            rev: Some(revision.to_string()),
        };
        let rev = match self.index.resolve(&target) {
            Ok(rev) => rev,
            Err(e) => {
                let unrunnable = Outcome::Unrunnable(TaskError {
                    code: e.code().as_str().to_owned(),
                    message: e.to_string(),
                    exit_code: None,
                    stderr_tail: None,
                });
                return (unrunnable, colony_core::RetryPolicy::default());
            }
        };
        let policy = rev.row.manifest.retry.clone();
        let started = Instant::now();
        let outcome = async {
            let input = input?;
            let runnable = self.prepared(&rev).await?;
            let call = Call {
                input,
                cancel: Some(cancel),
                timeout_ms,
                env: &[],
            };
            Ok::<_, Error>(runnable.run(call).await)
        }
        .await;
        let took = Some(started.elapsed());
        let function = function.as_str();
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

    /// Waits (a little) until the index knows `revision`: in a cluster a
    /// task or a forwarded call can arrive just before the registry
    /// change that announces its revision.
    pub(crate) async fn await_revision(&self, function: &FunctionName, revision: &RevisionId) {
        let known = || {
            self.index
                .get(function)
                .is_some_and(|f| f.revisions.iter().any(|r| &r.row.id == revision))
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !known() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Prepares a revision ahead of a task attempt; fails only when its
    /// code cannot be fetched just now (an unknown revision is the
    /// attempt's to report).
    pub(crate) async fn prepare_revision(
        &self,
        function: &FunctionName,
        revision: &RevisionId,
    ) -> Result<()> {
        let target = FunctionRef {
            name: function.clone(),
            rev: Some(revision.to_string()),
        };
        let Ok(rev) = self.index.resolve(&target) else {
            return Ok(());
        };
        match self.prepared(&rev).await {
            Err(e @ Error::ClusterUnavailable(_)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Whether a task of this revision runs again after its worker was
    /// lost.
    pub(crate) fn retries_lost(&self, function: &FunctionName, revision: &RevisionId) -> bool {
        self.index
            .get(function)
            .and_then(|f| {
                f.revisions.iter().find(|r| &r.row.id == revision).map(|r| {
                    r.row
                        .manifest
                        .retry
                        .retries(Some(colony_core::RetryOn::WorkerLost))
                })
            })
            .unwrap_or(false)
    }

    /// Waits for room under the function's own limit (cluster tasks).
    pub(crate) async fn task_gate(
        &self,
        function: &FunctionName,
        revision: &RevisionId,
    ) -> Option<GatePermit> {
        let limit = self
            .index
            .get(function)?
            .revisions
            .iter()
            .find(|r| &r.row.id == revision)?
            .row
            .manifest
            .concurrency;
        if limit == 0 {
            return None;
        }
        let gate = self.gate(function);
        gate.enter(limit).await;
        Some(GatePermit {
            gate,
            tasks: self.local_tasks.clone(),
        })
    }

    /// A slot for a task attempt; `None` once draining.
    pub(crate) async fn task_slot(&self) -> Option<Slot> {
        self.scheduler.acquire_for_task().await
    }

    /// Changes to true when the worker begins to drain.
    pub fn drain_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.drain_tx.subscribe()
    }

    /// Whether the worker stopped taking work.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Tells the member list where the API listens.
    pub fn set_address(&self, url: impl Into<String>) {
        *self.address.lock() = Some(url.into());
    }

    /// This worker as the member list shows it.
    pub(crate) fn member_info(&self) -> WorkerInfo {
        let status = self.status();
        let role = self
            .cluster
            .as_ref()
            .map_or(WorkerRole::Worker, |c| c.nats.config.role);
        let warm_functions = self
            .index
            .all()
            .iter()
            .filter(|f| f.resolve(None).is_ok_and(|r| r.prepared.initialized()))
            .map(|f| f.name.to_string())
            .collect();
        WorkerInfo {
            id: self.id.to_string(),
            address: self.address.lock().clone(),
            role,
            state: status.state,
            version: status.version,
            running: status.running,
            queued: status.queued,
            concurrency: if role == WorkerRole::Gateway {
                0
            } else {
                status.concurrency
            },
            tasks_running: status.tasks.running,
            warm_functions,
            started_ms: self.started_ms,
            heartbeat_ms: now_ms(),
        }
    }

    /// Refreshes what this worker knows of the cluster's queue.
    pub(crate) async fn refresh_cluster_load(&self) {
        if let Some(c) = &self.cluster {
            c.tasks.refresh_pending().await;
        }
    }

    /// The live workers: the cluster's, or this one alone.
    pub async fn workers(&self) -> Result<WorkerList> {
        match &self.cluster {
            None => Ok(WorkerList {
                cluster: false,
                heartbeat_ttl_ms: 0,
                workers: vec![self.member_info()],
            }),
            Some(c) => Ok(WorkerList {
                cluster: true,
                heartbeat_ttl_ms: c.nats.config.heartbeat_ttl().as_millis() as u64,
                workers: members::list(&c.nats).await?,
            }),
        }
    }

    /// Applies a function as the cluster registry holds it (its change at
    /// bucket sequence `seq`), keeping what is compiled, and compiles new
    /// revisions ahead of their first call.
    pub(crate) fn apply_function(self: &Arc<Self>, row: FunctionRow, seq: u64) {
        {
            let mut applied = self.applied.lock();
            let last = applied.entry(row.name.clone()).or_insert(0);
            if *last >= seq {
                return;
            }
            *last = seq;
        }
        let old = self.index.get(&row.name);
        let mut fresh = Vec::new();
        let revisions = row
            .revisions
            .into_iter()
            .map(|r| {
                let kept = old
                    .as_ref()
                    .and_then(|f| f.revisions.iter().find(|e| e.row.id == r.id).cloned());
                kept.unwrap_or_else(|| {
                    let entry = Arc::new(RevisionEntry {
                        function: row.name.clone(),
                        row: r,
                        prepared: OnceCell::new(),
                    });
                    fresh.push(entry.clone());
                    entry
                })
            })
            .collect();
        let entry = FunctionEntry {
            name: row.name.clone(),
            default_rev: row.default_rev,
            created_ms: row.created_ms,
            updated_ms: row.updated_ms,
            revisions,
        };
        self.index.put(entry);
        if self.cluster.as_ref().map(|c| c.nats.config.role) == Some(WorkerRole::Gateway) {
            return;
        }
        for rev in fresh {
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.prepared(&rev).await {
                    warn!(function = %rev.function, revision = %rev.row.id, cause = %e, "cannot prepare a new revision");
                }
            });
        }
    }

    /// Applies a function's deletion seen in the cluster registry.
    pub(crate) fn apply_delete(&self, name: &FunctionName, seq: u64) {
        {
            let mut applied = self.applied.lock();
            let last = applied.entry(name.clone()).or_insert(0);
            if *last >= seq {
                return;
            }
            *last = seq;
        }
        if self.index.remove(name).is_some() {
            self.gates.lock().remove(name);
            info!(function = %name, "deleted in the cluster");
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
