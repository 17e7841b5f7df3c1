//! One scheduler for calls and tasks: bounded concurrency, a bounded wait
//! queue for calls, and fair turns between the two.
//!
//! At most `concurrency` invocations run at once, calls and tasks
//! together. A call that finds every slot busy waits, in arrival order,
//! for at most `max_wait`, and only if fewer than `queue` calls already
//! wait; otherwise it is refused at once with `Overloaded` (503 with
//! `Retry-After`). Waiting calls are the request handlers themselves,
//! suspended on a channel: nothing is spawned per request.
//!
//! Tasks ask for slots through the task dispatcher. When a slot frees and
//! both calls and tasks are waiting, the slot goes to them in turn, so a
//! flood of tasks cannot starve calls and a flood of calls cannot starve
//! tasks; when only one kind waits, it gets every slot.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};

use crate::error::{Error, Result};

#[derive(Debug, Default)]
struct Queues {
    free: usize,
    calls: VecDeque<oneshot::Sender<()>>,
    tasks: VecDeque<oneshot::Sender<()>>,
    /// Whose turn it is when both kinds wait.
    tasks_turn: bool,
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    queues: Mutex<Queues>,
    concurrency: usize,
    queue: usize,
    max_wait: Duration,
    /// Calls waiting now (not counting abandoned queue entries).
    waiting: AtomicUsize,
    /// Signalled whenever a slot is released.
    released: Notify,
}

/// The scheduler; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Scheduler {
    shared: Arc<Shared>,
}

/// A running slot; released on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    shared: Arc<Shared>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.release();
    }
}

impl Shared {
    /// Hands a freed slot to the next live waiter, taking turns between
    /// calls and tasks, or returns it to the pool.
    fn release(self: &Arc<Self>) {
        let mut q = self.queues.lock();
        loop {
            let take_task = match (q.calls.is_empty(), q.tasks.is_empty()) {
                (true, true) => {
                    q.free += 1;
                    break;
                }
                (false, true) => false,
                (true, false) => true,
                (false, false) => q.tasks_turn,
            };
            let next = if take_task {
                q.tasks.pop_front()
            } else {
                q.calls.pop_front()
            };
            if let Some(tx) = next
                && tx.send(()).is_ok()
            {
                q.tasks_turn = !take_task;
                break;
            }
        }
        drop(q);
        self.released.notify_waiters();
    }
}

/// A grant in flight: if the waiter goes away after the slot was sent
/// but before it was taken, the slot is released instead of lost.
struct Pending {
    rx: Option<oneshot::Receiver<()>>,
    shared: Arc<Shared>,
}

impl Pending {
    async fn granted(&mut self) -> bool {
        let rx = self.rx.as_mut().expect("awaited once");
        let ok = rx.await.is_ok();
        self.rx = None;
        ok
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.shared.release();
            }
        }
    }
}

/// A place in the bounded wait queue, held by a waiting call (for a slot
/// here, or at its function's own limit); released on drop, however the
/// wait ends.
#[derive(Debug)]
pub(crate) struct QueuePlace {
    shared: Arc<Shared>,
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Scheduler {
    /// Takes a place in the wait queue for a wait that happens elsewhere,
    /// or refuses (`Overloaded`) when the queue is full, so every waiting
    /// call counts against `queue` and shows in `queued`.
    pub(crate) fn queue_place(&self) -> Result<QueuePlace> {
        if self.shared.queues.lock().closed {
            return Err(Error::Draining);
        }
        self.place()
    }

    /// The one place where the queue bound is checked.
    fn place(&self) -> Result<QueuePlace> {
        let s = &self.shared;
        if s.waiting.fetch_add(1, Ordering::AcqRel) >= s.queue {
            s.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(self.overloaded());
        }
        Ok(QueuePlace { shared: s.clone() })
    }

    pub(crate) fn new(concurrency: usize, queue: usize, max_wait: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                queues: Mutex::new(Queues {
                    free: concurrency,
                    ..Default::default()
                }),
                concurrency,
                queue,
                max_wait,
                waiting: AtomicUsize::new(0),
                released: Notify::new(),
            }),
        }
    }

    fn overloaded(&self) -> Error {
        Error::Overloaded {
            retry_after: Duration::from_secs(1),
        }
    }

    fn slot(&self) -> Slot {
        Slot {
            shared: self.shared.clone(),
        }
    }

    /// A slot for a call: at once, after a bounded wait, or refused.
    pub(crate) async fn acquire(&self) -> Result<Slot> {
        let s = &self.shared;
        let (rx, _place) = {
            let mut q = s.queues.lock();
            if q.closed {
                return Err(Error::Draining);
            }
            if q.free > 0 {
                q.free -= 1;
                return Ok(self.slot());
            }
            let place = self.place()?;
            if q.calls.len() > 2 * s.queue + 16 {
                q.calls.retain(|tx| !tx.is_closed());
            }
            let (tx, rx) = oneshot::channel();
            q.calls.push_back(tx);
            (rx, place)
        };
        let mut pending = Pending {
            rx: Some(rx),
            shared: s.clone(),
        };
        match tokio::time::timeout(s.max_wait, pending.granted()).await {
            Ok(true) => Ok(self.slot()),
            Ok(false) => Err(Error::Draining),
            Err(_elapsed) => Err(self.overloaded()),
        }
    }

    /// A slot for a task: waits as long as it takes (the dispatcher asks
    /// for one slot at a time). `None` once the scheduler is closed.
    pub(crate) async fn acquire_for_task(&self) -> Option<Slot> {
        let s = &self.shared;
        let rx = {
            let mut q = s.queues.lock();
            if q.closed {
                return None;
            }
            if q.free > 0 && q.calls.is_empty() {
                q.free -= 1;
                return Some(self.slot());
            }
            let (tx, rx) = oneshot::channel();
            q.tasks.push_back(tx);
            rx
        };
        let mut pending = Pending {
            rx: Some(rx),
            shared: s.clone(),
        };
        pending.granted().await.then(|| self.slot())
    }

    pub(crate) fn running(&self) -> usize {
        self.shared.concurrency - self.shared.queues.lock().free
    }

    pub(crate) fn queued(&self) -> usize {
        self.shared.waiting.load(Ordering::Acquire)
    }

    pub(crate) fn concurrency(&self) -> usize {
        self.shared.concurrency
    }

    pub(crate) fn queue_limit(&self) -> usize {
        self.shared.queue
    }

    /// Refuses new work from now on; waiters are told to go away.
    pub(crate) fn close(&self) {
        let mut q = self.shared.queues.lock();
        q.closed = true;
        q.calls.clear();
        q.tasks.clear();
    }

    /// Waits until nothing runs or waits, or `timeout` passes; returns
    /// whether everything finished.
    pub(crate) async fn drained(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let released = self.shared.released.notified();
                if self.running() == 0 && self.queued() == 0 {
                    return;
                }
                let _ = tokio::time::timeout(Duration::from_millis(50), released).await;
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
        let s = Scheduler::new(2, 1, Duration::from_secs(5));
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
        assert_eq!(
            s.running(),
            1,
            "the waiter's slot was released when it finished"
        );

        // A waiter that outlasts max_wait is refused, and leaves the queue.
        let _c = s.acquire().await.unwrap();
        let s3 = s.clone();
        let late = tokio::spawn(async move { s3.acquire().await.map(|_| ()) });
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(matches!(late.await.unwrap(), Err(Error::Overloaded { .. })));
        assert_eq!(s.queued(), 0);
        s.close();
        assert!(matches!(s.acquire().await, Err(Error::Draining)));
        assert!(s.acquire_for_task().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn calls_and_tasks_take_turns() {
        let s = Scheduler::new(1, 100, Duration::from_secs(60));
        let held = s.acquire().await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut joins = Vec::new();
        for i in 0..4 {
            let (s1, order1) = (s.clone(), order.clone());
            joins.push(tokio::spawn(async move {
                let _slot = s1.acquire().await.unwrap();
                order1.lock().push(format!("call{i}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }));
            let (s2, order2) = (s.clone(), order.clone());
            joins.push(tokio::spawn(async move {
                let _slot = s2.acquire_for_task().await.unwrap();
                order2.lock().push(format!("task{i}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }));
            tokio::task::yield_now().await;
        }
        drop(held);
        for j in joins {
            j.await.unwrap();
        }
        let order = order.lock().clone();
        // Strict alternation: neither kind gets two slots in a row while
        // the other waits.
        for w in order.windows(2) {
            assert_ne!(w[0][..4], w[1][..4], "{order:?}");
        }
        assert_eq!(order.len(), 8);
        assert_eq!(s.running(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_grant_is_not_lost() {
        let s = Scheduler::new(1, 10, Duration::from_secs(60));
        let held = s.acquire().await.unwrap();
        let s2 = s.clone();
        let waiter = tokio::spawn(async move { s2.acquire().await.map(|_| ()) });
        tokio::task::yield_now().await;
        waiter.abort();
        let _ = waiter.await;
        drop(held);
        assert_eq!(s.running(), 0);
        let _a = s.acquire().await.unwrap();
        assert!(!s.drained(Duration::from_millis(10)).await);
    }
}
