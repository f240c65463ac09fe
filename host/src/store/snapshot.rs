//! Everything a store holds, as plain records, for moving a deployment from
//! one backend to another (`cofferdam store migrate`): the redb store reads
//! one ([`super::redb::export`]), the PostgreSQL store writes one
//! ([`super::postgres`]'s import), and [`Migrated`] says what moved.
//!
//! It does not stream: a snapshot lives in memory, which a single host's
//! journal fits in.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::model::error::JournalError;
use crate::model::escalation::Escalation;
use crate::model::journal::{AttemptRecord, JournalEntry, Reservation};
use crate::model::schedule::{Schedule, ScheduleRun};
use crate::model::task::TaskRecord;
use crate::resilience::breaker::BreakerMode;
use crate::store::ledger::BudgetRecord;

/// Every record of a store, each in the order its store keeps it.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// Idempotency records, in any state (an in-progress one keeps its
    /// owner, so the new store takes it over as a dead owner's), by
    /// encoded key.
    pub(crate) keys: Vec<(String, JournalEntry)>,
    /// Capped scopes, by scope name.
    pub(crate) budgets: Vec<(String, BudgetRecord)>,
    /// Reservations still open (their owner is gone: the new store counts
    /// them as spent).
    pub(crate) reservations: Vec<Reservation>,
    /// The audit history, oldest first.
    pub(crate) attempts: Vec<AttemptRecord>,
    /// Escalations with their ids, oldest first.
    pub(crate) escalations: Vec<Escalation>,
    pub(crate) tasks: Vec<TaskRecord>,
    pub(crate) schedules: Vec<Schedule>,
    /// Runs of the schedules, by schedule name.
    pub(crate) runs: Vec<(String, ScheduleRun)>,
    pub(crate) breaker_modes: BTreeMap<String, BreakerMode>,
    /// Tool state: (space, key, value), in order.
    pub(crate) state: Vec<(String, String, Vec<u8>)>,
    /// Notifications pending, delivered or dead, oldest first.
    pub(crate) outbox: Vec<crate::model::notify::OutboxEntry>,
}

impl Snapshot {
    /// How many records of each kind, moved into `store`.
    pub(crate) fn counts(&self, store: &str) -> Migrated {
        Migrated {
            store: store.to_owned(),
            keys: self.keys.len(),
            budgets: self.budgets.len(),
            attempts: self.attempts.len(),
            escalations: self.escalations.len(),
            tasks: self.tasks.len(),
            schedules: self.schedules.len(),
            runs: self.runs.len(),
            breaker_modes: self.breaker_modes.len(),
            state_keys: self.state.len(),
            notifications: self.outbox.len(),
        }
    }
}

/// What [`migrate_to_postgres`](crate::migrate_to_postgres) moved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Migrated {
    /// The database, its URL without a password.
    pub store: String,
    /// Idempotency keys (completed, unknown and in progress).
    pub keys: usize,
    /// Capped budget scopes.
    pub budgets: usize,
    /// Attempts of the audit history.
    pub attempts: usize,
    /// Escalations, open and resolved.
    pub escalations: usize,
    /// Tasks.
    pub tasks: usize,
    /// Schedules.
    pub schedules: usize,
    /// Runs of the schedules.
    pub runs: usize,
    /// Breaker modes operators set.
    pub breaker_modes: usize,
    /// Keys of tool state.
    pub state_keys: usize,
    /// Notifications (pending ones are delivered from the new store).
    pub notifications: usize,
}

impl std::fmt::Display for Migrated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "migrated {} keys, {} budgets, {} attempts, {} escalations, {} tasks, \
             {} schedules ({} runs), {} breaker modes, {} state keys, {} notifications into {}",
            self.keys,
            self.budgets,
            self.attempts,
            self.escalations,
            self.tasks,
            self.schedules,
            self.runs,
            self.breaker_modes,
            self.state_keys,
            self.notifications,
            self.store
        )
    }
}

/// Why a data dir could not be moved into a database. Nothing is written
/// to the database unless all of it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The data dir holds no journal.
    #[error("no journal at {path}: nothing to migrate")]
    NoJournal {
        /// Where the journal was looked for.
        path: PathBuf,
    },
    /// A running process (`cofferdam serve`, another command) has the
    /// journal open and could write while it is copied.
    #[error(
        "journal {path} is in use by a running cofferdam (`serve` or another command): \
         stop it, then migrate"
    )]
    InUse {
        /// The journal file.
        path: PathBuf,
    },
    /// The journal could not be read.
    #[error("cannot read journal {path}")]
    Read {
        /// The journal file.
        path: PathBuf,
        /// Why.
        #[source]
        source: JournalError,
    },
    /// The database already holds cofferdam data; a migration only fills an
    /// empty one, so nothing is merged or overwritten.
    #[error("{store} already holds cofferdam data ({holds}): migrate into an empty database")]
    NotEmpty {
        /// The database, its URL without a password.
        store: String,
        /// What it holds, e.g. `3 keys, 1 schedule`.
        holds: String,
    },
    /// The database could not be opened or written.
    #[error(transparent)]
    Store(#[from] JournalError),
}
