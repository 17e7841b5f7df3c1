//! Bounded concurrency with a bounded wait queue.
//!
//! At most `concurrency` invocations run at once. Beyond that, up to
//! `queue` callers wait, in arrival order, for at most `max_wait`; anyone
//! further is refused at once with `Overloaded` (503 with `Retry-After`).
//! Waiting callers are the request handlers themselves, suspended on a
//! semaphore: nothing is spawned per request, so memory stays bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

#[derive(Debug)]
pub(crate) struct Scheduler {
    permits: Arc<Semaphore>,
    concurrency: usize,
    queue: usize,
    max_wait: Duration,
    waiting: AtomicUsize,
    closed: AtomicBool,
}

/// A running slot; released on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
}

/// Undoes a `waiting` increment however the wait ends (even if the waiting
/// request is dropped because its client went away).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Scheduler {
    pub(crate) fn new(concurrency: usize, queue: usize, max_wait: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            queue,
            max_wait,
            waiting: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }

    fn overloaded(&self) -> Error {
        Error::Overloaded {
            retry_after: Duration::from_secs(1),
        }
    }

    /// Waits for a running slot, or refuses at once when the queue is full.
    pub(crate) async fn acquire(&self) -> Result<Slot> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Draining);
        }
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(Slot { _permit: p });
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(self.overloaded());
        }
        let _waiting = Waiting(&self.waiting);
        match tokio::time::timeout(self.max_wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(Slot { _permit: p }),
            Ok(Err(_closed)) => Err(Error::Draining),
            Err(_elapsed) => Err(self.overloaded()),
        }
    }

    pub(crate) fn running(&self) -> usize {
        self.concurrency - self.permits.available_permits()
    }

    pub(crate) fn queued(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    pub(crate) fn concurrency(&self) -> usize {
        self.concurrency
    }

    pub(crate) fn queue_limit(&self) -> usize {
        self.queue
    }

    /// Refuses new work from now on.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Waits until nothing runs or waits, or `timeout` passes; returns
    /// whether everything finished.
    pub(crate) async fn drained(&self, timeout: Duration) -> bool {
        let all = u32::try_from(self.concurrency).unwrap_or(u32::MAX);
        let wait = async {
            let _all = self.permits.acquire_many(all).await;
            while self.queued() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn refuses_beyond_the_queue_and_times_out_waiters() {
        let s = Arc::new(Scheduler::new(2, 1, Duration::from_secs(5)));
        let a = s.acquire().await.unwrap();
        let _b = s.acquire().await.unwrap();
        assert_eq!(s.running(), 2);
        let s2 = s.clone();
        let waiter = tokio::spawn(async move { s2.acquire().await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert_eq!(s.queued(), 1);
        assert!(matches!(s.acquire().await, Err(Error::Overloaded { .. })));
        drop(a);
        waiter.await.unwrap().unwrap();
        assert_eq!(s.queued(), 0);

        // A waiter that outlasts max_wait is refused, and leaves the queue.
        let _c = s.acquire().await.unwrap();
        let s3 = s.clone();
        let late = tokio::spawn(async move { s3.acquire().await.map(|_| ()) });
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(matches!(late.await.unwrap(), Err(Error::Overloaded { .. })));
        assert_eq!(s.queued(), 0);
        s.close();
        assert!(matches!(s.acquire().await, Err(Error::Draining)));
    }
}
