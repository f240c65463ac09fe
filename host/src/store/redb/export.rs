//! Reads a whole journal into a [`Snapshot`], for `cofferdam store migrate`.
//!
//! The file is opened in redb's exclusive mode and held until the caller
//! lets go of the [`Export`] (once the copy is in), so no process writes
//! while it is copied: a running host (which holds the file for as long as
//! it lives) makes the open fail, and a host starting meanwhile cannot open
//! it. Nothing is written: unlike
//! [`RedbStore::open`](super::RedbStore::open), no owner is registered and
//! no dead owner's reservation is settled (the new store does that).

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;

use super::{
    AUDIT, BUDGETS, ESCALATIONS, IDEMPOTENCY, META, RESERVATIONS, SCHEDULE_RUNS, SCHEDULES,
    SCHEMA_VERSION, TASKS, breaker_modes, decode, open_existing,
};
use crate::model::error::{JournalError, storage};
use crate::model::schedule::Schedule;
use crate::store::snapshot::{MigrateError, Snapshot};

/// A journal read whole, still held: no process can open it until this is
/// dropped.
pub(crate) struct Export {
    pub(crate) snapshot: Snapshot,
    /// The open journal; dropping it lets hosts open the file again.
    pub(crate) held: Database,
}

/// Every record of the journal `<data_dir>/journal.redb`, and the breaker
/// modes beside it.
pub(crate) fn export(data_dir: &Path) -> Result<Export, MigrateError> {
    let path = data_dir.join("journal.redb");
    if !path.is_file() {
        return Err(MigrateError::NoJournal { path });
    }
    let read_error = |source: JournalError| MigrateError::Read {
        path: path.clone(),
        source,
    };
    let db = match Database::builder().open(&path) {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            return Err(MigrateError::InUse { path });
        }
        Err(e) => {
            return Err(read_error(JournalError::Open {
                path: path.clone(),
                source: Arc::new(e),
            }));
        }
    };
    let read = db.begin_read().map_err(|e| read_error(storage(e)))?;
    let snapshot = read_all(&read, &path, data_dir).map_err(read_error)?;
    drop(read);
    Ok(Export { snapshot, held: db })
}

fn read_all(read: &ReadTransaction, path: &Path, dir: &Path) -> Result<Snapshot, JournalError> {
    let schema = match open_existing(read, META)? {
        Some(meta) => meta.get("schema").map_err(storage)?.map(|v| v.value()),
        None => None,
    };
    if let Some(found) = schema
        && found > SCHEMA_VERSION
    {
        return Err(JournalError::NewerVersion {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let schedules: Vec<Schedule> = values(by_name(read, SCHEDULES)?);
    let runs = by_name(read, SCHEDULE_RUNS)?
        .into_iter()
        .filter_map(|(key, run)| {
            // Keys are `NAME/SLOT`; names never contain `/`. A run whose
            // schedule is gone (none should be) is left behind.
            let name = key.split_once('/').map_or(key.as_str(), |(n, _)| n);
            let kept = schedules.iter().any(|s| s.spec.name == name);
            kept.then(|| (name.to_owned(), run))
        })
        .collect();
    Ok(Snapshot {
        keys: by_name(read, IDEMPOTENCY)?,
        budgets: by_name(read, BUDGETS)?,
        reservations: by_number(read, RESERVATIONS)?,
        attempts: by_number(read, AUDIT)?,
        escalations: by_number(read, ESCALATIONS)?,
        tasks: values(by_name(read, TASKS)?),
        schedules,
        runs,
        breaker_modes: breaker_modes::read(dir),
        state: super::state::export(read)?,
        outbox: super::outbox::export(read, true)?,
    })
}

fn values<T>(rows: Vec<(String, T)>) -> Vec<T> {
    rows.into_iter().map(|(_, value)| value).collect()
}

/// Every record of a table keyed by name, in key order.
pub(super) fn by_name<T: DeserializeOwned>(
    read: &ReadTransaction,
    definition: TableDefinition<'_, &str, &[u8]>,
) -> Result<Vec<(String, T)>, JournalError> {
    let Some(table) = open_existing(read, definition)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for row in table.iter().map_err(storage)? {
        let (key, value) = row.map_err(storage)?;
        out.push((key.value().to_owned(), decode(key.value(), value.value())?));
    }
    Ok(out)
}

/// Every record of a table keyed by number, in key order.
fn by_number<K, T>(
    read: &ReadTransaction,
    definition: TableDefinition<'_, K, &[u8]>,
) -> Result<Vec<T>, JournalError>
where
    K: redb::Key + 'static,
    for<'a> K::SelfType<'a>: std::fmt::Debug,
    T: DeserializeOwned,
{
    let Some(table) = open_existing(read, definition)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for row in table.iter().map_err(storage)? {
        let (key, value) = row.map_err(storage)?;
        out.push(decode(&format!("{:?}", key.value()), value.value())?);
    }
    Ok(out)
}
