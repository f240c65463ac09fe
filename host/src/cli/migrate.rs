//! `cofferdam store migrate --to postgres://…`: moves the data dir's
//! journal into a PostgreSQL database, for a host that grows into replicas.
//!
//! It prints what the library's [`cofferdam::migrate_to_postgres`] moved;
//! the refusals (a serving host holds the journal, the database is in use)
//! are the library's errors.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Subcommand;
use cofferdam::{JournalError, MigrateError, StoreConfig};

use super::{EXIT_UNAVAILABLE, Store};

/// Longest the copy may take in the database.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Subcommand)]
pub(super) enum StoreCommand {
    /// Copy the data dir's journal (keys, budgets, history, escalations,
    /// tasks, schedules, breaker modes) into an empty PostgreSQL database,
    /// all or nothing. Stop `cofferdam serve` first; the data dir is left
    /// as it is.
    Migrate {
        /// The database: `postgres://user@host/db`.
        #[arg(long, value_name = "URL")]
        to: String,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn store(command: StoreCommand, store: &Store) -> Result<ExitCode> {
    match command {
        StoreCommand::Migrate { to, json } => {
            let StoreConfig::Postgres(config) = StoreConfig::from_url(&to)? else {
                bail!("--to must name a PostgreSQL database (postgres://user@host/db)");
            };
            let config = config.statement_timeout(MIGRATE_TIMEOUT);
            match cofferdam::migrate_to_postgres(&store.data_dir, &config) {
                Ok(migrated) if json => println!("{}", serde_json::to_string_pretty(&migrated)?),
                Ok(migrated) => println!("{migrated}"),
                Err(e @ MigrateError::Store(JournalError::Unavailable { .. })) => {
                    eprintln!("error: {}", super::chain(&e));
                    return Ok(ExitCode::from(EXIT_UNAVAILABLE));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
