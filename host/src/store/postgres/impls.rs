//! The store traits, each method one operation of [`super::ops`],
//! [`super::records`] or [`super::lease`] run on the store's runtime; the
//! keyed-call writes go through [`super::batch`].

use std::collections::BTreeMap;
use std::time::Duration;

use super::batch::{self, KeyWrite};
use super::{PgStore, lease, ops, records};
use crate::model::budget::{BudgetCap, BudgetStatus, ScopeId};
use crate::model::error::JournalError;
use crate::model::escalation::{Escalation, EscalationError, NewEscalation, Resolution};
use crate::model::journal::{
    AttemptRecord, Claim, Fingerprint, HistoryQuery, JournalEntry, JournalKey, KeyState,
    Reservation, Reserved, StoredOutcome,
};
use crate::model::schedule::{Created, RunEnd, Schedule, ScheduleChange, ScheduleRun, SlotClaim};
use crate::model::task::TaskRecord;
use crate::model::units::Effect;
use crate::resilience::breaker::BreakerMode;
use crate::store::{
    AuditLog, BreakerModeStore, BudgetLedger, EscalationStore, IdempotencyStore, ScheduleStore,
    Store, StoreFuture, TaskStore,
};

impl IdempotencyStore for PgStore {
    fn claim(
        &self,
        key: JournalKey,
        fingerprint: Fingerprint,
        effect: Effect,
        lease: Duration,
        context: Option<NewEscalation>,
    ) -> StoreFuture<'_, Claim> {
        let write = KeyWrite::Claim {
            key,
            fingerprint,
            effect,
            lease,
            context,
        };
        self.write(move |s| async move {
            let done = batch::submit(s, write).await?;
            Ok(done.unwrap_or(Claim::Claimed))
        })
    }

    fn complete(&self, key: JournalKey, outcome: StoredOutcome) -> StoreFuture<'_, ()> {
        let write = KeyWrite::Update {
            key,
            state: KeyState::Completed { outcome },
            escalation: None,
        };
        self.write(move |s| async move { batch::submit(s, write).await.map(drop) })
    }

    fn release(&self, key: JournalKey) -> StoreFuture<'_, ()> {
        let write = KeyWrite::Release { key };
        self.write(move |s| async move { batch::submit(s, write).await.map(drop) })
    }

    fn mark_unknown(
        &self,
        key: JournalKey,
        reason: String,
        context: NewEscalation,
    ) -> StoreFuture<'_, ()> {
        let escalation = NewEscalation {
            error: reason.clone(),
            ..context
        };
        let write = KeyWrite::Update {
            key,
            state: KeyState::Unknown { reason },
            escalation: Some(escalation),
        };
        self.write(move |s| async move { batch::submit(s, write).await.map(drop) })
    }

    fn reap(&self, before_ms: u64) -> StoreFuture<'_, usize> {
        self.write(move |s| ops::reap(s, before_ms))
    }

    fn entries(&self) -> Result<Vec<JournalEntry>, JournalError> {
        self.block(ops::entries)
    }
}

impl BudgetLedger for PgStore {
    fn reserve(&self, scopes: Vec<ScopeId>, want: u64, whole: bool) -> StoreFuture<'_, Reserved> {
        self.write(move |s| ops::reserve(s, scopes, want, whole))
    }

    fn settle(&self, reservation: Reservation, actual: u64) -> StoreFuture<'_, ()> {
        self.write(move |s| ops::settle(s, reservation, actual))
    }

    fn charge(&self, scope: ScopeId, tokens: u64) -> StoreFuture<'_, Option<BudgetStatus>> {
        self.write(move |s| ops::charge(s, scope, tokens))
    }

    fn set_cap(&self, scope: ScopeId, cap: Option<BudgetCap>) -> StoreFuture<'_, ()> {
        self.write(move |s| ops::set_cap(s, scope, cap))
    }

    fn budgets(&self) -> Result<Vec<BudgetStatus>, JournalError> {
        self.block(ops::budgets)
    }
}

impl AuditLog for PgStore {
    fn audit(&self, record: AttemptRecord) {
        self.push_audit(record);
    }

    fn history(&self, query: &HistoryQuery) -> Result<Vec<AttemptRecord>, JournalError> {
        let query = query.clone();
        self.block(move |s| records::history(s, query))
    }
}

impl EscalationStore for PgStore {
    fn escalate(&self, new: NewEscalation) -> StoreFuture<'_, u64> {
        self.write(move |s| ops::escalate(s, new))
    }

    fn resolve_escalation(
        &self,
        id: u64,
        resolution: Resolution,
        note: String,
    ) -> StoreFuture<'_, Result<Escalation, EscalationError>> {
        self.write(move |s| ops::resolve(s, id, resolution, note))
    }

    fn escalations(&self) -> Result<Vec<Escalation>, JournalError> {
        self.block(|s| ops::escalations(s, None))
    }

    fn escalation(&self, id: u64) -> Result<Option<Escalation>, JournalError> {
        Ok(self.block(move |s| ops::escalations(s, Some(id)))?.pop())
    }
}

impl TaskStore for PgStore {
    fn put_task(&self, record: TaskRecord) -> StoreFuture<'_, ()> {
        self.write(move |s| records::put_task(s, record))
    }

    fn task(&self, id: &str) -> Result<Option<TaskRecord>, JournalError> {
        let id = id.to_owned();
        Ok(self.block(move |s| records::tasks(s, Some(id)))?.pop())
    }

    fn tasks(&self) -> Result<Vec<TaskRecord>, JournalError> {
        self.block(|s| records::tasks(s, None))
    }
}

impl ScheduleStore for PgStore {
    fn create_schedule(&self, record: Schedule, quota: usize) -> StoreFuture<'_, Created> {
        self.write(move |s| records::create_schedule(s, record, quota))
    }

    fn update_schedule(
        &self,
        name: String,
        change: ScheduleChange,
    ) -> StoreFuture<'_, Option<Schedule>> {
        self.write(move |s| records::update_schedule(s, name, change))
    }

    fn delete_schedule(&self, name: String) -> StoreFuture<'_, bool> {
        self.write(move |s| records::delete_schedule(s, name))
    }

    fn claim_slot(&self, claim: SlotClaim) -> StoreFuture<'_, Option<Schedule>> {
        self.write(move |s| records::claim_slot(s, claim))
    }

    fn finish_run(&self, end: RunEnd) -> StoreFuture<'_, Option<ScheduleRun>> {
        self.write(move |s| records::finish_run(s, end))
    }

    fn schedules(&self) -> Result<Vec<Schedule>, JournalError> {
        self.block(records::schedules)
    }

    fn schedule_runs(&self, name: &str) -> Result<Vec<ScheduleRun>, JournalError> {
        let name = name.to_owned();
        self.block(move |s| records::schedule_runs(s, name))
    }
}

impl BreakerModeStore for PgStore {
    fn breaker_modes(&self) -> BTreeMap<String, BreakerMode> {
        self.block(records::breaker_modes).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read breaker modes; applying none");
            BTreeMap::new()
        })
    }

    fn set_breaker_mode(&self, tool: &str, mode: BreakerMode) -> Result<(), JournalError> {
        let tool = tool.to_owned();
        self.block(move |s| records::set_breaker_mode(s, tool, mode))
    }
}

impl Store for PgStore {
    fn owner_alive(&self, owner: Option<&str>, _pid: u32) -> bool {
        let Some(owner) = owner else {
            // Records without owner ids come from an embedded store.
            return false;
        };
        if owner == self.shared.owner {
            return true;
        }
        let owner = owner.to_owned();
        self.block(move |s| lease::alive(s, owner))
            .unwrap_or_else(|e| {
                // Cannot tell: assume alive, so nothing is taken from a
                // live replica (its lease still ends its hold).
                tracing::warn!(error = %e, "cannot check a replica's lease");
                true
            })
    }
}
