//! What each request does inside the writer's transaction.

use std::time::Duration;

use redb::{ReadableTable, WriteTransaction};

use super::{
    AUDIT, BUDGETS, BudgetRecord, ESCALATIONS, IDEMPOTENCY, RESERVATIONS, SCHEDULE_RUNS, SCHEDULES,
    decode, encode,
};
use crate::model::budget::{BudgetCap, BudgetStatus, ScopeId};
use crate::model::error::JournalError;
use crate::model::error::storage;
use crate::model::escalation::{
    Escalation, EscalationError, EscalationReason, NewEscalation, Resolution, Resolved,
};
pub use crate::model::journal::{AttemptRecord, JournalEntry, KeyState};
pub(crate) use crate::model::journal::{
    Claim, Fingerprint, JournalKey, Reclaim, Reservation, Reserved,
};
use crate::model::schedule::{Schedule, ScheduleRun};
use crate::model::units::Effect;
use crate::store::ledger::{alert_soft_threshold, tokens_to_reserve};
use crate::store::owner::Liveness;

/// The schedule store as one write transaction sees it; see
/// [`RedbStore::schedules_txn`].
pub(super) struct ScheduleTxn<'a> {
    pub(super) txn: &'a WriteTransaction,
    pub(super) now: u64,
}

impl ScheduleTxn<'_> {
    /// A stored schedule.
    pub(super) fn get(&self, name: &str) -> Result<Option<Schedule>, JournalError> {
        let table = self.txn.open_table(SCHEDULES).map_err(storage)?;
        let value = table.get(name).map_err(storage)?;
        value.map(|v| decode(name, v.value())).transpose()
    }

    /// Every stored schedule.
    pub(super) fn list(&self) -> Result<Vec<Schedule>, JournalError> {
        let table = self.txn.open_table(SCHEDULES).map_err(storage)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(storage)? {
            let (key, value) = row.map_err(storage)?;
            out.push(decode(key.value(), value.value())?);
        }
        Ok(out)
    }

    /// Stores a schedule.
    pub(super) fn put(&self, name: &str, record: &Schedule) -> Result<(), JournalError> {
        let mut table = self.txn.open_table(SCHEDULES).map_err(storage)?;
        table
            .insert(name, encode(record).as_slice())
            .map_err(storage)?;
        Ok(())
    }

    /// Deletes a schedule and its runs; whether it existed.
    pub(super) fn remove(&self, name: &str) -> Result<bool, JournalError> {
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
    pub(super) fn run(
        &self,
        name: &str,
        slot_ms: i64,
    ) -> Result<Option<ScheduleRun>, JournalError> {
        let key = run_key(name, slot_ms);
        let table = self.txn.open_table(SCHEDULE_RUNS).map_err(storage)?;
        let value = table.get(key.as_str()).map_err(storage)?;
        value.map(|v| decode(&key, v.value())).transpose()
    }

    /// Stores a run of `name` for the slot at `slot_ms`.
    pub(super) fn put_run(
        &self,
        name: &str,
        slot_ms: i64,
        record: &ScheduleRun,
    ) -> Result<(), JournalError> {
        let mut table = self.txn.open_table(SCHEDULE_RUNS).map_err(storage)?;
        table
            .insert(run_key(name, slot_ms).as_str(), encode(record).as_slice())
            .map_err(storage)?;
        Ok(())
    }

    /// Raises an escalation in this transaction (de-duplicated as always).
    pub(super) fn escalate(&self, new: NewEscalation) -> Result<u64, JournalError> {
        escalate(self.txn, new, self.now)
    }
}

pub(super) fn run_key(name: &str, slot_ms: i64) -> String {
    // Offset so slots before 1970 still sort; 20 digits fit any i64.
    format!(
        "{name}/{:020}",
        (slot_ms as i128 - i128::from(i64::MIN)) as u128
    )
}

/// The key range holding `name`'s runs (`0` follows `/`).
pub(super) fn run_range(name: &str) -> (String, String) {
    (format!("{name}/"), format!("{name}0"))
}

/// Adds an escalation, unless one is open for the same key; returns its id.
pub(super) fn escalate(
    txn: &WriteTransaction,
    new: NewEscalation,
    now: u64,
) -> Result<u64, JournalError> {
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
pub(super) fn resolve(
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
                let state = KeyState::resolved(&resolution, &note);
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

pub(super) fn update(
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
        return Err(JournalError::Missing { key: encoded });
    };
    let mut entry: JournalEntry = decode(&encoded, &bytes)?;
    change(&mut entry);
    entry.updated_ms = now;
    table
        .insert(encoded.as_str(), encode(&entry).as_slice())
        .map_err(storage)?;
    Ok(())
}

pub(super) fn load_budgets(
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

pub(super) fn reserve(
    txn: &WriteTransaction,
    scopes: &[ScopeId],
    want: u64,
    whole: bool,
    now: u64,
) -> Result<Reserved, JournalError> {
    let names: Vec<String> = scopes.iter().map(ScopeId::to_string).collect();
    let mut budgets = txn.open_table(BUDGETS).map_err(storage)?;
    let mut capped = load_budgets(&budgets, &names, now)?;
    let (tokens, tightest) = match tokens_to_reserve(&capped, want, whole) {
        Ok(granted) => granted,
        Err(answer) => return Ok(answer),
    };
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

pub(super) fn settle(
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

pub(super) fn charge(
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

pub(super) fn set_cap(
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
            record.recap(cap);
            record
        }
        None => BudgetRecord::new(cap, now),
    };
    budgets
        .insert(name.as_str(), encode(&record).as_slice())
        .map_err(storage)?;
    Ok(())
}

pub(super) fn reap(txn: &WriteTransaction, before_ms: u64) -> Result<usize, JournalError> {
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

/// Records a batch's attempts in the audit table, opened once. Keys sort by
/// start time; the low bits keep same-millisecond records apart: the first
/// record of a millisecond looks up the last key used in it, the others of
/// the batch count on from there (a batch of warm calls spans a few dozen
/// milliseconds, not one lookup per record).
pub(super) fn audit(txn: &WriteTransaction, records: &[AttemptRecord]) -> Result<(), JournalError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(AUDIT).map_err(storage)?;
    let mut next: std::collections::HashMap<u64, u128> = std::collections::HashMap::new();
    // One buffer for the batch: a fresh `Vec` per record grew by doubling
    // (and faulted in new pages) for every record.
    let mut encoded = Vec::with_capacity(512);
    for record in records {
        let ms = record.started_ms.max(1);
        let key = match next.get(&ms) {
            Some(key) => *key,
            None => {
                let base = u128::from(ms) << 64;
                table
                    .range(base..base + (1u128 << 64))
                    .map_err(storage)?
                    .next_back()
                    .transpose()
                    .map_err(storage)?
                    .map_or(base, |(k, _)| k.value() + 1)
            }
        };
        encoded.clear();
        // Serializing a plain record into a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut encoded, record);
        table.insert(key, encoded.as_slice()).map_err(storage)?;
        next.insert(ms, key + 1);
    }
    Ok(())
}

#[expect(
    clippy::too_many_arguments,
    reason = "one private step of the writer; the fields of Op::Claim plus the transaction context"
)]
pub(super) fn claim(
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
            let holder_gone = match &entry.state {
                KeyState::InProgress {
                    owner_pid, owner, ..
                } if !live.alive(owner.as_deref(), *owner_pid) => Some(format!(
                    "process {owner_pid} holding the key stopped mid-call"
                )),
                _ => None,
            };
            match entry.reclaim(&fingerprint, now, holder_gone) {
                Reclaim::Answer(claim) => return Ok(claim),
                Reclaim::Unknown(reason) => {
                    let context = context.map_or_else(NewEscalation::default, |c| *c);
                    let escalation = entry.lapse(key, &reason, now, context);
                    table
                        .insert(encoded.as_str(), encode(&entry).as_slice())
                        .map_err(storage)?;
                    drop(table);
                    escalate(txn, escalation, now)?;
                    return Ok(Claim::Unknown { reason });
                }
                Reclaim::Take => {}
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
