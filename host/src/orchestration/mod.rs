//! Work made of calls: durable tasks with compensation, cron and schedules, escalations.

pub(crate) mod cron;
pub(crate) mod escalation;
pub(crate) mod notify;
pub(crate) mod schedule;
pub(crate) mod task;
