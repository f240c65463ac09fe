//! Versioned schema migrations, embedded in the binary and applied at open
//! in one transaction under an advisory lock (so replicas starting together
//! migrate once). A database whose schema is newer than this build is
//! refused and left as it is.

use super::{Outcome, Shared};
use crate::model::error::JournalError;

/// The migrations this build knows, in order; version = position + 1.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_state.sql"),
    include_str!("migrations/0003_outbox.sql"),
];

/// The schema version this build writes and reads.
pub(super) const SCHEMA_VERSION: u64 = MIGRATIONS.len() as u64;

/// Key of the advisory lock migrations hold ("cofferda" in ASCII).
const MIGRATION_LOCK: i64 = 0x636f_6666_6572_6461;

/// Brings the schema up to [`SCHEMA_VERSION`], or refuses a newer one.
pub(super) async fn migrate(shared: &Shared) -> Outcome<()> {
    let mut client = shared.pool.get().await?;
    let txn = client.transaction().await?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS cofferdam_schema (
             version bigint PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let found: i64 = txn
        .query_one(
            "SELECT coalesce(max(version), 0) FROM cofferdam_schema",
            &[],
        )
        .await?
        .get(0);
    let found = found.max(0) as u64;
    if found > SCHEMA_VERSION {
        return Err(JournalError::NewerSchema {
            store: shared.name.clone(),
            found,
            supported: SCHEMA_VERSION,
        }
        .into());
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as i64 + 1;
        txn.batch_execute(sql).await?;
        txn.execute(
            "INSERT INTO cofferdam_schema (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tracing::info!(store = %shared.name, version, "applied a store schema migration");
    }
    txn.commit().await?;
    Ok(())
}
