//! A circuit breaker per tool (DESIGN §6): closed, open, half-open, plus the
//! operator modes disabled, forced-open and metrics-only.
//!
//! The breaker owns its state and its clock; callers take a [`Permit`] before
//! an attempt and record the attempt's [`Verdict`] on it. A permit dropped
//! without a verdict (the caller gave up) releases its slot and records
//! nothing. It does not decide what counts as a failure: the error-class
//! table in [`crate::resilience::classify`] does.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::model::policy::BreakerState;
use crate::resilience::clock::{Clock, Jitter};

/// How an operator has set a breaker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerMode {
    /// The state machine decides.
    #[default]
    Normal,
    /// Every call is let through and nothing is recorded.
    Disabled,
    /// Every call is refused until the mode changes.
    ForcedOpen,
    /// Every call is let through; outcomes are recorded and would-be
    /// transitions logged (shadow mode for new tools).
    MetricsOnly,
}

/// Which recent calls the failure and slow-call rates are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last N recorded calls.
    Count(u32),
    /// The calls of the last duration (one-second buckets).
    Time(Duration),
}

/// Breaker settings. Defaults (DESIGN §6): count window of 20, at least 10
/// calls, open at a failure rate ≥ 50% or a slow-call rate ≥ 80% (slow: at
/// least 0.8 × the attempt timeout) or 5 consecutive failures; open for 30 s,
/// doubling with jitter up to 5 min; 3 half-open probes, which must finish
/// within 2 × the attempt timeout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Operator mode.
    pub mode: BreakerMode,
    /// Window the rates are computed over.
    pub window: Window,
    /// Calls the window must hold before rates can open the breaker.
    pub minimum_calls: u32,
    /// Failure rate (0–1) at or above which the breaker opens.
    pub failure_rate: f64,
    /// Slow-call rate (0–1) at or above which the breaker opens.
    pub slow_call_rate: f64,
    /// Calls at least this long are slow.
    pub slow_call_duration: Duration,
    /// Consecutive failures that open the breaker regardless of rates (0 = off).
    pub consecutive_failures: u32,
    /// First open period.
    pub open_duration: Duration,
    /// Longest open period after repeated re-opening.
    pub max_open_duration: Duration,
    /// Probe calls admitted while half-open.
    pub half_open_probes: u32,
    /// Half-open probes still pending after this long re-open the breaker.
    pub half_open_timeout: Duration,
}

impl BreakerConfig {
    /// The defaults for a tool whose attempts time out after `attempt_timeout`.
    pub fn for_timeout(attempt_timeout: Duration) -> Self {
        Self {
            mode: BreakerMode::Normal,
            window: Window::Count(20),
            minimum_calls: 10,
            failure_rate: 0.5,
            slow_call_rate: 0.8,
            slow_call_duration: attempt_timeout.mul_f64(0.8),
            consecutive_failures: 5,
            open_duration: Duration::from_secs(30),
            max_open_duration: Duration::from_secs(300),
            half_open_probes: 3,
            half_open_timeout: attempt_timeout * 2,
        }
    }
}

/// What an attempt means to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The tool worked.
    Success,
    /// The tool failed in a way that says it is unhealthy.
    Failure,
    /// Not the tool's health (caller's fault, budget): not counted.
    Ignore,
}

/// Counters and rates of a breaker, for operators.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    /// Current state.
    pub state: BreakerState,
    /// Calls in the window.
    pub window_calls: u32,
    /// Failure rate over the window (0–1).
    pub failure_rate: f64,
    /// Slow-call rate over the window (0–1).
    pub slow_call_rate: f64,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// When open: time until probes are admitted.
    #[serde(
        rename = "retry_after_ms",
        serialize_with = "crate::model::units::opt_millis"
    )]
    pub retry_after: Option<Duration>,
    /// Transitions into open so far.
    pub opened: u64,
    /// Transitions into half-open so far.
    pub half_opened: u64,
    /// Transitions into closed so far.
    pub closed: u64,
}

/// A refusal: the breaker is open (or forced open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The state that refused.
    pub state: BreakerState,
    /// When a call may be admitted again, if known.
    pub retry_after: Option<Duration>,
}

/// A per-tool circuit breaker.
pub struct Breaker {
    tool: String,
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    jitter: Arc<Jitter>,
    inner: Mutex<Inner>,
}

struct Inner {
    mode: BreakerMode,
    state: State,
    window: Counts,
    consecutive: u32,
    /// Times opened since last closed; grows the open period.
    reopen_streak: u32,
    opened: u64,
    half_opened: u64,
    closed: u64,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open {
        until: Duration,
    },
    HalfOpen {
        since: Duration,
        admitted: u32,
        succeeded: u32,
    },
}

impl Breaker {
    /// A closed breaker for `tool`.
    pub fn new(
        tool: &str,
        config: BreakerConfig,
        clock: Arc<dyn Clock>,
        jitter: Arc<Jitter>,
    ) -> Self {
        Self {
            tool: tool.to_owned(),
            config,
            clock,
            jitter,
            inner: Mutex::new(Inner {
                mode: config.mode,
                state: State::Closed,
                window: Counts::new(config.window),
                consecutive: 0,
                reopen_streak: 0,
                opened: 0,
                half_opened: 0,
                closed: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks to make one attempt.
    pub fn try_acquire(self: &Arc<Self>) -> Result<Permit, Refused> {
        let now = self.clock.now();
        let mut inner = self.lock();
        match inner.mode {
            BreakerMode::Disabled | BreakerMode::MetricsOnly => return Ok(self.permit(false)),
            BreakerMode::ForcedOpen => {
                return Err(Refused {
                    state: BreakerState::ForcedOpen,
                    retry_after: None,
                });
            }
            BreakerMode::Normal => {}
        }
        match inner.state {
            State::Closed => Ok(self.permit(false)),
            State::Open { until } if now < until => Err(Refused {
                state: BreakerState::Open,
                retry_after: Some(until - now),
            }),
            State::Open { .. } => {
                self.transition(
                    &mut inner,
                    State::HalfOpen {
                        since: now,
                        admitted: 1,
                        succeeded: 0,
                    },
                );
                Ok(self.permit(true))
            }
            State::HalfOpen {
                since,
                admitted,
                succeeded,
            } => {
                if now.saturating_sub(since) >= self.config.half_open_timeout {
                    // Probes are stuck: the tool is not recovering.
                    self.open(&mut inner, now);
                    let retry_after = self.retry_after(&inner, now);
                    return Err(Refused {
                        state: BreakerState::Open,
                        retry_after,
                    });
                }
                if admitted < self.config.half_open_probes {
                    inner.state = State::HalfOpen {
                        since,
                        admitted: admitted + 1,
                        succeeded,
                    };
                    Ok(self.permit(true))
                } else {
                    let left = (since + self.config.half_open_timeout).saturating_sub(now);
                    Err(Refused {
                        state: BreakerState::HalfOpen,
                        retry_after: Some(left),
                    })
                }
            }
        }
    }

    fn permit(self: &Arc<Self>, probe: bool) -> Permit {
        Permit {
            breaker: Some(Arc::clone(self)),
            probe,
        }
    }

    /// The current state (operator modes shadow the machine's state).
    pub fn state(&self) -> BreakerState {
        let inner = self.lock();
        Self::visible_state(&inner)
    }

    fn visible_state(inner: &Inner) -> BreakerState {
        match inner.mode {
            BreakerMode::Disabled => BreakerState::Disabled,
            BreakerMode::ForcedOpen => BreakerState::ForcedOpen,
            BreakerMode::MetricsOnly => BreakerState::MetricsOnly,
            BreakerMode::Normal => match inner.state {
                State::Closed => BreakerState::Closed,
                State::Open { .. } => BreakerState::Open,
                State::HalfOpen { .. } => BreakerState::HalfOpen,
            },
        }
    }

    fn retry_after(&self, inner: &Inner, now: Duration) -> Option<Duration> {
        match (inner.mode, inner.state) {
            (BreakerMode::Normal, State::Open { until }) => Some(until.saturating_sub(now)),
            _ => None,
        }
    }

    /// Counters, rates and state.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let now = self.clock.now();
        let mut inner = self.lock();
        let (calls, failures, slow) = inner.window.totals(now);
        let rate = |n: u32| {
            if calls == 0 {
                0.0
            } else {
                f64::from(n) / f64::from(calls)
            }
        };
        BreakerSnapshot {
            state: Self::visible_state(&inner),
            window_calls: calls,
            failure_rate: rate(failures),
            slow_call_rate: rate(slow),
            consecutive_failures: inner.consecutive,
            retry_after: self.retry_after(&inner, now),
            opened: inner.opened,
            half_opened: inner.half_opened,
            closed: inner.closed,
        }
    }

    /// Sets the operator mode. Returning to `Normal` starts closed with an
    /// empty window.
    pub fn set_mode(&self, mode: BreakerMode) {
        let mut inner = self.lock();
        if inner.mode == mode {
            return;
        }
        let from = Self::visible_state(&inner);
        inner.mode = mode;
        if mode == BreakerMode::Normal {
            inner.state = State::Closed;
            inner.window = Counts::new(self.config.window);
            inner.consecutive = 0;
            inner.reopen_streak = 0;
        }
        let to = Self::visible_state(&inner);
        self.announce(from, to);
    }

    /// Back to closed with an empty window, whatever the state (the mode is kept).
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.window = Counts::new(self.config.window);
        inner.consecutive = 0;
        inner.reopen_streak = 0;
        self.transition(&mut inner, State::Closed);
    }

    fn record(&self, probe: bool, verdict: Verdict, duration: Duration) {
        let now = self.clock.now();
        let mut inner = self.lock();
        if inner.mode == BreakerMode::Disabled {
            return;
        }
        let slow = duration >= self.config.slow_call_duration;
        if let (
            BreakerMode::Normal,
            State::HalfOpen {
                since,
                admitted,
                succeeded,
            },
        ) = (inner.mode, inner.state)
        {
            if probe {
                match verdict {
                    Verdict::Ignore => {
                        inner.state = State::HalfOpen {
                            since,
                            admitted: admitted.saturating_sub(1),
                            succeeded,
                        };
                    }
                    Verdict::Failure => self.open(&mut inner, now),
                    Verdict::Success if slow => self.open(&mut inner, now),
                    Verdict::Success if succeeded + 1 >= self.config.half_open_probes => {
                        inner.window = Counts::new(self.config.window);
                        inner.consecutive = 0;
                        inner.reopen_streak = 0;
                        self.transition(&mut inner, State::Closed);
                    }
                    Verdict::Success => {
                        inner.state = State::HalfOpen {
                            since,
                            admitted,
                            succeeded: succeeded + 1,
                        };
                    }
                }
            }
            return;
        }
        let failure = match verdict {
            Verdict::Ignore => return,
            Verdict::Failure => true,
            Verdict::Success => false,
        };
        inner.window.push(now, failure, slow);
        inner.consecutive = if failure { inner.consecutive + 1 } else { 0 };
        if !matches!(inner.state, State::Closed) {
            return; // a late outcome of a call admitted before opening
        }
        let (calls, failures, slows) = inner.window.totals(now);
        let by_rate = calls >= self.config.minimum_calls
            && (f64::from(failures) >= self.config.failure_rate * f64::from(calls)
                || f64::from(slows) >= self.config.slow_call_rate * f64::from(calls));
        let by_streak = self.config.consecutive_failures > 0
            && inner.consecutive >= self.config.consecutive_failures;
        if by_rate || by_streak {
            if inner.mode == BreakerMode::MetricsOnly {
                tracing::info!(target: "cofferdam::breaker", tool = %self.tool, calls, failures,
                    slows, "breaker in metrics-only mode would open");
                inner.window = Counts::new(self.config.window);
                inner.consecutive = 0;
            } else {
                self.open(&mut inner, now);
            }
        }
    }

    fn release(&self, probe: bool) {
        if !probe {
            return;
        }
        let mut inner = self.lock();
        if let State::HalfOpen {
            since,
            admitted,
            succeeded,
        } = inner.state
        {
            inner.state = State::HalfOpen {
                since,
                admitted: admitted.saturating_sub(1),
                succeeded,
            };
        }
    }

    fn open(&self, inner: &mut Inner, now: Duration) {
        let growth = 2u32.saturating_pow(inner.reopen_streak.min(16));
        let base = self.config.open_duration.saturating_mul(growth);
        // Jitter of ±20% keeps many hosts from probing a recovering upstream at once.
        let jittered = base.mul_f64(0.8 + 0.4 * self.jitter.next_unit());
        let period = jittered.min(self.config.max_open_duration);
        inner.reopen_streak = inner.reopen_streak.saturating_add(1);
        self.transition(
            inner,
            State::Open {
                until: now + period,
            },
        );
    }

    fn transition(&self, inner: &mut Inner, to: State) {
        let from = Self::visible_state(inner);
        inner.state = to;
        let to = Self::visible_state(inner);
        if from == to {
            return; // no event, no metric, for a transition to the same state
        }
        match to {
            BreakerState::Open => inner.opened += 1,
            BreakerState::HalfOpen => inner.half_opened += 1,
            BreakerState::Closed => inner.closed += 1,
            _ => {}
        }
        self.announce(from, to);
    }

    fn announce(&self, from: BreakerState, to: BreakerState) {
        if from != to {
            tracing::info!(target: "cofferdam::breaker", tool = %self.tool,
                from = from.as_str(), to = to.as_str(), "circuit breaker transition");
        }
    }
}

/// Permission for one attempt. Record its verdict with [`Permit::record`];
/// dropping it unrecorded releases the slot and records nothing.
pub struct Permit {
    breaker: Option<Arc<Breaker>>,
    probe: bool,
}

impl Permit {
    /// Records how the attempt went.
    pub fn record(mut self, verdict: Verdict, duration: Duration) {
        if let Some(breaker) = self.breaker.take() {
            breaker.record(self.probe, verdict, duration);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(breaker) = self.breaker.take() {
            breaker.release(self.probe);
        }
    }
}

/// Outcome counts over a count or time window.
struct Counts {
    window: Window,
    /// Count window: one entry per call. Time window: one per second with calls.
    entries: VecDeque<Entry>,
}

#[derive(Clone, Copy)]
struct Entry {
    second: u64,
    calls: u32,
    failures: u32,
    slow: u32,
}

impl Counts {
    fn new(window: Window) -> Self {
        Self {
            window,
            entries: VecDeque::new(),
        }
    }

    fn push(&mut self, now: Duration, failure: bool, slow: bool) {
        let (f, s) = (u32::from(failure), u32::from(slow));
        match self.window {
            Window::Count(n) => {
                if self.entries.len() >= n.max(1) as usize {
                    self.entries.pop_front();
                }
                self.entries.push_back(Entry {
                    second: 0,
                    calls: 1,
                    failures: f,
                    slow: s,
                });
            }
            Window::Time(_) => {
                let second = now.as_secs();
                match self.entries.back_mut() {
                    Some(last) if last.second == second => {
                        last.calls += 1;
                        last.failures += f;
                        last.slow += s;
                    }
                    _ => self.entries.push_back(Entry {
                        second,
                        calls: 1,
                        failures: f,
                        slow: s,
                    }),
                }
            }
        }
    }

    fn totals(&mut self, now: Duration) -> (u32, u32, u32) {
        if let Window::Time(span) = self.window {
            let oldest = now.as_secs().saturating_sub(span.as_secs().max(1) - 1);
            while self.entries.front().is_some_and(|e| e.second < oldest) {
                self.entries.pop_front();
            }
        }
        self.entries.iter().fold((0, 0, 0), |(c, f, s), e| {
            (c + e.calls, f + e.failures, s + e.slow)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::clock::ManualClock;

    const TIMEOUT: Duration = Duration::from_secs(1);

    fn breaker(config: BreakerConfig) -> (Arc<Breaker>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        let jitter = Arc::new(Jitter::seeded(1));
        (
            Arc::new(Breaker::new("t", config, clock.clone(), jitter)),
            clock,
        )
    }

    fn config() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 0,
            ..BreakerConfig::for_timeout(TIMEOUT)
        }
    }

    fn call(b: &Arc<Breaker>, verdict: Verdict) -> Result<(), Refused> {
        b.try_acquire()
            .map(|p| p.record(verdict, Duration::from_millis(1)))
    }

    #[test]
    fn opens_at_the_failure_threshold_and_not_below_the_minimum_calls() {
        let (b, _) = breaker(config());
        for _ in 0..9 {
            call(&b, Verdict::Failure).expect("closed");
        }
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "9 calls are below the minimum of 10"
        );
        call(&b, Verdict::Failure).expect("closed");
        assert_eq!(b.state(), BreakerState::Open);
        let refused = call(&b, Verdict::Success).expect_err("open refuses");
        assert_eq!(refused.state, BreakerState::Open);
        let wait = refused.retry_after.expect("open has a retry-after");
        assert!(
            wait >= Duration::from_secs(24) && wait <= Duration::from_secs(36),
            "{wait:?}"
        );
    }

    #[test]
    fn stays_closed_just_below_the_failure_rate() {
        let (b, _) = breaker(config());
        // 11 successes, then 9 failures: never more than 45%, below 50%.
        for i in 0..20 {
            call(
                &b,
                if i < 11 {
                    Verdict::Success
                } else {
                    Verdict::Failure
                },
            )
            .expect("closed");
        }
        assert_eq!(b.state(), BreakerState::Closed);
        call(&b, Verdict::Failure).expect("closed");
        assert_eq!(b.state(), BreakerState::Open, "10 of the last 20 is 50%");
    }

    #[test]
    fn consecutive_failures_open_before_the_minimum_calls() {
        let (b, _) = breaker(BreakerConfig {
            consecutive_failures: 5,
            ..config()
        });
        for _ in 0..4 {
            call(&b, Verdict::Failure).expect("closed");
        }
        call(&b, Verdict::Success).expect("closed");
        for _ in 0..4 {
            call(&b, Verdict::Failure).expect("closed");
        }
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "the success broke the streak"
        );
        call(&b, Verdict::Failure).expect("closed");
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn slow_calls_trip_it() {
        let (b, _) = breaker(config());
        let slow = TIMEOUT.mul_f64(0.8);
        for _ in 0..10 {
            b.try_acquire()
                .expect("closed")
                .record(Verdict::Success, slow);
        }
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "10 slow successes of 10 is 100% >= 80%"
        );
    }

    #[test]
    fn ignored_outcomes_do_not_count() {
        let (b, _) = breaker(BreakerConfig {
            consecutive_failures: 3,
            ..config()
        });
        for _ in 0..50 {
            call(&b, Verdict::Ignore).expect("closed");
        }
        assert_eq!(b.snapshot().window_calls, 0);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_admits_exactly_the_probes_then_closes_when_they_succeed() {
        let (b, clock) = breaker(config());
        for _ in 0..10 {
            call(&b, Verdict::Failure).expect("closed");
        }
        clock.advance(Duration::from_secs(40));
        let probes: Vec<Permit> = (0..3).map(|_| b.try_acquire().expect("probe")).collect();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let refused = b.try_acquire().err().expect("a fourth caller waits");
        assert_eq!(refused.state, BreakerState::HalfOpen);
        for probe in probes {
            probe.record(Verdict::Success, Duration::from_millis(1));
        }
        assert_eq!(b.state(), BreakerState::Closed);
        let snap = b.snapshot();
        assert_eq!(
            (
                snap.opened,
                snap.half_opened,
                snap.closed,
                snap.window_calls
            ),
            (1, 1, 1, 0)
        );
    }

    #[test]
    fn half_open_probe_failure_reopens_for_longer() {
        let (b, clock) = breaker(config());
        for _ in 0..10 {
            call(&b, Verdict::Failure).expect("closed");
        }
        let first = b.snapshot().retry_after.expect("open");
        clock.advance(first);
        call(&b, Verdict::Failure).expect("probe admitted");
        assert_eq!(b.state(), BreakerState::Open);
        let second = b.snapshot().retry_after.expect("open");
        assert!(
            second > first,
            "open period grows: {first:?} then {second:?}"
        );
        assert!(second >= Duration::from_secs(48), "{second:?}");
    }

    #[test]
    fn open_period_is_capped() {
        let (b, clock) = breaker(config());
        for _ in 0..10 {
            call(&b, Verdict::Failure).expect("closed");
        }
        for _ in 0..12 {
            clock.advance(b.snapshot().retry_after.expect("open"));
            call(&b, Verdict::Failure).expect("probe");
        }
        assert!(b.snapshot().retry_after.expect("open") <= Duration::from_secs(300));
    }

    #[test]
    fn dropped_probe_releases_its_slot_without_an_outcome() {
        let (b, clock) = breaker(config());
        for _ in 0..10 {
            call(&b, Verdict::Failure).expect("closed");
        }
        clock.advance(Duration::from_secs(40));
        let probes: Vec<Permit> = (0..3).map(|_| b.try_acquire().expect("probe")).collect();
        drop(probes);
        assert_eq!(b.state(), BreakerState::HalfOpen, "nothing recorded");
        for _ in 0..3 {
            call(&b, Verdict::Success).expect("released slots are admitted again");
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn stuck_probes_reopen_after_the_half_open_timeout() {
        let (b, clock) = breaker(config());
        for _ in 0..10 {
            call(&b, Verdict::Failure).expect("closed");
        }
        clock.advance(Duration::from_secs(40));
        let _stuck: Vec<Permit> = (0..3).map(|_| b.try_acquire().expect("probe")).collect();
        clock.advance(TIMEOUT * 2);
        let refused = b.try_acquire().err().expect("reopened");
        assert_eq!(refused.state, BreakerState::Open);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn half_open_admits_exactly_the_probes_under_contention() {
        let (b, clock) = breaker(config());
        for _ in 0..10 {
            call(&b, Verdict::Failure).expect("closed");
        }
        clock.advance(Duration::from_secs(40));
        let admitted = std::sync::atomic::AtomicU32::new(0);
        let permits = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    if let Ok(p) = b.try_acquire() {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        permits.lock().expect("lock").push(p);
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 3);
    }

    #[test]
    fn operator_modes_override_the_state_machine() {
        let (b, _) = breaker(config());
        b.set_mode(BreakerMode::ForcedOpen);
        assert_eq!(
            call(&b, Verdict::Success).expect_err("forced").state,
            BreakerState::ForcedOpen
        );
        b.set_mode(BreakerMode::Disabled);
        for _ in 0..30 {
            call(&b, Verdict::Failure).expect("disabled lets everything through");
        }
        assert_eq!(b.snapshot().window_calls, 0, "disabled records nothing");
        b.set_mode(BreakerMode::MetricsOnly);
        for _ in 0..30 {
            call(&b, Verdict::Failure).expect("metrics-only never refuses");
        }
        assert_eq!(b.state(), BreakerState::MetricsOnly);
        b.set_mode(BreakerMode::Normal);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.snapshot().opened, 0, "metrics-only never really opened");
    }

    #[test]
    fn no_transition_is_counted_for_the_same_state() {
        let (b, _) = breaker(config());
        b.reset();
        b.reset();
        assert_eq!(b.snapshot().closed, 0);
        for _ in 0..10 {
            call(&b, Verdict::Failure).expect("closed");
        }
        b.reset();
        let snap = b.snapshot();
        assert_eq!(
            (snap.state, snap.opened, snap.closed),
            (BreakerState::Closed, 1, 1)
        );
    }

    #[test]
    fn time_window_forgets_old_calls() {
        let (b, clock) = breaker(BreakerConfig {
            window: Window::Time(Duration::from_secs(60)),
            ..config()
        });
        for _ in 0..9 {
            call(&b, Verdict::Failure).expect("closed");
        }
        clock.advance(Duration::from_secs(61));
        assert_eq!(b.snapshot().window_calls, 0);
        call(&b, Verdict::Failure).expect("closed");
        assert_eq!(b.state(), BreakerState::Closed, "old failures aged out");
    }
}
