//! The runner: keeps its registrations in step with the stored schedules
//! (reconcile), finds the due slots of each, claims them in the journal and
//! starts their runs (tick), and ticks until stopped (run).
//!
//! It does not decide what a run does or how its end is recorded; that is
//! `run.rs`. Which runners are alive in this process is kept here, so
//! a run whose runner is gone can be told from one that still goes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use tokio::task::JoinHandle;

use super::run::{execute, finish};
use super::{
    CatchUp, MAX_OCCURRENCES, RunStatus, RunningSlot, Schedule, ScheduleError, ScheduleRun,
    Schedules, parse,
};
use crate::model::schedule::{RunOutcome, SlotClaim};
use crate::orchestration::cron::Cron;
use crate::store::Store;
use crate::{CancellationToken, ErrorClass, Tokens};

/// Ids for runners, unique in this process.
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
    /// A runner for `schedules`, counted as live until it is dropped.
    pub(super) fn new(schedules: Schedules) -> Self {
        let id = NEXT_RUNNER.fetch_add(1, Ordering::Relaxed);
        live_runners().insert(id);
        Self {
            schedules,
            id,
            registrations: Mutex::new(HashMap::new()),
            running: Arc::new(Mutex::new(HashMap::new())),
            last_warned: Mutex::new(Reconciled::default()),
        }
    }

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
                    stale.push((schedule.clone(), running.clone()));
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
        for (schedule, running) in stale {
            let name = schedule.spec.name.clone();
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
                output: None,
            };
            if finish(&self.schedules, &schedule, running.slot, outcome, now)
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
                    let record = finish(&schedules, &schedule, slot, outcome, end).await;
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
    /// Beside it, a [`crate::Notifier`] delivers the runs' notifications
    /// at the same pace.
    pub async fn run(&self, every: Duration, stop: CancellationToken) {
        let notifier = self.schedules.notifier();
        let delivering = {
            let stop = stop.clone();
            tokio::spawn(async move { notifier.run(every, stop).await })
        };
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
        let _ = delivering.await;
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
