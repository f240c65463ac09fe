//! The shared store: every durable record of a deployment in one PostgreSQL
//! database, so several replicas keep one truth (idempotency keys, budgets,
//! audit history, escalations, tasks, schedules, breaker modes). With the
//! redb store, the only module that knows a database driver.
//!
//! The store owns a small tokio runtime of its own (the host may be built
//! outside any runtime, and the trait's reads are synchronous): writes are
//! tasks spawned on it and awaited, reads are tasks whose answer the caller
//! waits for on a channel. Every operation is one transaction under a
//! deadline, so a lost database is a [`JournalError::Unavailable`], never a
//! hang.
//!
//! Ownership is a lease (see [`lease`]): the store heartbeats its owner row,
//! and records of an owner whose lease ran out are taken over — a
//! side-effecting key becomes unknown and is escalated once, a reservation is
//! counted as spent. Time is the database's (`now()`), so the replicas'
//! clocks do not matter.
//!
//! The keyed-call writes (idempotency claims, outcomes, releases) of
//! concurrent calls share one transaction and one commit, like the redb
//! writer's group commit (see [`batch`], which says why budget operations
//! stay a transaction each); every other operation is a transaction of its
//! own. Audit records are buffered and inserted in batches. With group
//! commit off ([`PostgresConfig`]'s `group_commit`, set by
//! `HostBuilder::group_commit`), every write is a transaction of its own.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::Notify;

use crate::model::error::{JournalError, StorageCause, storage};
use crate::model::journal::AttemptRecord;
use crate::store::config::PostgresConfig;

mod batch;
mod impls;
mod import;
pub(crate) mod lease;
mod ops;
mod outbox;
mod records;
mod schema;
mod state;

/// Audit records inserted in one statement at most.
const AUDIT_BATCH: usize = 512;

/// Longest an audit record waits in the buffer.
const AUDIT_LINGER: Duration = Duration::from_millis(50);

/// What a store operation can fail with inside the runtime; turned into a
/// [`JournalError`] naming the store at the boundary.
#[derive(Debug)]
pub(super) enum Failure {
    Journal(JournalError),
    Db(tokio_postgres::Error),
    Pool(deadpool_postgres::PoolError),
    TimedOut,
}

impl From<JournalError> for Failure {
    fn from(e: JournalError) -> Self {
        Self::Journal(e)
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e)
    }
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Pool(e)
    }
}

/// An operation that took longer than the store's deadline.
#[derive(Debug, thiserror::Error)]
#[error("no answer within {0:?}")]
struct TimedOut(Duration);

impl Failure {
    /// The error the store's callers see. A lost connection also drops the
    /// pool's idle connections: the database may have cut them all (a
    /// restart, a failover), and one that looks open is handed out before
    /// its driver task has noticed. The next operations connect afresh.
    fn into_journal(self, shared: &Shared) -> JournalError {
        if self.connection_lost() {
            shared.pool.retain(|_, _| false);
        }
        let (store, deadline) = (shared.name.as_str(), shared.deadline);
        let unavailable = |source: StorageCause| JournalError::Unavailable {
            store: store.to_owned(),
            source,
        };
        match self {
            Self::Journal(e) => e,
            Self::Db(e) if !lost(&e) => storage(e),
            Self::Db(e) => unavailable(Arc::new(e)),
            Self::Pool(e) => unavailable(Arc::new(e)),
            Self::TimedOut => unavailable(Arc::new(TimedOut(deadline))),
        }
    }

    /// Whether a connection broke or could not be made (not a refused
    /// statement, a timeout or a pool with no free slot).
    fn connection_lost(&self) -> bool {
        match self {
            Self::Db(e) => broken(e),
            Self::Pool(deadpool_postgres::PoolError::Timeout(
                deadpool_postgres::TimeoutType::Wait,
            )) => false,
            Self::Pool(_) => true,
            Self::Journal(_) | Self::TimedOut => false,
        }
    }
}

/// Whether a driver error means the database is out of reach (rather than
/// that it refused a statement): its connection broke, or it cancelled the
/// statement (57014: statement_timeout) or ran out of resources (53).
fn lost(e: &tokio_postgres::Error) -> bool {
    broken(e)
        || e.code()
            .is_some_and(|code| code.code() == "57014" || code.code().starts_with("53"))
}

/// Whether a driver error means its connection is gone: no SQL state (I/O,
/// a closed connection, a failed connect), a connection exception (08), or
/// a shutdown or "cannot connect now" (57P0x).
fn broken(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_none_or(|code| code.code().starts_with("08") || code.code().starts_with("57P"))
}

pub(super) type Outcome<T> = Result<T, Failure>;

/// What the runtime's tasks share.
pub(super) struct Shared {
    pub(super) pool: Pool,
    /// The owner id this store heartbeats and stamps on what it holds.
    pub(super) owner: String,
    pub(super) lease: Duration,
    /// The URL without its password.
    pub(super) name: String,
    deadline: Duration,
    audit: Mutex<Vec<AttemptRecord>>,
    audit_wake: Notify,
    /// The queue of keyed-call writes to batch (none without group commit).
    batches: Option<tokio::sync::mpsc::UnboundedSender<batch::Queued>>,
}

impl Shared {
    fn take_audit(&self) -> Vec<AttemptRecord> {
        std::mem::take(&mut *self.audit.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Inserts every buffered audit record.
    pub(super) async fn flush_audit(&self) -> Outcome<()> {
        loop {
            let mut records = self.take_audit();
            if records.is_empty() {
                return Ok(());
            }
            while !records.is_empty() {
                let rest = records.split_off(records.len().min(AUDIT_BATCH));
                records::insert_audit(self, &records).await?;
                records = rest;
            }
        }
    }
}

/// The PostgreSQL store. Dropping it inserts the audit records it still
/// buffers, then stops its runtime.
pub(crate) struct PgStore {
    shared: Arc<Shared>,
    handle: tokio::runtime::Handle,
    _runtime: RuntimeGuard,
}

/// Stops the store's runtime (without blocking, so a store may be dropped
/// inside another runtime) once buffered audit records are in.
struct RuntimeGuard {
    runtime: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
}

impl Drop for RuntimeGuard {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        let shared = Arc::clone(&self.shared);
        runtime.spawn(async move {
            let flushed = tokio::time::timeout(shared.deadline, shared.flush_audit()).await;
            if !matches!(flushed, Ok(Ok(()))) {
                tracing::warn!(store = %shared.name, "audit records lost: the store did not take them");
            }
            let _ = done.send(());
        });
        let _ = wait.recv_timeout(self.shared.deadline + Duration::from_secs(1));
        runtime.shutdown_background();
    }
}

impl PgStore {
    /// Connects, applies the schema migrations this build knows (refusing a
    /// newer schema), registers this store's owner lease and starts its
    /// heartbeat and audit tasks.
    pub(crate) fn open(config: &PostgresConfig) -> Result<Self, JournalError> {
        let name = config.redacted_url();
        let driver = config.driver_config()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cofferdam-pg")
            .enable_all()
            .build()
            .map_err(|e| JournalError::Unavailable {
                store: name.clone(),
                source: Arc::new(e),
            })?;
        let manager = Manager::from_config(
            driver,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let deadline = config.statement_timeout + config.connect_timeout;
        let pool = {
            // The pool's timers need the runtime it runs on.
            let _entered = runtime.enter();
            Pool::builder(manager)
                .max_size(config.pool_size)
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(deadline))
                .create_timeout(Some(config.connect_timeout))
                .recycle_timeout(Some(config.connect_timeout))
                .build()
                .map_err(|e| JournalError::BadUrl {
                    url: name.clone(),
                    reason: e.to_string(),
                })?
        };
        let (batches, queue) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            pool,
            owner: config
                .owner
                .clone()
                .unwrap_or_else(|| crate::store::owner::me().to_owned()),
            lease: config.lease,
            name,
            deadline,
            audit: Mutex::new(Vec::new()),
            audit_wake: Notify::new(),
            batches: config.group_commit.then_some(batches),
        });
        let handle = runtime.handle().clone();
        let store = Self {
            shared: Arc::clone(&shared),
            handle,
            _runtime: RuntimeGuard {
                runtime: Some(runtime),
                shared,
            },
        };
        store.block(|shared| async move {
            schema::migrate(&shared).await?;
            lease::heartbeat(&shared).await?;
            lease::take_over_dead(&shared).await?;
            Ok(())
        })?;
        store
            .handle
            .spawn(lease::keep_alive(Arc::downgrade(&store.shared)));
        store
            .handle
            .spawn(audit_loop(Arc::downgrade(&store.shared)));
        if config.group_commit {
            store
                .handle
                .spawn(batch::batcher(Arc::downgrade(&store.shared), queue));
        }
        Ok(store)
    }

    /// Runs `work` on the store's runtime under its deadline.
    fn spawn<T, F, Fut>(&self, work: F) -> tokio::task::JoinHandle<Result<T, JournalError>>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Shared>) -> Fut + Send + 'static,
        Fut: Future<Output = Outcome<T>> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        self.handle.spawn(async move {
            let deadline = shared.deadline;
            let result = match tokio::time::timeout(deadline, work(Arc::clone(&shared))).await {
                Ok(result) => result,
                Err(_) => Err(Failure::TimedOut),
            };
            result.map_err(|e| e.into_journal(&shared))
        })
    }

    /// A write: runs on the store's runtime; the caller awaits it from any
    /// runtime.
    pub(super) fn write<T, F, Fut>(&self, work: F) -> crate::store::StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Shared>) -> Fut + Send + 'static,
        Fut: Future<Output = Outcome<T>> + Send + 'static,
    {
        let task = self.spawn(work);
        Box::pin(async move { task.await.map_err(|_| JournalError::Stopped)? })
    }

    /// A read (or a write the trait wants synchronous): runs on the store's
    /// runtime while the caller's thread waits on a channel, which is safe
    /// inside or outside another runtime.
    pub(super) fn block<T, F, Fut>(&self, work: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Shared>) -> Fut + Send + 'static,
        Fut: Future<Output = Outcome<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let task = self.spawn(work);
        self.handle.spawn(async move {
            let _ = tx.send(task.await.unwrap_or(Err(JournalError::Stopped)));
        });
        rx.recv().map_err(|_| JournalError::Stopped)?
    }

    /// Queues an attempt record for the next audit batch.
    pub(super) fn push_audit(&self, record: AttemptRecord) {
        let pending = {
            let mut buffer = self
                .shared
                .audit
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            buffer.push(record);
            buffer.len()
        };
        if pending == 1 || pending >= AUDIT_BATCH {
            self.shared.audit_wake.notify_one();
        }
    }

    /// This store's owner id.
    #[cfg(test)]
    pub(crate) fn owner(&self) -> &str {
        &self.shared.owner
    }
}

/// Inserts buffered audit records: a batch when [`AUDIT_BATCH`] pile up or
/// the oldest waited [`AUDIT_LINGER`]. Ends with the store.
async fn audit_loop(shared: std::sync::Weak<Shared>) {
    loop {
        let wake = match shared.upgrade() {
            Some(s) => {
                let notified = async move { s.audit_wake.notified().await };
                tokio::time::timeout(Duration::from_secs(1), notified)
            }
            None => return,
        };
        let _ = wake.await;
        tokio::time::sleep(AUDIT_LINGER).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Err(e) = shared.flush_audit().await {
            let e = e.into_journal(&shared);
            tracing::warn!(error = %e, "cannot record attempts in the audit history");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
