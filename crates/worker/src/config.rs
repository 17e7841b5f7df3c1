//! Worker configuration (validated; raw flags live in the CLI).

use std::path::PathBuf;
use std::time::Duration;

/// Default number of invocations running at once.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Default number of invocations waiting for a slot.
pub const DEFAULT_QUEUE: usize = 1024;
/// Default longest wait for a slot before a 503.
pub const DEFAULT_MAX_QUEUE_WAIT: Duration = Duration::from_secs(30);
/// Default ceiling on a revision's timeout.
pub const DEFAULT_MAX_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Default ceiling on a revision's output cap.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 64 << 20;
/// Default most functions on a worker.
pub const DEFAULT_MAX_FUNCTIONS: usize = 10_000;
/// Default ceiling on uploaded code.
pub const DEFAULT_MAX_CODE_BYTES: u64 = 64 << 20;

/// Settings of one worker, already validated.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The data directory (SQLite store, code blobs, compile cache).
    pub data_dir: PathBuf,
    /// Invocations running at once.
    pub concurrency: usize,
    /// Invocations waiting for a slot; more are refused with 503.
    pub queue: usize,
    /// Longest wait for a slot.
    pub max_queue_wait: Duration,
    /// Ceiling on any revision's timeout.
    pub max_timeout: Duration,
    /// Ceiling on any revision's memory cap (also sizes the engine's pool).
    pub max_memory_bytes: u64,
    /// Ceiling on any revision's output cap.
    pub max_output_bytes: u64,
    /// Largest code upload.
    pub max_code_bytes: u64,
    /// Instance slots in the engine's pooling allocator.
    pub instances: u32,
    /// The epoch tick: granularity of timeouts and cancellation.
    pub epoch_tick: Duration,
    /// Task retention and storage.
    pub tasks: crate::TaskConfig,
    /// Most functions the worker holds.
    pub max_functions: usize,
    /// Join a cluster over NATS JetStream instead of the embedded store.
    pub cluster: Option<crate::ClusterConfig>,
    /// Host directories (and what is under them) that manifests may mount
    /// for their guests; none by default.
    pub allowed_dirs: Vec<PathBuf>,
}

impl WorkerConfig {
    /// Defaults for a worker on `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let engine = colony_engine::EngineConfig::default();
        Self {
            data_dir: data_dir.into(),
            concurrency: DEFAULT_CONCURRENCY,
            queue: DEFAULT_QUEUE,
            max_queue_wait: DEFAULT_MAX_QUEUE_WAIT,
            max_timeout: DEFAULT_MAX_TIMEOUT,
            max_memory_bytes: engine.max_memory_bytes,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            max_code_bytes: DEFAULT_MAX_CODE_BYTES,
            instances: engine.instances,
            epoch_tick: engine.epoch_tick,
            tasks: crate::TaskConfig::default(),
            max_functions: DEFAULT_MAX_FUNCTIONS,
            cluster: None,
            allowed_dirs: Vec::new(),
        }
    }

    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(c) = &self.cluster {
            c.validate()?;
        }
        if self.concurrency == 0 {
            return Err("concurrency must be at least 1".into());
        }
        if self.concurrency > self.instances as usize {
            return Err(format!(
                "concurrency ({}) cannot exceed the instance pool ({})",
                self.concurrency, self.instances
            ));
        }
        if self.max_memory_bytes < 64 << 10 {
            return Err("max memory must be at least 64KiB".into());
        }
        // A deploy without explicit limits gets the manifest defaults, so
        // the ceilings must admit them.
        let d = colony_core::Limits::default();
        if self.max_timeout < d.timeout() {
            return Err(format!(
                "max timeout must be at least the default timeout of {} ms",
                d.timeout_ms
            ));
        }
        if self.max_memory_bytes < d.memory_bytes {
            return Err(format!(
                "max memory must be at least the default memory cap of {} bytes",
                d.memory_bytes
            ));
        }
        if self.max_output_bytes < d.output_bytes {
            return Err(format!(
                "max output must be at least the default output cap of {} bytes",
                d.output_bytes
            ));
        }
        if self.epoch_tick.is_zero() || self.epoch_tick > Duration::from_secs(1) {
            return Err("the epoch tick must be between 1ms and 1s".into());
        }
        Ok(())
    }
}
