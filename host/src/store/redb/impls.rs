//! The store traits, implemented by requests to the writer thread (writes)
//! and read transactions (reads).

use std::collections::BTreeMap;
use std::time::Duration;

use super::{IDEMPOTENCY, Op, RedbStore, SCHEDULES, TASKS, breaker_modes};
use crate::model::budget::{BudgetCap, BudgetStatus, ScopeId};
use crate::model::error::{JournalError, storage};
use crate::model::escalation::{Escalation, EscalationError, NewEscalation, Resolution};
pub use crate::model::journal::{AttemptRecord, HistoryQuery, JournalEntry, StoredOutcome};
pub(crate) use crate::model::journal::{Claim, Fingerprint, JournalKey, Reservation, Reserved};
use crate::model::notify;
use crate::model::schedule::{
    Created, RunEnd, RunStatus, Schedule, ScheduleChange, ScheduleRun, SlotClaim,
};
use crate::model::task::TaskRecord;
use crate::model::units::Effect;
use crate::resilience::breaker::BreakerMode;
use crate::store::{
    AuditLog, BreakerModeStore, BudgetLedger, EscalationStore, IdempotencyStore, ScheduleStore,
    Store, StoreFuture, TaskStore,
};

impl IdempotencyStore for RedbStore {
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

impl BudgetLedger for RedbStore {
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

impl AuditLog for RedbStore {
    fn audit(&self, record: AttemptRecord) {
        self.push_audit(record);
    }

    fn history(&self, query: &HistoryQuery) -> Result<Vec<AttemptRecord>, JournalError> {
        self.read_history(query)
    }
}

impl EscalationStore for RedbStore {
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

impl TaskStore for RedbStore {
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

impl ScheduleStore for RedbStore {
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
            let (was_active, report) = (schedule.is_active(), end.report.clone());
            if let Some(new) = schedule.finish(&mut run, end) {
                let id = txn.escalate(new)?;
                schedule.escalated(&mut run, id);
            }
            txn.put_run(&name, slot, &run)?;
            txn.put(&name, &schedule)?;
            txn.put_outbox(&notify::for_run(was_active, &schedule, &run, &report))?;
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

impl BreakerModeStore for RedbStore {
    fn breaker_modes(&self) -> BTreeMap<String, BreakerMode> {
        self.dir
            .as_deref()
            .map(breaker_modes::read)
            .unwrap_or_default()
    }

    fn set_breaker_mode(&self, tool: &str, mode: BreakerMode) -> Result<(), JournalError> {
        match &self.dir {
            Some(dir) => breaker_modes::remember(dir, tool, mode).map_err(storage),
            // A host without a data directory remembers nothing.
            None => Ok(()),
        }
    }
}

impl Store for RedbStore {
    fn owner_alive(&self, owner: Option<&str>, pid: u32) -> bool {
        self.live.alive(owner, pid)
    }
}
