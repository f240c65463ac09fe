//! The reserve stage: before each attempt, set aside what the tightest
//! budget scope can pay for, and size the attempt's fuel to it.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::CallPlan;
use super::attempts::{Admitted, MIN_ATTEMPT_TIME};
use crate::host::{Host, until_cancelled};
use crate::model::budget::ScopeId;
use crate::model::journal::{Reservation, Reserved};
use crate::{CallError, Fuel, Limits, Tokens, ToolName};

/// How often a call waiting on a budget held by another process looks again.
const BUDGET_POLL: Duration = Duration::from_millis(50);

/// What one attempt may spend.
pub(super) struct AttemptBudget {
    /// Its limits: the call's, with the time left and the fuel paid for.
    pub limits: Limits,
    /// Tokens the attempt would cost at its full fuel.
    pub want: u64,
    /// Tokens it was granted.
    pub granted: u64,
    /// The reservation in the capped scopes, if any scope has a cap.
    pub reservation: Option<Reservation>,
    /// The scope whose balance bounds this attempt's fuel, if any does.
    pub limited_by: Option<String>,
}

impl Host {
    /// Reserves for the next attempt, within `remaining` of the call's time.
    pub(super) async fn reserve(
        &self,
        plan: &CallPlan<'_>,
        call: &Admitted,
        remaining: Duration,
    ) -> Result<AttemptBudget, CallError> {
        let name = &plan.tool.description.name;
        let mut limits = Limits {
            timeout: plan.limits.timeout.min(remaining).max(MIN_ATTEMPT_TIME),
            ..plan.limits
        };
        let price = self.inner.price;
        let want = price.tokens_for(limits.fuel).0.max(1) + price.per_call_tokens;
        let mut asked = want;
        if let Some(left) = call.call_left {
            if left == 0 {
                return Err(CallError::BudgetExhausted {
                    tool: name.clone(),
                    scope: "call".into(),
                    asked: Tokens(want),
                    left: Tokens(0),
                });
            }
            asked = asked.min(left);
        }
        let reservation = if plan.scopes.is_empty() {
            None
        } else {
            let wait_until = Instant::now() + remaining;
            let cancel = plan.request.cancel.as_ref();
            self.reserve_tokens(name, &plan.scopes, asked, wait_until, cancel)
                .await?
        };
        let granted = reservation.as_ref().map_or(asked, |r| r.tokens);
        let limited_by = match &reservation {
            _ if granted >= want => None,
            Some(r) if r.tokens < asked => Some(r.tightest.clone()),
            _ => Some("call".to_owned()),
        };
        let fuel_tokens = granted.saturating_sub(price.per_call_tokens);
        let budget_fuel = Fuel(fuel_tokens.saturating_mul(price.fuel_per_token.max(1)));
        limits.fuel = limits.fuel.min(budget_fuel);
        Ok(AttemptBudget {
            limits,
            want,
            granted,
            reservation,
            limited_by,
        })
    }

    /// Reserves `asked` tokens in every capped scope for one attempt.
    ///
    /// When a scope has less left than asked only because other calls hold
    /// reservations in it, the attempt waits for them to settle (they give
    /// back what they did not spend) instead of being refused or starting
    /// with a part: concurrent calls queue on a budget rather than fail with
    /// most of it unspent. At `wait_until` (the attempt's deadline) it takes
    /// what is left; only a scope with nothing left refuses.
    async fn reserve_tokens(
        &self,
        name: &ToolName,
        scopes: &[ScopeId],
        asked: u64,
        wait_until: Instant,
        cancel: Option<&CancellationToken>,
    ) -> Result<Option<Reservation>, CallError> {
        let store = &self.inner.store;
        loop {
            // Listen before looking, so a settlement in between is not missed.
            let settled = self.inner.budget_settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let whole = Instant::now() < wait_until;
            match store.reserve(scopes.to_vec(), asked, whole).await {
                Ok(Reserved::Unlimited) => return Ok(None),
                Ok(Reserved::Granted(r)) => return Ok(Some(r)),
                Ok(Reserved::Exhausted { scope, left }) => {
                    return Err(CallError::BudgetExhausted {
                        tool: name.clone(),
                        scope,
                        asked: Tokens(asked),
                        left: Tokens(left),
                    });
                }
                Ok(Reserved::Held { .. }) => {
                    // Settlements in this process wake us; another process's
                    // are seen at the next poll.
                    let until = tokio::time::Instant::from_std(wait_until)
                        .min(tokio::time::Instant::now() + BUDGET_POLL);
                    let wait = tokio::time::timeout_at(until, settled);
                    until_cancelled(cancel, wait)
                        .await
                        .ok_or_else(|| CallError::Cancelled { tool: name.clone() })?
                        .ok();
                }
                Err(e) => {
                    return Err(CallError::Journal {
                        tool: name.clone(),
                        source: e,
                    });
                }
            }
        }
    }

    /// Reserves exactly `tokens` more (an output's cost past its grant), or
    /// nothing.
    pub(super) async fn reserve_exactly(
        &self,
        scopes: &[ScopeId],
        tokens: u64,
    ) -> Option<Reservation> {
        let store = &self.inner.store;
        match store.reserve(scopes.to_vec(), tokens, false).await {
            Ok(Reserved::Granted(r)) if r.tokens == tokens => Some(r),
            Ok(Reserved::Granted(part)) => {
                let _ = store.settle(part, 0).await;
                self.inner.budget_settled.notify_waiters();
                None
            }
            _ => None,
        }
    }
}
