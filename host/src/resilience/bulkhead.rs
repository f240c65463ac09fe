//! A bulkhead per tool: at most N calls of a tool run at once, a bounded FIFO
//! queue waits for a slot up to a maximum wait, and everything past that is
//! refused at once with a retry-after hint.
//!
//! The bulkhead's size is also the tool's quota of pooling-allocator slots,
//! so one tool cannot take every instance slot from the others
//! ([`crate::Host`] refuses loads that would overcommit the pool).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bulkhead settings. Defaults: 4 concurrent calls (DESIGN §6), and 16 more
/// that may wait for a slot, each for at most 1 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkheadConfig {
    /// Calls of the tool running at once.
    pub max_concurrent: u32,
    /// Calls that may wait for a slot (0: refuse at once when full).
    pub max_queue: u32,
    /// Longest a queued call waits before it is refused.
    pub max_wait: Duration,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 4,
            // Clients parallelise: a short queue absorbs a burst instead of
            // answering `bulkhead-full` to the fifth concurrent call.
            max_queue: 16,
            max_wait: Duration::from_secs(1),
        }
    }
}

/// A refusal: the tool is at its concurrency limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full {
    /// About how long until a slot frees: the tool's recent call time.
    pub retry_after: Duration,
}

pub(crate) struct Bulkhead {
    config: BulkheadConfig,
    slots: Arc<Semaphore>,
    queued: AtomicU32,
    /// Exponentially weighted mean call time, in microseconds.
    mean_call_us: AtomicU64,
}

/// Shortest retry-after hint given to a refused caller.
const MIN_RETRY_AFTER: Duration = Duration::from_millis(10);

impl Bulkhead {
    pub(crate) fn new(config: BulkheadConfig) -> Self {
        Self {
            config,
            slots: Arc::new(Semaphore::new(config.max_concurrent.max(1) as usize)),
            queued: AtomicU32::new(0),
            mean_call_us: AtomicU64::new(0),
        }
    }

    /// Takes a slot, waiting in the queue if one is configured; returns it
    /// with the time spent queued (zero when a slot was free).
    pub(crate) async fn acquire(&self) -> Result<(OwnedSemaphorePermit, Duration), Full> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok((permit, Duration::ZERO));
        }
        let queued_at = std::time::Instant::now();
        let queued = self.queued.fetch_add(1, Ordering::SeqCst);
        let _leave = Leave(&self.queued);
        if queued >= self.config.max_queue {
            return Err(self.full());
        }
        match tokio::time::timeout(
            self.config.max_wait,
            Arc::clone(&self.slots).acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => Ok((permit, queued_at.elapsed())),
            _ => Err(self.full()),
        }
    }

    fn full(&self) -> Full {
        let mean = Duration::from_micros(self.mean_call_us.load(Ordering::Relaxed));
        Full {
            retry_after: mean.max(MIN_RETRY_AFTER),
        }
    }

    /// Feeds the retry-after estimate with a finished call's duration.
    pub(crate) fn observe(&self, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let old = self.mean_call_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.mean_call_us.store(new, Ordering::Relaxed);
    }

    /// Calls running now.
    pub(crate) fn in_use(&self) -> u32 {
        self.config.max_concurrent.max(1) - self.slots.available_permits() as u32
    }

    /// Calls waiting for a slot now.
    pub(crate) fn waiting(&self) -> u32 {
        self.queued.load(Ordering::SeqCst)
    }

    pub(crate) fn config(&self) -> BulkheadConfig {
        self.config
    }
}

/// Leaves the queue count when the waiting call finishes or is dropped.
struct Leave<'a>(&'a AtomicU32);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_at_once_when_full_without_a_queue() {
        let b = Bulkhead::new(BulkheadConfig {
            max_concurrent: 2,
            ..Default::default()
        });
        let (_a, _b) = (b.acquire().await.expect("1"), b.acquire().await.expect("2"));
        assert_eq!(b.in_use(), 2);
        let full = b.acquire().await.expect_err("full");
        assert_eq!(full.retry_after, MIN_RETRY_AFTER);
        assert_eq!(b.waiting(), 0);
    }

    #[tokio::test]
    async fn queued_caller_gets_the_next_free_slot() {
        let b = Arc::new(Bulkhead::new(BulkheadConfig {
            max_concurrent: 1,
            max_queue: 1,
            max_wait: Duration::from_secs(30),
        }));
        let first = b.acquire().await.expect("slot");
        let waiter = tokio::spawn({
            let b = Arc::clone(&b);
            async move { b.acquire().await.map(|_slot| ()) }
        });
        while b.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(b.acquire().await.is_err(), "queue of one is full");
        drop(first);
        waiter.await.expect("task").expect("got the slot");
    }

    #[tokio::test(start_paused = true)]
    async fn queued_caller_gives_up_after_the_maximum_wait() {
        let b = Bulkhead::new(BulkheadConfig {
            max_concurrent: 1,
            max_queue: 4,
            max_wait: Duration::from_millis(50),
        });
        let _held = b.acquire().await.expect("slot");
        b.observe(Duration::from_millis(400));
        let full = b.acquire().await.expect_err("timed out in the queue");
        assert_eq!(full.retry_after, Duration::from_millis(400));
        assert_eq!(b.waiting(), 0);
    }
}
