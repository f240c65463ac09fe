//! Notifications on their way, in PostgreSQL: one `outbox` row per (sink,
//! event), inserted by the transaction that records a run's end; due rows
//! are leased with `FOR UPDATE SKIP LOCKED`, so replicas share the work and
//! never hold one row at once.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio_postgres::{Row, Transaction};

use super::ops::{decode, encode};
use super::{Outcome, PgStore, Shared};
use crate::model::error::JournalError;
use crate::model::notify::{OutboxEntry, Settle};
use crate::store::{OutboxStore, StoreFuture};

fn row_entry(row: &Row) -> Result<OutboxEntry, JournalError> {
    let (sink, event): (&str, &str) = (row.get(0), row.get(1));
    decode(&format!("{sink}/{event}"), row.get(2))
}

/// Writes `entry`'s columns and record.
async fn put(client: &Transaction<'_>, entry: &OutboxEntry) -> Outcome<()> {
    let (sink, event) = entry.key();
    client
        .execute(
            "INSERT INTO outbox (sink, event_id, state, next_ms, lease_ms, created_ms, record)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (sink, event_id) DO UPDATE SET state = EXCLUDED.state,
                 next_ms = EXCLUDED.next_ms, lease_ms = EXCLUDED.lease_ms,
                 record = EXCLUDED.record",
            &[
                &sink,
                &event,
                &entry.state.as_str(),
                &entry.next.as_millisecond(),
                &entry.lease_until.map_or(0, |t| t.as_millisecond()),
                &entry.created.as_millisecond(),
                &encode(entry),
            ],
        )
        .await?;
    Ok(())
}

/// Adds entries that are not there yet, in the caller's transaction.
pub(super) async fn insert(client: &Transaction<'_>, entries: &[OutboxEntry]) -> Outcome<()> {
    for entry in entries {
        let (sink, event) = entry.key();
        client
            .execute(
                "INSERT INTO outbox (sink, event_id, state, next_ms, lease_ms, created_ms, record)
                 VALUES ($1, $2, $3, $4, 0, $5, $6) ON CONFLICT (sink, event_id) DO NOTHING",
                &[
                    &sink,
                    &event,
                    &entry.state.as_str(),
                    &entry.next.as_millisecond(),
                    &entry.created.as_millisecond(),
                    &encode(entry),
                ],
            )
            .await?;
    }
    Ok(())
}

/// Writes a migration's entries as they are.
pub(super) async fn import(client: &Transaction<'_>, entries: &[OutboxEntry]) -> Outcome<()> {
    for entry in entries {
        put(client, entry).await?;
    }
    Ok(())
}

async fn claim(
    shared: Arc<Shared>,
    now: Timestamp,
    lease: Duration,
    holder: String,
    limit: usize,
) -> Outcome<Vec<OutboxEntry>> {
    let mut client = shared.pool.get().await?;
    let txn = client.transaction().await?;
    let now_ms = now.as_millisecond();
    let rows = txn
        .query(
            "SELECT sink, event_id, record FROM outbox
             WHERE state = 'pending' AND next_ms <= $1 AND lease_ms <= $1
             ORDER BY next_ms, sink, event_id LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&now_ms, &(limit.min(i64::MAX as usize) as i64)],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut entry = match row_entry(row) {
            Ok(entry) => entry,
            Err(e) => {
                // One bad record (a newer version's) must not stop every
                // delivery: it leaves the queue.
                let (sink, event): (&str, &str) = (row.get(0), row.get(1));
                tracing::warn!(%sink, %event, error = %e, "an unreadable notification is set aside");
                txn.execute(
                    "UPDATE outbox SET state = 'unreadable' WHERE sink = $1 AND event_id = $2",
                    &[&sink, &event],
                )
                .await?;
                continue;
            }
        };
        entry.claim(now, lease, &holder);
        put(&txn, &entry).await?;
        out.push(entry);
    }
    txn.commit().await?;
    Ok(out)
}

async fn settle(
    shared: Arc<Shared>,
    sink: String,
    event: String,
    holder: String,
    settle: Settle,
) -> Outcome<bool> {
    let mut client = shared.pool.get().await?;
    let txn = client.transaction().await?;
    let Some(row) = txn
        .query_opt(
            "SELECT sink, event_id, record FROM outbox
             WHERE sink = $1 AND event_id = $2 FOR UPDATE",
            &[&sink, &event],
        )
        .await?
    else {
        return Ok(false);
    };
    let mut entry = row_entry(&row)?;
    if !entry.settle(&holder, settle) {
        return Ok(false);
    }
    put(&txn, &entry).await?;
    txn.commit().await?;
    Ok(true)
}

async fn all(shared: Arc<Shared>) -> Outcome<Vec<OutboxEntry>> {
    let client = shared.pool.get().await?;
    let rows = client
        .query(
            r#"SELECT sink, event_id, record FROM outbox
               ORDER BY created_ms, sink COLLATE "C", event_id COLLATE "C""#,
            &[],
        )
        .await?;
    // What cannot be read is left out of the listing (claims set it aside).
    Ok(rows.iter().filter_map(|row| row_entry(row).ok()).collect())
}

async fn prune(shared: Arc<Shared>, before: Timestamp) -> Outcome<usize> {
    let client = shared.pool.get().await?;
    let deleted = client
        .execute(
            "DELETE FROM outbox WHERE state <> 'pending' AND created_ms < $1",
            &[&before.as_millisecond()],
        )
        .await?;
    Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
}

impl OutboxStore for PgStore {
    fn outbox_claim(
        &self,
        now: Timestamp,
        lease: Duration,
        holder: String,
        limit: usize,
    ) -> StoreFuture<'_, Vec<OutboxEntry>> {
        self.write(move |s| claim(s, now, lease, holder, limit))
    }

    fn outbox_settle(
        &self,
        sink: String,
        event: String,
        holder: String,
        how: Settle,
    ) -> StoreFuture<'_, bool> {
        self.write(move |s| settle(s, sink, event, holder, how))
    }

    fn outbox(&self) -> Result<Vec<OutboxEntry>, JournalError> {
        self.block(all)
    }

    fn outbox_prune(&self, before: Timestamp) -> StoreFuture<'_, usize> {
        self.write(move |s| prune(s, before))
    }
}
