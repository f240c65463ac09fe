//! A thread pool of its own for guest code, apart from the embedder's runtime.
//!
//! By default an attempt runs on the runtime of whoever calls the host, and
//! the lanes keep one of its threads free of long computations. An embedder
//! whose runtime also serves I/O it cannot let wait (health checks, a
//! transport, timers) gives guests threads of their own instead
//! ([`HostBuilder::compute_threads`](crate::HostBuilder::compute_threads)):
//! each attempt is then spawned on this pool, and the caller's task only
//! waits for its result. The hand-off costs two thread wake-ups per attempt
//! (measured in the README), which is why it is a choice and not the default.
//!
//! Dropping the caller's future aborts the attempt at its next yield, as it
//! does on the caller's runtime; a panic in the attempt is resumed in the
//! caller.

use std::future::Future;

use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

/// The compute threads, a tokio runtime of their own.
pub(crate) struct ComputePool {
    /// `None` only while dropping.
    runtime: Option<Runtime>,
    threads: usize,
}

impl std::fmt::Debug for ComputePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputePool")
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl ComputePool {
    /// Starts `threads` compute threads (at least one), named
    /// `cofferdam-compute`.
    pub(crate) fn start(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("cofferdam-compute")
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
            threads,
        })
    }

    /// How many threads run guest code.
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `work` on the compute threads and waits for its output.
    pub(crate) async fn run<F>(&self, work: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let runtime = self.runtime.as_ref().expect("running until dropped");
        let mut task = AbortOnDrop(runtime.spawn(work));
        match (&mut task.0).await {
            Ok(output) => output,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // Aborted only by the runtime shutting down, which happens only
            // when the host (and so this future's owner) is gone.
            Err(error) => panic!("compute pool stopped under a running attempt: {error}"),
        }
    }
}

impl Drop for ComputePool {
    fn drop(&mut self) {
        // A host may be dropped inside an async context, where a runtime must
        // not block to shut down.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Aborts the spawned attempt when the caller stops waiting for it.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn work_runs_on_a_compute_thread() {
        let pool = ComputePool::start(2).expect("pool");
        let name = pool
            .run(async { std::thread::current().name().map(str::to_owned) })
            .await;
        assert_eq!(name.as_deref(), Some("cofferdam-compute"));
        assert_eq!(pool.threads(), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_caller_aborts_the_work() {
        let pool = ComputePool::start(1).expect("pool");
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        // Dropped with the task's state, on the compute thread.
        let (alive_tx, alive_rx) = tokio::sync::oneshot::channel::<()>();
        let waiting = pool.run(async move {
            let _alive = alive_tx;
            let _ = started_tx.send(());
            std::future::pending::<()>().await;
        });
        tokio::select! {
            () = waiting => unreachable!("pending work ended"),
            _ = started_rx => {}
        }
        // The caller's future is gone: the task is aborted and its state
        // dropped, which closes the channel.
        assert!(alive_rx.await.is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    #[should_panic(expected = "guest host bug")]
    async fn a_panic_reaches_the_caller() {
        let pool = ComputePool::start(1).expect("pool");
        pool.run(async { panic!("guest host bug") }).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn dropping_the_pool_inside_a_runtime_does_not_panic() {
        let pool = ComputePool::start(1).expect("pool");
        pool.run(async {}).await;
        drop(pool);
    }
}
