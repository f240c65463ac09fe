//! Durable state behind one trait family, so a shared backend (PostgreSQL)
//! can stand beside the embedded redb file. The redb implementation
//! ([`redb::RedbStore`]) and the PostgreSQL one ([`postgres::PgStore`]) are
//! the only code that knows a database; [`config::StoreConfig`] picks one.
//!
//! Every durable operation of the host is a method here, one atomic
//! operation each: what a task or schedule does in one transaction (a slot
//! claim that moves `last_slot` and writes the `running` record; a run's end
//! that updates counters, pauses and escalates) is one method, its rules a
//! pure function of the records in `model` that every backend applies inside
//! its own transaction. Writes are async (the redb store group-commits them
//! on a writer thread); reads are short and synchronous.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::model::budget::{BudgetCap, BudgetStatus, ScopeId};
use crate::model::error::JournalError;
use crate::model::escalation::{Escalation, EscalationError, NewEscalation, Resolution};
use crate::model::journal::{
    AttemptRecord, Claim, Fingerprint, HistoryQuery, JournalEntry, JournalKey, Reservation,
    Reserved, StoredOutcome,
};
use crate::model::notify::{OutboxEntry, Settle};
use crate::model::schedule::{Created, RunEnd, Schedule, ScheduleChange, ScheduleRun, SlotClaim};
use crate::model::state::{StateChanges, StateReader, StateRefused, StateUsage};
use crate::model::task::TaskRecord;
use crate::model::units::Effect;
use crate::resilience::breaker::BreakerMode;

pub(crate) mod config;
#[cfg(test)]
pub(crate) mod conformance;
#[cfg(test)]
pub(crate) mod conformance_records;
pub(crate) mod ledger;
pub(crate) mod migrate;
pub(crate) mod owner;
pub(crate) mod postgres;
pub(crate) mod redb;
pub(crate) mod snapshot;

/// The future a store write returns.
pub(crate) type StoreFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, JournalError>> + Send + 'a>>;

/// Idempotency keys: claim-or-read, outcomes, unknowns.
pub(crate) trait IdempotencyStore {
    /// Claims `key` for a new attempt, or says why not. A key whose holder
    /// died while side-effecting becomes unknown (and is escalated with
    /// `context`), never run again.
    fn claim(
        &self,
        key: JournalKey,
        fingerprint: Fingerprint,
        effect: Effect,
        lease: Duration,
        context: Option<NewEscalation>,
    ) -> StoreFuture<'_, Claim>;
    /// Stores the final outcome of a claimed key.
    fn complete(&self, key: JournalKey, outcome: StoredOutcome) -> StoreFuture<'_, ()>;
    /// Frees a claimed key after a retryable failure.
    fn release(&self, key: JournalKey) -> StoreFuture<'_, ()>;
    /// Marks a claimed key unknown (the side-effecting call was interrupted)
    /// and escalates it, in one transaction.
    fn mark_unknown(
        &self,
        key: JournalKey,
        reason: String,
        context: NewEscalation,
    ) -> StoreFuture<'_, ()>;
    /// Deletes completed and unknown records last changed before `before_ms`.
    fn reap(&self, before_ms: u64) -> StoreFuture<'_, usize>;
    /// Every idempotency record, by key.
    fn entries(&self) -> Result<Vec<JournalEntry>, JournalError>;
}

/// The budget ledger: caps, reservations against the tightest scope,
/// settlement.
pub(crate) trait BudgetLedger {
    /// Sets aside up to `want` tokens in every capped scope, atomically.
    /// With `whole`, when less than `want` is left and other calls hold
    /// reservations that may come back, answers `Held` instead of a part.
    fn reserve(&self, scopes: Vec<ScopeId>, want: u64, whole: bool) -> StoreFuture<'_, Reserved>;
    /// Turns a reservation into spending of `actual` tokens (at most reserved).
    fn settle(&self, reservation: Reservation, actual: u64) -> StoreFuture<'_, ()>;
    /// Charges tokens spent outside the host to a capped scope.
    fn charge(&self, scope: ScopeId, tokens: u64) -> StoreFuture<'_, Option<BudgetStatus>>;
    /// Sets (or with `None` removes) a scope's cap.
    fn set_cap(&self, scope: ScopeId, cap: Option<BudgetCap>) -> StoreFuture<'_, ()>;
    /// Every budget with a cap.
    fn budgets(&self) -> Result<Vec<BudgetStatus>, JournalError>;
}

/// The audit history of attempts.
pub(crate) trait AuditLog {
    /// Records an attempt; does not wait for it to be durable.
    fn audit(&self, record: AttemptRecord);
    /// Attempts matching `query`, newest first.
    fn history(&self, query: &HistoryQuery) -> Result<Vec<AttemptRecord>, JournalError>;
}

/// The escalation queue.
pub(crate) trait EscalationStore {
    /// Raises an escalation (de-duplicated by its key); returns its id.
    fn escalate(&self, new: NewEscalation) -> StoreFuture<'_, u64>;
    /// Resolves an escalation and settles its idempotency key, in one
    /// transaction.
    fn resolve_escalation(
        &self,
        id: u64,
        resolution: Resolution,
        note: String,
    ) -> StoreFuture<'_, Result<Escalation, EscalationError>>;
    /// Every escalation, oldest first.
    fn escalations(&self) -> Result<Vec<Escalation>, JournalError>;
    /// One escalation.
    fn escalation(&self, id: u64) -> Result<Option<Escalation>, JournalError>;
}

/// Durable task state.
pub(crate) trait TaskStore {
    /// Stores a task's state, durably, before the caller goes on.
    fn put_task(&self, record: TaskRecord) -> StoreFuture<'_, ()>;
    /// One task.
    fn task(&self, id: &str) -> Result<Option<TaskRecord>, JournalError>;
    /// Every task, by id.
    fn tasks(&self) -> Result<Vec<TaskRecord>, JournalError>;
}

/// Schedules and their runs.
pub(crate) trait ScheduleStore {
    /// Stores a new schedule unless its name is taken or its owner already
    /// has `quota` schedules.
    fn create_schedule(&self, record: Schedule, quota: usize) -> StoreFuture<'_, Created>;
    /// Applies an operator's change; the schedule after it (`None`: no such
    /// schedule).
    fn update_schedule(
        &self,
        name: String,
        change: ScheduleChange,
    ) -> StoreFuture<'_, Option<Schedule>>;
    /// Deletes a schedule and its runs; whether it existed.
    fn delete_schedule(&self, name: String) -> StoreFuture<'_, bool>;
    /// Applies a runner's claim ([`Schedule::claim`]) and stores its runs;
    /// the schedule when its slot was claimed for this runner.
    fn claim_slot(&self, claim: SlotClaim) -> StoreFuture<'_, Option<Schedule>>;
    /// Records a run's end ([`Schedule::finish`]) and the escalation it
    /// raises; `None` when the schedule is gone or the run was recorded.
    fn finish_run(&self, end: RunEnd) -> StoreFuture<'_, Option<ScheduleRun>>;
    /// Every schedule, by name.
    fn schedules(&self) -> Result<Vec<Schedule>, JournalError>;
    /// One schedule's runs, oldest slot first.
    fn schedule_runs(&self, name: &str) -> Result<Vec<ScheduleRun>, JournalError>;
}

/// Notifications on their way: the outbox entries a run's end writes (in
/// [`ScheduleStore::finish_run`]'s transaction) until a deliverer settles
/// them.
pub(crate) trait OutboxStore {
    /// Leases up to `limit` entries due at `now` ([`OutboxEntry::claimable`])
    /// to `holder` for `lease`, oldest due first, each in one step: two
    /// deliverers (in one process or two replicas) never hold one entry.
    fn outbox_claim(
        &self,
        now: jiff::Timestamp,
        lease: Duration,
        holder: String,
        limit: usize,
    ) -> StoreFuture<'_, Vec<OutboxEntry>>;
    /// Records how `holder`'s delivery of (`sink`, `event`) went; false when
    /// it no longer holds the entry ([`OutboxEntry::settle`]).
    fn outbox_settle(
        &self,
        sink: String,
        event: String,
        holder: String,
        settle: Settle,
    ) -> StoreFuture<'_, bool>;
    /// Every entry, oldest first.
    fn outbox(&self) -> Result<Vec<OutboxEntry>, JournalError>;
    /// Deletes delivered and dead entries written before `before`; how many.
    fn outbox_prune(&self, before: jiff::Timestamp) -> StoreFuture<'_, usize>;
}

/// Breaker modes operators set, applied when a tool is loaded.
pub(crate) trait BreakerModeStore {
    /// The remembered modes, by tool name (an unreadable record counts as
    /// none, and is logged).
    fn breaker_modes(&self) -> BTreeMap<String, BreakerMode>;
    /// Remembers `mode` for `tool` (`Normal` forgets it).
    fn set_breaker_mode(&self, tool: &str, mode: BreakerMode) -> Result<(), JournalError>;
}

/// Tool state: key-value pairs per space (`BUCKET/SCOPE`); the reads are
/// [`StateReader`]'s.
pub(crate) trait StateStore: StateReader {
    /// Every space with what it holds, in order.
    fn state_spaces(&self) -> Result<Vec<(String, StateUsage)>, JournalError>;

    /// Applies `changes` in one transaction ([`crate::model::state::plan`]),
    /// or nothing when they are refused.
    fn state_commit(
        &self,
        changes: StateChanges,
    ) -> StoreFuture<'_, Result<StateUsage, StateRefused>>;
}

/// Everything the host keeps durably, and who holds it.
pub(crate) trait Store:
    IdempotencyStore
    + StateStore
    + BudgetLedger
    + AuditLog
    + EscalationStore
    + TaskStore
    + ScheduleStore
    + OutboxStore
    + BreakerModeStore
    + Send
    + Sync
{
    /// Whether the process owning a record is alive (`pid` only for records
    /// written before owner ids).
    fn owner_alive(&self, owner: Option<&str>, pid: u32) -> bool;
}
