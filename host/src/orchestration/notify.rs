//! Delivers notifications: takes due outbox entries from the store (leased,
//! so replicas share the work and never send one entry at once), POSTs each
//! to its sink, and records the result: delivered, retried later with
//! exponential backoff and jitter (the sink's `Retry-After` respected), or
//! dead (refused by policy, refused by the sink, out of attempts). A sink's
//! breaker stops hammering a sink that keeps failing; its entries wait
//! without spending attempts.
//!
//! Delivery is at least once: an entry is settled only after its sink
//! answered, so a deliverer that dies after the sink accepted but before
//! recording it leaves the entry to be sent again when its lease ends.
//! Receivers de-duplicate by the event id (`X-Cofferdam-Event-Id`).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::schedule::{ScheduleError, Schedules};
use crate::CancellationToken;
use crate::model::notify::{OutboxEntry, Settle};
use crate::resilience::breaker::Verdict;
use crate::runtime::webhook::Posted;

/// How long a deliverer holds an entry: longer than any sink's timeout.
const LEASE: Duration = Duration::from_secs(120);
/// Entries taken per pass.
const BATCH: usize = 32;
/// First retry delay; doubles per attempt.
const BASE_DELAY: Duration = Duration::from_secs(2);
/// Longest retry delay.
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// How long delivered and dead entries are kept (for `schedules
/// notifications`).
pub(crate) const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Entries of one sink delivered per pass: its concurrent requests.
const PER_SINK: usize = 4;
/// Attempts for an entry whose sink this host does not have.
const DEFAULT_ATTEMPTS: u32 = 8;

/// What one pass did, by (sink, event id).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Deliveries {
    /// Accepted by their sinks.
    pub delivered: Vec<(String, String)>,
    /// To be tried again, with why they failed.
    pub retrying: Vec<(String, String, String)>,
    /// Given up, with why.
    pub dead: Vec<(String, String, String)>,
    /// Not tried: their sink's breaker is open.
    pub deferred: Vec<(String, String)>,
}

/// Sends the outbox: [`Notifier::deliver_due`] once, or
/// [`Notifier::run`] until stopped. Made by [`Schedules::notifier`].
#[derive(Debug, Clone)]
pub struct Notifier {
    schedules: Schedules,
    holder: String,
    /// When settled entries were last pruned.
    pruned: std::sync::Arc<std::sync::Mutex<Option<Timestamp>>>,
}

impl Notifier {
    pub(super) fn new(schedules: Schedules) -> Self {
        let holder = format!(
            "{}/{}",
            crate::store::owner::me(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        Self {
            schedules,
            holder,
            pruned: std::sync::Arc::default(),
        }
    }

    /// One pass: delivers every entry due now (on the host's calendar
    /// clock), at most 32, concurrently.
    /// Once an hour it also deletes delivered and dead entries older than
    /// 7 days.
    pub async fn deliver_due(&self) -> Result<Deliveries, ScheduleError> {
        let now = self.schedules.now();
        self.prune(now).await?;
        let entries = self
            .schedules
            .host
            .store()
            .outbox_claim(now, LEASE, self.holder.clone(), BATCH)
            .await?;
        let mut set = tokio::task::JoinSet::new();
        let mut per_sink: std::collections::HashMap<String, usize> =
            std::collections::HashMap::new();
        for entry in entries {
            // A sink takes a few requests at once; the rest of its backlog
            // waits for the next pass (within the lease, never behind it).
            let taken = per_sink.entry(entry.sink.clone()).or_default();
            *taken += 1;
            let this = self.clone();
            if *taken > PER_SINK {
                set.spawn(async move { this.settle(entry, Settle::Defer { at: now }).await });
            } else {
                set.spawn(async move { this.deliver(entry, now).await });
            }
        }
        let mut out = Deliveries::default();
        let mut failed = None;
        while let Some(done) = set.join_next().await {
            let Ok(result) = done else { continue };
            // One store error does not abort the other deliveries in flight.
            let ((sink, event), settle) = match result {
                Ok(settled) => settled,
                Err(e) => {
                    tracing::error!(error = %e, "cannot record a notification's delivery");
                    failed.get_or_insert(e);
                    continue;
                }
            };
            match settle {
                Settle::Delivered { .. } => out.delivered.push((sink, event)),
                Settle::Retry { error, .. } => out.retrying.push((sink, event, error)),
                Settle::Dead { error } => out.dead.push((sink, event, error)),
                Settle::Defer { .. } => out.deferred.push((sink, event)),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        for list in [&mut out.delivered, &mut out.deferred] {
            list.sort();
        }
        out.retrying.sort();
        out.dead.sort();
        Ok(out)
    }

    /// Deletes settled entries past [`RETENTION`], at most once an hour.
    async fn prune(&self, now: Timestamp) -> Result<(), ScheduleError> {
        {
            let mut last = self
                .pruned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|at| now.duration_since(at) < SignedDuration::from_hours(1)) {
                return Ok(());
            }
            *last = Some(now);
        }
        let before = now
            .checked_sub(SignedDuration::try_from(RETENTION).unwrap_or(SignedDuration::MAX))
            .unwrap_or(Timestamp::MIN);
        let pruned = self.schedules.host.store().outbox_prune(before).await?;
        if pruned > 0 {
            tracing::info!(pruned, "old notifications deleted");
        }
        Ok(())
    }

    /// Delivers one claimed entry and records how it went.
    async fn deliver(
        &self,
        entry: OutboxEntry,
        now: Timestamp,
    ) -> Result<((String, String), Settle), ScheduleError> {
        let host = &self.schedules.host;
        let settle = match host.sink(&entry.sink) {
            // Another replica may have it (a rolling deploy adding a sink):
            // retried like a failure, dead after the default attempts.
            None if entry.attempts < DEFAULT_ATTEMPTS => Settle::Retry {
                at: later(
                    self.schedules.now(),
                    delay(entry.attempts, host.jitter_unit()),
                ),
                error: format!(
                    "no notification sink `{}` is configured on this host",
                    entry.sink
                ),
            },
            None => Settle::Dead {
                error: format!("no notification sink `{}` is configured", entry.sink),
            },
            Some(sink) => match sink.breaker.try_acquire() {
                Err(refused) => Settle::Defer {
                    at: later(now, refused.retry_after.unwrap_or(BASE_DELAY)),
                },
                Ok(permit) => {
                    let started = host.clock_now();
                    let posted = sink
                        .sink
                        .post(&entry.event, entry.attempts, signed_at())
                        .await;
                    let verdict = match &posted {
                        Posted::Retry { .. } => Verdict::Failure,
                        Posted::Delivered | Posted::Refused(_) => Verdict::Success,
                    };
                    permit.record(verdict, host.clock_now().saturating_sub(started));
                    // Backoff counts from the answer, not from the pass's start.
                    let answered = self.schedules.now();
                    match posted {
                        Posted::Delivered => Settle::Delivered { at: answered },
                        Posted::Refused(error) => Settle::Dead { error },
                        Posted::Retry { error, .. } if entry.attempts >= sink.sink.max_attempts => {
                            Settle::Dead {
                                error: format!(
                                    "gave up after {} attempts; the last: {error}",
                                    entry.attempts
                                ),
                            }
                        }
                        Posted::Retry { error, after } => {
                            let backoff = delay(entry.attempts, host.jitter_unit());
                            Settle::Retry {
                                at: later(answered, after.unwrap_or_default().max(backoff)),
                                error,
                            }
                        }
                    }
                }
            },
        };
        self.settle(entry, settle).await
    }

    /// Records how `entry`'s delivery went.
    async fn settle(
        &self,
        entry: OutboxEntry,
        settle: Settle,
    ) -> Result<((String, String), Settle), ScheduleError> {
        let (sink, event) = (entry.sink, entry.event.id);
        let settled = self
            .schedules
            .host
            .store()
            .outbox_settle(
                sink.clone(),
                event.clone(),
                self.holder.clone(),
                settle.clone(),
            )
            .await?;
        if !settled {
            tracing::warn!(%sink, %event, "a notification's lease ran out before it was settled");
        }
        match &settle {
            Settle::Delivered { .. } => tracing::info!(%sink, %event, "notification delivered"),
            Settle::Retry { error, .. } => {
                tracing::warn!(%sink, %event, %error, "notification not delivered; will retry");
            }
            Settle::Dead { error } => {
                tracing::error!(%sink, %event, %error, "notification given up");
            }
            Settle::Defer { .. } => {}
        }
        Ok(((sink, event), settle))
    }

    /// Delivers every `every` until `stop` is cancelled. Errors are logged;
    /// it goes on.
    pub async fn run(&self, every: Duration, stop: CancellationToken) {
        loop {
            if let Err(e) = self.deliver_due().await {
                tracing::error!(error = %e, "notification pass failed");
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// The signature's time: the real clock, which receivers compare with
/// theirs to refuse replays (the host's calendar clock may be simulated).
fn signed_at() -> i64 {
    Timestamp::now().as_second()
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The retry delay after `attempts` tries: 2 s doubling up to 15 min, the
/// upper half jittered by `unit` (in `[0, 1)`), so a retry never comes at
/// once.
fn delay(attempts: u32, unit: f64) -> Duration {
    let full = crate::resilience::retry::exponential(BASE_DELAY, MAX_DELAY, attempts);
    full / 2 + (full / 2).mul_f64(unit.clamp(0.0, 1.0))
}

fn later(now: Timestamp, by: Duration) -> Timestamp {
    let by = SignedDuration::try_from(by).unwrap_or(SignedDuration::MAX);
    now.checked_add(by).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_with_jitter_in_the_upper_half_and_stop_growing() {
        assert_eq!(delay(1, 0.0), Duration::from_secs(1));
        assert_eq!(
            delay(1, 0.999_999),
            Duration::from_secs(2) - Duration::from_nanos(1000)
        );
        assert_eq!(delay(3, 0.0), Duration::from_secs(4));
        assert_eq!(delay(40, 0.0), MAX_DELAY / 2);
        assert!(delay(40, 0.5) <= MAX_DELAY);
    }
}
