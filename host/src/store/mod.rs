//! Durable state: the redb journal (idempotency, budgets, audit, escalations, tasks, schedules)
//! and lease owners. The only layer that knows a database.

pub(crate) mod journal;
pub(crate) mod owner;
