//! The per-invocation memory cap.

use wasmtime::ResourceLimiter;

/// Most table elements one instance may have.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Caps linear memory at the revision's limit and remembers whether the
/// guest hit it, so a failure can be reported as `memory_limit_exceeded`
/// rather than as whatever the guest did next.
#[derive(Debug)]
pub(crate) struct MemoryCap {
    pub(crate) limit: usize,
    pub(crate) exceeded: bool,
    /// The bytes of all the store's memories (a component may have two).
    pub(crate) total: usize,
}

/// The error that traps a guest growing past its cap.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {0} bytes exceeded")]
pub(crate) struct MemoryLimitExceeded(pub(crate) usize);

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.total.saturating_add(desired.saturating_sub(current));
        if total > self.limit {
            self.exceeded = true;
            return Err(wasmtime::Error::new(MemoryLimitExceeded(self.limit)));
        }
        self.total = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
