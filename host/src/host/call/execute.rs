//! The execute stage: one attempt in a fresh (or warm) sandboxed instance,
//! with the fuel its reservation paid for; its output checked.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::CallPlan;
use super::attempts::Admitted;
use super::budget::AttemptBudget;
use crate::host::{Host, LoadedTool};
use crate::model::state::{self, StateQuota, StateScope};
use crate::model::units::unix_millis;
use crate::resilience::breaker::BreakerState;
use crate::resilience::classify::disposition;
use crate::runtime::attempt::{Attempt, Execution, Export, Returned};
use crate::runtime::bindings::cofferdam::tool::types as wit;
use crate::runtime::lanes::LaneUsage;
use crate::runtime::net::HttpStats;
use crate::runtime::state::StateView;
use crate::{CallError, CallOutcome, ErrorClass, Fuel, Limits, ProgressSink, Tokens, ToolName};

/// An attempt that ran, before it is charged.
pub(super) struct Ran {
    pub result: Result<Succeeded, CallError>,
    pub duration: Duration,
    pub fuel_used: Fuel,
    pub http: HttpStats,
    pub started_ms: u64,
    /// Whether the attempt was stopped after it may have acted, whatever
    /// budget error it is reported as later.
    pub stopped_mid_run: bool,
    /// Where its time went, by CPU lane.
    pub lane: LaneUsage,
}

impl Host {
    /// An attempt of `tool` with `limits`.
    fn attempt<'a>(
        &'a self,
        tool: &'a LoadedTool,
        limits: Limits,
        progress: Option<ProgressSink>,
        cancel: Option<&'a CancellationToken>,
        state: Option<StateView>,
    ) -> Attempt<'a> {
        Attempt {
            engine: &self.inner.engine,
            pre: &tool.pre,
            tool: &tool.description.name,
            grants: &tool.grants,
            limits,
            price: self.inner.price,
            scratch_root: &self.inner.scratch_root,
            progress,
            cancel,
            warm: tool.warm.as_deref(),
            lanes: &self.inner.lanes,
            cpu: tool.cpu.as_ref(),
            state,
        }
    }

    /// The state bucket a call of `tool` made by `request` sees, when the
    /// tool's policy grants one: the space of the call's owner (its agent,
    /// or `anonymous`), of its schedule (none outside one), or of the tool.
    fn state_view(&self, tool: &LoadedTool, request: &crate::CallRequest) -> Option<StateView> {
        let spec = tool.grants.state.as_ref()?;
        let owner = request.agent.as_deref().unwrap_or("anonymous");
        // A name with control characters gets no state (NUL breaks stores).
        let clean = |s: &str| !s.chars().any(char::is_control);
        let space = match spec.scope {
            StateScope::Owner => {
                clean(owner).then(|| state::space(&spec.bucket, spec.scope, owner))
            }
            // Per owner and name: a schedule deleted and its name reused by
            // another owner does not inherit its state.
            StateScope::Schedule => request
                .schedule
                .as_deref()
                .filter(|schedule| clean(owner) && clean(schedule))
                .map(|schedule| {
                    state::space(&spec.bucket, spec.scope, &format!("{owner}/{schedule}"))
                }),
            StateScope::Tool => Some(state::space(&spec.bucket, spec.scope, "")),
        };
        let quota = StateQuota {
            max_keys: spec.max_keys.unwrap_or(state::DEFAULT_STATE_KEYS),
            max_bytes: spec.max_bytes.unwrap_or(state::DEFAULT_STATE_BYTES),
        };
        Some(StateView::new(
            spec.bucket.clone(),
            space,
            quota,
            Arc::clone(&self.inner.store) as Arc<dyn crate::model::state::StateReader>,
        ))
    }

    /// Runs one attempt under `budget`, on the compute pool if the host has
    /// one.
    pub(super) async fn execute(
        &self,
        plan: &CallPlan<'_>,
        call: &Admitted,
        budget: &AttemptBudget,
    ) -> Ran {
        let (tool, request) = (plan.tool, plan.request);
        let name = &tool.description.name;
        let ctx = wit::CallContext {
            call_id: plan.call_id().to_owned(),
            task_id: request.task_id.clone(),
            attempt: call.attempt,
            deadline_ms: u64::try_from(budget.limits.timeout.as_millis()).unwrap_or(u64::MAX),
        };
        tool.invocations.fetch_add(1, Ordering::Relaxed);
        let started_ms = unix_millis();
        let (limits, progress) = (budget.limits, request.progress.clone());
        let state = self.state_view(tool, request);
        let execution = match &self.inner.compute {
            None => {
                self.attempt(tool, limits, progress, request.cancel.as_ref(), state)
                    .execute(Export::Invoke {
                        ctx,
                        input: &request.input,
                    })
                    .await
            }
            // On threads of its own: the attempt owns what it reads.
            Some(pool) => {
                let (host, tool) = (self.clone(), Arc::clone(tool));
                let (input, cancel) = (request.input.clone(), request.cancel.clone());
                pool.run(async move {
                    host.attempt(&tool, limits, progress, cancel.as_ref(), state)
                        .execute(Export::Invoke { ctx, input: &input })
                        .await
                })
                .await
            }
        };
        let (duration, fuel_used, http, lane) = (
            execution.duration,
            execution.fuel_used,
            execution.http.clone(),
            execution.lane,
        );
        tool.bulkhead.observe(duration);
        let mut execution = execution;
        let changes = execution.state.take();
        let mut result = checked_output(name, &budget.limits, execution);
        // The attempt's state writes take effect with its success, once.
        if let (Ok(_), Some(changes)) = (&result, changes) {
            match self.inner.store.state_commit(changes).await {
                Ok(Ok(_usage)) => {}
                // A concurrent writer filled the scope first: the caller's
                // quota, not the tool's fault (no breaker failure).
                Ok(Err(refused)) => {
                    result = Err(CallError::Tool {
                        tool: name.clone(),
                        error: crate::ToolError::InvalidInput(refused.to_string()),
                    });
                }
                Err(source) => {
                    let failed = CallError::Journal {
                        tool: name.clone(),
                        source,
                    };
                    // The tool ran and may have acted: a side-effecting
                    // call whose writes are lost is an unknown outcome (its
                    // key stays, a human decides), never a retry.
                    result = Err(if tool.description.effect == crate::Effect::SideEffecting {
                        CallError::UnknownOutcome {
                            tool: name.clone(),
                            cause: Box::new(failed),
                        }
                    } else {
                        failed
                    });
                }
            }
        }
        let stopped_mid_run = result
            .as_ref()
            .err()
            .is_some_and(|e| disposition(e.class()).interrupted);
        Ran {
            result,
            duration,
            fuel_used,
            http,
            started_ms,
            stopped_mid_run,
            lane,
        }
    }
}

/// A successful attempt's results, before the call-level fields are added.
pub(super) struct Succeeded {
    pub output: String,
    execution: Execution,
}

impl Succeeded {
    #[expect(clippy::too_many_arguments, reason = "one private constructor")]
    pub(super) fn into_outcome(
        self,
        tool: &ToolName,
        call_id: String,
        tokens: Tokens,
        attempts: u32,
        failed_attempts: Vec<ErrorClass>,
        breaker: BreakerState,
        waited: Duration,
    ) -> CallOutcome {
        let e = self.execution;
        CallOutcome {
            tool: tool.clone(),
            call_id,
            tokens,
            output: self.output,
            fuel_used: e.fuel_used,
            duration: e.duration,
            attempts,
            failed_attempts,
            breaker,
            waited,
            replayed: false,
            fallback_used: None,
            http: e.http,
            logs: e.logs,
            logs_dropped: e.logs_dropped,
            stdout: String::from_utf8_lossy(&e.stdout).into_owned(),
            stdout_truncated: e.stdout_dropped > 0,
            stderr: String::from_utf8_lossy(&e.stderr).into_owned(),
            stderr_truncated: e.stderr_dropped > 0,
        }
    }
}

/// A retryable failure a tool reports when the host refused its outbound
/// requests (origin not allowed, a private or metadata address) and let
/// none through would meet the same refusal on every retry: it is
/// permanent, and says why. A guest whose HTTP stack cannot tell a refusal
/// from a network error (JavaScript's `fetch` reports both alike) is
/// classified as one that can. A tool that also reached an upstream keeps
/// its own word (the upstream may have answered 503).
fn refusal_is_final(error: crate::ToolError, http: &crate::HttpStats) -> crate::ToolError {
    use crate::ToolError;
    let Some(why) = http.refused.first().filter(|_| http.requests == 0) else {
        return error;
    };
    match error {
        ToolError::Transient(message) => ToolError::Permanent(format!(
            "{message} (the host refused an outbound request: {why})"
        )),
        ToolError::RateLimited { .. } => ToolError::Permanent(format!(
            "rate limited after the host refused an outbound request: {why}"
        )),
        other => other,
    }
}

/// Turns an attempt into its output or error, checking size and JSON.
fn checked_output(
    tool: &ToolName,
    limits: &Limits,
    mut execution: Execution,
) -> Result<Succeeded, CallError> {
    let result = std::mem::replace(
        &mut execution.result,
        Ok(Returned::Output(Ok(String::new()))),
    );
    let output = match result {
        Ok(Returned::Output(Ok(output))) => output,
        Ok(Returned::Output(Err(error))) => {
            return Err(CallError::Tool {
                tool: tool.clone(),
                error: refusal_is_final(error.into(), &execution.http),
            });
        }
        Ok(Returned::Info(_)) => unreachable!("invoke returns output"),
        Err(error) => {
            tracing::debug!(tool = %tool, class = error.class().as_str(),
                stderr = %String::from_utf8_lossy(&execution.stderr), "attempt stopped");
            return Err(error);
        }
    };
    if output.len() > limits.max_output_bytes {
        return Err(CallError::OutputTooLarge {
            tool: tool.clone(),
            size: output.len(),
            limit: limits.max_output_bytes,
        });
    }
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&output) {
        return Err(CallError::InvalidOutput {
            tool: tool.clone(),
            reason: e.to_string(),
        });
    }
    Ok(Succeeded { output, execution })
}
