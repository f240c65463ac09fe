//! Tells a guest that yielded while computing from one waiting in a host
//! call, when its deadline passes while it is suspended.
//!
//! A computing guest is suspended only at a yield: an epoch tick or a fuel
//! slice (see `FUEL_SLICE` in `attempt.rs`). A yield wakes its own task
//! before it returns `Pending`, so it is ready to go on at once; a host call
//! that waits (a timer, a socket, a permit) returns `Pending` without
//! waking. [`Yielded`] polls the guest's future with a waker that notes a
//! wake during the poll.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// Wraps a guest's future; [`Yielded::last_was_yield`] says whether its
/// latest `Pending` was a yield.
pub(crate) struct Yielded<F> {
    inner: F,
    probe: Arc<Probe>,
    waker: Waker,
    last_was_yield: bool,
}

#[derive(Default)]
struct Probe {
    /// The task's waker, passed on every wake.
    task: Mutex<Option<Waker>>,
    /// Woken since the current poll began.
    woken: AtomicBool,
}

impl Wake for Probe {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(task) = task {
            task.wake();
        }
    }
}

impl<F> Yielded<F> {
    pub(crate) fn new(inner: F) -> Self {
        let probe = Arc::new(Probe::default());
        Self {
            inner,
            waker: Waker::from(Arc::clone(&probe)),
            probe,
            last_was_yield: false,
        }
    }

    /// Whether the future's latest `Pending` woke itself: it yielded while
    /// computing, not waiting for anything.
    pub(crate) fn last_was_yield(&self) -> bool {
        self.last_was_yield
    }
}

impl<F: Future + Unpin> Future for Yielded<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        {
            let mut task = this
                .probe
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        this.probe.woken.store(false, Ordering::Release);
        let result = Pin::new(&mut this.inner).poll(&mut Context::from_waker(&this.waker));
        if result.is_pending() {
            this.last_was_yield = this.probe.woken.load(Ordering::Acquire);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_yield_is_told_from_a_wait() {
        // As wasmtime yields at a fuel slice: wake, then `Pending` once.
        // (tokio's `yield_now` defers its wake past the poll, so the epoch
        // yields, which use it, are told by their own flag.)
        let mut once = false;
        let mut yielding = Yielded::new(std::future::poll_fn(move |cx| {
            if std::mem::replace(&mut once, true) {
                Poll::Ready(())
            } else {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }));
        assert!(futures_poll_once(&mut yielding).await.is_pending());
        assert!(yielding.last_was_yield());
        yielding.await;

        let mut waiting = Yielded::new(Box::pin(tokio::time::sleep(Duration::from_secs(60))));
        assert!(futures_poll_once(&mut waiting).await.is_pending());
        assert!(!waiting.last_was_yield());
    }

    /// Polls `future` once, from a task.
    async fn futures_poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx))).await
    }
}
