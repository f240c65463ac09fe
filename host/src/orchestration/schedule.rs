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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::model::error::JournalError;
use crate::model::schedule::{Created, RunEnd, RunOutcome, ScheduleChange, SlotClaim};
use crate::orchestration::cron::{Cron, CronError};
use crate::orchestration::task::{TaskError, TaskSpec, TaskState};
use crate::resilience::clock::WallClock;
use crate::store::Store;
use crate::{BudgetCap, CallRequest, CancellationToken, ErrorClass, Host, ScopeId, Tokens};

/// Longest schedule name.
const MAX_NAME: usize = 64;
/// Longest owner id.
const MAX_OWNER: usize = 128;
/// How far ahead the minimum interval is checked.
const INTERVAL_HORIZON: SignedDuration = SignedDuration::from_hours(24 * 366);
/// Most occurrences looked at, for the interval check and for catch-up.
const MAX_OCCURRENCES: usize = 20_000;

use crate::model::schedule::run_task_id;
pub use crate::model::schedule::{
    CatchUp, NextRun, RunStatus, RunningSlot, Schedule, ScheduleConfig, ScheduleRun, ScheduleSpec,
    ScheduleStatus, ScheduleTarget,
};

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
    host: Host,
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
        let record = Schedule {
            v: 1,
            spec,
            status: ScheduleStatus::Active,
            created: now,
            anchor: now,
            last_slot: None,
            running: None,
            consecutive_failures: 0,
            runs: 0,
            failures: 0,
            total_tokens: Tokens(0),
            total_fuel: 0,
            generation: 1,
            escalations: Vec::new(),
            next_run: None,
        };
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

    /// A runner for these schedules: call [`Runner::tick`], or let
    /// [`Runner::run`] tick until stopped.
    pub fn runner(&self) -> Runner {
        let id = NEXT_RUNNER.fetch_add(1, Ordering::Relaxed);
        live_runners().insert(id);
        Runner {
            schedules: self.clone(),
            id,
            registrations: Mutex::new(HashMap::new()),
            running: Arc::new(Mutex::new(HashMap::new())),
            last_warned: Mutex::new(Reconciled::default()),
        }
    }
}

/// The run id of a slot: `NAME-YYYYMMDDTHHMMZ`.
static NEXT_RUNNER: AtomicU64 = AtomicU64::new(1);
static LIVE_RUNNERS: Mutex<Option<HashSet<u64>>> = Mutex::new(None);

struct LiveRunners(std::sync::MutexGuard<'static, Option<HashSet<u64>>>);

impl LiveRunners {
    fn insert(mut self, id: u64) {
        self.0.get_or_insert_default().insert(id);
    }
    fn remove(mut self, id: u64) {
        self.0.get_or_insert_default().remove(&id);
    }
    fn contains(&self, id: u64) -> bool {
        self.0.as_ref().is_some_and(|live| live.contains(&id))
    }
}

fn live_runners() -> LiveRunners {
    LiveRunners(LIVE_RUNNERS.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Whether the runner named in a running slot is still up.
fn runner_alive(store: &Arc<dyn Store>, running: &RunningSlot) -> bool {
    let ours = match &running.owner {
        Some(owner) => owner == crate::store::owner::me(),
        None => running.pid == std::process::id(),
    };
    if ours {
        live_runners().contains(running.runner)
    } else {
        store.owner_alive(running.owner.as_deref(), running.pid)
    }
}

struct Registration {
    generation: u64,
    cron: Cron,
    zone: TimeZone,
}

/// What a reconcile pass found between the stored schedules and the
/// runner's registrations, and what it did about it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reconciled {
    /// Active schedules the runner had not registered: now registered.
    pub registered: Vec<String>,
    /// Registrations whose schedule was changed: re-registered.
    pub updated: Vec<String>,
    /// Orphan registrations (schedule deleted or paused): dropped.
    pub dropped: Vec<String>,
    /// Runs whose runner is gone: marked interrupted, escalated.
    pub interrupted: Vec<(String, Timestamp)>,
    /// Schedules naming a tool the host has not loaded (reported; their
    /// runs fail until it is).
    pub missing_tools: Vec<(String, String)>,
    /// Stored schedules that no longer parse (cron or zone): not registered.
    pub invalid: Vec<(String, String)>,
}

impl Reconciled {
    /// Whether store and runner agreed (new registrations aside).
    pub fn is_clean(&self) -> bool {
        self.updated.is_empty()
            && self.dropped.is_empty()
            && self.interrupted.is_empty()
            && self.missing_tools.is_empty()
            && self.invalid.is_empty()
    }
}

/// One pass of the runner.
#[derive(Debug, Default)]
pub struct Tick {
    /// When the pass looked.
    pub now: Option<Timestamp>,
    /// Runs started: schedule and slot.
    pub fired: Vec<(String, Timestamp)>,
    /// Slots recorded as skipped: schedule and how many.
    pub skipped: Vec<(String, u32)>,
    /// What reconciling found.
    pub reconciled: Reconciled,
    handles: Vec<JoinHandle<Option<ScheduleRun>>>,
}

impl Tick {
    /// Waits for the runs this pass started and returns their records.
    pub async fn finished(self) -> Vec<ScheduleRun> {
        let mut out = Vec::new();
        for handle in self.handles {
            if let Ok(Some(run)) = handle.await {
                out.push(run);
            }
        }
        out
    }

    /// Stops the runs this pass started where they are, without recording
    /// an end, as a crash would (for tests of recovery).
    pub fn abort(self) {
        for handle in self.handles {
            handle.abort();
        }
    }
}

/// Fires due schedules. Made by [`Schedules::runner`]; `cofferdam serve`
/// runs one. Several runners (in one process or several sharing the
/// journal) never run one slot twice.
pub struct Runner {
    schedules: Schedules,
    id: u64,
    registrations: Mutex<HashMap<String, Registration>>,
    running: Arc<Mutex<HashMap<String, CancellationToken>>>,
    last_warned: Mutex<Reconciled>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("id", &self.id)
            .field("registered", &self.registered())
            .finish_non_exhaustive()
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        live_runners().remove(self.id);
    }
}

/// What the claim transaction did.
enum Claimed {
    /// The slot is journaled: run it.
    Run(Box<Schedule>),
    /// Only skipped slots were recorded, or nothing (someone else got there,
    /// or the schedule changed).
    NotRun,
}

impl Runner {
    /// The names of the schedules registered with this runner.
    pub fn registered(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock_registrations().keys().cloned().collect();
        names.sort();
        names
    }

    fn lock_registrations(&self) -> std::sync::MutexGuard<'_, HashMap<String, Registration>> {
        self.registrations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Compares the stored schedules with this runner's registrations and
    /// repairs what it can: registers new and changed schedules, drops
    /// orphan registrations, marks runs of dead runners interrupted (and
    /// escalates them); reports missing tools and unparsable schedules.
    pub async fn reconcile(&self) -> Result<Reconciled, ScheduleError> {
        Ok(self.reconcile_stored().await?.0)
    }

    async fn reconcile_stored(&self) -> Result<(Reconciled, Vec<Schedule>), ScheduleError> {
        let stored = self.schedules.host.store().schedules()?;
        let mut report = Reconciled::default();
        let mut stale = Vec::new();
        {
            let mut registrations = self.lock_registrations();
            let active: HashSet<&str> = stored
                .iter()
                .filter(|s| s.is_active())
                .map(|s| s.spec.name.as_str())
                .collect();
            registrations.retain(|name, _| {
                let keep = active.contains(name.as_str());
                if !keep {
                    report.dropped.push(name.clone());
                }
                keep
            });
            for schedule in &stored {
                let name = &schedule.spec.name;
                for tool in schedule.spec.tools() {
                    if self.schedules.host.tool(tool).is_none() {
                        report.missing_tools.push((name.clone(), tool.into()));
                    }
                }
                if let Some(running) = &schedule.running
                    && !runner_alive(self.schedules.host.store(), running)
                {
                    stale.push((name.clone(), running.clone()));
                }
                if !schedule.is_active() {
                    continue;
                }
                let known = registrations.get(name).map(|r| r.generation);
                if known == Some(schedule.generation) {
                    continue;
                }
                match parse(&schedule.spec) {
                    Ok((cron, zone)) => {
                        registrations.insert(
                            name.clone(),
                            Registration {
                                generation: schedule.generation,
                                cron,
                                zone,
                            },
                        );
                        if known.is_some() {
                            report.updated.push(name.clone());
                        } else {
                            report.registered.push(name.clone());
                        }
                    }
                    Err(e) => {
                        registrations.remove(name);
                        report.invalid.push((name.clone(), e.to_string()));
                    }
                }
            }
        }
        for (name, running) in stale {
            let error = format!(
                "the runner (process {}) stopped during the run; its outcome is unknown",
                running.pid
            );
            let now = self.schedules.now();
            let outcome = RunOutcome {
                status: RunStatus::Interrupted,
                tokens: Tokens(0),
                fuel: 0,
                error: Some(error),
                class: Some(ErrorClass::UnknownOutcome),
            };
            if finish(&self.schedules, &name, running.slot, outcome, now)
                .await?
                .is_some()
            {
                report.interrupted.push((name, running.slot));
            }
        }
        if !report.is_clean() {
            // Log a standing problem (a missing tool) once, not every pass.
            let mut last = self
                .last_warned
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let problems = Reconciled {
                registered: Vec::new(),
                ..report.clone()
            };
            if *last != problems {
                tracing::warn!(?report, "schedule store and runner disagreed");
                *last = problems;
            }
        }
        Ok((report, stored))
    }

    /// One pass: reconciles, then journals and starts every due slot
    /// (runs go on in the background; [`Tick::finished`] waits for them).
    pub async fn tick(&self) -> Result<Tick, ScheduleError> {
        let (reconciled, stored) = self.reconcile_stored().await?;
        let now = self.schedules.now();
        let grace = SignedDuration::try_from(self.schedules.config.misfire_grace)
            .unwrap_or(SignedDuration::MAX);
        let mut tick = Tick {
            now: Some(now),
            reconciled,
            ..Tick::default()
        };
        for schedule in stored.into_iter().filter(Schedule::is_active) {
            let name = schedule.spec.name.clone();
            let due = {
                let registrations = self.lock_registrations();
                let Some(registration) = registrations.get(&name) else {
                    continue;
                };
                if registration.generation != schedule.generation {
                    continue;
                }
                due_slots(registration, schedule.cursor(), now)
            };
            let Some(&latest) = due.last() else {
                continue;
            };
            let late = now.duration_since(latest) > grace;
            let busy = self
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(&name);
            let catch_up = schedule.spec.catch_up;
            let (run, skip_reason) = if busy {
                (None, "the previous run was still going".to_owned())
            } else {
                let missed = format!(
                    "missed while no runner was up (catch-up: {})",
                    catch_up.as_str()
                );
                let run = !(late && catch_up == CatchUp::Skip);
                (run.then_some(latest), missed)
            };
            let skipped: Vec<Timestamp> = match run {
                Some(_) => due[..due.len() - 1].to_vec(),
                None => due.clone(),
            };
            let skip = (!skipped.is_empty()).then(|| ScheduleRun {
                v: 1,
                schedule: name.clone(),
                slot: *skipped.last().unwrap_or(&latest),
                status: RunStatus::Skipped,
                started: now,
                ended: Some(now),
                run_id: String::new(),
                tokens: Tokens(0),
                fuel: 0,
                error: Some(skip_reason.clone()),
                class: None,
                missed: skipped.len() as u32,
                first_missed: skipped.first().copied(),
                escalation: None,
            });
            if let Some(skip) = &skip {
                tick.skipped.push((name.clone(), skip.missed));
            }
            let claimed = self
                .claim(&name, schedule.generation, skip, run, now)
                .await?;
            if let (Claimed::Run(schedule), Some(slot)) = (claimed, run) {
                tick.fired.push((name.clone(), slot));
                let cancel = CancellationToken::new();
                self.running
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(name.clone(), cancel.clone());
                let schedules = self.schedules.clone();
                let running = Arc::clone(&self.running);
                tick.handles.push(tokio::spawn(async move {
                    let outcome = execute(&schedules, &schedule, slot, cancel).await;
                    let end = schedules.now();
                    let record = finish(&schedules, &name, slot, outcome, end).await;
                    running
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&name);
                    match record {
                        Ok(record) => record,
                        Err(e) => {
                            tracing::error!(schedule = %name, error = %e, "could not record a run");
                            None
                        }
                    }
                }));
            }
        }
        Ok(tick)
    }

    /// Journals skipped slots and the slot to run, in one transaction, if
    /// the schedule is still active, unchanged and not past the slot.
    async fn claim(
        &self,
        name: &str,
        generation: u64,
        skip: Option<ScheduleRun>,
        run: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<Claimed, ScheduleError> {
        let runner = RunningSlot {
            slot: now,
            pid: std::process::id(),
            owner: Some(crate::store::owner::me().to_owned()),
            runner: self.id,
        };
        let claim = SlotClaim {
            name: name.to_owned(),
            generation,
            skip,
            run,
            now,
            runner,
        };
        Ok(match self.schedules.host.store().claim_slot(claim).await? {
            Some(schedule) => Claimed::Run(Box::new(schedule)),
            None => Claimed::NotRun,
        })
    }

    /// Ticks every `every` until `stop` is cancelled, then waits for the
    /// runs going (cancelling them first). Errors are logged; it goes on.
    pub async fn run(&self, every: Duration, stop: CancellationToken) {
        let mut going: Vec<Tick> = Vec::new();
        loop {
            match self.tick().await {
                Ok(tick) => {
                    for (name, slot) in &tick.fired {
                        tracing::info!(schedule = %name, %slot, "schedule fired");
                    }
                    going.push(tick);
                }
                Err(e) => tracing::error!(error = %e, "schedule runner pass failed"),
            }
            going.retain(|t| t.handles.iter().any(|h| !h.is_finished()));
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
        }
        for cancel in self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            cancel.cancel();
        }
        for tick in going {
            tick.finished().await;
        }
    }
}

/// Slots after `cursor` up to `now`, oldest first (at most
/// [`MAX_OCCURRENCES`]; older ones beyond that are not counted).
fn due_slots(registration: &Registration, cursor: Timestamp, now: Timestamp) -> Vec<Timestamp> {
    let mut due = Vec::new();
    let mut at = cursor;
    while let Some(next) = registration.cron.next_after(&registration.zone, at) {
        if next > now {
            break;
        }
        if due.len() == MAX_OCCURRENCES {
            due.remove(0);
        }
        due.push(next);
        at = next;
    }
    due
}

/// Why a run cannot start.
enum Blocked {
    /// A tool it calls is not loaded.
    Missing(String),
    /// A tool it may call (fallbacks included) is marked sensitive.
    Sensitive(String),
}

/// Checks every tool a run of `spec` may call against the host's policies.
fn blocked(host: &Host, spec: &ScheduleSpec) -> Option<Blocked> {
    for tool in spec.tools() {
        let Some(description) = host.tool(tool) else {
            return Some(Blocked::Missing(tool.into()));
        };
        let sensitive = std::iter::once(description.name.as_str())
            .chain(description.fallbacks.iter().map(|f| f.as_str()))
            .find(|t| host.tool(t).is_some_and(|d| d.sensitive));
        if let Some(tool) = sensitive {
            return Some(Blocked::Sensitive(tool.into()));
        }
    }
    None
}

/// Runs one slot under its budget scope and timeout.
async fn execute(
    schedules: &Schedules,
    schedule: &Schedule,
    slot: Timestamp,
    cancel: CancellationToken,
) -> RunOutcome {
    let host = &schedules.host;
    let spec = &schedule.spec;
    let failed = |error: String, class: Option<ErrorClass>| RunOutcome {
        status: RunStatus::Failed,
        tokens: Tokens(0),
        fuel: 0,
        error: Some(error),
        class,
    };
    // Policies change on reload: check again at every run.
    match blocked(host, spec) {
        Some(Blocked::Missing(tool)) => {
            return failed(
                format!("no tool `{tool}` is loaded"),
                Some(ErrorClass::UnknownTool),
            );
        }
        Some(Blocked::Sensitive(tool)) => {
            return RunOutcome {
                status: RunStatus::Refused,
                tokens: Tokens(0),
                fuel: 0,
                error: Some(format!(
                    "tool `{tool}` is marked sensitive and cannot run in the background"
                )),
                class: None,
            };
        }
        None => {}
    }
    let run_id = schedule.run_id(slot);
    let budget = spec.budget.unwrap_or(schedules.config.max_run_budget);
    let scope = ScopeId::Task(run_id.clone());
    if let Err(e) = host.budgets().set_cap(&scope, BudgetCap::new(budget)).await {
        return failed(format!("cannot set the run budget: {e}"), None);
    }
    let timeout = spec
        .timeout_ms
        .map_or(schedules.config.default_timeout, Duration::from_millis);
    let tasks = host.tasks();
    let work = async {
        match &spec.target {
            ScheduleTarget::Tool { tool, input } => {
                let request = CallRequest {
                    task_id: Some(run_id.clone()),
                    agent: Some(spec.owner.clone()),
                    idempotency_key: Some(format!("schedule/{}/{}", spec.name, slot)),
                    max_tokens: Some(budget),
                    cancel: Some(cancel.clone()),
                    ..CallRequest::new(tool, input.to_string())
                };
                match host.call(request).await {
                    Ok(outcome) => Ok(outcome.fuel_used.0),
                    Err(e) => Err((e.to_string(), Some(e.class()))),
                }
            }
            ScheduleTarget::Task { task } => {
                let spec = TaskSpec {
                    id: run_id.clone(),
                    agent: task.agent.clone().or_else(|| Some(spec.owner.clone())),
                    ..task.clone()
                };
                match tasks.run(spec).await {
                    Ok(record) if record.state == TaskState::Completed => Ok(0),
                    Ok(record) => {
                        let why = record
                            .steps
                            .iter()
                            .rev()
                            .find_map(|s| s.error.clone())
                            .unwrap_or_default();
                        let class = record.steps.iter().rev().find_map(|s| s.class);
                        Err((
                            format!("task ended {}: {why}", record.state.as_str()),
                            class,
                        ))
                    }
                    Err(e) => Err((e.to_string(), None)),
                }
            }
        }
    };
    tokio::pin!(work);
    let mut timed_out = false;
    let result = tokio::select! {
        result = &mut work => result,
        () = tokio::time::sleep(timeout) => {
            timed_out = true;
            cancel.cancel();
            if matches!(spec.target, ScheduleTarget::Task { .. }) {
                let _ = tasks.cancel(&run_id).await;
            }
            work.await
        }
    };
    let tokens = host
        .budgets()
        .get(&scope)
        .ok()
        .flatten()
        .map_or(Tokens(0), |b| b.spent);
    match result {
        Ok(fuel) => RunOutcome {
            status: RunStatus::Succeeded,
            tokens,
            fuel,
            error: None,
            class: None,
        },
        Err((error, class)) => RunOutcome {
            status: if timed_out {
                RunStatus::TimedOut
            } else {
                RunStatus::Failed
            },
            tokens,
            fuel: 0,
            error: Some(if timed_out {
                format!(
                    "stopped after the run timeout of {} ms: {error}",
                    timeout.as_millis()
                )
            } else {
                error
            }),
            class,
        },
    }
}

/// Records a run's end and its effect on the schedule (counters, the
/// failure streak, auto-pause and escalation) in one transaction. `None`
/// when the schedule is gone or the run was recorded already.
async fn finish(
    schedules: &Schedules,
    name: &str,
    slot: Timestamp,
    outcome: RunOutcome,
    now: Timestamp,
) -> Result<Option<ScheduleRun>, ScheduleError> {
    let end = RunEnd {
        name: name.to_owned(),
        slot,
        outcome,
        now,
        threshold: schedules.config.failures_before_pause,
    };
    Ok(schedules.host.store().finish_run(end).await?)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_name_the_slot_in_utc() {
        let slot: Timestamp = "2026-11-26T08:00:00Z".parse().unwrap();
        assert_eq!(run_task_id("digest", slot), "digest-20261126T0800Z");
    }

    #[test]
    fn specs_read_from_json_with_defaults() {
        let spec: ScheduleSpec = serde_json::from_str(
            r#"{"name":"d","owner":"o","cron":"0 9 * * *",
                "target":{"kind":"tool","tool":"hello"}}"#,
        )
        .unwrap();
        assert_eq!(spec.zone, "UTC");
        assert_eq!(spec.catch_up, CatchUp::Skip);
        assert_eq!(spec.tools(), ["hello"]);
        let err = serde_json::from_str::<ScheduleSpec>(
            r#"{"name":"d","owner":"o","cron":"0 9 * * *","budjet":5,
                "target":{"kind":"tool","tool":"hello"}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("budjet"), "{err}");
    }
}
