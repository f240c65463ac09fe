//! Notifications of background work: the events a schedule run's end
//! raises, which sinks hear them, and the outbox entries that carry each
//! event to each sink until it is delivered.
//!
//! The rules are pure functions every store applies inside the transaction
//! that records the run's end ([`outbox_entries`]), so an event is written
//! exactly when its run is, and survives a crash between "run ended" and
//! "webhook sent". Delivery is the notifier's job
//! (`orchestration::notify`); an entry is leased to one deliverer at a time
//! ([`OutboxEntry::claim`]) and settled by it ([`OutboxEntry::settle`]).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::error::ErrorClass;
pub use crate::model::events::{EventKind, Route, RunReport, bounded, summarize};
use crate::model::money::Money;
use crate::model::schedule::{RunStatus, Schedule, ScheduleRun, ScheduleStatus};
use crate::model::units::Tokens;

/// `[notify.NAME]` in `cofferdam.toml`: a webhook sink.
///
/// ```toml
/// [notify.ops-webhook]
/// url = "https://hooks.example/cofferdam"
/// secret_env = "OPS_WEBHOOK_SECRET"   # HMAC key (16+ bytes), from the environment
/// allow_private = ["127.0.0.0/8"]     # only for a receiver on a private address
/// events = ["run.failed", "schedule.paused", "run.escalated"]  # default: all
/// timeout_ms = 10000
/// max_attempts = 8
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySpec {
    /// Where events are POSTed (`http` or `https`).
    pub url: String,
    /// The environment variable holding the signing secret.
    pub secret_env: String,
    /// Address ranges (CIDR) the URL may resolve to although special-purpose.
    #[serde(default)]
    pub allow_private: Vec<String>,
    /// The kinds it hears (default: all).
    #[serde(default)]
    pub events: Vec<EventKind>,
    /// Time for one request [default 10 s].
    pub timeout_ms: Option<u64>,
    /// Deliveries tried before an event is given up [default 8].
    pub max_attempts: Option<u32>,
}

/// One event: what a sink receives (the webhook's JSON body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per run and kind (`RUN_ID.KIND`): receivers de-duplicate by it.
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// When (the run's end).
    pub at: Timestamp,
    /// The schedule.
    pub schedule: String,
    /// Its owner (an agent).
    pub owner: String,
    /// The tenant its runs are charged to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The run's slot.
    pub slot: Timestamp,
    /// The run's id (its task id and budget scope).
    pub run_id: String,
    /// How the run ended.
    pub status: RunStatus,
    /// When it started.
    pub started: Timestamp,
    /// Tokens it spent.
    pub tokens: Tokens,
    /// What they cost, where the host has prices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Money>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The failure's class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<ErrorClass>,
    /// The escalation it raised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<u64>,
    /// Why the schedule is paused now (`schedule.paused`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    /// The tool's output ([`summarize`]), for a successful tool run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
}

/// The events a run's end raises, given the schedule after
/// [`Schedule::finish`] and whether it was active before.
pub fn events(
    was_active: bool,
    schedule: &Schedule,
    run: &ScheduleRun,
    report: &RunReport,
) -> Vec<Event> {
    let at = run.ended.unwrap_or(run.started);
    let event = |kind: EventKind| Event {
        id: format!("{}.{}", run.run_id, kind.as_str()),
        kind,
        at,
        schedule: schedule.spec.name.clone(),
        owner: schedule.spec.owner.clone(),
        tenant: schedule.spec.tenant.clone(),
        slot: run.slot,
        run_id: run.run_id.clone(),
        status: run.status,
        started: run.started,
        tokens: run.tokens,
        cost: report.cost.clone(),
        error: run.error.as_deref().map(bounded),
        class: run.class,
        escalation: run.escalation,
        paused: None,
        output: None,
    };
    let mut out = Vec::new();
    match run.status {
        RunStatus::Succeeded => out.push(Event {
            output: report.output.clone(),
            ..event(EventKind::RunSucceeded)
        }),
        RunStatus::Skipped | RunStatus::Running => {}
        _ => out.push(event(EventKind::RunFailed)),
    }
    if let ScheduleStatus::Paused {
        reason,
        automatic: true,
        ..
    } = &schedule.status
        && was_active
    {
        out.push(Event {
            paused: Some(bounded(reason)),
            ..event(EventKind::SchedulePaused)
        });
    }
    if run.escalation.is_some() {
        out.push(event(EventKind::RunEscalated));
    }
    out
}

/// The outbox entries for `events`: one per event and sink that hears its
/// kind, due at once.
pub fn outbox_entries(events: &[Event], routes: &[Route], now: Timestamp) -> Vec<OutboxEntry> {
    let mut out = Vec::new();
    for route in routes {
        for event in events.iter().filter(|e| route.kinds.contains(&e.kind)) {
            out.push(OutboxEntry {
                v: 1,
                sink: route.sink.clone(),
                event: event.clone(),
                state: Delivery::Pending,
                attempts: 0,
                next: now,
                lease_until: None,
                holder: None,
                last_error: None,
                created: now,
                delivered: None,
            });
        }
    }
    out
}

/// The outbox entries of a run's end: [`events`] routed by
/// [`outbox_entries`], due at the run's end.
pub fn for_run(
    was_active: bool,
    schedule: &Schedule,
    run: &ScheduleRun,
    report: &RunReport,
) -> Vec<OutboxEntry> {
    if report.routes.is_empty() {
        return Vec::new();
    }
    let events = events(was_active, schedule, run, report);
    outbox_entries(&events, &report.routes, run.ended.unwrap_or(run.started))
}

/// Where an outbox entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Not delivered yet: due at `next`.
    Pending,
    /// The sink accepted it.
    Delivered,
    /// Given up: refused by policy, refused by the sink, or out of attempts.
    Dead,
}

impl Delivery {
    /// The name shown and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Pending => "pending",
            Delivery::Delivered => "delivered",
            Delivery::Dead => "dead",
        }
    }
}

/// One event on its way to one sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Record encoding version.
    pub v: u32,
    /// The sink.
    pub sink: String,
    /// The event.
    pub event: Event,
    /// Where it is.
    pub state: Delivery,
    /// Deliveries tried (a claim counts one, so a deliverer that dies
    /// mid-send has used its attempt).
    pub attempts: u32,
    /// When it is due (pending entries).
    pub next: Timestamp,
    /// Until when a deliverer holds it.
    #[serde(default)]
    pub lease_until: Option<Timestamp>,
    /// The deliverer holding it.
    #[serde(default)]
    pub holder: Option<String>,
    /// Why the last delivery failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When the run's end wrote it.
    pub created: Timestamp,
    /// When the sink accepted it.
    #[serde(default)]
    pub delivered: Option<Timestamp>,
}

/// How a delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// The sink accepted the event.
    Delivered { at: Timestamp },
    /// Try again at `at` (the attempt counts).
    Retry { at: Timestamp, error: String },
    /// Not tried (the sink's breaker is open): due again at `at`, the
    /// attempt given back.
    Defer { at: Timestamp },
    /// Give up.
    Dead { error: String },
}

impl OutboxEntry {
    /// The entry's key: sink and event id.
    pub fn key(&self) -> (&str, &str) {
        (&self.sink, &self.event.id)
    }

    /// Whether a deliverer may claim it at `now`: pending, due, not held.
    pub fn claimable(&self, now: Timestamp) -> bool {
        self.state == Delivery::Pending
            && self.next <= now
            && self.lease_until.is_none_or(|until| until <= now)
    }

    /// Leases it to `holder` for `lease` and counts an attempt.
    pub fn claim(&mut self, now: Timestamp, lease: Duration, holder: &str) {
        let lease = SignedDuration::try_from(lease).unwrap_or(SignedDuration::MAX);
        self.lease_until = Some(now.checked_add(lease).unwrap_or(Timestamp::MAX));
        self.holder = Some(holder.to_owned());
        self.attempts = self.attempts.saturating_add(1);
    }

    /// Records how `holder`'s delivery went; false (and nothing changed)
    /// when it no longer holds the entry (its lease ran out and another
    /// deliverer claimed it, or it was settled).
    pub fn settle(&mut self, holder: &str, settle: Settle) -> bool {
        if self.state != Delivery::Pending || self.holder.as_deref() != Some(holder) {
            return false;
        }
        self.lease_until = None;
        self.holder = None;
        match settle {
            Settle::Delivered { at } => {
                self.state = Delivery::Delivered;
                self.delivered = Some(at);
            }
            Settle::Retry { at, error } => {
                self.next = at;
                self.last_error = Some(error);
            }
            Settle::Defer { at } => {
                self.next = at;
                self.attempts = self.attempts.saturating_sub(1);
            }
            Settle::Dead { error } => {
                self.state = Delivery::Dead;
                self.last_error = Some(error);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> OutboxEntry {
        let now: Timestamp = "2026-11-29T09:00:00Z".parse().unwrap();
        let event = Event {
            id: "e.run.succeeded".into(),
            kind: EventKind::RunSucceeded,
            at: now,
            schedule: "s".into(),
            owner: "o".into(),
            tenant: None,
            slot: now,
            run_id: "s-1".into(),
            status: RunStatus::Succeeded,
            started: now,
            tokens: Tokens(3),
            cost: None,
            error: None,
            class: None,
            escalation: None,
            paused: None,
            output: None,
        };
        let routes = [Route {
            sink: "hook".into(),
            kinds: vec![EventKind::RunSucceeded],
        }];
        outbox_entries(&[event], &routes, now).remove(0)
    }

    #[test]
    fn an_entry_is_held_by_one_deliverer_until_its_lease_ends() {
        let mut e = entry();
        let now = e.next;
        assert!(e.claimable(now));
        e.claim(now, Duration::from_secs(30), "a");
        assert!(!e.claimable(now + SignedDuration::from_secs(29)));
        assert!(e.claimable(now + SignedDuration::from_secs(30)));
        // A second deliverer takes it over; the first one's answer no longer counts.
        e.claim(
            now + SignedDuration::from_secs(30),
            Duration::from_secs(30),
            "b",
        );
        assert!(!e.settle("a", Settle::Delivered { at: now }));
        assert_eq!(e.attempts, 2);
        assert!(e.settle("b", Settle::Delivered { at: now }));
        assert_eq!(e.state, Delivery::Delivered);
        assert!(!e.claimable(now + SignedDuration::from_hours(1)));
        assert!(!e.settle("b", Settle::Dead { error: "x".into() }));
    }

    #[test]
    fn a_deferred_attempt_is_given_back_and_a_retry_counts() {
        let mut e = entry();
        let now = e.next;
        e.claim(now, Duration::from_secs(30), "a");
        let later = now + SignedDuration::from_secs(60);
        assert!(e.settle("a", Settle::Defer { at: later }));
        assert_eq!((e.attempts, e.next), (0, later));
        e.claim(later, Duration::from_secs(30), "a");
        assert!(e.settle(
            "a",
            Settle::Retry {
                at: later,
                error: "503".into()
            }
        ));
        assert_eq!(e.attempts, 1);
        assert_eq!(e.last_error.as_deref(), Some("503"));
    }
}
