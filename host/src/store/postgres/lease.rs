//! Owner leases: who holds a key, a reservation or a running slot, across
//! machines. Each store heartbeats its owner row (`expires_at = now() +
//! lease`, every third of the lease); an owner is alive while its row has
//! not expired by the database's clock. Records of a dead owner are taken
//! over by whichever replica sweeps first: a side-effecting key it held
//! becomes unknown and is escalated once (never run again), a pure or
//! idempotent key is left to be claimed again, a reservation is counted as
//! spent (a dead call may have spent it) and leaves the reserved total.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use tokio_postgres::Transaction;

use super::ops::{decode, escalate_in, lock_budgets, put_budget, put_entry};
use super::{Outcome, Shared};
use crate::model::escalation::{EscalationReason, NewEscalation};
use crate::model::journal::{JournalEntry, KeyState};
use crate::model::units::Effect;

/// Key of the advisory lock a sweep holds, so replicas sweep one at a time.
const SWEEP_LOCK: i64 = 0x636f_6666_7377_6570;

/// Renews this store's lease.
pub(super) async fn heartbeat(shared: &Shared) -> Outcome<()> {
    let client = shared.pool.get().await?;
    client
        .execute(
            "INSERT INTO owners (owner, expires_at, pid)
             VALUES ($1, now() + make_interval(secs => $2), $3)
             ON CONFLICT (owner) DO UPDATE SET expires_at = EXCLUDED.expires_at",
            &[
                &shared.owner,
                &shared.lease.as_secs_f64(),
                &i64::from(std::process::id()),
            ],
        )
        .await?;
    Ok(())
}

/// Heartbeats and sweeps every third of the lease, for as long as the store
/// lives.
pub(super) async fn keep_alive(shared: Weak<Shared>) {
    loop {
        let Some(period) = shared.upgrade().map(|s| s.lease / 3) else {
            return;
        };
        tokio::time::sleep(period).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let beat = async {
            heartbeat(&shared).await?;
            take_over_dead(&shared).await
        };
        if let Err(e) = beat.await {
            let e = e.into_journal(&shared);
            tracing::warn!(error = %e, "cannot renew this replica's lease");
        }
    }
}

/// Whether `owner` holds a live lease, as `txn` sees it.
pub(super) async fn alive_in(
    txn: &Transaction<'_>,
    shared: &Shared,
    owner: Option<&str>,
) -> Outcome<bool> {
    let Some(owner) = owner else {
        // Records without an owner id never come from this store.
        return Ok(false);
    };
    if owner == shared.owner {
        return Ok(true);
    }
    let row = txn
        .query_opt(
            "SELECT expires_at > now() FROM owners WHERE owner = $1",
            &[&owner],
        )
        .await?;
    Ok(row.is_some_and(|row| row.get::<_, bool>(0)))
}

/// Whether `owner` holds a live lease.
pub(super) async fn alive(shared: Arc<Shared>, owner: String) -> Outcome<bool> {
    let mut client = shared.pool.get().await?;
    let txn = client.transaction().await?;
    alive_in(&txn, &shared, Some(&owner)).await
}

/// Takes over what dead owners held: their reservations become spending,
/// their side-effecting keys become unknown and are escalated. Skipped when
/// another replica is sweeping.
pub(super) async fn take_over_dead(shared: &Shared) -> Outcome<()> {
    let mut client = shared.pool.get().await?;
    let txn = client.transaction().await?;
    let locked: bool = txn
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&SWEEP_LOCK])
        .await?
        .get(0);
    if !locked {
        return Ok(());
    }
    let now = super::ops::db_now(&txn).await?;
    let dead =
        "NOT EXISTS (SELECT 1 FROM owners o WHERE o.owner = t.owner AND o.expires_at > now())";
    let orphans = txn
        .query(
            &format!("DELETE FROM reservations t WHERE {dead} RETURNING tokens, scopes"),
            &[],
        )
        .await?;
    let mut lapsed: BTreeMap<String, u64> = BTreeMap::new();
    for row in &orphans {
        let tokens = row.get::<_, i64>(0).max(0) as u64;
        for scope in row.get::<_, Vec<String>>(1) {
            *lapsed.entry(scope).or_insert(0) += tokens;
        }
    }
    if !lapsed.is_empty() {
        let scopes: Vec<String> = lapsed.keys().cloned().collect();
        for (scope, mut record) in lock_budgets(&txn, &scopes, now).await? {
            let tokens = lapsed.get(&scope).copied().unwrap_or(0);
            record.reserved = record.reserved.saturating_sub(tokens);
            record.spent += tokens;
            put_budget(&txn, &scope, &record).await?;
        }
        tracing::warn!(
            reservations = orphans.len(),
            "counted the reservations of dead replicas as spent"
        );
    }
    let held = txn
        .query(
            &format!(
                "SELECT key, owner, record FROM idempotency t
                 WHERE state = 'in-progress' AND {dead}
                 ORDER BY key FOR UPDATE SKIP LOCKED"
            ),
            &[],
        )
        .await?;
    for row in held {
        let key: String = row.get(0);
        let owner: Option<String> = row.get(1);
        let mut entry: JournalEntry = decode(&key, row.get(2))?;
        if entry.effect != Effect::SideEffecting {
            continue;
        }
        let reason = lapsed_reason(owner.as_deref());
        entry.state = KeyState::Unknown {
            reason: reason.clone(),
        };
        entry.updated_ms = now;
        put_entry(&txn, &key, &entry).await?;
        escalate_in(
            &txn,
            NewEscalation {
                reason: Some(EscalationReason::UnknownOutcome),
                tool: Some(entry.tool.clone()),
                key: Some(crate::model::escalation::EscalationKey {
                    scope: entry.scope.clone(),
                    tool: entry.tool.clone(),
                    key: entry.key.clone(),
                }),
                error: reason,
                ..NewEscalation::default()
            },
            now,
        )
        .await?;
    }
    txn.commit().await?;
    Ok(())
}

/// Why a dead owner's side-effecting key is unknown.
pub(super) fn lapsed_reason(owner: Option<&str>) -> String {
    format!(
        "replica {} holding the key stopped renewing its lease mid-call",
        owner.unwrap_or("?")
    )
}
