//! One run of a schedule: checks its tools against the host's policies,
//! runs the slot's tool call or task under the run's budget scope and
//! timeout, and records its end in the journal.
//!
//! It does not choose which slot runs or claim it; that is the runner's job
//! (`runner.rs`).

use std::time::Duration;

use jiff::Timestamp;

use super::{
    RunStatus, Schedule, ScheduleError, ScheduleRun, ScheduleSpec, ScheduleTarget, Schedules,
};
use crate::model::notify::{self, EventKind, Route, RunReport};
use crate::model::schedule::{RunEnd, RunOutcome};
use crate::orchestration::task::{TaskSpec, TaskState};
use crate::{BudgetCap, CallRequest, CancellationToken, ErrorClass, Host, ScopeId, Tokens};

/// Why a run cannot start.
pub(super) enum Blocked {
    /// A tool it calls is not loaded.
    Missing(String),
    /// A tool it may call (fallbacks included) is marked sensitive.
    Sensitive(String),
}

/// Checks every tool a run of `spec` may call against the host's policies.
pub(super) fn blocked(host: &Host, spec: &ScheduleSpec) -> Option<Blocked> {
    for tool in spec.tools() {
        let Some(description) = host.tool(tool) else {
            return Some(Blocked::Missing(tool.into()));
        };
        let sensitive = std::iter::once(description.name.as_str())
            .chain(description.fallbacks.iter().map(|f| f.as_str()))
            .find(|t| host.tool(t).is_some_and(|d| d.sensitive));
        if let Some(tool) = sensitive {
            return Some(Blocked::Sensitive(tool.into()));
        }
    }
    None
}

/// Every tool a run of `spec` may spend tokens on: its targets and their
/// policy fallbacks (what a money cap must be priced at).
pub(super) fn spending_tools(host: &Host, spec: &ScheduleSpec) -> Vec<String> {
    let mut tools: Vec<String> = Vec::new();
    for tool in spec.tools() {
        tools.push(tool.to_owned());
        if let Some(description) = host.tool(tool) {
            tools.extend(description.fallbacks.iter().map(|f| f.to_string()));
        }
    }
    tools.sort();
    tools.dedup();
    tools
}

/// Runs one slot under its budget scope and timeout.
pub(super) async fn execute(
    schedules: &Schedules,
    schedule: &Schedule,
    slot: Timestamp,
    cancel: CancellationToken,
) -> RunOutcome {
    let host = &schedules.host;
    let spec = &schedule.spec;
    let failed = |error: String, class: Option<ErrorClass>| RunOutcome {
        status: RunStatus::Failed,
        tokens: Tokens(0),
        fuel: 0,
        error: Some(error),
        class,
        output: None,
    };
    // Policies change on reload: check again at every run.
    match blocked(host, spec) {
        Some(Blocked::Missing(tool)) => {
            return failed(
                format!("no tool `{tool}` is loaded"),
                Some(ErrorClass::UnknownTool),
            );
        }
        Some(Blocked::Sensitive(tool)) => {
            return RunOutcome {
                status: RunStatus::Refused,
                tokens: Tokens(0),
                fuel: 0,
                error: Some(format!(
                    "tool `{tool}` is marked sensitive and cannot run in the background"
                )),
                class: None,
                output: None,
            };
        }
        None => {}
    }
    let run_id = schedule.run_id(slot);
    let mut budget = spec.budget.unwrap_or(schedules.config.max_run_budget);
    if let Some(cost) = &spec.max_cost_per_run {
        let tools = spending_tools(host, spec);
        match host
            .prices()
            .tokens_for(cost, tools.iter().map(String::as_str))
        {
            Ok(tokens) => budget = budget.min(tokens),
            // Prices changed since the schedule was made: no run without one.
            Err(e) => return failed(format!("cannot price the run: {e}"), None),
        }
    }
    let scope = ScopeId::Task(run_id.clone());
    if let Err(e) = host.budgets().set_cap(&scope, BudgetCap::new(budget)).await {
        return failed(format!("cannot set the run budget: {e}"), None);
    }
    let timeout = spec
        .timeout_ms
        .map_or(schedules.config.default_timeout, Duration::from_millis);
    let tasks = host.tasks();
    let work = async {
        match &spec.target {
            ScheduleTarget::Tool { tool, input } => {
                let request = CallRequest {
                    task_id: Some(run_id.clone()),
                    agent: Some(spec.owner.clone()),
                    tenant: spec.tenant.clone(),
                    schedule: Some(spec.name.clone()),
                    idempotency_key: Some(format!("schedule/{}/{}", spec.name, slot)),
                    max_tokens: Some(budget),
                    cancel: Some(cancel.clone()),
                    ..CallRequest::new(tool, input.to_string())
                };
                match host.call(request).await {
                    Ok(outcome) => Ok((outcome.fuel_used.0, Some(outcome.output))),
                    Err(e) => Err((e.to_string(), Some(e.class()))),
                }
            }
            ScheduleTarget::Task { task } => {
                let spec = TaskSpec {
                    id: run_id.clone(),
                    agent: task.agent.clone().or_else(|| Some(spec.owner.clone())),
                    tenant: task.tenant.clone().or_else(|| spec.tenant.clone()),
                    schedule: Some(spec.name.clone()),
                    ..task.clone()
                };
                match tasks.run(spec).await {
                    Ok(record) if record.state == TaskState::Completed => Ok((0, None)),
                    Ok(record) => {
                        let why = record
                            .steps
                            .iter()
                            .rev()
                            .find_map(|s| s.error.clone())
                            .unwrap_or_default();
                        let class = record.steps.iter().rev().find_map(|s| s.class);
                        Err((
                            format!("task ended {}: {why}", record.state.as_str()),
                            class,
                        ))
                    }
                    Err(e) => Err((e.to_string(), None)),
                }
            }
        }
    };
    tokio::pin!(work);
    let mut timed_out = false;
    let result = tokio::select! {
        result = &mut work => result,
        () = tokio::time::sleep(timeout) => {
            timed_out = true;
            cancel.cancel();
            if matches!(spec.target, ScheduleTarget::Task { .. }) {
                let _ = tasks.cancel(&run_id).await;
            }
            work.await
        }
    };
    let tokens = host
        .budgets()
        .get(&scope)
        .ok()
        .flatten()
        .map_or(Tokens(0), |b| b.spent);
    match result {
        Ok((fuel, output)) => RunOutcome {
            status: RunStatus::Succeeded,
            tokens,
            fuel,
            error: None,
            class: None,
            output,
        },
        Err((error, class)) => RunOutcome {
            status: if timed_out {
                RunStatus::TimedOut
            } else {
                RunStatus::Failed
            },
            tokens,
            fuel: 0,
            error: Some(if timed_out {
                format!(
                    "stopped after the run timeout of {} ms: {error}",
                    timeout.as_millis()
                )
            } else {
                error
            }),
            class,
            output: None,
        },
    }
}

/// Records a run's end and its effect on the schedule (counters, the
/// failure streak, auto-pause and escalation), and the notifications it
/// raises, in one transaction. `None` when the schedule is gone or the run
/// was recorded already.
pub(super) async fn finish(
    schedules: &Schedules,
    schedule: &Schedule,
    slot: Timestamp,
    outcome: RunOutcome,
    now: Timestamp,
) -> Result<Option<ScheduleRun>, ScheduleError> {
    let spec = &schedule.spec;
    let routes = spec
        .notify
        .iter()
        .map(|sink| Route {
            sink: sink.clone(),
            // A sink removed since: every kind, so its entries show up dead.
            kinds: schedules
                .host
                .sink(sink)
                .map_or_else(|| EventKind::ALL.to_vec(), |s| s.sink.kinds.clone()),
        })
        .collect();
    let report = RunReport {
        cost: schedules.cost_of(spec, &schedule.run_id(slot), outcome.tokens),
        output: outcome.output.as_deref().map(notify::summarize),
        routes,
    };
    let end = RunEnd {
        name: spec.name.clone(),
        slot,
        outcome,
        now,
        threshold: schedules.config.failures_before_pause,
        report,
    };
    Ok(schedules.host.store().finish_run(end).await?)
}
