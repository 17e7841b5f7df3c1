//! Engine configuration.

use std::path::PathBuf;
use std::time::Duration;

/// Default number of instance slots in the pooling allocator.
pub const DEFAULT_INSTANCES: u32 = 1000;
/// Default ceiling on any revision's linear memory: 1 GiB.
pub const DEFAULT_MAX_MEMORY_BYTES: u64 = 1 << 30;
/// Default epoch tick: the granularity of timeouts, cancellation and
/// cooperative yields of running guests.
pub const DEFAULT_EPOCH_TICK: Duration = Duration::from_millis(5);

/// Knobs of the shared wasmtime engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Where compiled artifacts are cached; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Instance slots in the pooling allocator: the most instances alive at
    /// once. The worker keeps its concurrency at or below this.
    pub instances: u32,
    /// The largest linear memory any revision may ask for.
    pub max_memory_bytes: u64,
    /// The epoch tick.
    pub epoch_tick: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            instances: DEFAULT_INSTANCES,
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
            epoch_tick: DEFAULT_EPOCH_TICK,
        }
    }
}
