//! Fills an empty database with a [`Snapshot`] of another store (`cofferdam
//! store migrate`), in one transaction: all of it or nothing. Rows have the
//! shapes the store's own operations write; escalations keep their ids and
//! the id sequence moves past them, so new ones do not collide.
//!
//! It does not merge: a database holding any cofferdam data is refused.
//! Nothing is taken over here: an in-progress key or a reservation keeps the
//! owner it had, which holds no lease in this database, so the lease sweep
//! treats it as a dead replica's (a side-effecting key becomes unknown and
//! is escalated once, a reservation counts as spent).

use std::sync::Arc;

use tokio_postgres::Transaction;

use super::ops::{big, dedup_key, encode};
use super::{Outcome, PgStore, Shared};
use crate::model::escalation::NewEscalation;
use crate::model::journal::KeyState;
use crate::store::snapshot::{MigrateError, Migrated, Snapshot};

/// Rows inserted by one statement at most.
const BATCH: usize = 1024;

impl PgStore {
    /// Writes every record of `snapshot` in one transaction, unless the
    /// database already holds cofferdam data.
    pub(crate) fn import(&self, snapshot: Snapshot) -> Result<Migrated, MigrateError> {
        let store = self.shared.name.clone();
        let migrated = snapshot.counts(&store);
        match self.block(move |shared| import(shared, snapshot))? {
            Ok(()) => Ok(migrated),
            Err(holds) => Err(MigrateError::NotEmpty { store, holds }),
        }
    }
}

/// The tables a migration fills, with what a row of each is called; any row
/// in one refuses the migration.
const TABLES: &[(&str, &str)] = &[
    ("idempotency", "key"),
    ("budgets", "budget"),
    ("escalations", "escalation"),
    ("tasks", "task"),
    ("schedules", "schedule"),
    ("audit", "attempt"),
    ("breaker_modes", "breaker mode"),
    ("state", "state key"),
    ("outbox", "notification"),
];

/// `Err` names what the database already holds.
async fn import(shared: Arc<Shared>, snapshot: Snapshot) -> Outcome<Result<(), String>> {
    let mut client = shared.pool.get().await?;
    let txn = client.transaction().await?;
    // No replica writes while the database is checked and filled.
    txn.batch_execute(
        "LOCK TABLE idempotency, budgets, reservations, audit, escalations, tasks,
                    schedules, schedule_runs, breaker_modes, state, outbox IN EXCLUSIVE MODE",
    )
    .await?;
    let mut holds = Vec::new();
    for (table, noun) in TABLES {
        let count: i64 = txn
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await?
            .get(0);
        if count > 0 {
            holds.push(format!(
                "{count} {noun}{}",
                if count == 1 { "" } else { "s" }
            ));
        }
    }
    if !holds.is_empty() {
        return Ok(Err(holds.join(", ")));
    }
    keys(&txn, &snapshot).await?;
    budgets(&txn, &snapshot).await?;
    attempts(&txn, &snapshot).await?;
    escalations(&txn, &snapshot).await?;
    tasks_and_schedules(&txn, &snapshot).await?;
    txn.commit().await?;
    Ok(Ok(()))
}

async fn keys(txn: &Transaction<'_>, snapshot: &Snapshot) -> Outcome<()> {
    for chunk in snapshot.keys.chunks(BATCH) {
        let mut keys = Vec::with_capacity(chunk.len());
        let mut states = Vec::with_capacity(chunk.len());
        let mut owners: Vec<Option<String>> = Vec::with_capacity(chunk.len());
        let mut updated = Vec::with_capacity(chunk.len());
        let mut records = Vec::with_capacity(chunk.len());
        for (key, entry) in chunk {
            let (state, owner) = match &entry.state {
                KeyState::InProgress { owner, .. } => ("in-progress", owner.clone()),
                KeyState::Completed { .. } => ("completed", None),
                KeyState::Unknown { .. } => ("unknown", None),
            };
            keys.push(key.as_str());
            states.push(state);
            owners.push(owner);
            updated.push(big(entry.updated_ms));
            records.push(encode(entry));
        }
        txn.execute(
            "INSERT INTO idempotency (key, state, owner, updated_ms, record)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::jsonb[])",
            &[&keys, &states, &owners, &updated, &records],
        )
        .await?;
    }
    Ok(())
}

async fn budgets(txn: &Transaction<'_>, snapshot: &Snapshot) -> Outcome<()> {
    let (scopes, records): (Vec<&str>, Vec<serde_json::Value>) = snapshot
        .budgets
        .iter()
        .map(|(scope, record)| (scope.as_str(), encode(record)))
        .unzip();
    txn.execute(
        "INSERT INTO budgets (scope, record) SELECT * FROM unnest($1::text[], $2::jsonb[])",
        &[&scopes, &records],
    )
    .await?;
    for reservation in &snapshot.reservations {
        // An owner from the old store holds no lease here: the sweep counts
        // the reservation as spent.
        let owner = reservation.owner.clone().unwrap_or_default();
        txn.execute(
            "INSERT INTO reservations (owner, tokens, scopes) VALUES ($1, $2, $3)",
            &[&owner, &big(reservation.tokens), &reservation.scopes],
        )
        .await?;
    }
    Ok(())
}

async fn attempts(txn: &Transaction<'_>, snapshot: &Snapshot) -> Outcome<()> {
    for chunk in snapshot.attempts.chunks(BATCH) {
        let values: Vec<serde_json::Value> = chunk.iter().map(encode).collect();
        txn.execute(
            "INSERT INTO audit (started_ms, tool, task, agent, record)
             SELECT (r->>'started_ms')::bigint, r->>'tool', r->>'task', r->>'agent', r
             FROM unnest($1::jsonb[]) WITH ORDINALITY AS u(r, n) ORDER BY n",
            &[&values],
        )
        .await?;
    }
    Ok(())
}

async fn escalations(txn: &Transaction<'_>, snapshot: &Snapshot) -> Outcome<()> {
    for escalation in &snapshot.escalations {
        let dedup = dedup_key(&NewEscalation {
            reason: Some(escalation.reason),
            key: escalation.key.clone(),
            task: escalation.task.clone(),
            step: escalation.step,
            schedule: escalation.schedule.clone(),
            ..NewEscalation::default()
        });
        txn.execute(
            "INSERT INTO escalations (id, dedup, resolved, record) VALUES ($1, $2, $3, $4)",
            &[
                &big(escalation.id),
                &dedup,
                &escalation.resolved.is_some(),
                &encode(escalation),
            ],
        )
        .await?;
    }
    // New escalations are numbered after the imported ones.
    txn.execute(
        "SELECT setval(pg_get_serial_sequence('escalations', 'id'),
                       coalesce(max(id), 0) + 1, false) FROM escalations",
        &[],
    )
    .await?;
    Ok(())
}

async fn tasks_and_schedules(txn: &Transaction<'_>, snapshot: &Snapshot) -> Outcome<()> {
    let (ids, records): (Vec<&str>, Vec<serde_json::Value>) = snapshot
        .tasks
        .iter()
        .map(|task| (task.id.as_str(), encode(task)))
        .unzip();
    txn.execute(
        "INSERT INTO tasks (id, record) SELECT * FROM unnest($1::text[], $2::jsonb[])",
        &[&ids, &records],
    )
    .await?;
    let mut names = Vec::new();
    let mut owners = Vec::new();
    let mut records = Vec::new();
    for schedule in &snapshot.schedules {
        names.push(schedule.spec.name.as_str());
        owners.push(schedule.spec.owner.as_str());
        records.push(encode(schedule));
    }
    txn.execute(
        "INSERT INTO schedules (name, owner, record)
         SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[])",
        &[&names, &owners, &records],
    )
    .await?;
    for chunk in snapshot.runs.chunks(BATCH) {
        let mut names = Vec::with_capacity(chunk.len());
        let mut slots = Vec::with_capacity(chunk.len());
        let mut records = Vec::with_capacity(chunk.len());
        for (name, run) in chunk {
            names.push(name.as_str());
            slots.push(run.slot.as_millisecond());
            records.push(encode(run));
        }
        txn.execute(
            "INSERT INTO schedule_runs (name, slot_ms, record)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::jsonb[])",
            &[&names, &slots, &records],
        )
        .await?;
    }
    let (tools, modes): (Vec<&str>, Vec<serde_json::Value>) = snapshot
        .breaker_modes
        .iter()
        .map(|(tool, mode)| (tool.as_str(), encode(mode)))
        .unzip();
    txn.execute(
        "INSERT INTO breaker_modes (tool, mode) SELECT * FROM unnest($1::text[], $2::jsonb[])",
        &[&tools, &modes],
    )
    .await?;
    let (spaces, rest): (Vec<&str>, Vec<(&str, &[u8])>) = snapshot
        .state
        .iter()
        .map(|(space, key, value)| (space.as_str(), (key.as_str(), value.as_slice())))
        .unzip();
    let (keys, values): (Vec<&str>, Vec<&[u8]>) = rest.into_iter().unzip();
    txn.execute(
        "INSERT INTO state (space, key, value)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])",
        &[&spaces, &keys, &values],
    )
    .await?;
    super::outbox::import(txn, &snapshot.outbox).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::model::budget::{BudgetCap, ScopeId};
    use crate::model::journal::{JournalEntry, JournalKey, KeyState, Reservation};
    use crate::model::units::{Effect, Tokens, unix_millis};
    use crate::store::ledger::BudgetRecord;
    use crate::store::postgres::tests::TestDb;
    use crate::store::snapshot::{MigrateError, Snapshot};
    use crate::store::{BudgetLedger, EscalationStore, IdempotencyStore};

    const DEAD: &str = "deaddeaddeaddeaddeaddeaddeaddead";

    /// What a host killed mid-call leaves: a side-effecting key in progress
    /// and a reservation, both held by an owner that is gone.
    fn killed_mid_call() -> Snapshot {
        let now = unix_millis();
        let key = JournalKey {
            scope: "agent:a".into(),
            tool: "charge".into(),
            key: "k1".into(),
        };
        let mut budget = BudgetRecord::new(BudgetCap::new(Tokens(100)), now);
        budget.reserved = 30;
        Snapshot {
            keys: vec![(
                key.encode(),
                JournalEntry {
                    v: 1,
                    scope: key.scope.clone(),
                    tool: key.tool.clone(),
                    key: key.key.clone(),
                    fingerprint: "v2:00".into(),
                    effect: Effect::SideEffecting,
                    claims: 1,
                    state: KeyState::InProgress {
                        lease_until_ms: now + 60_000,
                        owner_pid: 1,
                        owner: Some(DEAD.into()),
                    },
                    created_ms: now,
                    updated_ms: now,
                },
            )],
            budgets: vec![("agent:a".into(), budget)],
            reservations: vec![Reservation {
                id: 7,
                scopes: vec!["agent:a".into()],
                tokens: 30,
                owner_pid: 1,
                owner: Some(DEAD.into()),
                tightest: "agent:a".into(),
            }],
            ..Snapshot::default()
        }
    }

    #[test]
    fn what_a_dead_host_held_is_taken_over_like_a_dead_replicas() {
        let db = TestDb::create();
        let importer = db.store("feedfacefeedfacefeedfacefeedface", Duration::from_secs(15));
        let migrated = importer.import(killed_mid_call()).expect("imports");
        assert_eq!((migrated.keys, migrated.budgets), (1, 1));
        // The next replica to open sweeps: the key is unknown and escalated
        // once, the reservation is spent.
        let replica = db.store("0123456789abcdef0123456789abcdef", Duration::from_secs(15));
        let entries = replica.entries().expect("entries");
        assert!(
            matches!(&entries[0].state, KeyState::Unknown { reason } if reason.contains(DEAD)),
            "{entries:?}"
        );
        assert_eq!(replica.escalations().expect("escalations").len(), 1);
        let budgets = replica.budgets().expect("budgets");
        assert_eq!(
            (budgets[0].spent, budgets[0].reserved),
            (Tokens(30), Tokens(0))
        );
        let scope: ScopeId = "agent:a".parse().expect("scope");
        assert_eq!(budgets[0].scope, scope.to_string());

        // A second import is refused, naming what the database holds.
        let error = replica.import(killed_mid_call()).expect_err("refused");
        assert!(
            matches!(&error, MigrateError::NotEmpty { holds, .. }
                if holds == "1 key, 1 budget, 1 escalation"),
            "{error}"
        );
        assert_eq!(replica.entries().expect("entries").len(), 1);
    }
}
