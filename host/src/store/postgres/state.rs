//! Tool state on PostgreSQL: one row per (space, key). A commit takes an
//! advisory transaction lock on its space, reads what the space holds and
//! the keys it changes, applies the shared rule
//! ([`crate::model::state::plan`]) and writes, all in one transaction, so
//! two replicas committing to one space cannot both pass its quota.

use std::sync::Arc;

use super::{Outcome, PgStore, Shared};
use crate::model::error::JournalError;
use crate::model::state::{StateChanges, StateReader, StateRefused, StateUsage, plan};
use crate::store::{StateStore, StoreFuture};

fn usage(keys: i64, bytes: i64) -> StateUsage {
    StateUsage {
        keys: keys.max(0) as u64,
        bytes: bytes.max(0) as u64,
    }
}

const USAGE: &str =
    "SELECT count(*), coalesce(sum(octet_length(key) + octet_length(value)), 0)::bigint
                     FROM state WHERE space = $1";

async fn commit(
    shared: Arc<Shared>,
    changes: StateChanges,
) -> Outcome<Result<StateUsage, StateRefused>> {
    let mut client = shared.pool.get().await?;
    let txn = client.transaction().await?;
    txn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 7))",
        &[&changes.space],
    )
    .await?;
    let row = txn.query_one(USAGE, &[&changes.space]).await?;
    let before = usage(row.get(0), row.get(1));
    let keys: Vec<&str> = changes.writes.keys().map(String::as_str).collect();
    let rows = txn
        .query(
            "SELECT key, value FROM state WHERE space = $1 AND key = ANY($2)",
            &[&changes.space, &keys],
        )
        .await?;
    let stored: std::collections::HashMap<String, Vec<u8>> = rows
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let (puts, after) = match plan(&changes, before, |key| stored.get(key).cloned()) {
        Ok(planned) => planned,
        Err(refused) => return Ok(Err(refused)),
    };
    for (key, value) in puts {
        match value {
            Some(value) => {
                txn.execute(
                    "INSERT INTO state (space, key, value) VALUES ($1, $2, $3)
                     ON CONFLICT (space, key) DO UPDATE SET value = excluded.value",
                    &[&changes.space, &key, &value],
                )
                .await?;
            }
            None => {
                txn.execute(
                    "DELETE FROM state WHERE space = $1 AND key = $2",
                    &[&changes.space, &key],
                )
                .await?;
            }
        }
    }
    txn.commit().await?;
    Ok(Ok(after))
}

impl StateReader for PgStore {
    fn state_get(&self, space: &str, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
        let (space, key) = (space.to_owned(), key.to_owned());
        self.block(move |shared| async move {
            let client = shared.pool.get().await?;
            let row = client
                .query_opt(
                    "SELECT value FROM state WHERE space = $1 AND key = $2",
                    &[&space, &key],
                )
                .await?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    fn state_keys(&self, space: &str) -> Result<Vec<String>, JournalError> {
        let space = space.to_owned();
        self.block(move |shared| async move {
            let client = shared.pool.get().await?;
            let rows = client
                .query(
                    r#"SELECT key FROM state WHERE space = $1 ORDER BY key COLLATE "C""#,
                    &[&space],
                )
                .await?;
            Ok(rows.into_iter().map(|row| row.get(0)).collect())
        })
    }

    fn state_usage(&self, space: &str) -> Result<StateUsage, JournalError> {
        let space = space.to_owned();
        self.block(move |shared| async move {
            let client = shared.pool.get().await?;
            let row = client.query_one(USAGE, &[&space]).await?;
            Ok(usage(row.get(0), row.get(1)))
        })
    }
}

impl StateStore for PgStore {
    fn state_spaces(&self) -> Result<Vec<(String, StateUsage)>, JournalError> {
        self.block(|shared| async move {
            let client = shared.pool.get().await?;
            let rows = client
                .query(
                    r#"SELECT space, count(*),
                              coalesce(sum(octet_length(key) + octet_length(value)), 0)::bigint
                       FROM state GROUP BY space ORDER BY space COLLATE "C""#,
                    &[],
                )
                .await?;
            Ok(rows
                .into_iter()
                .map(|row| (row.get(0), usage(row.get(1), row.get(2))))
                .collect())
        })
    }

    fn state_commit(
        &self,
        changes: StateChanges,
    ) -> StoreFuture<'_, Result<StateUsage, StateRefused>> {
        self.write(move |shared| commit(shared, changes))
    }
}
