//! Moves a host's embedded store into a PostgreSQL database, so a single
//! host can grow into replicas without losing its keys, budgets, history,
//! escalations, tasks, schedules or breaker modes.
//!
//! It does not merge into a database already in use, and does not touch the
//! data dir: after a migration it still holds everything, and is simply no
//! longer read once the hosts point at the database.

use std::path::Path;

use crate::store::config::PostgresConfig;
use crate::store::postgres::PgStore;
use crate::store::redb::export::export;
use crate::store::snapshot::{MigrateError, Migrated};

/// Copies every record of the data dir's journal (and its breaker modes)
/// into the empty PostgreSQL database `to`, in one transaction: all of it or
/// nothing.
///
/// The journal is held for the whole migration, so it fails with
/// [`MigrateError::InUse`] while a host (`cofferdam serve`) has it open, and
/// no host can open it until the migration ends. A database that already
/// holds cofferdam data is refused with [`MigrateError::NotEmpty`] and left
/// as it is. Keys a dead process held in progress arrive as they are: the
/// database's lease sweep treats them as a dead replica's (a
/// side-effecting one becomes unknown and is escalated once).
pub fn migrate_to_postgres(data_dir: &Path, to: &PostgresConfig) -> Result<Migrated, MigrateError> {
    // `exported` holds the journal until the import has committed.
    let exported = export(data_dir)?;
    let store = PgStore::open(to)?;
    let migrated = store.import(exported.snapshot);
    drop(exported.held);
    migrated
}
