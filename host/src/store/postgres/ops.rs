//! Each operation of the store as one transaction: idempotency keys,
//! escalations and the budget ledger (schedules, tasks, audit and breaker
//! modes live in [`super::records`]). The keyed-call writes (claim, update,
//! release) are bodies run inside a transaction someone else owns
//! (`*_in`): [`super::batch`] runs them alone or many in one transaction. The rules are the redb store's, step
//! for step; what differs is how each step is made safe across replicas:
//! `INSERT … ON CONFLICT` for a new key, `SELECT … FOR UPDATE` before any
//! change, budget rows locked in scope order (so no two reservations
//! deadlock), a unique index for one open escalation per key.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_postgres::Transaction;

use super::lease::{alive_in, lapsed_reason};
use super::{Outcome, Shared};
use crate::model::budget::{BudgetCap, BudgetStatus, ScopeId};
use crate::model::error::JournalError;
use crate::model::escalation::{
    Escalation, EscalationError, EscalationReason, NewEscalation, Resolution, Resolved,
};
use crate::model::journal::{
    Claim, Fingerprint, JournalEntry, JournalKey, KeyState, Reclaim, Reservation, Reserved,
};
use crate::model::units::Effect;
use crate::store::ledger::{BudgetRecord, alert_soft_threshold, tokens_to_reserve};

/// Tries of a claim whose key is released between its insert and its read.
const CLAIM_TRIES: usize = 8;

pub(super) fn decode<T: DeserializeOwned>(
    key: &str,
    value: serde_json::Value,
) -> Result<T, JournalError> {
    serde_json::from_value(value).map_err(|source| JournalError::BadRecord {
        key: key.to_owned(),
        source,
    })
}

pub(super) fn encode<T: Serialize>(value: &T) -> serde_json::Value {
    // Plain records with string keys always serialize.
    serde_json::to_value(value).unwrap_or_default()
}

/// The database's clock, in Unix ms (the transaction's start).
pub(super) async fn db_now(txn: &Transaction<'_>) -> Outcome<u64> {
    let ms: i64 = txn
        .query_one("SELECT (extract(epoch FROM now()) * 1000)::bigint", &[])
        .await?
        .get(0);
    Ok(ms.max(0) as u64)
}

/// A u64 as a bigint column (they never come near the sign bit).
pub(super) fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn state_name(state: &KeyState) -> (&'static str, Option<&str>) {
    match state {
        KeyState::InProgress { owner, .. } => ("in-progress", owner.as_deref()),
        KeyState::Completed { .. } => ("completed", None),
        KeyState::Unknown { .. } => ("unknown", None),
    }
}

/// Writes an existing idempotency record back.
pub(super) async fn put_entry(
    txn: &Transaction<'_>,
    encoded: &str,
    entry: &JournalEntry,
) -> Outcome<()> {
    let (state, owner) = state_name(&entry.state);
    txn.execute(
        "UPDATE idempotency SET state = $2, owner = $3, updated_ms = $4, record = $5 WHERE key = $1",
        &[&encoded, &state, &owner, &big(entry.updated_ms), &encode(entry)],
    )
    .await?;
    Ok(())
}

async fn locked_entry(txn: &Transaction<'_>, encoded: &str) -> Outcome<Option<JournalEntry>> {
    let row = txn
        .query_opt(
            "SELECT record FROM idempotency WHERE key = $1 FOR UPDATE",
            &[&encoded],
        )
        .await?;
    Ok(row.map(|row| decode(encoded, row.get(0))).transpose()?)
}

/// Claims `key` in `txn`: a new key is inserted in-progress, an existing
/// one is locked and [`JournalEntry::reclaim`] decides. Takes its inputs by
/// reference, so a batch that rolls back can run it again alone.
#[expect(
    clippy::too_many_arguments,
    reason = "the claim's inputs, as the trait takes them"
)]
pub(super) async fn claim_in(
    txn: &Transaction<'_>,
    shared: &Shared,
    now: u64,
    key: &JournalKey,
    fingerprint: &Fingerprint,
    effect: Effect,
    lease: Duration,
    context: Option<&NewEscalation>,
) -> Outcome<Claim> {
    let encoded = key.encode();
    let in_progress = KeyState::InProgress {
        lease_until_ms: now.saturating_add(lease.as_millis() as u64),
        owner_pid: std::process::id(),
        owner: Some(shared.owner.clone()),
    };
    for _ in 0..CLAIM_TRIES {
        let fresh = JournalEntry {
            v: 1,
            scope: key.scope.clone(),
            tool: key.tool.clone(),
            key: key.key.clone(),
            fingerprint: fingerprint.current.clone(),
            effect,
            claims: 1,
            state: in_progress.clone(),
            created_ms: now,
            updated_ms: now,
        };
        let inserted = txn
            .execute(
                "INSERT INTO idempotency (key, state, owner, updated_ms, record)
                 VALUES ($1, 'in-progress', $2, $3, $4) ON CONFLICT (key) DO NOTHING",
                &[&encoded, &shared.owner, &big(now), &encode(&fresh)],
            )
            .await?;
        if inserted == 1 {
            return Ok(Claim::Claimed);
        }
        // Released between the insert and this read: insert again (each
        // statement of a read-committed transaction sees the latest commits).
        let Some(mut entry) = locked_entry(txn, &encoded).await? else {
            continue;
        };
        let holder_gone = match &entry.state {
            KeyState::InProgress { owner, .. }
                if !alive_in(txn, shared, owner.as_deref()).await? =>
            {
                Some(lapsed_reason(owner.as_deref()))
            }
            _ => None,
        };
        match entry.reclaim(fingerprint, now, holder_gone) {
            Reclaim::Answer(claim) => return Ok(claim),
            Reclaim::Unknown(reason) => {
                let escalation =
                    entry.lapse(key, &reason, now, context.cloned().unwrap_or_default());
                put_entry(txn, &encoded, &entry).await?;
                escalate_in(txn, escalation, now).await?;
                return Ok(Claim::Unknown { reason });
            }
            Reclaim::Take => {}
        }
        entry.claims += 1;
        entry.state = in_progress;
        entry.updated_ms = now;
        put_entry(txn, &encoded, &entry).await?;
        return Ok(Claim::Claimed);
    }
    Err(
        JournalError::Storage(Arc::new(std::io::Error::other(format!(
            "idempotency key `{encoded}` kept being released while it was claimed"
        ))))
        .into(),
    )
}

/// Changes a claimed key's record in `txn` (`Missing` when it is gone);
/// with `escalation`, raises it in the same transaction.
pub(super) async fn update_in(
    txn: &Transaction<'_>,
    now: u64,
    key: &JournalKey,
    state: &KeyState,
    escalation: Option<&NewEscalation>,
) -> Outcome<()> {
    let encoded = key.encode();
    let Some(mut entry) = locked_entry(txn, &encoded).await? else {
        return Err(JournalError::Missing { key: encoded }.into());
    };
    entry.state = state.clone();
    entry.updated_ms = now;
    put_entry(txn, &encoded, &entry).await?;
    if let Some(new) = escalation {
        escalate_in(txn, new.clone(), now).await?;
    }
    Ok(())
}

/// Forgets `key` in `txn` (nothing when it is gone).
pub(super) async fn release_in(txn: &Transaction<'_>, key: &JournalKey) -> Outcome<()> {
    txn.execute("DELETE FROM idempotency WHERE key = $1", &[&key.encode()])
        .await?;
    Ok(())
}

pub(super) async fn reap(shared: Arc<Shared>, before_ms: u64) -> Outcome<usize> {
    let client = shared.pool.get().await?;
    let removed = client
        .execute(
            "DELETE FROM idempotency WHERE state <> 'in-progress' AND updated_ms < $1",
            &[&big(before_ms)],
        )
        .await?;
    Ok(removed as usize)
}

pub(super) async fn entries(shared: Arc<Shared>) -> Outcome<Vec<JournalEntry>> {
    let client = shared.pool.get().await?;
    let rows = client
        .query(
            r#"SELECT key, record FROM idempotency ORDER BY key COLLATE "C""#,
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| decode(row.get::<_, &str>(0), row.get(1)))
        .collect::<Result<_, _>>()?)
}

/// What makes two open escalations the same: the key, else the schedule and
/// reason, else the task step and reason (as the redb store compares them).
pub(super) fn dedup_key(new: &NewEscalation) -> Option<String> {
    let reason = new.reason.map_or("", EscalationReason::as_str);
    match (&new.key, &new.schedule, &new.task) {
        (Some(key), _, _) => Some(format!(
            "key\u{1f}{}\u{1f}{}\u{1f}{}",
            key.scope, key.tool, key.key
        )),
        (None, Some(schedule), _) => Some(format!("schedule\u{1f}{schedule}\u{1f}{reason}")),
        (None, None, Some(task)) => Some(format!(
            "task\u{1f}{task}\u{1f}{}\u{1f}{reason}",
            new.step.map_or(String::new(), |s| s.to_string())
        )),
        (None, None, None) => None,
    }
}

/// An open escalation an unkeyed `new` joins although its dedup value
/// differs: one raised with a key for the same schedule and reason, or the
/// same task step and reason (the redb store's rule).
async fn open_for_the_same_run(txn: &Transaction<'_>, new: &NewEscalation) -> Outcome<Option<u64>> {
    let (None, Some(reason)) = (&new.key, new.reason) else {
        return Ok(None);
    };
    let reason = reason.as_str();
    let row = match (&new.schedule, &new.task) {
        (Some(schedule), _) => {
            txn.query_opt(
                "SELECT id FROM escalations WHERE NOT resolved
                 AND record->>'schedule' = $1 AND record->>'reason' = $2
                 ORDER BY id LIMIT 1",
                &[schedule, &reason],
            )
            .await?
        }
        (None, Some(task)) => {
            let step = new.step.map(|s| s.to_string());
            txn.query_opt(
                "SELECT id FROM escalations WHERE NOT resolved
                 AND record->>'task' = $1 AND record->>'step' IS NOT DISTINCT FROM $2
                 AND record->>'reason' = $3
                 ORDER BY id LIMIT 1",
                &[task, &step, &reason],
            )
            .await?
        }
        (None, None) => None,
    };
    Ok(row.map(|row| row.get::<_, i64>(0) as u64))
}

/// Raises an escalation in `txn`, unless one is open for the same key;
/// returns its id.
pub(super) async fn escalate_in(
    txn: &Transaction<'_>,
    new: NewEscalation,
    now: u64,
) -> Outcome<u64> {
    if let Some(id) = open_for_the_same_run(txn, &new).await? {
        return Ok(id);
    }
    let dedup = dedup_key(&new);
    let record = Escalation {
        v: 1,
        // The row's id is the escalation's; the record's is set on read.
        id: 0,
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
    let value = encode(&record);
    for _ in 0..CLAIM_TRIES {
        let inserted = txn
            .query_opt(
                "INSERT INTO escalations (dedup, record) VALUES ($1, $2)
                 ON CONFLICT (dedup) WHERE NOT resolved DO NOTHING RETURNING id",
                &[&dedup, &value],
            )
            .await?;
        if let Some(row) = inserted {
            let id = row.get::<_, i64>(0) as u64;
            tracing::warn!(id, reason = record.reason.as_str(), tool = ?record.tool,
                task = ?record.task, "escalated to a human");
            return Ok(id);
        }
        let open = txn
            .query_opt(
                "SELECT id FROM escalations WHERE dedup = $1 AND NOT resolved",
                &[&dedup],
            )
            .await?;
        if let Some(row) = open {
            return Ok(row.get::<_, i64>(0) as u64);
        }
    }
    Err(JournalError::Storage(Arc::new(std::io::Error::other(
        "an open escalation kept being resolved while another was raised",
    )))
    .into())
}

pub(super) async fn escalate(shared: Arc<Shared>, new: NewEscalation) -> Outcome<u64> {
    let mut client = shared.pool.get().await?;
    let txn = client.transaction().await?;
    let now = db_now(&txn).await?;
    let id = escalate_in(&txn, new, now).await?;
    txn.commit().await?;
    Ok(id)
}

fn escalation_row(row: &tokio_postgres::Row) -> Result<Escalation, JournalError> {
    let id = row.get::<_, i64>(0) as u64;
    let mut record: Escalation = decode(&id.to_string(), row.get(1))?;
    record.id = id;
    Ok(record)
}

pub(super) async fn escalations(shared: Arc<Shared>, id: Option<u64>) -> Outcome<Vec<Escalation>> {
    let client = shared.pool.get().await?;
    let rows = match id {
        Some(id) => {
            client
                .query(
                    "SELECT id, record FROM escalations WHERE id = $1",
                    &[&big(id)],
                )
                .await?
        }
        None => {
            client
                .query("SELECT id, record FROM escalations ORDER BY id", &[])
                .await?
        }
    };
    Ok(rows.iter().map(escalation_row).collect::<Result<_, _>>()?)
}

/// Records a resolution and settles the escalation's unknown key, in one
/// transaction.
pub(super) async fn resolve(
    shared: Arc<Shared>,
    id: u64,
    resolution: Resolution,
    note: String,
) -> Outcome<Result<Escalation, EscalationError>> {
    let mut client = shared.pool.get().await?;
    let txn = client.transaction().await?;
    let now = db_now(&txn).await?;
    let Some(row) = txn
        .query_opt(
            "SELECT id, record FROM escalations WHERE id = $1 FOR UPDATE",
            &[&big(id)],
        )
        .await?
    else {
        return Ok(Err(EscalationError::NotFound { id }));
    };
    let mut record = escalation_row(&row)?;
    if let Some(done) = &record.resolved {
        return Ok(Err(EscalationError::AlreadyResolved {
            id,
            resolution: done.resolution.as_str(),
        }));
    }
    if let Some(key) = &record.key {
        let encoded = JournalKey {
            scope: key.scope.clone(),
            tool: key.tool.clone(),
            key: key.key.clone(),
        }
        .encode();
        if let Some(mut entry) = locked_entry(&txn, &encoded).await?
            && matches!(entry.state, KeyState::Unknown { .. })
        {
            let state = KeyState::resolved(&resolution, &note);
            match state {
                None => {
                    txn.execute("DELETE FROM idempotency WHERE key = $1", &[&encoded])
                        .await?;
                }
                Some(state) => {
                    entry.state = state;
                    entry.updated_ms = now;
                    put_entry(&txn, &encoded, &entry).await?;
                }
            }
        }
    }
    record.resolved = Some(Resolved {
        resolution,
        note,
        resolved_ms: now,
    });
    txn.execute(
        "UPDATE escalations SET resolved = true, record = $2 WHERE id = $1",
        &[&big(id), &encode(&record)],
    )
    .await?;
    txn.commit().await?;
    Ok(Ok(record))
}

/// The capped scopes among `scopes`, locked in scope order (every writer
/// locks in this order, so none waits on another in a cycle), windows
/// rolled, returned in the order asked.
pub(super) async fn lock_budgets(
    txn: &Transaction<'_>,
    scopes: &[String],
    now: u64,
) -> Outcome<Vec<(String, BudgetRecord)>> {
    let rows = txn
        .query(
            r#"SELECT scope, record FROM budgets WHERE scope = ANY($1)
               ORDER BY scope COLLATE "C" FOR UPDATE"#,
            &[&scopes],
        )
        .await?;
    let mut found = Vec::with_capacity(rows.len());
    for row in rows {
        let scope: String = row.get(0);
        let mut record: BudgetRecord = decode(&scope, row.get(1))?;
        record.roll_window(now);
        found.push((scope, record));
    }
    found.sort_by_key(|(scope, _)| scopes.iter().position(|s| s == scope));
    Ok(found)
}

pub(super) async fn put_budget(
    txn: &Transaction<'_>,
    scope: &str,
    record: &BudgetRecord,
) -> Outcome<()> {
    txn.execute(
        "UPDATE budgets SET record = $2 WHERE scope = $1",
        &[&scope, &encode(record)],
    )
    .await?;
    Ok(())
}

pub(super) async fn reserve(
    shared: Arc<Shared>,
    scopes: Vec<ScopeId>,
    want: u64,
    whole: bool,
) -> Outcome<Reserved> {
    let names: Vec<String> = scopes.iter().map(ScopeId::to_string).collect();
    let mut client = shared.pool.get().await?;
    // Most calls name no capped scope: one read answers them without a
    // transaction (a cap set just after it is as if set after the call).
    let capped: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM budgets WHERE scope = ANY($1))",
            &[&names],
        )
        .await?
        .get(0);
    if !capped {
        return Ok(Reserved::Unlimited);
    }
    let txn = client.transaction().await?;
    let now = db_now(&txn).await?;
    let mut capped = lock_budgets(&txn, &names, now).await?;
    let (tokens, tightest) = match tokens_to_reserve(&capped, want, whole) {
        Ok(granted) => granted,
        Err(answer) => return Ok(answer),
    };
    for (scope, record) in &mut capped {
        record.reserved += tokens;
        put_budget(&txn, scope, record).await?;
    }
    let scopes: Vec<String> = capped.into_iter().map(|(s, _)| s).collect();
    let id: i64 = txn
        .query_one(
            "INSERT INTO reservations (owner, tokens, scopes) VALUES ($1, $2, $3) RETURNING id",
            &[&shared.owner, &big(tokens), &scopes],
        )
        .await?
        .get(0);
    txn.commit().await?;
    Ok(Reserved::Granted(Reservation {
        id: id as u64,
        scopes,
        tokens,
        owner_pid: std::process::id(),
        owner: Some(shared.owner.clone()),
        tightest,
    }))
}

pub(super) async fn settle(
    shared: Arc<Shared>,
    reservation: Reservation,
    actual: u64,
) -> Outcome<()> {
    let mut client = shared.pool.get().await?;
    let txn = client.transaction().await?;
    let now = db_now(&txn).await?;
    let removed = txn
        .execute(
            "DELETE FROM reservations WHERE id = $1",
            &[&big(reservation.id)],
        )
        .await?;
    if removed == 0 {
        // Already settled, or taken over as a dead owner's.
        return Ok(());
    }
    let spent = actual.min(reservation.tokens);
    for (scope, mut record) in lock_budgets(&txn, &reservation.scopes, now).await? {
        record.reserved = record.reserved.saturating_sub(reservation.tokens);
        record.spent += spent;
        alert_soft_threshold(&scope, &mut record);
        put_budget(&txn, &scope, &record).await?;
    }
    txn.commit().await?;
    Ok(())
}

pub(super) async fn charge(
    shared: Arc<Shared>,
    scope: ScopeId,
    tokens: u64,
) -> Outcome<Option<BudgetStatus>> {
    let name = scope.to_string();
    let mut client = shared.pool.get().await?;
    let txn = client.transaction().await?;
    let now = db_now(&txn).await?;
    let Some((_, mut record)) = lock_budgets(&txn, std::slice::from_ref(&name), now)
        .await?
        .pop()
    else {
        return Ok(None);
    };
    record.spent += tokens;
    alert_soft_threshold(&name, &mut record);
    put_budget(&txn, &name, &record).await?;
    txn.commit().await?;
    Ok(Some(record.status(&name)))
}

pub(super) async fn set_cap(
    shared: Arc<Shared>,
    scope: ScopeId,
    cap: Option<BudgetCap>,
) -> Outcome<()> {
    let name = scope.to_string();
    let mut client = shared.pool.get().await?;
    let txn = client.transaction().await?;
    let now = db_now(&txn).await?;
    match cap {
        None => {
            txn.execute("DELETE FROM budgets WHERE scope = $1", &[&name])
                .await?;
        }
        Some(cap) => {
            let inserted = txn
                .execute(
                    "INSERT INTO budgets (scope, record) VALUES ($1, $2)
                     ON CONFLICT (scope) DO NOTHING",
                    &[&name, &encode(&BudgetRecord::new(cap, now))],
                )
                .await?;
            if inserted == 0
                && let Some((_, mut record)) = lock_budgets(&txn, std::slice::from_ref(&name), now)
                    .await?
                    .pop()
            {
                record.recap(cap);
                put_budget(&txn, &name, &record).await?;
            }
        }
    }
    txn.commit().await?;
    Ok(())
}

pub(super) async fn budgets(shared: Arc<Shared>) -> Outcome<Vec<BudgetStatus>> {
    let mut client = shared.pool.get().await?;
    let txn = client.transaction().await?;
    let now = db_now(&txn).await?;
    let rows = txn
        .query(
            r#"SELECT scope, record FROM budgets ORDER BY scope COLLATE "C""#,
            &[],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let scope: String = row.get(0);
        let mut record: BudgetRecord = decode(&scope, row.get(1))?;
        record.roll_window(now);
        out.push(record.status(&scope));
    }
    Ok(out)
}
