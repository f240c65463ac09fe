//! Schedules: their definition, state and history of runs.

use std::time::Duration;

use jiff::{Timestamp, ZonedDateTime};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::error::ErrorClass;
use crate::model::escalation::{EscalationReason, NewEscalation};
use crate::model::task::TaskSpec;
use crate::model::units::Tokens;

/// Rules every schedule of a host follows. Defaults from DESIGN §6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// Shortest time between two runs of one schedule (default 60 min).
    pub min_interval: Duration,
    /// Schedules one owner may have (default 50).
    pub quota_per_owner: usize,
    /// Largest per-run budget a schedule may ask for; also the budget of
    /// schedules that do not say (default 100,000 tokens).
    pub max_run_budget: Tokens,
    /// Run timeout of schedules that do not say (default 5 min).
    pub default_timeout: Duration,
    /// Longest run timeout a schedule may ask for (default 1 h).
    pub max_timeout: Duration,
    /// Failed runs in a row after which a schedule pauses itself (default 3).
    pub failures_before_pause: u32,
    /// How late a slot may start and still count as on time (default 5 min).
    pub misfire_grace: Duration,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_secs(60 * 60),
            quota_per_owner: 50,
            max_run_budget: Tokens(100_000),
            default_timeout: Duration::from_secs(5 * 60),
            max_timeout: Duration::from_secs(60 * 60),
            failures_before_pause: 3,
            misfire_grace: Duration::from_secs(5 * 60),
        }
    }
}

/// What a schedule runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ScheduleTarget {
    /// One tool call.
    Tool {
        /// The tool.
        tool: String,
        /// Its input.
        #[serde(default = "empty_object")]
        input: Value,
    },
    /// A task; each run's task id is the spec's id followed by the slot
    /// (`digest-20261126T0800Z`), so runs never share steps.
    Task {
        /// The task definition.
        task: TaskSpec,
    },
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// What to do with slots missed while no runner was up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CatchUp {
    /// Record them as skipped; wait for the next slot.
    #[default]
    Skip,
    /// Run the latest one once; record the older ones as skipped.
    Once,
}

impl CatchUp {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Once => "once",
        }
    }
}

/// A schedule to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Unique name: 1–64 of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// Who it belongs to; quotas count per owner, and runs are made as
    /// this agent (its budget scope applies too).
    pub owner: String,
    /// The tenant runs are charged to as well (its budget scope applies),
    /// if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Five-field cron expression, in `zone`.
    pub cron: String,
    /// IANA time zone (default UTC).
    #[serde(default = "utc")]
    pub zone: String,
    /// What each run does.
    pub target: ScheduleTarget,
    /// Tokens one run may spend (default: the system maximum).
    #[serde(default)]
    pub budget: Option<Tokens>,
    /// Money one run may spend (`"2.00 USD"`), turned into tokens at the
    /// host's prices of the tools it may call (the dearest); the tighter of
    /// this and `budget` holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_per_run: Option<crate::model::money::Money>,
    /// How long one run may take, in ms (default: the host's).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Missed slots (default skip).
    #[serde(default)]
    pub catch_up: CatchUp,
    /// Sinks (`[notify.NAME]`) told when a run ends, fails, pauses the
    /// schedule or is escalated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<String>,
}

fn utc() -> String {
    "UTC".into()
}

impl ScheduleSpec {
    /// A schedule calling `tool` with `input`, in UTC, with default budget,
    /// timeout and catch-up.
    pub fn tool(name: &str, owner: &str, cron: &str, tool: &str, input: Value) -> Self {
        Self {
            name: name.into(),
            owner: owner.into(),
            tenant: None,
            cron: cron.into(),
            zone: utc(),
            target: ScheduleTarget::Tool {
                tool: tool.into(),
                input,
            },
            budget: None,
            max_cost_per_run: None,
            timeout_ms: None,
            catch_up: CatchUp::Skip,
            notify: Vec::new(),
        }
    }

    /// Every tool a run may call: targets, task steps, their fallbacks and
    /// compensations.
    pub(crate) fn tools(&self) -> Vec<&str> {
        match &self.target {
            ScheduleTarget::Tool { tool, .. } => vec![tool.as_str()],
            ScheduleTarget::Task { task } => task
                .steps
                .iter()
                .flat_map(|step| {
                    std::iter::once(step.tool.as_str())
                        .chain(step.fallbacks.iter().map(String::as_str))
                        .chain(step.compensate.iter().map(|c| c.tool.as_str()))
                })
                .collect(),
        }
    }
}

/// Whether a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum ScheduleStatus {
    /// Fires at its slots.
    Active,
    /// Does not fire until resumed.
    Paused {
        /// Why: the operator's words, or what made it pause itself.
        reason: String,
        /// Since when.
        since: Timestamp,
        /// Paused by the host (failures, a sensitive tool), not a person.
        automatic: bool,
    },
}

/// A run in progress, and who runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningSlot {
    /// The slot.
    pub slot: Timestamp,
    /// Process of the runner.
    pub pid: u32,
    /// Owner id of that process; absent in records written before owners
    /// had ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The runner within that process.
    pub runner: u64,
}

/// When a schedule runs next.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NextRun {
    /// The instant.
    pub utc: Timestamp,
    /// The same instant on the schedule's zone's clock.
    pub local: ZonedDateTime,
}

/// A stored schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Record encoding version.
    pub v: u32,
    /// What was asked for.
    pub spec: ScheduleSpec,
    /// Active or paused.
    pub status: ScheduleStatus,
    /// When it was created.
    pub created: Timestamp,
    /// Slots after this instant are due: the creation, or the last resume.
    pub anchor: Timestamp,
    /// The latest slot journaled (run or skipped).
    pub last_slot: Option<Timestamp>,
    /// The run going now, if any.
    pub running: Option<RunningSlot>,
    /// Failed runs since the last success.
    pub consecutive_failures: u32,
    /// Runs started.
    pub runs: u64,
    /// Runs that failed.
    pub failures: u64,
    /// Tokens all runs spent.
    pub total_tokens: Tokens,
    /// Fuel all tool-call runs used.
    pub total_fuel: u64,
    /// Changes with every spec or status change; the runner's registrations
    /// carry it.
    pub generation: u64,
    /// Escalations its runs raised.
    pub escalations: Vec<u64>,
    /// When it runs next (computed when read; `None` when paused).
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<NextRun>,
}

impl Schedule {
    /// A new, active schedule made at `now` (due from then), never run.
    pub(crate) fn new(spec: ScheduleSpec, now: Timestamp) -> Self {
        Schedule {
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
        }
    }

    /// Whether it fires.
    pub fn is_active(&self) -> bool {
        self.status == ScheduleStatus::Active
    }

    /// The task id (and budget scope) of the run for `slot`: the task's id,
    /// or the schedule's name, followed by the slot in UTC.
    pub fn run_id(&self, slot: Timestamp) -> String {
        match &self.spec.target {
            ScheduleTarget::Tool { .. } => run_task_id(&self.spec.name, slot),
            ScheduleTarget::Task { task } => run_task_id(&task.id, slot),
        }
    }

    pub(crate) fn cursor(&self) -> Timestamp {
        self.last_slot.map_or(self.anchor, |s| s.max(self.anchor))
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Going now.
    Running,
    /// Done.
    Succeeded,
    /// The call or task failed.
    Failed,
    /// Stopped at the run timeout.
    TimedOut,
    /// Not started: it would call a `sensitive` tool.
    Refused,
    /// Missed slots, not run (see `missed`).
    Skipped,
    /// Its runner stopped mid-run; the outcome is unknown.
    Interrupted,
}

impl RunStatus {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed-out",
            Self::Refused => "refused",
            Self::Skipped => "skipped",
            Self::Interrupted => "interrupted",
        }
    }

    pub(crate) fn failed(self) -> bool {
        matches!(
            self,
            Self::Failed | Self::TimedOut | Self::Refused | Self::Interrupted
        )
    }
}

/// One entry of a schedule's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRun {
    /// Record encoding version.
    pub v: u32,
    /// The schedule.
    pub schedule: String,
    /// The slot (for skipped entries, the latest slot skipped).
    pub slot: Timestamp,
    /// How it went.
    pub status: RunStatus,
    /// When it started (or was skipped).
    pub started: Timestamp,
    /// When it ended.
    pub ended: Option<Timestamp>,
    /// The call id's prefix or task id of the run: `schedule NAME slot`.
    pub run_id: String,
    /// Tokens it spent.
    pub tokens: Tokens,
    /// Fuel its tool call used (tasks: 0; see their tokens).
    pub fuel: u64,
    /// Why it failed, was refused or skipped.
    pub error: Option<String>,
    /// The failure's class, when a call failed.
    pub class: Option<ErrorClass>,
    /// Slots this entry stands for when skipped.
    pub missed: u32,
    /// The earliest of them.
    pub first_missed: Option<Timestamp>,
    /// The escalation it raised.
    pub escalation: Option<u64>,
}

/// Whether `name` is 1–64 of `A-Z a-z 0-9 . _ -` (schedule and sink names).
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The task id (and budget scope) of a run: `PREFIX-YYYYMMDDTHHMMZ`.
pub(crate) fn run_task_id(prefix: &str, slot: Timestamp) -> String {
    format!("{prefix}-{}", slot.strftime("%Y%m%dT%H%MZ"))
}

/// How a run ended, as its runner reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunOutcome {
    pub status: RunStatus,
    pub tokens: Tokens,
    pub fuel: u64,
    pub error: Option<String>,
    pub class: Option<ErrorClass>,
    /// A tool run's output (for its notifications).
    pub output: Option<String>,
}

/// A change an operator makes to a stored schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScheduleChange {
    /// Stop firing (a paused schedule keeps its first reason).
    Pause { reason: String, since: Timestamp },
    /// Fire again at slots after `at`, with a fresh failure count.
    Resume { at: Timestamp },
}

/// What storing a new schedule found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Created {
    /// Stored.
    New(Schedule),
    /// One with this name and the same spec exists: this one.
    Same(Schedule),
    /// One with this name and another spec exists.
    Conflict,
    /// The owner has `quota` schedules already.
    OverQuota,
}

/// A runner's claim on a schedule's due slots: journal `skip` (missed slots)
/// and start `run`, if the schedule is still active at `generation` and not
/// past those slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotClaim {
    pub name: String,
    pub generation: u64,
    pub skip: Option<ScheduleRun>,
    pub run: Option<Timestamp>,
    pub now: Timestamp,
    /// The runner that will run the slot (its `slot` is replaced).
    pub runner: RunningSlot,
}

/// What a claim changed: run records to store, and whether the schedule
/// changed and its slot was claimed.
#[derive(Debug, Default)]
pub(crate) struct Claimed {
    pub runs: Vec<ScheduleRun>,
    pub changed: bool,
    pub claimed: bool,
}

/// A run's end, to record on its schedule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunEnd {
    pub name: String,
    pub slot: Timestamp,
    pub outcome: RunOutcome,
    pub now: Timestamp,
    /// Failed runs in a row that pause the schedule.
    pub threshold: u32,
    /// Its cost, output and the sinks its events go to.
    pub report: crate::model::events::RunReport,
}

impl Schedule {
    /// Applies an operator's change; whether anything changed.
    pub(crate) fn apply(&mut self, change: ScheduleChange) -> bool {
        let before = self.clone();
        match change {
            ScheduleChange::Pause { reason, since } => {
                if self.is_active() {
                    self.status = ScheduleStatus::Paused {
                        reason,
                        since,
                        automatic: false,
                    };
                    self.generation += 1;
                }
            }
            ScheduleChange::Resume { at } => {
                if !self.is_active() {
                    self.status = ScheduleStatus::Active;
                    self.anchor = at;
                    self.consecutive_failures = 0;
                    self.generation += 1;
                }
            }
        }
        *self != before
    }

    /// Applies a runner's claim: no slot is journaled twice, and a slot
    /// starts only when no run is going.
    pub(crate) fn claim(&mut self, claim: SlotClaim) -> Claimed {
        let mut done = Claimed::default();
        if !self.is_active() || self.generation != claim.generation {
            return done;
        }
        let before = self.last_slot;
        let fresh = |slot: Timestamp| before.is_none_or(|last| last < slot);
        if let Some(skip) = claim.skip
            && fresh(skip.slot)
        {
            self.last_slot = Some(skip.slot);
            done.runs.push(skip);
            done.changed = true;
        }
        if let Some(slot) = claim.run
            && fresh(slot)
            && self.running.is_none()
        {
            done.runs.push(ScheduleRun {
                v: 1,
                schedule: claim.name.clone(),
                slot,
                status: RunStatus::Running,
                started: claim.now,
                ended: None,
                run_id: self.run_id(slot),
                tokens: Tokens(0),
                fuel: 0,
                error: None,
                class: None,
                missed: 0,
                first_missed: None,
                escalation: None,
            });
            self.last_slot = Some(slot);
            self.running = Some(RunningSlot {
                slot,
                ..claim.runner
            });
            self.runs += 1;
            done.changed = true;
            done.claimed = true;
        }
        done
    }

    /// Records a run's end on the run and on this schedule: counters, the
    /// failure streak and an automatic pause. Returns the escalation to
    /// raise, if any (then call [`Schedule::escalated`] with its id).
    pub(crate) fn finish(&mut self, run: &mut ScheduleRun, end: RunEnd) -> Option<NewEscalation> {
        let RunEnd {
            name,
            slot,
            outcome,
            now,
            threshold,
            report: _,
        } = end;
        run.status = outcome.status;
        run.ended = Some(now);
        run.tokens = outcome.tokens;
        run.fuel = outcome.fuel;
        run.error = outcome.error;
        run.class = outcome.class;
        if self.running.as_ref().is_some_and(|r| r.slot == slot) {
            self.running = None;
        }
        self.total_tokens = Tokens(self.total_tokens.0 + run.tokens.0);
        self.total_fuel += run.fuel;
        if run.status.failed() {
            self.failures += 1;
            self.consecutive_failures += 1;
        } else {
            self.consecutive_failures = 0;
        }
        let error = run.error.clone().unwrap_or_default();
        let pause = match run.status {
            RunStatus::Refused => Some((EscalationReason::RequiresHuman, error.clone())),
            _ if run.status.failed() && self.consecutive_failures >= threshold => Some((
                EscalationReason::MaxRetriesExceeded,
                format!(
                    "{} consecutive failed runs; the last: {error}",
                    self.consecutive_failures
                ),
            )),
            _ => None,
        };
        let escalation = (run.status == RunStatus::Interrupted || pause.is_some()).then(|| {
            let (reason, message) = pause
                .clone()
                .unwrap_or((EscalationReason::UnknownOutcome, error.clone()));
            NewEscalation {
                reason: Some(reason),
                tool: match &self.spec.target {
                    ScheduleTarget::Tool { tool, .. } => Some(tool.clone()),
                    ScheduleTarget::Task { .. } => None,
                },
                task: matches!(self.spec.target, ScheduleTarget::Task { .. })
                    .then(|| run.run_id.clone()),
                agent: Some(self.spec.owner.clone()),
                input: match &self.spec.target {
                    ScheduleTarget::Tool { input, .. } => Some(input.to_string()),
                    ScheduleTarget::Task { .. } => None,
                },
                schedule: Some(name.clone()),
                error: format!("schedule `{name}`, slot {slot}: {message}"),
                ..NewEscalation::default()
            }
        });
        if let Some((_, why)) = pause
            && self.is_active()
        {
            self.status = ScheduleStatus::Paused {
                reason: why,
                since: now,
                automatic: true,
            };
            self.generation += 1;
        }
        escalation
    }

    /// Notes the escalation a run raised (see [`Schedule::finish`]).
    pub(crate) fn escalated(&mut self, run: &mut ScheduleRun, id: u64) {
        run.escalation = Some(id);
        if !self.escalations.contains(&id) {
            self.escalations.push(id);
        }
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
