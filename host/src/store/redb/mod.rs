//! The embedded store: every durable record of a host in one redb file
//! (idempotency, budget ledger, audit history, escalations, tasks,
//! schedules). The only module that imports redb.
//!
//! Writes go through one writer thread that practises group commit: it takes
//! every request waiting in its queue, applies them in one write transaction,
//! commits once (one fsync), and only then answers each caller. Nothing is
//! reported to a caller before its record is committed. Audit records alone do
//! not force a commit: they ride along with the next durable one, or are
//! committed in batches (at most [`AUDIT_LINGER`] late) without fsync and
//! made durable by a flush within [`AUDIT_FLUSH`].
//!
//! Records are JSON with a version field; the file carries a schema version
//! and a newer or unreadable file is refused, never rewritten. The host sees
//! it only through the traits of [`crate::store`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use redb::{ConcurrencyMode, Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::model::budget::BudgetStatus;
use crate::model::error::storage;
use crate::model::error::{JournalError, StorageCause};
use crate::model::escalation::Escalation;
use crate::model::journal::{AttemptRecord, HistoryQuery, Reservation};
use crate::model::schedule::ScheduleRun;
use crate::model::task::TaskRecord;
use crate::model::units::unix_millis;
use crate::store::ledger::BudgetRecord;
use crate::store::owner::Liveness;

pub(crate) mod breaker_modes;
pub(crate) mod export;
mod impls;
mod ops;
mod outbox;
mod state;
mod writer;

use self::ops::{ScheduleTxn, run_range};
use self::writer::{Op, Reply, answer, lock_audit, writer};

/// Schema version this build writes and reads.
const SCHEMA_VERSION: u64 = 1;

/// Longest a non-durable audit record waits for an fsync.
const AUDIT_FLUSH: Duration = Duration::from_secs(1);

/// Requests applied in one transaction at most.
const MAX_BATCH: usize = 1024;

/// Audit records that trigger a commit on their own.
const AUDIT_BATCH: usize = 512;

/// Longest an audit record waits for a commit to ride along with.
const AUDIT_LINGER: Duration = Duration::from_millis(50);

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

const IDEMPOTENCY: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("idempotency");

const BUDGETS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("budgets");

const RESERVATIONS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("reservations");

const AUDIT: TableDefinition<'_, u128, &[u8]> = TableDefinition::new("audit");

const ESCALATIONS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("escalations");

const TASKS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("tasks");

const SCHEDULES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("schedules");

/// Runs of a schedule, keyed `NAME/SLOT` (slot in zero-padded Unix ms), so
/// one schedule's history is one key range. Names never contain `/`.
const SCHEDULE_RUNS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("schedule_runs");

/// The journal: a redb database and its writer thread. Cheap to clone.
/// When the last clone is dropped, the writer commits what it holds and the
/// drop waits for it, so a short-lived process (the CLI) loses no record.
#[derive(Clone)]
pub(crate) struct RedbStore {
    db: std::sync::Arc<Database>,
    // Field order matters: `tx` drops first, closing the channel, then the
    // last `_writer` handle joins the thread.
    tx: mpsc::Sender<Op>,
    /// Audit records waiting for the writer. Pushing one wakes the writer
    /// only when the buffer was empty (or fills up), not per record.
    audit: std::sync::Arc<AuditBuffer>,
    /// Answers whether the owner of a record is alive.
    live: Liveness,
    /// The directory of the journal file, where breaker modes are kept
    /// (`None` in memory).
    dir: Option<PathBuf>,
    _writer: std::sync::Arc<WriterThread>,
}

type AuditBuffer = std::sync::Mutex<Vec<AttemptRecord>>;

/// `definition` as `read` sees it, or `None` when nothing was ever written
/// to it (redb creates a table on its first write).
pub(super) fn open_existing<K: redb::Key + 'static, V: redb::Value + 'static>(
    read: &redb::ReadTransaction,
    definition: TableDefinition<'_, K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, JournalError> {
    match read.open_table(definition) {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(storage(e)),
    }
}

/// Joins the writer thread when the last journal handle goes away.
struct WriterThread(std::sync::Mutex<Option<std::thread::JoinHandle<()>>>);

impl Drop for WriterThread {
    fn drop(&mut self) {
        let handle = self.0.get_mut().ok().and_then(Option::take);
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("the journal writer thread panicked");
        }
    }
}

impl RedbStore {
    /// Opens (or creates) the journal file at `path`.
    pub(crate) fn open(path: &Path, group_commit: bool) -> Result<Self, JournalError> {
        let open_error = |source: StorageCause| JournalError::Open {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| open_error(Arc::new(e)))?;
        }
        if !path.exists() {
            create_atomically(path).map_err(open_error)?;
        }
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(path)
            .map_err(|e| open_error(Arc::new(e)))?;
        let dir = path.parent().unwrap_or(Path::new(".")).to_owned();
        let live = Liveness::register(&dir).map_err(|e| open_error(Arc::new(e)))?;
        Self::start(db, path, Some(dir), group_commit, live)
    }

    /// A journal that lives in memory only, for hosts without a data directory.
    pub(crate) fn in_memory() -> Result<Self, JournalError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| JournalError::Open {
                path: "<memory>".into(),
                source: Arc::new(e),
            })?;
        Self::start(db, Path::new("<memory>"), None, true, Liveness::in_memory())
    }

    fn start(
        db: Database,
        path: &Path,
        dir: Option<PathBuf>,
        group_commit: bool,
        live: Liveness,
    ) -> Result<Self, JournalError> {
        check_schema(&db, path)?;
        recover(&db, &live)?;
        let db = std::sync::Arc::new(db);
        let (tx, rx) = mpsc::channel();
        let writer_db = std::sync::Arc::clone(&db);
        let audit = std::sync::Arc::new(AuditBuffer::default());
        let writer_audit = std::sync::Arc::clone(&audit);
        let writer_live = live.clone();
        let handle = std::thread::Builder::new()
            .name("cofferdam-journal".into())
            .spawn(move || writer(&writer_db, &rx, &writer_audit, group_commit, &writer_live))
            .map_err(storage)?;
        let writer = std::sync::Arc::new(WriterThread(std::sync::Mutex::new(Some(handle))));
        Ok(Self {
            db,
            tx,
            audit,
            live,
            dir,
            _writer: writer,
        })
    }

    async fn request<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> Result<T, JournalError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(op(reply)).map_err(|_| JournalError::Stopped)?;
        answer.await.map_err(|_| JournalError::Stopped)?
    }

    /// Records an attempt; does not wait for the commit.
    fn push_audit(&self, record: AttemptRecord) {
        let pending = {
            let mut buffer = lock_audit(&self.audit);
            buffer.push(record);
            buffer.len()
        };
        if pending == 1 {
            let _ = self.tx.send(Op::AuditPending);
        } else if pending == AUDIT_BATCH {
            let _ = self.tx.send(Op::AuditFull);
        }
    }

    /// Every budget with a cap.
    fn read_budgets(&self) -> Result<Vec<BudgetStatus>, JournalError> {
        let read = self.db.begin_read().map_err(storage)?;
        let Some(table) = open_existing(&read, BUDGETS)? else {
            return Ok(Vec::new());
        };
        let now = unix_millis();
        let mut out = Vec::new();
        for row in table.iter().map_err(storage)? {
            let (key, value) = row.map_err(storage)?;
            let mut record: BudgetRecord = decode(key.value(), value.value())?;
            record.roll_window(now);
            out.push(record.status(key.value()));
        }
        Ok(out)
    }

    /// One task's stored state.
    fn read_task(&self, id: &str) -> Result<Option<TaskRecord>, JournalError> {
        let read = self.db.begin_read().map_err(storage)?;
        let Some(table) = open_existing(&read, TASKS)? else {
            return Ok(None);
        };
        let value = table.get(id).map_err(storage)?;
        value.map(|v| decode(id, v.value())).transpose()
    }

    /// Runs `work` inside one write transaction (group-committed, durable
    /// before this returns). `work` must check before it writes: an error it
    /// returns does not undo what it wrote.
    async fn schedules_txn<T: Send + 'static>(
        &self,
        work: impl FnOnce(&ScheduleTxn<'_>) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, JournalError> {
        self.request(|reply| {
            Op::Schedules(Box::new(move |txn: Option<&ScheduleTxn<'_>>| {
                let result = match txn {
                    Some(txn) => work(txn),
                    None => Err(JournalError::Stopped),
                };
                answer(reply, result)
            }))
        })
        .await
    }

    /// One schedule's runs, oldest slot first.
    fn read_schedule_runs(&self, name: &str) -> Result<Vec<ScheduleRun>, JournalError> {
        let read = self.db.begin_read().map_err(storage)?;
        let Some(table) = open_existing(&read, SCHEDULE_RUNS)? else {
            return Ok(Vec::new());
        };
        let (from, to) = run_range(name);
        let mut out = Vec::new();
        for row in table.range(from.as_str()..to.as_str()).map_err(storage)? {
            let (key, value) = row.map_err(storage)?;
            out.push(decode(key.value(), value.value())?);
        }
        Ok(out)
    }

    /// Every escalation, oldest first.
    fn read_escalations(&self) -> Result<Vec<Escalation>, JournalError> {
        let read = self.db.begin_read().map_err(storage)?;
        let Some(table) = open_existing(&read, ESCALATIONS)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in table.iter().map_err(storage)? {
            let (id, value) = row.map_err(storage)?;
            out.push(decode(&id.value().to_string(), value.value())?);
        }
        Ok(out)
    }

    /// One escalation.
    fn read_escalation(&self, id: u64) -> Result<Option<Escalation>, JournalError> {
        let read = self.db.begin_read().map_err(storage)?;
        let Some(table) = open_existing(&read, ESCALATIONS)? else {
            return Ok(None);
        };
        let value = table.get(id).map_err(storage)?;
        value
            .map(|v| decode(&id.to_string(), v.value()))
            .transpose()
    }

    /// Every record of a table keyed by name, decoded, in key order.
    fn all_by_name<T: serde::de::DeserializeOwned>(
        &self,
        definition: TableDefinition<'_, &str, &[u8]>,
    ) -> Result<Vec<T>, JournalError> {
        let read = self.db.begin_read().map_err(storage)?;
        Ok(export::by_name(&read, definition)?
            .into_iter()
            .map(|(_, value)| value)
            .collect())
    }

    /// Attempts matching `query`, newest first.
    fn read_history(&self, query: &HistoryQuery) -> Result<Vec<AttemptRecord>, JournalError> {
        let read = self.db.begin_read().map_err(storage)?;
        let Some(table) = open_existing(&read, AUDIT)? else {
            return Ok(Vec::new());
        };
        let since = u128::from(query.since_ms.unwrap_or(0)) << 64;
        let until = query.until_ms.map_or(u128::MAX, |ms| u128::from(ms) << 64);
        let limit = query.limit.unwrap_or(100);
        let mut out = Vec::new();
        for row in table.range(since..until).map_err(storage)?.rev() {
            let (key, value) = row.map_err(storage)?;
            let record: AttemptRecord = decode(&key.value().to_string(), value.value())?;
            let keep = query.tool.as_ref().is_none_or(|t| *t == record.tool)
                && query
                    .task
                    .as_ref()
                    .is_none_or(|t| record.task.as_ref() == Some(t))
                && query
                    .agent
                    .as_ref()
                    .is_none_or(|a| record.agent.as_ref() == Some(a));
            if keep {
                out.push(record);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, JournalError> {
    serde_json::from_slice(bytes).map_err(|source| JournalError::BadRecord {
        key: key.to_owned(),
        source,
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain records with string keys cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Refuses files from a newer schema; stamps new files. Reads first, so
/// opening an existing journal costs no commit.
fn check_schema(db: &Database, path: &Path) -> Result<(), JournalError> {
    let read = db.begin_read().map_err(storage)?;
    let stamped = match open_existing(&read, META)? {
        Some(meta) => meta.get("schema").map_err(storage)?.map(|v| v.value()),
        None => None,
    };
    drop(read);
    match stamped {
        Some(found) if found > SCHEMA_VERSION => {
            return Err(JournalError::NewerVersion {
                path: path.to_owned(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Some(_) => return Ok(()),
        None => {}
    }
    let txn = db.begin_write().map_err(storage)?;
    {
        let mut meta = txn.open_table(META).map_err(storage)?;
        let found = meta.get("schema").map_err(storage)?.map(|v| v.value());
        match found {
            Some(found) if found > SCHEMA_VERSION => {
                return Err(JournalError::NewerVersion {
                    path: path.to_owned(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(_) => {}
            None => {
                meta.insert("schema", SCHEMA_VERSION).map_err(storage)?;
            }
        }
    }
    txn.commit().map_err(storage)
}

/// Creates a new journal file beside `path` and links it into place, so a
/// process killed while redb writes the first header leaves no half-made
/// file at `path` (one that could never be opened again).
fn create_atomically(path: &Path) -> Result<(), StorageCause> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fresh = path.with_file_name(format!(".{name}.creating-{}", std::process::id()));
    let _ = std::fs::remove_file(&fresh);
    let db = Database::builder()
        .create(&fresh)
        .map_err(|e| -> StorageCause { Arc::new(e) })?;
    check_schema(&db, &fresh).map_err(|e| -> StorageCause { Arc::new(e) })?;
    drop(db);
    let linked = match std::fs::hard_link(&fresh, path) {
        // Another process created it first: theirs is as good.
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(Arc::new(e) as StorageCause),
        _ => Ok(()),
    };
    let _ = std::fs::remove_file(&fresh);
    linked
}

/// After a crash: reservations of dead processes become spending (a crash
/// cannot forget what may have been spent); claims of dead processes are
/// handled when next claimed (see `claim`).
fn recover(db: &Database, live: &Liveness) -> Result<(), JournalError> {
    let read = db.begin_read().map_err(storage)?;
    let orphans = match open_existing(&read, RESERVATIONS)? {
        Some(table) => {
            let mut any = false;
            for row in table.iter().map_err(storage)? {
                let (id, value) = row.map_err(storage)?;
                let reservation: Reservation = decode(&id.value().to_string(), value.value())?;
                any |= !live.alive(reservation.owner.as_deref(), reservation.owner_pid);
            }
            any
        }
        None => false,
    };
    drop(read);
    if !orphans {
        return Ok(());
    }
    let txn = db.begin_write().map_err(storage)?;
    {
        let mut reservations = txn.open_table(RESERVATIONS).map_err(storage)?;
        let mut budgets = txn.open_table(BUDGETS).map_err(storage)?;
        let mut dead = Vec::new();
        for row in reservations.iter().map_err(storage)? {
            let (id, value) = row.map_err(storage)?;
            let reservation: Reservation = decode(&id.value().to_string(), value.value())?;
            if !live.alive(reservation.owner.as_deref(), reservation.owner_pid) {
                dead.push(reservation);
            }
        }
        for reservation in dead {
            reservations.remove(reservation.id).map_err(storage)?;
            for scope in &reservation.scopes {
                let Some(bytes) = budgets
                    .get(scope.as_str())
                    .map_err(storage)?
                    .map(|v| v.value().to_vec())
                else {
                    continue;
                };
                let mut record: BudgetRecord = decode(scope, &bytes)?;
                record.reserved = record.reserved.saturating_sub(reservation.tokens);
                record.spent += reservation.tokens;
                budgets
                    .insert(scope.as_str(), encode(&record).as_slice())
                    .map_err(storage)?;
            }
        }
    }
    txn.commit().map_err(storage)
}

#[cfg(test)]
mod tests;
