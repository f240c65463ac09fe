//! Retry policy: how many attempts, how long to back off between them, and a
//! retry budget that stops retry storms. *Whether* an error is worth a retry
//! is not decided here but by the error-class table in [`crate::resilience::classify`].

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::resilience::clock::Jitter;

/// Retry settings. Defaults (DESIGN §6): 3 attempts including the first;
/// exponential backoff from 200 ms doubling to at most 10 s, with full
/// jitter; a budget of 10% of calls plus 1 retry per second; every attempt
/// inside a total deadline of `max_attempts` × the attempt timeout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    /// Attempts including the first (1 = never retry).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles for each further one.
    pub base_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Deadline for all attempts and backoffs together.
    pub total_timeout: Duration,
    /// Retries earned per call made (0.1 = one retry per ten calls).
    pub budget_ratio: f64,
    /// Retries earned per second regardless of traffic.
    pub budget_per_second: f64,
}

impl RetryConfig {
    /// The defaults for a tool whose attempts time out after `attempt_timeout`.
    pub fn for_timeout(attempt_timeout: Duration) -> Self {
        Self {
            max_attempts: 3,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            total_timeout: attempt_timeout * 3,
            budget_ratio: 0.1,
            budget_per_second: 1.0,
        }
    }

    /// Backoff after failed attempt `attempt` (1-based): full jitter over
    /// `min(base × 2^(attempt-1), max)`, but never less than what the tool
    /// asked for with a rate-limited error.
    pub fn backoff(&self, attempt: u32, asked: Option<Duration>, jitter: &Jitter) -> Duration {
        let ceiling = exponential(self.base_backoff, self.max_backoff, attempt);
        jitter.up_to(ceiling).max(asked.unwrap_or_default())
    }
}

/// `min(base × 2^(attempt-1), max)` for attempt `attempt` (1-based): the
/// ceiling every backoff here grows by.
pub(crate) fn exponential(base: Duration, max: Duration, attempt: u32) -> Duration {
    let growth = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
    base.saturating_mul(growth).min(max)
}

/// A token bucket of retries: every call deposits `ratio` tokens, time
/// deposits `per_second`, every retry withdraws one. Bounded, so a quiet
/// period cannot save up a storm.
pub(crate) struct RetryBudget {
    ratio: f64,
    per_second: f64,
    cap: f64,
    state: Mutex<(f64, Duration)>,
}

impl RetryBudget {
    pub(crate) fn new(config: &RetryConfig, now: Duration) -> Self {
        let cap = (config.budget_per_second * 10.0).max(1.0);
        Self {
            ratio: config.budget_ratio,
            per_second: config.budget_per_second,
            cap,
            // Start full: a fresh host may retry; a storm drains it within seconds.
            state: Mutex::new((cap, now)),
        }
    }

    fn refill(&self, state: &mut (f64, Duration), now: Duration) {
        let elapsed = now.saturating_sub(state.1).as_secs_f64();
        state.0 = (state.0 + elapsed * self.per_second).min(self.cap);
        state.1 = now;
    }

    /// A call was made.
    pub(crate) fn deposit(&self, now: Duration) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.refill(&mut state, now);
        state.0 = (state.0 + self.ratio).min(self.cap);
    }

    /// Takes one retry from the budget, if there is one.
    pub(crate) fn try_withdraw(&self, now: Duration) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.refill(&mut state, now);
        // Tolerate float error: ten deposits of 0.1 are one retry.
        if state.0 >= 1.0 - 1e-9 {
            state.0 = (state.0 - 1.0).max(0.0);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let config = RetryConfig::for_timeout(Duration::from_secs(1));
        let jitter = Jitter::seeded(3);
        for _ in 0..200 {
            assert!(config.backoff(1, None, &jitter) <= Duration::from_millis(200));
            assert!(config.backoff(3, None, &jitter) <= Duration::from_millis(800));
            assert!(config.backoff(30, None, &jitter) <= Duration::from_secs(10));
        }
        let asked = Duration::from_millis(700);
        assert!(config.backoff(1, Some(asked), &jitter) >= asked);
    }

    #[test]
    fn budget_allows_ten_percent_of_calls_plus_one_per_second() {
        let config = RetryConfig::for_timeout(Duration::from_secs(1));
        let budget = RetryBudget::new(&config, Duration::ZERO);
        let banked = (0..100)
            .filter(|_| budget.try_withdraw(Duration::ZERO))
            .count();
        assert_eq!(banked, 10, "starts full: ten seconds' worth");
        for _ in 0..10 {
            budget.deposit(Duration::ZERO);
        }
        assert!(
            budget.try_withdraw(Duration::ZERO),
            "ten calls earn one retry"
        );
        assert!(!budget.try_withdraw(Duration::ZERO));
        assert!(
            budget.try_withdraw(Duration::from_secs(1)),
            "a second earns one retry"
        );
        let later = Duration::from_secs(3600);
        let granted = (0..100).filter(|_| budget.try_withdraw(later)).count();
        assert_eq!(granted, 10, "an idle hour saves up at most the cap");
    }
}
