//! Audit history, tasks, schedules and breaker modes, each operation one
//! statement or one transaction. A schedule's row is locked (`FOR UPDATE`)
//! while a runner claims a slot or records a run's end, so a slot is claimed
//! by one runner across replicas; the rules are [`Schedule`]'s own.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_postgres::Transaction;

use super::ops::{big, db_now, decode, encode, escalate_in};
use super::{Outcome, Shared};
use crate::model::journal::{AttemptRecord, HistoryQuery};
use crate::model::schedule::{
    Created, RunEnd, RunStatus, Schedule, ScheduleChange, ScheduleRun, SlotClaim,
};
use crate::model::task::TaskRecord;
use crate::resilience::breaker::BreakerMode;

/// Inserts attempt records in one statement.
pub(super) async fn insert_audit(shared: &Shared, records: &[AttemptRecord]) -> Outcome<()> {
    let values: Vec<serde_json::Value> = records.iter().map(encode).collect();
    let client = shared.pool.get().await?;
    client
        .execute(
            "INSERT INTO audit (started_ms, tool, task, agent, record)
             SELECT (r->>'started_ms')::bigint, r->>'tool', r->>'task', r->>'agent', r
             FROM unnest($1::jsonb[]) AS r",
            &[&values],
        )
        .await?;
    Ok(())
}

/// Attempts matching `query`, newest first (audit records still buffered
/// are inserted first, so a replica reads its own history).
pub(super) async fn history(
    shared: Arc<Shared>,
    query: HistoryQuery,
) -> Outcome<Vec<AttemptRecord>> {
    shared.flush_audit().await?;
    let client = shared.pool.get().await?;
    let limit = big(query.limit.unwrap_or(100) as u64);
    let rows = client
        .query(
            "SELECT id, record FROM audit
             WHERE started_ms >= $1 AND started_ms < $2
               AND ($3::text IS NULL OR tool = $3)
               AND ($4::text IS NULL OR task = $4)
               AND ($5::text IS NULL OR agent = $5)
             ORDER BY started_ms DESC, id DESC LIMIT $6",
            &[
                &big(query.since_ms.unwrap_or(0)),
                &query.until_ms.map_or(i64::MAX, big),
                &query.tool,
                &query.task,
                &query.agent,
                &limit,
            ],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| decode(&row.get::<_, i64>(0).to_string(), row.get(1)))
        .collect::<Result<_, _>>()?)
}

pub(super) async fn put_task(shared: Arc<Shared>, record: TaskRecord) -> Outcome<()> {
    let client = shared.pool.get().await?;
    client
        .execute(
            "INSERT INTO tasks (id, record) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
            &[&record.id, &encode(&record)],
        )
        .await?;
    Ok(())
}

pub(super) async fn tasks(shared: Arc<Shared>, id: Option<String>) -> Outcome<Vec<TaskRecord>> {
    let client = shared.pool.get().await?;
    let rows = client
        .query(
            r#"SELECT id, record FROM tasks WHERE $1::text IS NULL OR id = $1
               ORDER BY id COLLATE "C""#,
            &[&id],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| decode(row.get::<_, &str>(0), row.get(1)))
        .collect::<Result<_, _>>()?)
}

async fn locked_schedule(txn: &Transaction<'_>, name: &str) -> Outcome<Option<Schedule>> {
    let row = txn
        .query_opt(
            "SELECT record FROM schedules WHERE name = $1 FOR UPDATE",
            &[&name],
        )
        .await?;
    Ok(row.map(|row| decode(name, row.get(0))).transpose()?)
}

async fn put_schedule(txn: &Transaction<'_>, record: &Schedule) -> Outcome<()> {
    txn.execute(
        "UPDATE schedules SET record = $2 WHERE name = $1",
        &[&record.spec.name, &encode(record)],
    )
    .await?;
    Ok(())
}

async fn put_run(txn: &Transaction<'_>, name: &str, run: &ScheduleRun) -> Outcome<()> {
    txn.execute(
        "INSERT INTO schedule_runs (name, slot_ms, record) VALUES ($1, $2, $3)
         ON CONFLICT (name, slot_ms) DO UPDATE SET record = EXCLUDED.record",
        &[&name, &run.slot.as_millisecond(), &encode(run)],
    )
    .await?;
    Ok(())
}

pub(super) async fn create_schedule(
    shared: Arc<Shared>,
    record: Schedule,
    quota: usize,
) -> Outcome<Created> {
    let mut client = shared.pool.get().await?;
    let txn = client.transaction().await?;
    let name = record.spec.name.clone();
    // One creator per owner at a time, so the quota holds across replicas.
    txn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('cofferdam-schedules'), hashtext($1))",
        &[&record.spec.owner],
    )
    .await?;
    let same_or_conflict = |existing: Schedule| {
        if existing.spec == record.spec {
            Created::Same(existing)
        } else {
            Created::Conflict
        }
    };
    if let Some(existing) = locked_schedule(&txn, &name).await? {
        return Ok(same_or_conflict(existing));
    }
    let owned: i64 = txn
        .query_one(
            "SELECT count(*) FROM schedules WHERE owner = $1",
            &[&record.spec.owner],
        )
        .await?
        .get(0);
    if owned.max(0) as usize >= quota {
        return Ok(Created::OverQuota);
    }
    let inserted = txn
        .execute(
            "INSERT INTO schedules (name, owner, record) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
            &[&name, &record.spec.owner, &encode(&record)],
        )
        .await?;
    if inserted == 0 {
        // Another owner's creator took the name meanwhile.
        let existing = locked_schedule(&txn, &name).await?;
        return Ok(existing.map_or(Created::Conflict, same_or_conflict));
    }
    txn.commit().await?;
    Ok(Created::New(record))
}

pub(super) async fn update_schedule(
    shared: Arc<Shared>,
    name: String,
    change: ScheduleChange,
) -> Outcome<Option<Schedule>> {
    let mut client = shared.pool.get().await?;
    let txn = client.transaction().await?;
    let Some(mut schedule) = locked_schedule(&txn, &name).await? else {
        return Ok(None);
    };
    if schedule.apply(change) {
        put_schedule(&txn, &schedule).await?;
        txn.commit().await?;
    }
    Ok(Some(schedule))
}

pub(super) async fn delete_schedule(shared: Arc<Shared>, name: String) -> Outcome<bool> {
    let client = shared.pool.get().await?;
    let removed = client
        .execute("DELETE FROM schedules WHERE name = $1", &[&name])
        .await?;
    Ok(removed > 0)
}

pub(super) async fn claim_slot(shared: Arc<Shared>, claim: SlotClaim) -> Outcome<Option<Schedule>> {
    let mut client = shared.pool.get().await?;
    let txn = client.transaction().await?;
    let name = claim.name.clone();
    let Some(mut schedule) = locked_schedule(&txn, &name).await? else {
        return Ok(None);
    };
    let claimed = schedule.claim(claim);
    for run in &claimed.runs {
        put_run(&txn, &name, run).await?;
    }
    if claimed.changed {
        put_schedule(&txn, &schedule).await?;
    }
    txn.commit().await?;
    Ok(claimed.claimed.then_some(schedule))
}

pub(super) async fn finish_run(shared: Arc<Shared>, end: RunEnd) -> Outcome<Option<ScheduleRun>> {
    let mut client = shared.pool.get().await?;
    let mut txn = client.transaction().await?;
    let now = db_now(&txn).await?;
    let (name, slot) = (end.name.clone(), end.slot.as_millisecond());
    let Some(mut schedule) = locked_schedule(&txn, &name).await? else {
        return Ok(None);
    };
    let Some(row) = txn
        .query_opt(
            "SELECT record FROM schedule_runs WHERE name = $1 AND slot_ms = $2 FOR UPDATE",
            &[&name, &slot],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut run: ScheduleRun = decode(&format!("{name}/{slot}"), row.get(0))?;
    if run.status != RunStatus::Running {
        return Ok(None);
    }
    let (was_active, report) = (schedule.is_active(), end.report.clone());
    if let Some(new) = schedule.finish(&mut run, end) {
        let id = escalate_in(&txn, new, now).await?;
        schedule.escalated(&mut run, id);
    }
    put_run(&txn, &name, &run).await?;
    put_schedule(&txn, &schedule).await?;
    let entries = crate::model::notify::for_run(was_active, &schedule, &run, &report);
    if !entries.is_empty() {
        // Notifications that cannot be stored must not lose the run's end.
        let savepoint = txn.savepoint("outbox").await?;
        match super::outbox::insert(&savepoint, &entries).await {
            Ok(()) => savepoint.commit().await?,
            Err(e) => {
                tracing::error!(schedule = %name, error = ?e, "cannot store a run's notifications");
                savepoint.rollback().await?;
            }
        }
    }
    txn.commit().await?;
    Ok(Some(run))
}

pub(super) async fn schedules(shared: Arc<Shared>) -> Outcome<Vec<Schedule>> {
    let client = shared.pool.get().await?;
    let rows = client
        .query(
            r#"SELECT name, record FROM schedules ORDER BY name COLLATE "C""#,
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| decode(row.get::<_, &str>(0), row.get(1)))
        .collect::<Result<_, _>>()?)
}

pub(super) async fn schedule_runs(shared: Arc<Shared>, name: String) -> Outcome<Vec<ScheduleRun>> {
    let client = shared.pool.get().await?;
    let rows = client
        .query(
            "SELECT slot_ms, record FROM schedule_runs WHERE name = $1 ORDER BY slot_ms",
            &[&name],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| decode(&format!("{name}/{}", row.get::<_, i64>(0)), row.get(1)))
        .collect::<Result<_, _>>()?)
}

pub(super) async fn breaker_modes(shared: Arc<Shared>) -> Outcome<BTreeMap<String, BreakerMode>> {
    let client = shared.pool.get().await?;
    let rows = client
        .query("SELECT tool, mode FROM breaker_modes", &[])
        .await?;
    let mut modes = BTreeMap::new();
    for row in rows {
        let tool: String = row.get(0);
        match decode(&tool, row.get(1)) {
            Ok(mode) => {
                modes.insert(tool, mode);
            }
            Err(e) => tracing::warn!(error = %e, "ignoring an unreadable breaker mode"),
        }
    }
    Ok(modes)
}

pub(super) async fn set_breaker_mode(
    shared: Arc<Shared>,
    tool: String,
    mode: BreakerMode,
) -> Outcome<()> {
    let client = shared.pool.get().await?;
    if mode == BreakerMode::Normal {
        client
            .execute("DELETE FROM breaker_modes WHERE tool = $1", &[&tool])
            .await?;
    } else {
        client
            .execute(
                "INSERT INTO breaker_modes (tool, mode) VALUES ($1, $2)
                 ON CONFLICT (tool) DO UPDATE SET mode = EXCLUDED.mode",
                &[&tool, &encode(&mode)],
            )
            .await?;
    }
    Ok(())
}
