//! The attempt loop: admit (breaker, bulkhead), then per attempt reserve,
//! execute, settle, decide.

use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use super::CallPlan;
use super::settle::Settled;
use crate::host::{Host, until_cancelled};
use crate::resilience::breaker::{Permit, Refused, Verdict};
use crate::resilience::classify::{Disposition, disposition, may_retry};
use crate::{CallError, CallOutcome, Effect, ErrorClass, ToolName};

/// Attempts get at least this long, however little of the total deadline is left.
pub(super) const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(1);

/// A call admitted past its breaker and bulkhead, and what its attempts so
/// far have done.
pub(super) struct Admitted {
    /// The breaker's permit for the attempt going (taken when it is judged).
    pub permit: Option<Permit>,
    /// Held until the call ends.
    _slot: OwnedSemaphorePermit,
    /// Time spent queued for the slot and in backoff.
    pub waited: Duration,
    /// The attempt about to run (1-based).
    pub attempt: u32,
    /// Classes of the failed attempts, in order.
    pub failed: Vec<ErrorClass>,
    /// Tokens the call may still spend, when capped.
    pub call_left: Option<u64>,
    pub total_fuel: u64,
    pub total_tokens: u64,
}

impl Host {
    /// Admits the call, then runs attempts until one decides the outcome.
    pub(super) async fn attempts(&self, plan: &CallPlan<'_>) -> Result<CallOutcome, CallError> {
        let started = self.inner.clock.now();
        plan.tool.retry_budget.deposit(started);
        let mut call = self.admit(plan).await?;
        loop {
            // The first attempt gets the whole attempt timeout (within the
            // total); later ones get what is left of the total.
            let total = plan.tool.retry.total_timeout;
            let remaining = if call.attempt == 1 {
                total
            } else {
                total.saturating_sub(self.inner.clock.now().saturating_sub(started))
            };
            let budget = self.reserve(plan, &call, remaining).await?;
            let ran = self.execute(plan, &call, &budget).await;
            let settled = self.settle(plan, &mut call, budget, ran).await?;
            // The call ends with an outcome or an error; `None` retries.
            if let Some(outcome) = self.decide(plan, &mut call, settled, started).await? {
                return Ok(outcome);
            }
        }
    }

    /// The admit stage: a refused call costs nothing more (no queueing, no
    /// instance); an admitted one holds a bulkhead slot until it ends.
    async fn admit(&self, plan: &CallPlan<'_>) -> Result<Admitted, CallError> {
        let (tool, name) = (plan.tool, &plan.tool.description.name);
        let permit = tool
            .breaker
            .try_acquire()
            .map_err(|r| refused(name, r, 0))?;
        let (slot, waited) = until_cancelled(plan.request.cancel.as_ref(), tool.bulkhead.acquire())
            .await
            .ok_or_else(|| CallError::Cancelled { tool: name.clone() })?
            .map_err(|full| CallError::BulkheadFull {
                tool: name.clone(),
                retry_after: full.retry_after,
            })?;
        Ok(Admitted {
            permit: Some(permit),
            _slot: slot,
            waited,
            attempt: 1,
            failed: Vec::new(),
            call_left: plan.call_cap,
            total_fuel: 0,
            total_tokens: 0,
        })
    }

    /// The decide stage: the error-class table says whether a failed
    /// attempt is retried, counted by the breaker, or an unknown outcome.
    /// `Some` outcome or an error ends the call; `None` runs another attempt.
    async fn decide(
        &self,
        plan: &CallPlan<'_>,
        call: &mut Admitted,
        settled: Settled,
        started: Duration,
    ) -> Result<Option<CallOutcome>, CallError> {
        let (tool, name) = (plan.tool, &plan.tool.description.name);
        let Settled {
            result,
            duration,
            charged,
            fuel,
            stopped_mid_run,
        } = settled;
        let error = match result {
            Ok(parts) => {
                if let Some(permit) = call.permit.take() {
                    permit.record(Verdict::Success, duration);
                }
                let outcome = parts.into_outcome(
                    name,
                    plan.call_id().to_owned(),
                    crate::Tokens(charged),
                    call.attempt,
                    std::mem::take(&mut call.failed),
                    tool.breaker.state(),
                    call.waited,
                );
                return Ok(Some(outcome));
            }
            Err(error) => error,
        };
        let class = error.class();
        let row = judge(&error, stopped_mid_run);
        if let Some(permit) = call.permit.take() {
            permit.record(row.verdict, duration);
        }
        tracing::debug!(
            attempt = call.attempt,
            class = class.as_str(),
            fuel,
            tokens = charged,
            "attempt failed"
        );
        if row.interrupted && tool.description.effect == Effect::SideEffecting {
            let error = CallError::UnknownOutcome {
                tool: name.clone(),
                cause: Box::new(error),
            };
            return Err(error);
        }
        call.failed.push(class);
        let retryable = row.retryable
            && may_retry(tool.description.effect, plan.key.is_some())
            && call.attempt < tool.retry.max_attempts;
        self.retry_or_end(plan, call, retryable, error, started)
            .await
    }

    /// Backs off and takes a new breaker permit for the next attempt, or
    /// ends the call when it may not retry, has no time left for one, or the
    /// tool's retry budget is spent.
    async fn retry_or_end(
        &self,
        plan: &CallPlan<'_>,
        call: &mut Admitted,
        retryable: bool,
        error: CallError,
        started: Duration,
    ) -> Result<Option<CallOutcome>, CallError> {
        let (tool, name) = (plan.tool, &plan.tool.description.name);
        if !retryable {
            return Err(end(name, call, error));
        }
        let clock = &*self.inner.clock;
        let backoff = tool
            .retry
            .backoff(call.attempt, error.retry_after(), &self.inner.jitter);
        let elapsed = clock.now().saturating_sub(started);
        if elapsed + backoff + MIN_ATTEMPT_TIME > tool.retry.total_timeout
            || !tool.retry_budget.try_withdraw(clock.now())
        {
            return Err(end(name, call, error));
        }
        until_cancelled(plan.request.cancel.as_ref(), clock.sleep(backoff))
            .await
            .ok_or_else(|| CallError::Cancelled { tool: name.clone() })?;
        call.waited += backoff;
        call.permit = Some(
            tool.breaker
                .try_acquire()
                .map_err(|r| refused(name, r, call.attempt))?,
        );
        call.attempt += 1;
        Ok(None)
    }
}

/// How the error-class table treats a failed attempt's error.
fn judge(error: &CallError, stopped_mid_run: bool) -> Disposition {
    let mut row = disposition(error.class());
    // A budget error of an attempt that was stopped mid-run (out of the
    // fuel its budget paid for) is still an interruption.
    row.interrupted |= stopped_mid_run;
    // A guest stopped at its deadline while running its own code (a loop,
    // not a wait in a host call) would run out of time again: retrying only
    // triples the CPU it burns.
    if matches!(
        error,
        CallError::DeadlineExceeded {
            in_guest_code: true,
            ..
        }
    ) {
        row.retryable = false;
    }
    row
}

/// The call ends with its last attempt's error.
fn end(name: &ToolName, call: &mut Admitted, error: CallError) -> CallError {
    let failed = std::mem::take(&mut call.failed);
    exhausted(name, call.attempt, failed, error)
}

/// The breaker refused the call (after `attempts` attempts).
fn refused(tool: &ToolName, refused: Refused, attempts: u32) -> CallError {
    CallError::CircuitOpen {
        tool: tool.clone(),
        state: refused.state,
        retry_after: refused.retry_after,
        attempts,
    }
}

/// The error a call ends with after its last attempt failed.
fn exhausted(
    tool: &ToolName,
    attempts: u32,
    classes: Vec<ErrorClass>,
    last: CallError,
) -> CallError {
    if attempts == 1 {
        last
    } else {
        CallError::RetriesExhausted {
            tool: tool.clone(),
            attempts,
            classes,
            last: Box::new(last),
        }
    }
}
