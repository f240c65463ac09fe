//! Warm instances: a tool that opted in (`[warm]`) keeps up to N idle
//! instances, each with its store and sandbox, and a call takes one instead
//! of instantiating afresh.
//!
//! An instance returns to the pool only after a call that ended normally
//! (an output or a tool-reported error). One that trapped, ran out of fuel,
//! hit its deadline or was cancelled is dropped on the spot. Instances are
//! also retired after `max_invocations` calls, beyond the idle cap, and after
//! `idle` without a call (checked on every take and put, and by a sweep
//! task). What carries over between calls (memory, globals, handles,
//! `/scratch`) is the tool's own state; see [`crate::WarmSpec`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;
use std::time::Instant;

use wasmtime::Store;

use crate::runtime::bindings::Tool;
use crate::runtime::sandbox::{CallState, Sandbox};

/// Warm reuse as configured: `None` when off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WarmConfig {
    pub instances: usize,
    pub max_invocations: u32,
    pub idle: Duration,
}

/// An instance between calls.
pub(crate) struct WarmInstance {
    pub store: Store<CallState>,
    pub instance: Tool,
    pub sandbox: Sandbox,
    /// Calls it has served.
    pub invocations: u32,
    idle_since: Instant,
}

impl WarmInstance {
    pub(crate) fn new(
        store: Store<CallState>,
        instance: Tool,
        sandbox: Sandbox,
        invocations: u32,
    ) -> Self {
        Self {
            store,
            instance,
            sandbox,
            invocations,
            idle_since: Instant::now(),
        }
    }
}

/// Counters of a tool's warm pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WarmStats {
    /// Instances idle now.
    pub idle: usize,
    /// Calls served by a reused instance.
    pub reused: u64,
    /// Instances retired (trap, timeout, cancel, `max_invocations`, idle, or
    /// the pool was full).
    pub retired: u64,
}

/// One tool's idle instances.
pub(crate) struct WarmPool {
    config: WarmConfig,
    idle: Mutex<Vec<WarmInstance>>,
    reused: AtomicU64,
    retired: AtomicU64,
}

impl WarmPool {
    /// A pool, and a task that retires idle instances until the pool is
    /// dropped (when a runtime is there to run it).
    pub(crate) fn start(config: WarmConfig) -> Arc<Self> {
        let pool = Arc::new(Self {
            config,
            idle: Mutex::new(Vec::with_capacity(config.instances)),
            reused: AtomicU64::new(0),
            retired: AtomicU64::new(0),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak: Weak<Self> = Arc::downgrade(&pool);
            let every = config.idle;
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    match weak.upgrade() {
                        Some(pool) => pool.sweep(),
                        None => break,
                    }
                }
            });
        }
        pool
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<WarmInstance>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle instance, if any.
    pub(crate) fn take(&self) -> Option<WarmInstance> {
        let (taken, stale) = {
            let mut idle = self.lock();
            let stale = self.expire(&mut idle);
            (idle.pop(), stale)
        };
        drop(stale);
        if taken.is_some() {
            self.reused.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// Keeps an instance that ended its call normally, unless it is due for
    /// retirement or the pool is full.
    pub(crate) fn put(&self, mut warm: WarmInstance) {
        if warm.invocations >= self.config.max_invocations {
            self.retire();
            return;
        }
        warm.idle_since = Instant::now();
        let (refused, stale) = {
            let mut idle = self.lock();
            let stale = self.expire(&mut idle);
            if idle.len() < self.config.instances {
                idle.push(warm);
                (None, stale)
            } else {
                (Some(warm), stale)
            }
        };
        if refused.is_some() {
            self.retire();
        }
        drop((refused, stale));
    }

    /// Counts an instance dropped after a trap, timeout or cancellation.
    pub(crate) fn retire(&self) {
        self.retired.fetch_add(1, Ordering::Relaxed);
    }

    /// Retires instances idle too long.
    pub(crate) fn sweep(&self) {
        let stale = self.expire(&mut self.lock());
        drop(stale);
    }

    /// Removes the instances idle past the limit (dropped by the caller,
    /// outside the lock). The vector is ordered by idle time (puts push,
    /// takes pop), so the stale ones are a prefix.
    fn expire(&self, idle: &mut Vec<WarmInstance>) -> Vec<WarmInstance> {
        let now = Instant::now();
        let stale = idle
            .iter()
            .take_while(|w| now.duration_since(w.idle_since) >= self.config.idle)
            .count();
        if stale == 0 {
            return Vec::new();
        }
        self.retired.fetch_add(stale as u64, Ordering::Relaxed);
        idle.drain(..stale).collect()
    }

    pub(crate) fn stats(&self) -> WarmStats {
        WarmStats {
            idle: self.lock().len(),
            reused: self.reused.load(Ordering::Relaxed),
            retired: self.retired.load(Ordering::Relaxed),
        }
    }
}
