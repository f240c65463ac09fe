//! Units, errors and limits: the vocabulary every layer above speaks. Imports nothing above it.

pub(crate) mod budget;
pub(crate) mod error;
pub(crate) mod escalation;
pub(crate) mod events;
pub(crate) mod identity;
pub(crate) mod journal;
pub(crate) mod limits;
pub(crate) mod money;
pub(crate) mod notify;
pub(crate) mod policy;
pub(crate) mod schedule;
pub(crate) mod state;
pub(crate) mod task;
pub(crate) mod units;
