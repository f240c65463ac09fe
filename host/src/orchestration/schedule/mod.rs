//! Schedules: background runs of a tool call or a task on a cron in an IANA
//! time zone, each under its own token budget and timeout.
//!
//! Rules are enforced when a schedule is created and again at every run:
//! - creation checks the cron (the error names the field), the zone, the
//!   minimum interval over the next year of runs (not just the next two),
//!   the owner's quota, the run budget against the system maximum, the run
//!   timeout, and the target (known tools, none `sensitive`);
//! - a run whose target has become `sensitive` is refused, the schedule
//!   pauses and a human is asked (an escalation);
//! - after [`ScheduleConfig::failures_before_pause`] failed runs in a row the
//!   schedule pauses itself, records why and raises an escalation.
//!
//! **Slots.** Each cron occurrence is a slot. The [`Runner`] journals a slot
//! (the schedule's `last_slot` and a `running` run record, in one durable
//! transaction) *before* it starts the run, so no slot runs twice, across
//! restarts and across processes sharing the journal. A run that was going
//! when its process died is found by [`Runner::reconcile`], marked
//! `interrupted` and escalated as an unknown outcome; it is not re-run.
//!
//! **Catch-up.** Slots that passed while no runner was up (more than
//! [`ScheduleConfig::misfire_grace`] late) are handled by the schedule's
//! [`CatchUp`]: `skip` records them as one `skipped` run and waits for the
//! next slot; `once` records the older ones as skipped and runs the latest
//! once. A slot due while the previous run still goes is skipped. Slots
//! that pass while a schedule is paused are never caught up: resuming starts
//! from the moment of the resume.
//!
//! Daylight-saving time follows [`crate::Cron`]: a local time skipped by a
//! spring-forward change runs once, an hour later by the clock on the wall;
//! a repeated one runs once, at the first occurrence.
//!
//! This file holds the handle ([`Schedules`]) and the checks made when a
//! schedule is created; `runner.rs` fires due slots and `run.rs` runs one.

mod run;
mod runner;

use std::sync::Arc;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::model::error::JournalError;
use crate::model::schedule::{Created, ScheduleChange, run_task_id};
use crate::orchestration::cron::{Cron, CronError};
use crate::orchestration::task::{TaskError, TaskSpec};
use crate::resilience::clock::WallClock;
use crate::{Host, Tokens};
use run::{Blocked, blocked};

pub use crate::model::schedule::{
    CatchUp, NextRun, RunStatus, RunningSlot, Schedule, ScheduleConfig, ScheduleRun, ScheduleSpec,
    ScheduleTarget,
};
pub use runner::{Reconciled, Runner, Tick};

/// Longest schedule name.
const MAX_NAME: usize = 64;
/// Longest owner id.
const MAX_OWNER: usize = 128;
/// How far ahead the minimum interval is checked.
const INTERVAL_HORIZON: SignedDuration = SignedDuration::from_hours(24 * 366);
/// Most occurrences looked at, for the interval check and for catch-up.
const MAX_OCCURRENCES: usize = 20_000;

impl Schedule {
    pub(crate) fn with_next_run(mut self, now: Timestamp) -> Self {
        self.next_run = None;
        if self.is_active()
            && let Ok((cron, zone)) = parse(&self.spec)
            && let Some(utc) = cron.next_after(&zone, self.cursor().max(now))
        {
            self.next_run = Some(NextRun {
                utc,
                local: utc.to_zoned_datetime(zone),
            });
        }
        self
    }
}

/// A schedule request that cannot be honoured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The name is empty, too long or has characters outside `A-Z a-z 0-9 . _ -`.
    #[error("invalid schedule name `{name}`: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The owner is empty, too long or has control characters.
    #[error("invalid schedule owner `{owner}`: use 1 to {MAX_OWNER} printable characters")]
    InvalidOwner {
        /// The owner.
        owner: String,
    },
    /// The cron expression (the source names the field).
    #[error("schedule `{name}`: {source}")]
    Cron {
        /// The schedule.
        name: String,
        /// What is wrong.
        #[source]
        source: CronError,
    },
    /// Not an IANA time zone.
    #[error(
        "schedule `{name}`: unknown time zone `{zone}` (use an IANA name such as Europe/Berlin)"
    )]
    Zone {
        /// The schedule.
        name: String,
        /// The zone asked for.
        zone: String,
    },
    /// Two runs would come closer than the minimum interval.
    #[error(
        "schedule `{name}` runs too often: {gap_minutes} min between the runs at {at} and the next; the minimum is {min_minutes} min"
    )]
    TooFrequent {
        /// The schedule.
        name: String,
        /// The shortest gap, in minutes.
        gap_minutes: u64,
        /// The first of the two runs (UTC).
        at: Timestamp,
        /// The minimum, in minutes.
        min_minutes: u64,
    },
    /// `notify` names a sink the host does not have, or one twice.
    #[error(
        "schedule `{name}`: no notification sink `{sink}` (configure it under [notify.{sink}])"
    )]
    UnknownSink {
        /// The schedule.
        name: String,
        /// The sink asked for.
        sink: String,
    },
    /// The owner has as many schedules as allowed.
    #[error("owner `{owner}` already has {quota} schedules, the most allowed")]
    QuotaExceeded {
        /// The owner.
        owner: String,
        /// The quota.
        quota: usize,
    },
    /// The per-run budget is above the system maximum.
    #[error("schedule `{name}`: a run budget of {budget} tokens is above the maximum of {max}")]
    BudgetTooHigh {
        /// The schedule.
        name: String,
        /// Asked for.
        budget: u64,
        /// Allowed.
        max: u64,
    },
    /// The run timeout is zero or above the maximum.
    #[error("schedule `{name}`: a run timeout of {timeout_ms} ms is not within 1 ms..={max_ms} ms")]
    BadTimeout {
        /// The schedule.
        name: String,
        /// Asked for.
        timeout_ms: u64,
        /// Allowed at most.
        max_ms: u64,
    },
    /// The target names a tool the host has not loaded.
    #[error("schedule `{name}`: no tool `{tool}` is loaded")]
    UnknownTool {
        /// The schedule.
        name: String,
        /// The tool.
        tool: String,
    },
    /// The target calls a tool marked `sensitive`: not in background runs.
    #[error(
        "schedule `{name}`: tool `{tool}` is marked sensitive and cannot run in the background"
    )]
    SensitiveTool {
        /// The schedule.
        name: String,
        /// The tool.
        tool: String,
    },
    /// The task target is invalid.
    #[error("schedule `{name}`: {source}")]
    Task {
        /// The schedule.
        name: String,
        /// What is wrong.
        #[source]
        source: TaskError,
    },
    /// A schedule of that name exists with a different definition.
    #[error("schedule `{name}` already exists with a different definition; delete it first")]
    Exists {
        /// The name.
        name: String,
    },
    /// No schedule has that name.
    #[error("no schedule `{name}`")]
    NotFound {
        /// The name.
        name: String,
    },
    /// A money cap cannot be priced (no price for a tool, another
    /// currency, a free tool).
    #[error("schedule `{name}`: {source}")]
    Price {
        /// The schedule.
        name: String,
        /// Why.
        #[source]
        source: crate::model::money::PriceError,
    },
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

fn parse(spec: &ScheduleSpec) -> Result<(Cron, TimeZone), ScheduleError> {
    let cron = Cron::parse(&spec.cron).map_err(|source| ScheduleError::Cron {
        name: spec.name.clone(),
        source,
    })?;
    let zone = TimeZone::get(&spec.zone).map_err(|_| ScheduleError::Zone {
        name: spec.name.clone(),
        zone: spec.zone.clone(),
    })?;
    Ok((cron, zone))
}

/// The schedules of a host; from [`Host::schedules`]. Cheap to clone.
#[derive(Clone)]
pub struct Schedules {
    pub(in crate::orchestration) host: Host,
    clock: Arc<dyn WallClock>,
    config: ScheduleConfig,
}

impl std::fmt::Debug for Schedules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedules")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Schedules {
    pub(crate) fn new(host: Host, clock: Arc<dyn WallClock>, config: ScheduleConfig) -> Self {
        Self {
            host,
            clock,
            config,
        }
    }

    /// The rules in force.
    pub fn config(&self) -> &ScheduleConfig {
        &self.config
    }

    /// The clock's current instant.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Validates and stores a schedule; it is due from now. Creating one
    /// that exists with the same definition returns it (idempotent).
    pub async fn create(&self, spec: ScheduleSpec) -> Result<Schedule, ScheduleError> {
        let now = self.clock.now();
        self.validate(&spec, now)?;
        let quota = self.config.quota_per_owner;
        let record = Schedule::new(spec, now);
        let name = record.spec.name.clone();
        let owner = record.spec.owner.clone();
        let stored = match self.host.store().create_schedule(record, quota).await? {
            Created::New(stored) | Created::Same(stored) => stored,
            Created::Conflict => return Err(ScheduleError::Exists { name }),
            Created::OverQuota => return Err(ScheduleError::QuotaExceeded { owner, quota }),
        };
        Ok(stored.with_next_run(now))
    }

    fn validate(&self, spec: &ScheduleSpec, now: Timestamp) -> Result<(), ScheduleError> {
        let name = &spec.name;
        let bad_name = |reason: &str| ScheduleError::InvalidName {
            name: name.clone(),
            reason: reason.into(),
        };
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(bad_name("use 1 to 64 characters"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(bad_name("use only A-Z a-z 0-9 . _ -"));
        }
        if spec.owner.is_empty()
            || spec.owner.len() > MAX_OWNER
            || spec.owner.chars().any(char::is_control)
        {
            return Err(ScheduleError::InvalidOwner {
                owner: spec.owner.clone(),
            });
        }
        if let Some(tenant) = &spec.tenant
            && (tenant.is_empty()
                || tenant.len() > MAX_OWNER
                || tenant.chars().any(char::is_control))
        {
            return Err(ScheduleError::InvalidOwner {
                owner: tenant.clone(),
            });
        }
        let (cron, zone) = parse(spec)?;
        self.check_interval(spec, &cron, &zone, now)?;
        let max = self.config.max_run_budget.0;
        if let Some(Tokens(budget)) = spec.budget
            && budget > max
        {
            return Err(ScheduleError::BudgetTooHigh {
                name: name.clone(),
                budget,
                max,
            });
        }
        if let Some(cost) = &spec.max_cost_per_run {
            let tools = run::spending_tools(&self.host, spec);
            self.host
                .prices()
                .tokens_for(cost, tools.iter().map(String::as_str))
                .map_err(|source| ScheduleError::Price {
                    name: name.clone(),
                    source,
                })?;
        }
        for (i, sink) in spec.notify.iter().enumerate() {
            if self.host.sink(sink).is_none() || spec.notify[..i].contains(sink) {
                return Err(ScheduleError::UnknownSink {
                    name: name.clone(),
                    sink: sink.clone(),
                });
            }
        }
        let max_ms = self.config.max_timeout.as_millis() as u64;
        if let Some(timeout_ms) = spec.timeout_ms
            && (timeout_ms == 0 || timeout_ms > max_ms)
        {
            return Err(ScheduleError::BadTimeout {
                name: name.clone(),
                timeout_ms,
                max_ms,
            });
        }
        if let ScheduleTarget::Task { task } = &spec.target {
            let sample = TaskSpec {
                id: run_task_id(&task.id, now),
                ..task.clone()
            };
            sample.validate().map_err(|source| ScheduleError::Task {
                name: name.clone(),
                source,
            })?;
        }
        match blocked(&self.host, spec) {
            Some(Blocked::Missing(tool)) => Err(ScheduleError::UnknownTool {
                name: name.clone(),
                tool,
            }),
            Some(Blocked::Sensitive(tool)) => Err(ScheduleError::SensitiveTool {
                name: name.clone(),
                tool,
            }),
            None => Ok(()),
        }
    }

    /// The shortest gap between consecutive runs over the next year (or the
    /// next [`MAX_OCCURRENCES`] runs), DST changes included.
    fn check_interval(
        &self,
        spec: &ScheduleSpec,
        cron: &Cron,
        zone: &TimeZone,
        now: Timestamp,
    ) -> Result<(), ScheduleError> {
        let Some(mut previous) = cron.next_after(zone, now) else {
            return Err(ScheduleError::Cron {
                name: spec.name.clone(),
                source: CronError::NeverFires(spec.cron.clone()),
            });
        };
        let min = SignedDuration::try_from(self.config.min_interval).unwrap_or(SignedDuration::MAX);
        let horizon = now.checked_add(INTERVAL_HORIZON).unwrap_or(Timestamp::MAX);
        for _ in 0..MAX_OCCURRENCES {
            let Some(next) = cron.next_after(zone, previous) else {
                break;
            };
            let gap = next.duration_since(previous);
            if gap < min {
                return Err(ScheduleError::TooFrequent {
                    name: spec.name.clone(),
                    gap_minutes: gap.as_secs().max(0) as u64 / 60,
                    at: previous,
                    min_minutes: self.config.min_interval.as_secs() / 60,
                });
            }
            if next > horizon {
                break;
            }
            previous = next;
        }
        Ok(())
    }

    /// One schedule, with its next run.
    pub fn get(&self, name: &str) -> Result<Schedule, ScheduleError> {
        self.list(None)?
            .into_iter()
            .find(|s| s.spec.name == name)
            .ok_or_else(|| ScheduleError::NotFound { name: name.into() })
    }

    /// Every schedule (of `owner`, when given), by name, with next runs.
    pub fn list(&self, owner: Option<&str>) -> Result<Vec<Schedule>, ScheduleError> {
        let now = self.clock.now();
        Ok(self
            .host
            .store()
            .schedules()?
            .into_iter()
            .filter(|s| owner.is_none_or(|o| s.spec.owner == o))
            .map(|s| s.with_next_run(now))
            .collect())
    }

    /// Pauses a schedule. Pausing a paused one succeeds and keeps its
    /// original reason.
    pub async fn pause(&self, name: &str, reason: &str) -> Result<Schedule, ScheduleError> {
        let now = self.clock.now();
        let reason = if reason.is_empty() {
            "paused by an operator".to_owned()
        } else {
            reason.to_owned()
        };
        self.update(name, ScheduleChange::Pause { reason, since: now })
            .await
    }

    /// Resumes a schedule: slots after now are due, and its failure count
    /// starts again. Resuming an active one succeeds and returns its next run.
    pub async fn resume(&self, name: &str) -> Result<Schedule, ScheduleError> {
        let now = self.clock.now();
        self.update(name, ScheduleChange::Resume { at: now }).await
    }

    async fn update(&self, name: &str, change: ScheduleChange) -> Result<Schedule, ScheduleError> {
        let now = self.clock.now();
        self.host
            .store()
            .update_schedule(name.to_owned(), change)
            .await?
            .map(|schedule| schedule.with_next_run(now))
            .ok_or_else(|| ScheduleError::NotFound { name: name.into() })
    }

    /// Deletes a schedule and its history; whether it existed (deleting a
    /// deleted one succeeds). A run going now finishes, unrecorded.
    pub async fn delete(&self, name: &str) -> Result<bool, ScheduleError> {
        Ok(self.host.store().delete_schedule(name.to_owned()).await?)
    }

    /// A schedule's runs, oldest slot first.
    pub fn history(&self, name: &str) -> Result<Vec<ScheduleRun>, ScheduleError> {
        let runs = self.host.store().schedule_runs(name)?;
        if runs.is_empty() {
            self.get(name)?;
        }
        Ok(runs)
    }

    /// What a run cost in money at the host's prices (`None` when its tools
    /// are not priced): a tool run's tokens at the tool's price, a task
    /// run's attempts each at its tool's price.
    pub fn run_cost(&self, schedule: &Schedule, run: &ScheduleRun) -> Option<crate::Money> {
        self.cost_of(&schedule.spec, &run.run_id, run.tokens)
    }

    /// What run `run_id` of `spec` that spent `tokens` cost.
    pub(crate) fn cost_of(
        &self,
        spec: &ScheduleSpec,
        run_id: &str,
        tokens: Tokens,
    ) -> Option<crate::Money> {
        let prices = self.host.prices();
        match &spec.target {
            ScheduleTarget::Tool { tool, .. } => prices.cost(tool, tokens),
            ScheduleTarget::Task { .. } => {
                let attempts = self
                    .host
                    .history(&crate::HistoryQuery {
                        task: Some(run_id.to_owned()),
                        limit: Some(usize::MAX),
                        ..crate::HistoryQuery::default()
                    })
                    .ok()?;
                prices.sum(
                    attempts
                        .iter()
                        .filter_map(|a| prices.cost(&a.tool, Tokens(a.tokens))),
                )
            }
        }
    }

    /// A deliverer of these schedules' notifications: call
    /// [`Notifier::deliver_due`], or let [`Notifier::run`] deliver until
    /// stopped ([`Runner::run`] runs one beside itself).
    pub fn notifier(&self) -> crate::Notifier {
        crate::Notifier::new(self.clone())
    }

    /// Every notification on its way or settled, oldest first.
    pub fn notifications(&self) -> Result<Vec<crate::OutboxEntry>, ScheduleError> {
        Ok(self.host.store().outbox()?)
    }

    /// A runner for these schedules: call [`Runner::tick`], or let
    /// [`Runner::run`] tick until stopped.
    pub fn runner(&self) -> Runner {
        Runner::new(self.clone())
    }
}

impl Host {
    /// The schedules of background runs: create, pause, resume, delete,
    /// history, and the [`crate::Runner`] that fires them.
    pub fn schedules(&self) -> Schedules {
        Schedules::new(
            self.clone(),
            Arc::clone(self.wall_clock()),
            self.schedule_config().clone(),
        )
    }
}
