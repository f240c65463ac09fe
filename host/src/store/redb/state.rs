//! Tool state in the redb file: one table keyed by (space, key), written in
//! the writer's group-committed transactions, checked against the quota by
//! the shared rule ([`crate::model::state::plan`]) before anything is
//! written.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::RedbStore;
use crate::model::error::{JournalError, storage};
use crate::model::state::{StateChanges, StateReader, StateRefused, StateUsage, pair_bytes, plan};
use crate::store::{StateStore, StoreFuture};

/// (space, key) → value.
pub(super) const STATE: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("state");

/// The state table as a read transaction sees it.
type StateTable = redb::ReadOnlyTable<(&'static str, &'static str), &'static [u8]>;

/// Every pair of `space`, in key order, through `each`.
fn scan<T: ReadableTable<(&'static str, &'static str), &'static [u8]>>(
    table: &T,
    space: &str,
    mut each: impl FnMut(&str, &[u8]),
) -> Result<(), JournalError> {
    for row in table.range((space, "")..).map_err(storage)? {
        let (key, value) = row.map_err(storage)?;
        let (row_space, row_key) = key.value();
        if row_space != space {
            break;
        }
        each(row_key, value.value());
    }
    Ok(())
}

fn usage_of<T: ReadableTable<(&'static str, &'static str), &'static [u8]>>(
    table: &T,
    space: &str,
) -> Result<StateUsage, JournalError> {
    let mut usage = StateUsage::default();
    scan(table, space, |key, value| {
        usage.keys += 1;
        usage.bytes += pair_bytes(key, value);
    })?;
    Ok(usage)
}

/// The state table in `read`, or `None` before anything was written.
fn opened(read: &redb::ReadTransaction) -> Result<Option<StateTable>, JournalError> {
    super::open_existing(read, STATE)
}

/// Every pair of tool state, for a migration.
pub(super) fn export(
    read: &redb::ReadTransaction,
) -> Result<Vec<(String, String, Vec<u8>)>, JournalError> {
    let Some(table) = opened(read)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for row in table.iter().map_err(storage)? {
        let (key, value) = row.map_err(storage)?;
        let (space, key) = key.value();
        out.push((space.to_owned(), key.to_owned(), value.value().to_vec()));
    }
    Ok(out)
}

impl RedbStore {
    /// Runs `read` on the state table (nothing when it does not exist yet).
    fn read_state<T: Default>(
        &self,
        read: impl FnOnce(
            &redb::ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
        ) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let txn = self.db.begin_read().map_err(storage)?;
        match opened(&txn)? {
            Some(table) => read(&table),
            None => Ok(T::default()),
        }
    }
}

impl StateReader for RedbStore {
    fn state_get(&self, space: &str, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
        self.read_state(|table| {
            Ok(table
                .get((space, key))
                .map_err(storage)?
                .map(|v| v.value().to_vec()))
        })
    }

    fn state_keys(&self, space: &str) -> Result<Vec<String>, JournalError> {
        self.read_state(|table| {
            let mut keys = Vec::new();
            scan(table, space, |key, _| keys.push(key.to_owned()))?;
            Ok(keys)
        })
    }

    fn state_usage(&self, space: &str) -> Result<StateUsage, JournalError> {
        self.read_state(|table| usage_of(table, space))
    }
}

impl StateStore for RedbStore {
    fn state_spaces(&self) -> Result<Vec<(String, StateUsage)>, JournalError> {
        self.read_state(|table| {
            let mut spaces: Vec<(String, StateUsage)> = Vec::new();
            for row in table.iter().map_err(storage)? {
                let (key, value) = row.map_err(storage)?;
                let (space, key) = key.value();
                if spaces.last().is_none_or(|(s, _)| s != space) {
                    spaces.push((space.to_owned(), StateUsage::default()));
                }
                if let Some((_, usage)) = spaces.last_mut() {
                    usage.keys += 1;
                    usage.bytes += pair_bytes(key, value.value());
                }
            }
            Ok(spaces)
        })
    }

    fn state_commit(
        &self,
        changes: StateChanges,
    ) -> StoreFuture<'_, Result<StateUsage, StateRefused>> {
        Box::pin(self.schedules_txn(move |txn| {
            let mut table = txn.txn.open_table(STATE).map_err(storage)?;
            let usage = usage_of(&table, &changes.space)?;
            let mut failed = None;
            let planned = plan(&changes, usage, |key| {
                match table.get((changes.space.as_str(), key)) {
                    Ok(value) => value.map(|v| v.value().to_vec()),
                    Err(e) => {
                        failed = Some(storage(e));
                        None
                    }
                }
            });
            if let Some(e) = failed {
                return Err(e);
            }
            let (puts, after) = match planned {
                Ok(planned) => planned,
                Err(refused) => return Ok(Err(refused)),
            };
            for (key, value) in puts {
                let at = (changes.space.as_str(), key.as_str());
                match value {
                    Some(value) => table.insert(at, value.as_slice()).map(drop),
                    None => table.remove(at).map(drop),
                }
                .map_err(storage)?;
            }
            Ok(Ok(after))
        }))
    }
}
