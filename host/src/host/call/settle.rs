//! The settle stage: charge the attempt (never past what was reserved and
//! the call's cap), give back the rest, and record it in the audit history.

use std::time::Duration;

use super::CallPlan;
use super::attempts::Admitted;
use super::budget::AttemptBudget;
use super::execute::{Ran, Succeeded};
use crate::host::Host;
use crate::model::journal::{AttemptRecord, Reservation};
use crate::model::units::unix_millis;
use crate::{CallError, Fuel, Tokens};

/// An attempt charged and recorded, for the decide stage.
pub(super) struct Settled {
    pub result: Result<Succeeded, CallError>,
    pub duration: Duration,
    pub charged: u64,
    pub fuel: u64,
    pub stopped_mid_run: bool,
}

impl Host {
    /// Charges `ran` against `budget`, settles its reservations and audits it.
    pub(super) async fn settle(
        &self,
        plan: &CallPlan<'_>,
        call: &mut Admitted,
        budget: AttemptBudget,
        ran: Ran,
    ) -> Result<Settled, CallError> {
        let name = &plan.tool.description.name;
        let Ran {
            result,
            duration,
            fuel_used,
            http,
            started_ms,
            stopped_mid_run,
            lane,
        } = ran;
        let (result, charged) = self.bill(plan, call, budget, result, fuel_used).await?;
        let request = plan.request;
        self.inner.store.audit(AttemptRecord {
            v: 1,
            tool: name.to_string(),
            digest: plan.tool.description.digest.clone(),
            call_id: plan.call_id().to_owned(),
            task: request.task_id.clone(),
            agent: request.agent.clone(),
            tenant: request.tenant.clone(),
            attempt: call.attempt,
            started_ms,
            ended_ms: unix_millis(),
            status: match &result {
                Ok(_) => "ok".to_owned(),
                Err(e) => e.class().as_str().to_owned(),
            },
            fuel: fuel_used.0,
            tokens: charged,
            error: result.as_ref().err().map(ToString::to_string),
            replayed: false,
            http_requests: http.requests,
            http_bytes_in: http.bytes_in,
            http_bytes_out: http.bytes_out,
        });
        plan.tool.metrics.attempt(fuel_used.0, charged, &lane);
        call.total_fuel += fuel_used.0;
        call.total_tokens += charged;
        let span = tracing::Span::current();
        span.record("attempts", call.attempt);
        span.record("fuel", call.total_fuel);
        span.record("tokens", call.total_tokens);
        Ok(Settled {
            result,
            duration,
            charged,
            fuel: fuel_used.0,
            stopped_mid_run,
        })
    }

    /// What the attempt costs and may be charged: never past its
    /// reservations and the call's cap. An output the budget cannot pay for
    /// is withheld; running out of the fuel a budget paid for is that
    /// budget's exhaustion. Settles the reservations.
    async fn bill(
        &self,
        plan: &CallPlan<'_>,
        call: &mut Admitted,
        budget: AttemptBudget,
        mut result: Result<Succeeded, CallError>,
        fuel_used: Fuel,
    ) -> Result<(Result<Succeeded, CallError>, u64), CallError> {
        let name = &plan.tool.description.name;
        let price = self.inner.price;
        let charge = match &result {
            Ok(parts) => price.charge(fuel_used, parts.output.len()).0,
            Err(_) => price.charge(fuel_used, 0).0,
        };
        // Only the output can push past the grant (fuel stops at it). The
        // grant was sized for fuel; the output's tokens are asked for now.
        let call_cap = call.call_left.unwrap_or(u64::MAX);
        let mut extra = None;
        if let Some(r) = &budget.reservation
            && charge > r.tokens
            && call_cap >= charge
            && result.is_ok()
        {
            extra = self.reserve_exactly(&plan.scopes, charge - r.tokens).await;
        }
        // What this attempt may be charged: its reservations, within the
        // call's own cap; unbounded when no budget applies.
        let allowed = match &budget.reservation {
            Some(r) => r.tokens + extra.as_ref().map_or(0, |x: &Reservation| x.tokens),
            None => u64::MAX,
        }
        .min(call_cap);
        if charge > allowed {
            if let Ok(parts) = &result {
                // The tool finished and may have acted; only its output does
                // not fit. It is withheld, never thrown away: a keyed call
                // stores it (see the journal stage).
                result = Err(CallError::OutputOverBudget {
                    tool: name.clone(),
                    scope: match &budget.reservation {
                        Some(r) if call_cap >= charge => r.tightest.clone(),
                        _ => "call".into(),
                    },
                    cost: Tokens(charge),
                    left: Tokens(allowed),
                    stored: false,
                    output: parts.output.clone(),
                });
            }
        } else if let (Err(CallError::OutOfFuel { .. }), Some(scope)) =
            (&result, &budget.limited_by)
        {
            result = Err(CallError::BudgetExhausted {
                tool: name.clone(),
                scope: scope.clone(),
                asked: Tokens(budget.want),
                left: Tokens(budget.granted),
            });
        }
        let charged = charge.min(allowed);
        if let Some(left) = &mut call.call_left {
            *left = left.saturating_sub(charged);
        }
        self.give_back(plan, budget.reservation, extra, charged)
            .await?;
        Ok((result, charged))
    }

    /// Turns the attempt's reservations into spending of `charged` tokens
    /// (the first reservation first) and wakes calls waiting on a budget.
    async fn give_back(
        &self,
        plan: &CallPlan<'_>,
        reservation: Option<Reservation>,
        extra: Option<Reservation>,
        charged: u64,
    ) -> Result<(), CallError> {
        let first_part = reservation.as_ref().map_or(0, |r| charged.min(r.tokens));
        for (reservation, actual) in [
            (reservation, first_part),
            (extra, charged.saturating_sub(first_part)),
        ] {
            if let Some(reservation) = reservation {
                let settled = self.inner.store.settle(reservation, actual).await;
                self.inner.budget_settled.notify_waiters();
                if let Err(e) = settled {
                    return Err(CallError::Journal {
                        tool: plan.tool.description.name.clone(),
                        source: e,
                    });
                }
            }
        }
        Ok(())
    }
}
