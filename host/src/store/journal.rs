//! Durable state in redb: the idempotency journal, the budget ledger and the
//! audit history. The only module that imports redb.
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
//! and a newer or unreadable file is refused, never rewritten. The
//! [`JournalStore`] and [`BudgetStore`] traits are what the host needs, so a
//! shared backend (PostgreSQL) can be added beside this one.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use redb::{
    ConcurrencyMode, Database, Durability, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::model::budget::{BudgetCap, BudgetStatus, ScopeId};
use crate::model::error::ErrorClass;
pub use crate::model::error::JournalError;
use crate::model::error::storage;
use crate::model::escalation::{
    Escalation, EscalationError, EscalationReason, NewEscalation, Resolution, Resolved,
};
pub use crate::model::journal::{
    AttemptRecord, HistoryQuery, JournalEntry, KeyState, StoredOutcome,
};
pub(crate) use crate::model::journal::{Claim, Fingerprint, JournalKey, Reservation, Reserved};
use crate::model::schedule::{
    Created, RunEnd, RunStatus, Schedule, ScheduleChange, ScheduleRun, SlotClaim,
};
use crate::model::task::TaskRecord;
pub(crate) use crate::model::units::unix_millis;
use crate::model::units::{Effect, Tokens};
use crate::store::owner::Liveness;
use crate::store::{
    AuditLog, BudgetLedger, EscalationStore, IdempotencyStore, ScheduleStore, Store, StoreFuture,
    TaskStore,
};

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct BudgetRecord {
    v: u32,
    cap: BudgetCap,
    spent: u64,
    reserved: u64,
    window_start_ms: u64,
    /// Whether the soft-threshold event fired in this window.
    soft_alerted: bool,
}

impl BudgetRecord {
    fn roll_window(&mut self, now_ms: u64) {
        if let Some(window) = self.cap.window_ms
            && now_ms >= self.window_start_ms.saturating_add(window)
        {
            self.spent = 0;
            self.soft_alerted = false;
            self.window_start_ms = now_ms - (now_ms - self.window_start_ms) % window.max(1);
        }
    }

    fn left(&self) -> u64 {
        self.cap.hard.0.saturating_sub(self.spent + self.reserved)
    }

    fn status(&self, scope: &str) -> BudgetStatus {
        BudgetStatus {
            scope: scope.to_owned(),
            cap: self.cap,
            spent: Tokens(self.spent),
            reserved: Tokens(self.reserved),
            left: Tokens(self.left()),
            window_start_ms: self.cap.window_ms.map(|_| self.window_start_ms),
            past_soft_threshold: self.soft_alerted,
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, JournalError>>;

enum Op {
    Claim {
        key: JournalKey,
        fingerprint: Fingerprint,
        effect: Effect,
        lease: Duration,
        context: Option<Box<NewEscalation>>,
        reply: Reply<Claim>,
    },
    Complete {
        key: JournalKey,
        outcome: StoredOutcome,
        reply: Reply<()>,
    },
    Release {
        key: JournalKey,
        reply: Reply<()>,
    },
    MarkUnknown {
        key: JournalKey,
        reason: String,
        context: Box<NewEscalation>,
        reply: Reply<()>,
    },
    Escalate {
        new: Box<NewEscalation>,
        reply: Reply<u64>,
    },
    PutTask {
        record: Box<TaskRecord>,
        reply: Reply<()>,
    },
    Resolve {
        id: u64,
        resolution: Resolution,
        note: String,
        reply: Reply<Result<Escalation, EscalationError>>,
    },
    Reserve {
        scopes: Vec<ScopeId>,
        want: u64,
        whole: bool,
        reply: Reply<Reserved>,
    },
    Settle {
        reservation: Reservation,
        actual: u64,
        reply: Reply<()>,
    },
    Charge {
        scope: ScopeId,
        tokens: u64,
        reply: Reply<Option<BudgetStatus>>,
    },
    SetCap {
        scope: ScopeId,
        cap: Option<BudgetCap>,
        reply: Reply<()>,
    },
    Reap {
        before_ms: u64,
        reply: Reply<usize>,
    },
    Audit(Box<AttemptRecord>),
    /// The audit buffer has records: commit them within [`AUDIT_LINGER`].
    AuditPending,
    /// The audit buffer is full: commit it now.
    AuditFull,
    /// Schedule-store work done inside the batch's transaction (`None` when
    /// the transaction could not begin: the work answers an error).
    Schedules(ScheduleWork),
}

type ScheduleWork = Box<dyn FnOnce(Option<&ScheduleTxn<'_>>) -> Answer + Send>;

impl Op {
    /// Whether the caller waits for this op, so it must be durable first.
    fn durable(&self) -> bool {
        !matches!(self, Op::Audit(_) | Op::AuditPending | Op::AuditFull)
    }
}

/// A reply to send once the batch's commit is known.
type Answer = Box<dyn FnOnce(Result<(), JournalError>) + Send>;

fn answer<T: Send + 'static>(reply: Reply<T>, result: Result<T, JournalError>) -> Answer {
    Box::new(move |commit| {
        let _ = reply.send(commit.and(result));
    })
}

/// The journal: a redb database and its writer thread. Cheap to clone.
/// When the last clone is dropped, the writer commits what it holds and the
/// drop waits for it, so a short-lived process (the CLI) loses no record.
#[derive(Clone)]
pub(crate) struct Journal {
    db: std::sync::Arc<Database>,
    // Field order matters: `tx` drops first, closing the channel, then the
    // last `_writer` handle joins the thread.
    tx: mpsc::Sender<Op>,
    /// Audit records waiting for the writer. Pushing one wakes the writer
    /// only when the buffer was empty (or fills up), not per record.
    audit: std::sync::Arc<AuditBuffer>,
    /// Answers whether the owner of a record is alive.
    live: Liveness,
    _writer: std::sync::Arc<WriterThread>,
}

type AuditBuffer = std::sync::Mutex<Vec<AttemptRecord>>;

fn lock_audit(buffer: &AuditBuffer) -> std::sync::MutexGuard<'_, Vec<AttemptRecord>> {
    buffer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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

impl Journal {
    /// Opens (or creates) the journal file at `path`.
    pub(crate) fn open(path: &Path, group_commit: bool) -> Result<Self, JournalError> {
        let open_error = |e: &dyn std::fmt::Display| JournalError::Open {
            path: path.to_owned(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| open_error(&e))?;
        }
        if !path.exists() {
            create_atomically(path).map_err(|e| open_error(&e))?;
        }
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(path)
            .map_err(|e| open_error(&e))?;
        let live = Liveness::register(path.parent().unwrap_or(Path::new(".")))
            .map_err(|e| open_error(&e))?;
        Self::start(db, path, group_commit, live)
    }

    /// A journal that lives in memory only, for hosts without a data directory.
    pub(crate) fn in_memory() -> Result<Self, JournalError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| JournalError::Open {
                path: "<memory>".into(),
                message: e.to_string(),
            })?;
        Self::start(db, Path::new("<memory>"), true, Liveness::in_memory())
    }

    fn start(
        db: Database,
        path: &Path,
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
        let table = match read.open_table(BUDGETS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(storage(e)),
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
        let table = match read.open_table(TASKS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(storage(e)),
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
        let table = match read.open_table(SCHEDULE_RUNS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(storage(e)),
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
        let table = match read.open_table(ESCALATIONS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(storage(e)),
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
        let table = match read.open_table(ESCALATIONS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(storage(e)),
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
        let table = match read.open_table(definition) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(storage(e)),
        };
        let mut out = Vec::new();
        for row in table.iter().map_err(storage)? {
            let (key, value) = row.map_err(storage)?;
            out.push(decode(key.value(), value.value())?);
        }
        Ok(out)
    }

    /// Attempts matching `query`, newest first.
    fn read_history(&self, query: &HistoryQuery) -> Result<Vec<AttemptRecord>, JournalError> {
        let read = self.db.begin_read().map_err(storage)?;
        let table = match read.open_table(AUDIT) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(storage(e)),
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

impl IdempotencyStore for Journal {
    fn claim(
        &self,
        key: JournalKey,
        fingerprint: Fingerprint,
        effect: Effect,
        lease: Duration,
        context: Option<NewEscalation>,
    ) -> StoreFuture<'_, Claim> {
        Box::pin(self.request(move |reply| Op::Claim {
            key,
            fingerprint,
            effect,
            lease,
            context: context.map(Box::new),
            reply,
        }))
    }

    fn complete(&self, key: JournalKey, outcome: StoredOutcome) -> StoreFuture<'_, ()> {
        Box::pin(self.request(move |reply| Op::Complete {
            key,
            outcome,
            reply,
        }))
    }

    fn release(&self, key: JournalKey) -> StoreFuture<'_, ()> {
        Box::pin(self.request(move |reply| Op::Release { key, reply }))
    }

    fn mark_unknown(
        &self,
        key: JournalKey,
        reason: String,
        context: NewEscalation,
    ) -> StoreFuture<'_, ()> {
        Box::pin(self.request(move |reply| Op::MarkUnknown {
            key,
            reason,
            context: Box::new(context),
            reply,
        }))
    }

    fn reap(&self, before_ms: u64) -> StoreFuture<'_, usize> {
        Box::pin(self.request(move |reply| Op::Reap { before_ms, reply }))
    }

    fn entries(&self) -> Result<Vec<JournalEntry>, JournalError> {
        self.all_by_name(IDEMPOTENCY)
    }
}

impl BudgetLedger for Journal {
    fn reserve(&self, scopes: Vec<ScopeId>, want: u64, whole: bool) -> StoreFuture<'_, Reserved> {
        Box::pin(self.request(move |reply| Op::Reserve {
            scopes,
            want,
            whole,
            reply,
        }))
    }

    fn settle(&self, reservation: Reservation, actual: u64) -> StoreFuture<'_, ()> {
        Box::pin(self.request(move |reply| Op::Settle {
            reservation,
            actual,
            reply,
        }))
    }

    fn charge(&self, scope: ScopeId, tokens: u64) -> StoreFuture<'_, Option<BudgetStatus>> {
        Box::pin(self.request(move |reply| Op::Charge {
            scope,
            tokens,
            reply,
        }))
    }

    fn set_cap(&self, scope: ScopeId, cap: Option<BudgetCap>) -> StoreFuture<'_, ()> {
        Box::pin(self.request(move |reply| Op::SetCap { scope, cap, reply }))
    }

    fn budgets(&self) -> Result<Vec<BudgetStatus>, JournalError> {
        self.read_budgets()
    }
}

impl AuditLog for Journal {
    fn audit(&self, record: AttemptRecord) {
        self.push_audit(record);
    }

    fn history(&self, query: &HistoryQuery) -> Result<Vec<AttemptRecord>, JournalError> {
        self.read_history(query)
    }
}

impl EscalationStore for Journal {
    fn escalate(&self, new: NewEscalation) -> StoreFuture<'_, u64> {
        Box::pin(self.request(move |reply| Op::Escalate {
            new: Box::new(new),
            reply,
        }))
    }

    fn resolve_escalation(
        &self,
        id: u64,
        resolution: Resolution,
        note: String,
    ) -> StoreFuture<'_, Result<Escalation, EscalationError>> {
        Box::pin(self.request(move |reply| Op::Resolve {
            id,
            resolution,
            note,
            reply,
        }))
    }

    fn escalations(&self) -> Result<Vec<Escalation>, JournalError> {
        self.read_escalations()
    }

    fn escalation(&self, id: u64) -> Result<Option<Escalation>, JournalError> {
        self.read_escalation(id)
    }
}

impl TaskStore for Journal {
    fn put_task(&self, record: TaskRecord) -> StoreFuture<'_, ()> {
        Box::pin(self.request(move |reply| Op::PutTask {
            record: Box::new(record),
            reply,
        }))
    }

    fn task(&self, id: &str) -> Result<Option<TaskRecord>, JournalError> {
        self.read_task(id)
    }

    fn tasks(&self) -> Result<Vec<TaskRecord>, JournalError> {
        self.all_by_name(TASKS)
    }
}

impl ScheduleStore for Journal {
    fn create_schedule(&self, record: Schedule, quota: usize) -> StoreFuture<'_, Created> {
        Box::pin(self.schedules_txn(move |txn| {
            let name = record.spec.name.clone();
            if let Some(existing) = txn.get(&name)? {
                return Ok(if existing.spec == record.spec {
                    Created::Same(existing)
                } else {
                    Created::Conflict
                });
            }
            let owned = txn
                .list()?
                .iter()
                .filter(|s| s.spec.owner == record.spec.owner)
                .count();
            if owned >= quota {
                return Ok(Created::OverQuota);
            }
            txn.put(&name, &record)?;
            Ok(Created::New(record))
        }))
    }

    fn update_schedule(
        &self,
        name: String,
        change: ScheduleChange,
    ) -> StoreFuture<'_, Option<Schedule>> {
        Box::pin(self.schedules_txn(move |txn| {
            let Some(mut schedule) = txn.get(&name)? else {
                return Ok(None);
            };
            if schedule.apply(change) {
                txn.put(&name, &schedule)?;
            }
            Ok(Some(schedule))
        }))
    }

    fn delete_schedule(&self, name: String) -> StoreFuture<'_, bool> {
        Box::pin(self.schedules_txn(move |txn| txn.remove(&name)))
    }

    fn claim_slot(&self, claim: SlotClaim) -> StoreFuture<'_, Option<Schedule>> {
        Box::pin(self.schedules_txn(move |txn| {
            let name = claim.name.clone();
            let Some(mut schedule) = txn.get(&name)? else {
                return Ok(None);
            };
            let claimed = schedule.claim(claim);
            for run in &claimed.runs {
                txn.put_run(&name, run.slot.as_millisecond(), run)?;
            }
            if claimed.changed {
                txn.put(&name, &schedule)?;
            }
            Ok(claimed.claimed.then_some(schedule))
        }))
    }

    fn finish_run(&self, end: RunEnd) -> StoreFuture<'_, Option<ScheduleRun>> {
        Box::pin(self.schedules_txn(move |txn| {
            let (name, slot) = (end.name.clone(), end.slot.as_millisecond());
            let Some(mut schedule) = txn.get(&name)? else {
                return Ok(None);
            };
            let Some(mut run) = txn.run(&name, slot)? else {
                return Ok(None);
            };
            if run.status != RunStatus::Running {
                return Ok(None);
            }
            if let Some(new) = schedule.finish(&mut run, end) {
                let id = txn.escalate(new)?;
                schedule.escalated(&mut run, id);
            }
            txn.put_run(&name, slot, &run)?;
            txn.put(&name, &schedule)?;
            Ok(Some(run))
        }))
    }

    fn schedules(&self) -> Result<Vec<Schedule>, JournalError> {
        self.all_by_name(SCHEDULES)
    }

    fn schedule_runs(&self, name: &str) -> Result<Vec<ScheduleRun>, JournalError> {
        self.read_schedule_runs(name)
    }
}

impl Store for Journal {
    fn owner_alive(&self, owner: Option<&str>, pid: u32) -> bool {
        self.live.alive(owner, pid)
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, JournalError> {
    serde_json::from_slice(bytes).map_err(|e| JournalError::BadRecord {
        key: key.to_owned(),
        message: e.to_string(),
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
    let stamped = match read.open_table(META) {
        Ok(meta) => meta.get("schema").map_err(storage)?.map(|v| v.value()),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(storage(e)),
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
fn create_atomically(path: &Path) -> Result<(), String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fresh = path.with_file_name(format!(".{name}.creating-{}", std::process::id()));
    let _ = std::fs::remove_file(&fresh);
    let db = Database::builder()
        .create(&fresh)
        .map_err(|e| e.to_string())?;
    check_schema(&db, &fresh).map_err(|e| e.to_string())?;
    drop(db);
    let linked = match std::fs::hard_link(&fresh, path) {
        // Another process created it first: theirs is as good.
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e.to_string()),
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
    let orphans = match read.open_table(RESERVATIONS) {
        Ok(table) => {
            let mut any = false;
            for row in table.iter().map_err(storage)? {
                let (id, value) = row.map_err(storage)?;
                let reservation: Reservation = decode(&id.value().to_string(), value.value())?;
                any |= !live.alive(reservation.owner.as_deref(), reservation.owner_pid);
            }
            any
        }
        Err(redb::TableError::TableDoesNotExist(_)) => false,
        Err(e) => return Err(storage(e)),
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

/// The schedule store as one write transaction sees it; see
/// [`Journal::schedules_txn`].
struct ScheduleTxn<'a> {
    txn: &'a WriteTransaction,
    now: u64,
}

impl ScheduleTxn<'_> {
    /// A stored schedule.
    fn get(&self, name: &str) -> Result<Option<Schedule>, JournalError> {
        let table = self.txn.open_table(SCHEDULES).map_err(storage)?;
        let value = table.get(name).map_err(storage)?;
        value.map(|v| decode(name, v.value())).transpose()
    }

    /// Every stored schedule.
    fn list(&self) -> Result<Vec<Schedule>, JournalError> {
        let table = self.txn.open_table(SCHEDULES).map_err(storage)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(storage)? {
            let (key, value) = row.map_err(storage)?;
            out.push(decode(key.value(), value.value())?);
        }
        Ok(out)
    }

    /// Stores a schedule.
    fn put(&self, name: &str, record: &Schedule) -> Result<(), JournalError> {
        let mut table = self.txn.open_table(SCHEDULES).map_err(storage)?;
        table
            .insert(name, encode(record).as_slice())
            .map_err(storage)?;
        Ok(())
    }

    /// Deletes a schedule and its runs; whether it existed.
    fn remove(&self, name: &str) -> Result<bool, JournalError> {
        let existed = self
            .txn
            .open_table(SCHEDULES)
            .map_err(storage)?
            .remove(name)
            .map_err(storage)?
            .is_some();
        let mut runs = self.txn.open_table(SCHEDULE_RUNS).map_err(storage)?;
        let (from, to) = run_range(name);
        runs.retain_in(from.as_str()..to.as_str(), |_, _| false)
            .map_err(storage)?;
        Ok(existed)
    }

    /// A stored run of `name` for the slot at `slot_ms`.
    fn run(&self, name: &str, slot_ms: i64) -> Result<Option<ScheduleRun>, JournalError> {
        let key = run_key(name, slot_ms);
        let table = self.txn.open_table(SCHEDULE_RUNS).map_err(storage)?;
        let value = table.get(key.as_str()).map_err(storage)?;
        value.map(|v| decode(&key, v.value())).transpose()
    }

    /// Stores a run of `name` for the slot at `slot_ms`.
    fn put_run(&self, name: &str, slot_ms: i64, record: &ScheduleRun) -> Result<(), JournalError> {
        let mut table = self.txn.open_table(SCHEDULE_RUNS).map_err(storage)?;
        table
            .insert(run_key(name, slot_ms).as_str(), encode(record).as_slice())
            .map_err(storage)?;
        Ok(())
    }

    /// Raises an escalation in this transaction (de-duplicated as always).
    fn escalate(&self, new: NewEscalation) -> Result<u64, JournalError> {
        escalate(self.txn, new, self.now)
    }
}

fn run_key(name: &str, slot_ms: i64) -> String {
    // Offset so slots before 1970 still sort; 20 digits fit any i64.
    format!(
        "{name}/{:020}",
        (slot_ms as i128 - i128::from(i64::MIN)) as u128
    )
}

/// The key range holding `name`'s runs (`0` follows `/`).
fn run_range(name: &str) -> (String, String) {
    (format!("{name}/"), format!("{name}0"))
}

fn writer(
    db: &Database,
    rx: &mpsc::Receiver<Op>,
    buffer: &AuditBuffer,
    group_commit: bool,
    live: &Liveness,
) {
    // Audit records wait in the buffer until a durable request comes (they
    // ride along in its transaction), AUDIT_BATCH of them pile up, or
    // AUDIT_LINGER passes: a stream of calls costs one wake-up and one
    // commit per batch, not per call.
    let drain = || -> Vec<Op> {
        std::mem::take(&mut *lock_audit(buffer))
            .into_iter()
            .map(|record| Op::Audit(Box::new(record)))
            .collect()
    };
    let mut audit_since: Option<std::time::Instant> = None;
    let mut dirty = false;
    loop {
        let wait = audit_since.map_or(AUDIT_FLUSH, |since| {
            AUDIT_LINGER.saturating_sub(since.elapsed())
        });
        let first = match rx.recv_timeout(wait) {
            Ok(op) => Some(op),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = apply(db, drain(), true, live);
                return;
            }
        };
        let idle = first.is_none() && audit_since.is_none();
        let mut batch = Vec::new();
        if let Some(op) = first {
            batch.push(op);
            if group_commit {
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(op) => batch.push(op),
                        Err(_) => break,
                    }
                }
            }
        }
        let mut full = false;
        batch.retain(|op| match op {
            Op::AuditPending => {
                audit_since.get_or_insert_with(std::time::Instant::now);
                false
            }
            Op::AuditFull => {
                full = true;
                false
            }
            _ => true,
        });
        let durable = batch.iter().any(Op::durable);
        let audit_due = full || audit_since.is_some_and(|since| since.elapsed() >= AUDIT_LINGER);
        if !durable && !audit_due {
            if idle && dirty {
                // Make audit records committed without fsync durable.
                if let Ok(txn) = db.begin_write() {
                    dirty = txn.commit().is_err();
                }
            }
            continue;
        }
        let mut ops = drain();
        audit_since = None;
        ops.extend(batch);
        let answers = match apply(db, ops, durable, live) {
            Ok(answers) => answers,
            Err((answers, error)) => {
                for answer in answers {
                    answer(Err(JournalError::Storage(error.clone())));
                }
                continue;
            }
        };
        dirty = !durable;
        for answer in answers {
            answer(Ok(()));
        }
    }
}

/// Applies a batch in one transaction and commits it.
fn apply(
    db: &Database,
    batch: Vec<Op>,
    durable: bool,
    live: &Liveness,
) -> Result<Vec<Answer>, (Vec<Answer>, String)> {
    let mut txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => {
            return Err((
                batch.into_iter().filter_map(drop_answer).collect(),
                e.to_string(),
            ));
        }
    };
    if !durable {
        let _ = txn.set_durability(Durability::None);
    }
    let now = unix_millis();
    let answers: Vec<Answer> = batch
        .into_iter()
        .filter_map(|op| execute(&txn, op, now, live))
        .collect();
    match txn.commit() {
        Ok(()) => Ok(answers),
        Err(e) => Err((answers, e.to_string())),
    }
}

fn drop_answer(op: Op) -> Option<Answer> {
    let failed = |_: ()| -> Result<(), JournalError> { Err(JournalError::Stopped) };
    match op {
        Op::Claim { reply, .. } => Some(answer(reply, failed(()).map(|()| Claim::Claimed))),
        Op::Escalate { reply, .. } => Some(answer(reply, failed(()).map(|()| 0))),
        Op::PutTask { reply, .. } => Some(answer(reply, failed(()))),
        Op::Resolve { reply, id, .. } => Some(answer(
            reply,
            failed(()).map(|()| Err(EscalationError::NotFound { id })),
        )),
        Op::Complete { reply, .. }
        | Op::Release { reply, .. }
        | Op::MarkUnknown { reply, .. }
        | Op::Settle { reply, .. }
        | Op::SetCap { reply, .. } => Some(answer(reply, failed(()))),
        Op::Reserve { reply, .. } => Some(answer(reply, failed(()).map(|()| Reserved::Unlimited))),
        Op::Charge { reply, .. } => Some(answer(reply, failed(()).map(|()| None))),
        Op::Reap { reply, .. } => Some(answer(reply, failed(()).map(|()| 0))),
        Op::Audit(_) | Op::AuditPending | Op::AuditFull => None,
        Op::Schedules(work) => Some(work(None)),
    }
}

fn execute(txn: &WriteTransaction, op: Op, now: u64, live: &Liveness) -> Option<Answer> {
    match op {
        Op::Claim {
            key,
            fingerprint,
            effect,
            lease,
            context,
            reply,
        } => Some(answer(
            reply,
            claim(txn, &key, fingerprint, effect, lease, context, now, live),
        )),
        Op::Complete {
            key,
            outcome,
            reply,
        } => {
            let result = update(txn, &key, now, |entry| {
                entry.state = KeyState::Completed { outcome }
            });
            Some(answer(reply, result))
        }
        Op::MarkUnknown {
            key,
            reason,
            context,
            reply,
        } => {
            let error = reason.clone();
            let result = update(txn, &key, now, |entry| {
                entry.state = KeyState::Unknown { reason }
            })
            .and_then(|()| escalate(txn, NewEscalation { error, ..*context }, now).map(drop));
            Some(answer(reply, result))
        }
        Op::Escalate { new, reply } => Some(answer(reply, escalate(txn, *new, now))),
        Op::Schedules(work) => Some(work(Some(&ScheduleTxn { txn, now }))),
        Op::PutTask { record, reply } => {
            let result = txn
                .open_table(TASKS)
                .and_then(|mut t| {
                    t.insert(record.id.as_str(), encode(&*record).as_slice())
                        .map(drop)
                        .map_err(Into::into)
                })
                .map_err(storage);
            Some(answer(reply, result))
        }
        Op::Resolve {
            id,
            resolution,
            note,
            reply,
        } => Some(answer(reply, resolve(txn, id, resolution, note, now))),
        Op::Release { key, reply } => {
            let result = txn
                .open_table(IDEMPOTENCY)
                .and_then(|mut t| {
                    t.remove(key.encode().as_str())
                        .map(drop)
                        .map_err(Into::into)
                })
                .map_err(storage);
            Some(answer(reply, result))
        }
        Op::Reserve {
            scopes,
            want,
            whole,
            reply,
        } => Some(answer(reply, reserve(txn, &scopes, want, whole, now))),
        Op::Settle {
            reservation,
            actual,
            reply,
        } => Some(answer(reply, settle(txn, &reservation, actual, now))),
        Op::Charge {
            scope,
            tokens,
            reply,
        } => Some(answer(reply, charge(txn, &scope, tokens, now))),
        Op::SetCap { scope, cap, reply } => Some(answer(reply, set_cap(txn, &scope, cap, now))),
        Op::Reap { before_ms, reply } => Some(answer(reply, reap(txn, before_ms))),
        Op::Audit(record) => {
            if let Err(e) = audit(txn, &record, now) {
                tracing::warn!(error = %e, "cannot record an attempt in the audit history");
            }
            None
        }
        Op::AuditPending | Op::AuditFull => None,
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one private step of the writer; the fields of Op::Claim plus the transaction context"
)]
fn claim(
    txn: &WriteTransaction,
    key: &JournalKey,
    fingerprint: Fingerprint,
    effect: Effect,
    lease: Duration,
    context: Option<Box<NewEscalation>>,
    now: u64,
    live: &Liveness,
) -> Result<Claim, JournalError> {
    let mut table = txn.open_table(IDEMPOTENCY).map_err(storage)?;
    let encoded = key.encode();
    let existing = table
        .get(encoded.as_str())
        .map_err(storage)?
        .map(|v| v.value().to_vec());
    let lease_until_ms = now.saturating_add(lease.as_millis() as u64);
    let in_progress = KeyState::InProgress {
        lease_until_ms,
        owner_pid: std::process::id(),
        owner: Some(crate::store::owner::me().to_owned()),
    };
    let mut entry = match existing {
        None => JournalEntry {
            v: 1,
            scope: key.scope.clone(),
            tool: key.tool.clone(),
            key: key.key.clone(),
            fingerprint: fingerprint.current,
            effect,
            claims: 1,
            state: in_progress,
            created_ms: now,
            updated_ms: now,
        },
        Some(bytes) => {
            let mut entry: JournalEntry = decode(&encoded, &bytes)?;
            if !fingerprint.matches(&entry.fingerprint) {
                return Ok(Claim::Mismatch);
            }
            match &entry.state {
                KeyState::Completed { outcome } => return Ok(Claim::Replay(outcome.clone())),
                KeyState::Unknown { reason } => {
                    return Ok(Claim::Unknown {
                        reason: reason.clone(),
                    });
                }
                KeyState::InProgress {
                    lease_until_ms: until,
                    owner_pid,
                    owner,
                } => {
                    let holder_gone = !live.alive(owner.as_deref(), *owner_pid);
                    if now < *until && !holder_gone {
                        return Ok(Claim::InProgress {
                            retry_after: Duration::from_millis(until - now),
                        });
                    }
                    if entry.effect == Effect::SideEffecting {
                        // The holder crashed or hung mid-call: it may have acted.
                        let reason = if holder_gone {
                            format!("process {owner_pid} holding the key stopped mid-call")
                        } else {
                            "the lease on the key expired mid-call".to_owned()
                        };
                        entry.state = KeyState::Unknown {
                            reason: reason.clone(),
                        };
                        entry.updated_ms = now;
                        table
                            .insert(encoded.as_str(), encode(&entry).as_slice())
                            .map_err(storage)?;
                        drop(table);
                        let context = context.map_or_else(NewEscalation::default, |c| *c);
                        escalate(
                            txn,
                            NewEscalation {
                                reason: Some(EscalationReason::UnknownOutcome),
                                tool: Some(key.tool.clone()),
                                key: Some(key.escalation_key()),
                                error: reason.clone(),
                                ..context
                            },
                            now,
                        )?;
                        return Ok(Claim::Unknown { reason });
                    }
                }
            }
            entry.claims += 1;
            entry.state = in_progress;
            entry.updated_ms = now;
            entry
        }
    };
    entry.updated_ms = now;
    table
        .insert(encoded.as_str(), encode(&entry).as_slice())
        .map_err(storage)?;
    Ok(Claim::Claimed)
}

/// Adds an escalation, unless one is open for the same key; returns its id.
fn escalate(txn: &WriteTransaction, new: NewEscalation, now: u64) -> Result<u64, JournalError> {
    let mut table = txn.open_table(ESCALATIONS).map_err(storage)?;
    // One open escalation per key, or per task step and reason.
    let same = |open: &Escalation| match &new.key {
        Some(key) => open.key.as_ref() == Some(key),
        None if new.schedule.is_some() => {
            open.schedule == new.schedule && Some(open.reason) == new.reason
        }
        None => {
            new.task.is_some()
                && open.task == new.task
                && open.step == new.step
                && Some(open.reason) == new.reason
        }
    };
    for row in table.iter().map_err(storage)? {
        let (id, value) = row.map_err(storage)?;
        let open: Escalation = decode(&id.value().to_string(), value.value())?;
        if open.resolved.is_none() && same(&open) {
            return Ok(open.id);
        }
    }
    let id = table
        .last()
        .map_err(storage)?
        .map_or(1, |(id, _)| id.value() + 1);
    let record = Escalation {
        v: 1,
        id,
        reason: new.reason.unwrap_or(EscalationReason::RequiresHuman),
        tool: new.tool,
        key: new.key,
        task: new.task,
        step: new.step,
        agent: new.agent,
        call_id: new.call_id,
        input: new.input,
        schedule: new.schedule,
        error: new.error,
        created_ms: now,
        resolved: None,
    };
    table
        .insert(id, encode(&record).as_slice())
        .map_err(storage)?;
    tracing::warn!(id, reason = record.reason.as_str(), tool = ?record.tool, task = ?record.task, "escalated to a human");
    Ok(id)
}

/// Records a resolution and settles the escalation's unknown key.
fn resolve(
    txn: &WriteTransaction,
    id: u64,
    resolution: Resolution,
    note: String,
    now: u64,
) -> Result<Result<Escalation, EscalationError>, JournalError> {
    let mut table = txn.open_table(ESCALATIONS).map_err(storage)?;
    let Some(bytes) = table.get(id).map_err(storage)?.map(|v| v.value().to_vec()) else {
        return Ok(Err(EscalationError::NotFound { id }));
    };
    let mut record: Escalation = decode(&id.to_string(), &bytes)?;
    if let Some(done) = &record.resolved {
        return Ok(Err(EscalationError::AlreadyResolved {
            id,
            resolution: done.resolution.as_str(),
        }));
    }
    if let Some(key) = &record.key {
        let key = JournalKey {
            scope: key.scope.clone(),
            tool: key.tool.clone(),
            key: key.key.clone(),
        };
        let mut keys = txn.open_table(IDEMPOTENCY).map_err(storage)?;
        let encoded = key.encode();
        let entry = keys
            .get(encoded.as_str())
            .map_err(storage)?
            .map(|v| v.value().to_vec());
        if let Some(bytes) = entry {
            let mut entry: JournalEntry = decode(&encoded, &bytes)?;
            if matches!(entry.state, KeyState::Unknown { .. }) {
                let settled = |message: &str| KeyState::Completed {
                    outcome: StoredOutcome::Error {
                        class: ErrorClass::UnknownOutcome,
                        message: format!("resolved by an operator: {message} ({note})"),
                        tool_error: None,
                    },
                };
                let state = match &resolution {
                    Resolution::Resume => None,
                    Resolution::MarkDone { output } => Some(KeyState::Completed {
                        outcome: StoredOutcome::Output {
                            output: output.clone().unwrap_or_else(|| "null".into()),
                            tokens: Tokens(0),
                        },
                    }),
                    Resolution::Compensate => Some(settled("compensated")),
                    Resolution::Abort => Some(settled("aborted")),
                };
                match state {
                    None => {
                        keys.remove(encoded.as_str()).map_err(storage)?;
                    }
                    Some(state) => {
                        entry.state = state;
                        entry.updated_ms = now;
                        keys.insert(encoded.as_str(), encode(&entry).as_slice())
                            .map_err(storage)?;
                    }
                }
            }
        }
    }
    record.resolved = Some(Resolved {
        resolution,
        note,
        resolved_ms: now,
    });
    table
        .insert(id, encode(&record).as_slice())
        .map_err(storage)?;
    Ok(Ok(record))
}

fn update(
    txn: &WriteTransaction,
    key: &JournalKey,
    now: u64,
    change: impl FnOnce(&mut JournalEntry),
) -> Result<(), JournalError> {
    let mut table = txn.open_table(IDEMPOTENCY).map_err(storage)?;
    let encoded = key.encode();
    let Some(bytes) = table
        .get(encoded.as_str())
        .map_err(storage)?
        .map(|v| v.value().to_vec())
    else {
        return Err(JournalError::BadRecord {
            key: encoded,
            message: "no such record".into(),
        });
    };
    let mut entry: JournalEntry = decode(&encoded, &bytes)?;
    change(&mut entry);
    entry.updated_ms = now;
    table
        .insert(encoded.as_str(), encode(&entry).as_slice())
        .map_err(storage)?;
    Ok(())
}

fn load_budgets(
    table: &redb::Table<'_, &str, &[u8]>,
    scopes: &[String],
    now: u64,
) -> Result<Vec<(String, BudgetRecord)>, JournalError> {
    let mut found = Vec::new();
    for scope in scopes {
        if let Some(bytes) = table
            .get(scope.as_str())
            .map_err(storage)?
            .map(|v| v.value().to_vec())
        {
            let mut record: BudgetRecord = decode(scope, &bytes)?;
            record.roll_window(now);
            found.push((scope.clone(), record));
        }
    }
    Ok(found)
}

fn reserve(
    txn: &WriteTransaction,
    scopes: &[ScopeId],
    want: u64,
    whole: bool,
    now: u64,
) -> Result<Reserved, JournalError> {
    let names: Vec<String> = scopes.iter().map(ScopeId::to_string).collect();
    let mut budgets = txn.open_table(BUDGETS).map_err(storage)?;
    let mut capped = load_budgets(&budgets, &names, now)?;
    let Some((tightest, left)) = capped
        .iter()
        .map(|(s, r)| (s.clone(), r.left()))
        .min_by_key(|(_, left)| *left)
    else {
        return Ok(Reserved::Unlimited);
    };
    let held = capped
        .iter()
        .any(|(_, r)| r.left() < want && r.reserved > 0);
    if whole && left < want && held {
        return Ok(Reserved::Held {
            scope: tightest,
            left,
        });
    }
    if left == 0 {
        return Ok(Reserved::Exhausted {
            scope: tightest,
            left,
        });
    }
    let tokens = want.min(left);
    for (scope, record) in &mut capped {
        record.reserved += tokens;
        budgets
            .insert(scope.as_str(), encode(record).as_slice())
            .map_err(storage)?;
    }
    let mut reservations = txn.open_table(RESERVATIONS).map_err(storage)?;
    let id = reservations
        .last()
        .map_err(storage)?
        .map_or(1, |(k, _)| k.value() + 1);
    let reservation = Reservation {
        id,
        scopes: capped.into_iter().map(|(s, _)| s).collect(),
        tokens,
        owner_pid: std::process::id(),
        owner: Some(crate::store::owner::me().to_owned()),
        tightest,
    };
    reservations
        .insert(id, encode(&reservation).as_slice())
        .map_err(storage)?;
    Ok(Reserved::Granted(reservation))
}

fn settle(
    txn: &WriteTransaction,
    reservation: &Reservation,
    actual: u64,
    now: u64,
) -> Result<(), JournalError> {
    let mut reservations = txn.open_table(RESERVATIONS).map_err(storage)?;
    if reservations
        .remove(reservation.id)
        .map_err(storage)?
        .is_none()
    {
        return Ok(()); // already settled by crash recovery
    }
    let mut budgets = txn.open_table(BUDGETS).map_err(storage)?;
    let spent = actual.min(reservation.tokens);
    for (scope, mut record) in load_budgets(&budgets, &reservation.scopes, now)? {
        record.reserved = record.reserved.saturating_sub(reservation.tokens);
        record.spent += spent;
        alert_soft_threshold(&scope, &mut record);
        budgets
            .insert(scope.as_str(), encode(&record).as_slice())
            .map_err(storage)?;
    }
    Ok(())
}

fn alert_soft_threshold(scope: &str, record: &mut BudgetRecord) {
    let soft = record.cap.soft_threshold();
    if !record.soft_alerted && record.spent >= soft {
        record.soft_alerted = true;
        tracing::warn!(target: "cofferdam::budget", scope, spent = record.spent,
            cap = record.cap.hard.0, "budget passed its soft threshold");
    }
}

fn charge(
    txn: &WriteTransaction,
    scope: &ScopeId,
    tokens: u64,
    now: u64,
) -> Result<Option<BudgetStatus>, JournalError> {
    let name = scope.to_string();
    let mut budgets = txn.open_table(BUDGETS).map_err(storage)?;
    let Some((_, mut record)) = load_budgets(&budgets, std::slice::from_ref(&name), now)?.pop()
    else {
        return Ok(None);
    };
    record.spent += tokens;
    alert_soft_threshold(&name, &mut record);
    budgets
        .insert(name.as_str(), encode(&record).as_slice())
        .map_err(storage)?;
    Ok(Some(record.status(&name)))
}

fn set_cap(
    txn: &WriteTransaction,
    scope: &ScopeId,
    cap: Option<BudgetCap>,
    now: u64,
) -> Result<(), JournalError> {
    let name = scope.to_string();
    let mut budgets = txn.open_table(BUDGETS).map_err(storage)?;
    let Some(cap) = cap else {
        budgets.remove(name.as_str()).map_err(storage)?;
        return Ok(());
    };
    let record = match load_budgets(&budgets, std::slice::from_ref(&name), now)?.pop() {
        Some((_, mut record)) => {
            record.cap = cap;
            record.soft_alerted = record.spent >= cap.soft_threshold();
            record
        }
        None => BudgetRecord {
            v: 1,
            cap,
            spent: 0,
            reserved: 0,
            window_start_ms: now,
            soft_alerted: false,
        },
    };
    budgets
        .insert(name.as_str(), encode(&record).as_slice())
        .map_err(storage)?;
    Ok(())
}

fn reap(txn: &WriteTransaction, before_ms: u64) -> Result<usize, JournalError> {
    let mut table = txn.open_table(IDEMPOTENCY).map_err(storage)?;
    let mut stale = Vec::new();
    for row in table.iter().map_err(storage)? {
        let (key, value) = row.map_err(storage)?;
        let entry: JournalEntry = decode(key.value(), value.value())?;
        let finished = !matches!(entry.state, KeyState::InProgress { .. });
        if finished && entry.updated_ms < before_ms {
            stale.push(key.value().to_owned());
        }
    }
    for key in &stale {
        table.remove(key.as_str()).map_err(storage)?;
    }
    Ok(stale.len())
}

fn audit(txn: &WriteTransaction, record: &AttemptRecord, now: u64) -> Result<(), JournalError> {
    let mut table = txn.open_table(AUDIT).map_err(storage)?;
    // Keys sort by start time; the low bits keep same-millisecond records apart.
    let base = u128::from(record.started_ms.max(1)) << 64;
    let next = table
        .range(base..base + (1u128 << 64))
        .map_err(storage)?
        .next_back()
        .transpose()
        .map_err(storage)?
        .map_or(base, |(k, _)| k.value() + 1);
    let _ = now;
    table
        .insert(next, encode(record).as_slice())
        .map_err(storage)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> JournalKey {
        JournalKey {
            scope: "agent:a".into(),
            tool: "t".into(),
            key: k.into(),
        }
    }

    #[tokio::test]
    async fn claim_complete_replay_and_mismatch() {
        let j = Journal::in_memory().expect("journal");
        let lease = Duration::from_secs(30);
        let claim = j
            .claim(key("k"), "fp".into(), Effect::Pure, lease, None)
            .await
            .expect("claim");
        assert_eq!(claim, Claim::Claimed);
        let busy = j
            .claim(key("k"), "fp".into(), Effect::Pure, lease, None)
            .await
            .expect("claim");
        assert!(matches!(busy, Claim::InProgress { retry_after } if retry_after <= lease));
        let stored = StoredOutcome::Output {
            output: "1".into(),
            tokens: Tokens(3),
        };
        j.complete(key("k"), stored.clone())
            .await
            .expect("complete");
        assert_eq!(
            j.claim(key("k"), "fp".into(), Effect::Pure, lease, None)
                .await
                .expect("claim"),
            Claim::Replay(stored)
        );
        assert_eq!(
            j.claim(key("k"), "other".into(), Effect::Pure, lease, None)
                .await
                .expect("claim"),
            Claim::Mismatch
        );
    }

    #[tokio::test]
    async fn released_key_can_be_claimed_again() {
        let j = Journal::in_memory().expect("journal");
        let lease = Duration::from_secs(30);
        j.claim(key("k"), "fp".into(), Effect::SideEffecting, lease, None)
            .await
            .expect("claim");
        j.release(key("k")).await.expect("release");
        let again = j
            .claim(key("k"), "fp".into(), Effect::SideEffecting, lease, None)
            .await;
        assert_eq!(again.expect("claim"), Claim::Claimed);
    }

    #[tokio::test]
    async fn expired_lease_is_unknown_for_side_effects_and_reclaimable_otherwise() {
        let j = Journal::in_memory().expect("journal");
        let gone = Duration::ZERO;
        j.claim(key("s"), "fp".into(), Effect::SideEffecting, gone, None)
            .await
            .expect("claim");
        let s = j
            .claim(key("s"), "fp".into(), Effect::SideEffecting, gone, None)
            .await
            .expect("claim");
        assert!(matches!(s, Claim::Unknown { .. }), "{s:?}");
        let again = j
            .claim(key("s"), "fp".into(), Effect::SideEffecting, gone, None)
            .await;
        assert!(
            matches!(again.expect("claim"), Claim::Unknown { .. }),
            "stays unknown"
        );
        // The lapse escalated the key once, with the tool and key named.
        let escalations = j.escalations().expect("escalations");
        assert_eq!(escalations.len(), 1, "{escalations:?}");
        assert_eq!(escalations[0].reason, EscalationReason::UnknownOutcome);
        assert_eq!(
            escalations[0].key.as_ref().map(|k| k.key.as_str()),
            Some("s")
        );
        assert!(
            escalations[0].error.contains("lease"),
            "{}",
            escalations[0].error
        );

        j.claim(key("p"), "fp".into(), Effect::Pure, gone, None)
            .await
            .expect("claim");
        let p = j
            .claim(key("p"), "fp".into(), Effect::Pure, gone, None)
            .await
            .expect("claim");
        assert_eq!(p, Claim::Claimed);
        let entry = j
            .entries()
            .expect("entries")
            .into_iter()
            .find(|e| e.key == "p")
            .expect("p");
        assert_eq!(entry.claims, 2);
    }

    #[tokio::test]
    async fn reserve_never_grants_more_than_the_tightest_scope_has_left() {
        let j = Journal::in_memory().expect("journal");
        let agent = ScopeId::Agent("a".into());
        let task = ScopeId::Task("t".into());
        j.set_cap(agent.clone(), Some(BudgetCap::new(Tokens(100))))
            .await
            .expect("cap");
        j.set_cap(task.clone(), Some(BudgetCap::new(Tokens(30))))
            .await
            .expect("cap");
        let scopes = vec![agent.clone(), task.clone()];
        let Reserved::Granted(r) = j.reserve(scopes.clone(), 50, false).await.expect("reserve")
        else {
            panic!("granted");
        };
        assert_eq!(r.tokens, 30, "the task has only 30");
        let second = j.reserve(scopes.clone(), 50, false).await.expect("reserve");
        assert_eq!(
            second,
            Reserved::Exhausted {
                scope: "task:t".into(),
                left: 0
            }
        );
        j.settle(r, 12).await.expect("settle");
        let Reserved::Granted(r) = j
            .reserve(vec![task.clone()], 18, false)
            .await
            .expect("reserve")
        else {
            panic!("granted");
        };
        j.settle(r, 0).await.expect("settle");
        let budgets = j.budgets().expect("budgets");
        let task_status = budgets.iter().find(|b| b.scope == "task:t").expect("task");
        assert_eq!(
            (task_status.spent, task_status.reserved, task_status.left),
            (Tokens(12), Tokens(0), Tokens(18))
        );
        let agent_status = budgets
            .iter()
            .find(|b| b.scope == "agent:a")
            .expect("agent");
        assert_eq!(agent_status.spent, Tokens(12));
        assert!(!task_status.past_soft_threshold, "12 of 30 is below 80%");
        let status = j
            .charge(task.clone(), 12)
            .await
            .expect("charge")
            .expect("capped");
        assert!(status.past_soft_threshold, "24 of 30 is past 80%");
        assert_eq!(
            j.reserve(vec![ScopeId::Agent("other".into())], 5, false)
                .await
                .expect("reserve"),
            Reserved::Unlimited
        );
    }

    #[tokio::test]
    async fn reap_removes_only_finished_records_older_than_the_cutoff() {
        let j = Journal::in_memory().expect("journal");
        let lease = Duration::from_secs(30);
        j.claim(key("done"), "fp".into(), Effect::Pure, lease, None)
            .await
            .expect("claim");
        j.complete(
            key("done"),
            StoredOutcome::Output {
                output: "1".into(),
                tokens: Tokens(1),
            },
        )
        .await
        .expect("complete");
        j.claim(key("running"), "fp".into(), Effect::Pure, lease, None)
            .await
            .expect("claim");
        assert_eq!(j.reap(0).await.expect("reap"), 0, "nothing is older than 0");
        assert_eq!(
            j.reap(u64::MAX).await.expect("reap"),
            1,
            "only the finished one"
        );
        let keys: Vec<String> = j
            .entries()
            .expect("entries")
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, vec!["running".to_owned()]);
    }

    #[test]
    fn newer_schema_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.redb");
        drop(Journal::open(&path, true).expect("create"));
        {
            let db = Database::builder()
                .set_concurrency_mode(ConcurrencyMode::MultiWriter)
                .open(&path)
                .expect("open");
            let txn = db.begin_write().expect("txn");
            txn.open_table(META)
                .expect("meta")
                .insert("schema", 99)
                .expect("insert");
            txn.commit().expect("commit");
        }
        let error = Journal::open(&path, true).err().expect("refused");
        assert!(
            matches!(error, JournalError::NewerVersion { found: 99, .. }),
            "{error}"
        );
        let error = Journal::open(&path, true)
            .err()
            .expect("still refused, not rewritten");
        assert!(matches!(
            error,
            JournalError::NewerVersion { found: 99, .. }
        ));
    }

    #[test]
    fn windowed_budgets_reset_at_each_window_boundary() {
        let cap = BudgetCap {
            window_ms: Some(3_600_000),
            ..BudgetCap::new(Tokens(100))
        };
        let mut record = BudgetRecord {
            v: 1,
            cap,
            spent: 90,
            reserved: 5,
            window_start_ms: 1_000_000,
            soft_alerted: true,
        };
        record.roll_window(1_000_000 + 3_599_999);
        assert_eq!(
            (record.spent, record.window_start_ms),
            (90, 1_000_000),
            "same window"
        );
        record.roll_window(1_000_000 + 2 * 3_600_000 + 42);
        assert_eq!(record.spent, 0, "a new window starts empty");
        assert!(!record.soft_alerted, "and may warn again");
        assert_eq!(
            record.reserved, 5,
            "running attempts keep their reservations"
        );
        assert_eq!(
            record.window_start_ms,
            1_000_000 + 2 * 3_600_000,
            "aligned to the boundary"
        );
    }

    #[tokio::test]
    async fn a_dead_owners_reservation_counts_as_spent_on_reopen_even_if_its_pid_lives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.redb");
        let scope = ScopeId::Agent("a".into());
        {
            let j = Journal::open(&path, true).expect("open");
            j.set_cap(scope.clone(), Some(BudgetCap::new(Tokens(100))))
                .await
                .expect("cap");
            let Reserved::Granted(r) = j
                .reserve(vec![scope.clone()], 40, false)
                .await
                .expect("reserve")
            else {
                panic!("granted");
            };
            // Pretend the process that reserved died before settling, and
            // its PID went to a live process (ours): the owner's lock says
            // dead, whatever the PID says. A record from before owner ids
            // falls back to the PID check.
            let dead = Reservation {
                owner_pid: std::process::id(),
                owner: Some("00000000000000000000000000000dead".into()),
                ..r.clone()
            };
            let legacy = Reservation {
                id: r.id + 1,
                tokens: 0,
                owner_pid: 4_000_000,
                owner: None,
                ..r
            };
            let txn = j.db.begin_write().expect("txn");
            let mut table = txn.open_table(RESERVATIONS).expect("table");
            table
                .insert(dead.id, encode(&dead).as_slice())
                .expect("insert");
            table
                .insert(legacy.id, encode(&legacy).as_slice())
                .expect("insert");
            drop(table);
            txn.commit().expect("commit");
        }
        let j = Journal::open(&path, true).expect("reopen");
        let status = j.budgets().expect("budgets").pop().expect("capped");
        assert_eq!(
            (status.spent, status.reserved, status.left),
            (Tokens(40), Tokens(0), Tokens(60))
        );
    }

    #[test]
    fn a_fingerprint_matches_records_written_before_v2() {
        use sha2::Digest as _;
        let fingerprint = Fingerprint {
            current: "v2:abc".into(),
            legacy: Some(("d1".into(), r#"{"a":1}"#.into())),
        };
        let legacy = hex::encode(sha2::Sha256::digest(b"d1\0{\"a\":1}"));
        assert!(fingerprint.matches("v2:abc"));
        assert!(fingerprint.matches(&legacy));
        assert!(!fingerprint.matches("v2:other"));
        assert!(!fingerprint.matches(&hex::encode(sha2::Sha256::digest(b"d2\0{}"))));
    }

    #[test]
    fn garbage_file_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.redb");
        std::fs::write(&path, b"definitely not a redb file, just text").expect("write");
        let error = Journal::open(&path, true).err().expect("refused");
        assert!(matches!(error, JournalError::Open { .. }), "{error}");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            b"definitely not a redb file, just text"
        );
    }
}
