//! Notifications on their way, in the redb file: pending entries in one
//! table (what a deliverer scans), delivered and dead ones moved to another,
//! both keyed by (sink, event id). Written in the writer's transactions, so
//! a run's end and its entries commit together.

use std::time::Duration;

use jiff::Timestamp;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::ops::ScheduleTxn;
use super::{RedbStore, decode, encode, open_existing};
use crate::model::error::{JournalError, storage};
use crate::model::notify::{Delivery, OutboxEntry, Settle};
use crate::store::{OutboxStore, StoreFuture};

/// Entries not delivered yet.
pub(super) const PENDING: TableDefinition<'_, (&str, &str), &[u8]> =
    TableDefinition::new("outbox_pending");

/// Entries delivered or given up.
pub(super) const SETTLED: TableDefinition<'_, (&str, &str), &[u8]> =
    TableDefinition::new("outbox_settled");

fn key_name(sink: &str, event: &str) -> String {
    format!("{sink}/{event}")
}

/// An entry, or `None` (logged) when it cannot be read (written by a newer
/// version, say): one bad record must not stop every delivery.
fn readable(sink: &str, event: &str, bytes: &[u8]) -> Option<OutboxEntry> {
    decode(&key_name(sink, event), bytes)
        .map_err(
            |e| tracing::warn!(%sink, %event, error = %e, "skipping an unreadable notification"),
        )
        .ok()
}

/// A (sink, event id) key, owned.
type Key = (String, String);

/// The pending entries due at `now`, and the keys of those that cannot be
/// read.
fn scan_due<T: ReadableTable<(&'static str, &'static str), &'static [u8]>>(
    table: &T,
    now: Timestamp,
) -> Result<(Vec<OutboxEntry>, Vec<Key>), JournalError> {
    let (mut due, mut unreadable) = (Vec::new(), Vec::new());
    for row in table.iter().map_err(storage)? {
        let (key, value) = row.map_err(storage)?;
        let (sink, event) = key.value();
        match decode::<OutboxEntry>(&key_name(sink, event), value.value()) {
            Ok(entry) if entry.claimable(now) => due.push(entry),
            Ok(_) => {}
            Err(_) => unreadable.push((sink.to_owned(), event.to_owned())),
        }
    }
    Ok((due, unreadable))
}

impl ScheduleTxn<'_> {
    /// Adds entries that are not there yet (an event is written once).
    pub(super) fn put_outbox(&self, entries: &[OutboxEntry]) -> Result<(), JournalError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pending = self.txn.open_table(PENDING).map_err(storage)?;
        let settled = self.txn.open_table(SETTLED).map_err(storage)?;
        for entry in entries {
            let key = entry.key();
            if pending.get(key).map_err(storage)?.is_some()
                || settled.get(key).map_err(storage)?.is_some()
            {
                continue;
            }
            pending
                .insert(key, encode(entry).as_slice())
                .map_err(storage)?;
        }
        Ok(())
    }
}

/// Every entry, oldest first; for a migration (`fresh`), without the
/// leases of the old store's deliverers.
pub(super) fn export(
    read: &redb::ReadTransaction,
    fresh: bool,
) -> Result<Vec<OutboxEntry>, JournalError> {
    let mut out = Vec::new();
    for table in [PENDING, SETTLED] {
        let Some(table) = open_existing(read, table)? else {
            continue;
        };
        for row in table.iter().map_err(storage)? {
            let (key, value) = row.map_err(storage)?;
            let (sink, event) = key.value();
            // A migration moves every entry or fails; a listing skips what
            // it cannot read.
            let mut entry: OutboxEntry = if fresh {
                decode(&key_name(sink, event), value.value())?
            } else {
                let Some(entry) = readable(sink, event, value.value()) else {
                    continue;
                };
                entry
            };
            if fresh {
                entry.lease_until = None;
                entry.holder = None;
            }
            out.push(entry);
        }
    }
    out.sort_by(|a, b| (a.created, a.key()).cmp(&(b.created, b.key())));
    Ok(out)
}

impl OutboxStore for RedbStore {
    fn outbox_claim(
        &self,
        now: Timestamp,
        lease: Duration,
        holder: String,
        limit: usize,
    ) -> StoreFuture<'_, Vec<OutboxEntry>> {
        // Most passes find nothing due: look first without a write (and its fsync).
        let nothing_due = self.db.begin_read().map_err(storage).and_then(|read| {
            let Some(table) = open_existing(&read, PENDING)? else {
                return Ok(true);
            };
            let (due, unreadable) = scan_due(&table, now)?;
            Ok(due.is_empty() && unreadable.is_empty())
        });
        if matches!(nothing_due, Ok(true)) {
            return Box::pin(std::future::ready(Ok(Vec::new())));
        }
        Box::pin(self.schedules_txn(move |txn| {
            let mut pending = txn.txn.open_table(PENDING).map_err(storage)?;
            let (mut due, unreadable) = scan_due(&pending, now)?;
            if !unreadable.is_empty() {
                // Out of the queue, kept as they are (a newer version's).
                let mut settled = txn.txn.open_table(SETTLED).map_err(storage)?;
                for (sink, event) in &unreadable {
                    tracing::warn!(%sink, %event, "an unreadable notification is set aside");
                    let key = (sink.as_str(), event.as_str());
                    if let Some(raw) = pending.remove(key).map_err(storage)? {
                        settled.insert(key, raw.value()).map_err(storage)?;
                    }
                }
            }
            due.sort_by(|a, b| (a.next, a.key()).cmp(&(b.next, b.key())));
            due.truncate(limit);
            for entry in &mut due {
                entry.claim(now, lease, &holder);
                pending
                    .insert(entry.key(), encode(&*entry).as_slice())
                    .map_err(storage)?;
            }
            Ok(due)
        }))
    }

    fn outbox_settle(
        &self,
        sink: String,
        event: String,
        holder: String,
        settle: Settle,
    ) -> StoreFuture<'_, bool> {
        Box::pin(self.schedules_txn(move |txn| {
            let mut pending = txn.txn.open_table(PENDING).map_err(storage)?;
            let key = (sink.as_str(), event.as_str());
            let Some(value) = pending.get(key).map_err(storage)? else {
                return Ok(false);
            };
            let mut entry: OutboxEntry = decode(&key_name(&sink, &event), value.value())?;
            drop(value);
            if !entry.settle(&holder, settle) {
                return Ok(false);
            }
            if entry.state == Delivery::Pending {
                pending
                    .insert(key, encode(&entry).as_slice())
                    .map_err(storage)?;
            } else {
                pending.remove(key).map_err(storage)?;
                let mut settled = txn.txn.open_table(SETTLED).map_err(storage)?;
                settled
                    .insert(key, encode(&entry).as_slice())
                    .map_err(storage)?;
            }
            Ok(true)
        }))
    }

    fn outbox(&self) -> Result<Vec<OutboxEntry>, JournalError> {
        export(&self.db.begin_read().map_err(storage)?, false)
    }

    fn outbox_prune(&self, before: Timestamp) -> StoreFuture<'_, usize> {
        Box::pin(self.schedules_txn(move |txn| {
            let mut settled = txn.txn.open_table(SETTLED).map_err(storage)?;
            let mut old = Vec::new();
            for row in settled.iter().map_err(storage)? {
                let (key, value) = row.map_err(storage)?;
                let (sink, event) = key.value();
                // Set-aside records (unreadable) stay for an operator.
                let entry = decode::<OutboxEntry>(&key_name(sink, event), value.value()).ok();
                if entry.is_some_and(|e| e.created < before) {
                    old.push((sink.to_owned(), event.to_owned()));
                }
            }
            for (sink, event) in &old {
                settled
                    .remove((sink.as_str(), event.as_str()))
                    .map_err(storage)?;
            }
            Ok(old.len())
        }))
    }
}
