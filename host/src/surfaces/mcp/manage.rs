//! Management tools: an agent creates and follows its own background work
//! over the MCP connection it already has — schedules, tasks, escalations.
//!
//! They are offered only to a client whose grant names them
//! ([`Identity::grant`]), and they act as that client's agent: it owns what
//! it creates, sees and changes only what it owns, and can target only the
//! tools it may call. Every other rule is the library's, the same code the
//! CLI runs ([`crate::Schedules::create`] checks the minimum interval, the
//! owner's quota, the run budget against the system maximum, the timeout
//! and sensitive tools). A refused request is a tool error whose
//! `structuredContent.error` names the rule (`too-frequent`,
//! `quota-exceeded`, `not-yours`, …), so the model can tell the user why.
//!
//! Schedule names are one namespace for every owner: a name another agent
//! uses is refused as `name-taken` (which says only that the name is used).

use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::catalog::TOOLS;
pub(crate) use super::catalog::{definition, offered, offers};
use super::identity::Identity;
pub(crate) use crate::model::identity::is_reserved;
use crate::model::journal::HistoryQuery;
use crate::orchestration::schedule::ScheduleError;
use crate::orchestration::task::TaskError;
use crate::{
    CatchUp, Escalation, Host, Resolution, Schedule, ScheduleSpec, ScheduleTarget, TaskRecord,
    TaskSpec, TaskState, Tokens,
};

/// A management operation that was refused: over MCP a tool error, over
/// another API what that API makes of it. `rule` names what was broken
/// (`too-frequent`, `quota-exceeded`, `not-yours`, `not-granted`, …);
/// `class` is the error class a client acts on (`invalid-input`,
/// `store-unavailable`, `permanent`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} ({rule})")]
pub struct ManageError {
    class: &'static str,
    rule: &'static str,
    message: String,
}

impl ManageError {
    /// The rule that refused the operation.
    pub fn rule(&self) -> &'static str {
        self.rule
    }

    /// The error class.
    pub fn class(&self) -> &'static str {
        self.class
    }

    /// What went wrong, for a person.
    pub fn message(&self) -> &str {
        &self.message
    }
}

pub(crate) type Refused = ManageError;

/// Runs management operation `operation` (a management tool's name, such as
/// `schedule_create`) with `arguments` as `identity`: the same code and
/// rules as the MCP tools, for services that offer them over their own API.
/// An operation the identity's grant does not allow is refused as
/// `not-granted`.
pub async fn manage(
    host: &Host,
    identity: &Identity,
    operation: &str,
    arguments: JsonObject,
) -> Result<Value, ManageError> {
    if !TOOLS.iter().any(|t| t.name == operation) {
        return Err(refused(
            "unknown-operation",
            format!("no management operation `{operation}`"),
        ));
    }
    if !offers(identity, operation) {
        return Err(refused(
            "not-granted",
            format!("client `{}` may not use `{operation}`", identity.client),
        ));
    }
    Manager { host, identity }
        .dispatch(operation, arguments)
        .await
}

pub(crate) fn refused(rule: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        class: "invalid-input",
        rule,
        message: message.into(),
    }
}

impl From<ScheduleError> for Refused {
    fn from(e: ScheduleError) -> Self {
        let rule = match &e {
            ScheduleError::InvalidName { .. } => "invalid-name",
            ScheduleError::InvalidOwner { .. } => "invalid-owner",
            ScheduleError::Cron { .. } => "invalid-cron",
            ScheduleError::Zone { .. } => "unknown-time-zone",
            ScheduleError::TooFrequent { .. } => "too-frequent",
            ScheduleError::QuotaExceeded { .. } => "quota-exceeded",
            ScheduleError::BudgetTooHigh { .. } => "budget-too-high",
            ScheduleError::BadTimeout { .. } => "bad-timeout",
            ScheduleError::UnknownTool { .. } => "unknown-tool",
            ScheduleError::SensitiveTool { .. } => "sensitive-tool",
            ScheduleError::Task { .. } => "invalid-task",
            ScheduleError::Exists { .. } => "exists",
            ScheduleError::NotFound { .. } => "not-found",
            ScheduleError::Price { .. } => "price",
            ScheduleError::UnknownSink { .. } => "unknown-sink",
            ScheduleError::Journal(e) => return store_failure(e.to_string(), e.is_unavailable()),
        };
        refused(rule, e.to_string())
    }
}

impl From<TaskError> for Refused {
    fn from(e: TaskError) -> Self {
        let rule = match &e {
            TaskError::Invalid { .. } | TaskError::Template { .. } => "invalid-task",
            TaskError::SpecMismatch { .. } => "exists",
            TaskError::NotFound { .. } => "not-found",
            TaskError::AlreadyRunning { .. } => "already-running",
            TaskError::Journal(e) => return store_failure(e.to_string(), e.is_unavailable()),
            _ => "invalid-task",
        };
        refused(rule, e.to_string())
    }
}

impl From<crate::EscalationError> for Refused {
    fn from(e: crate::EscalationError) -> Self {
        use crate::EscalationError as E;
        let rule = match &e {
            E::NotFound { .. } => "not-found",
            E::AlreadyResolved { .. } => "already-resolved",
            E::BadOutput { .. } => "invalid-output",
            E::Journal(journal) => {
                return store_failure(e.to_string(), journal.is_unavailable());
            }
            _ => "invalid-escalation",
        };
        refused(rule, e.to_string())
    }
}

impl From<crate::JournalError> for Refused {
    fn from(e: crate::JournalError) -> Self {
        store_failure(e.to_string(), e.is_unavailable())
    }
}

fn store_failure(message: String, unavailable: bool) -> Refused {
    Refused {
        class: if unavailable {
            "store-unavailable"
        } else {
            "permanent"
        },
        rule: "store",
        message,
    }
}

/// Tasks one agent may have running at once through `task_start`.
const MAX_RUNNING_TASKS: usize = 16;

/// Steps of a task started through `task_start`, at most.
const MAX_TASK_STEPS: usize = 64;

/// Reads a tool's arguments; a missing or unknown field names itself.
fn args<T: DeserializeOwned>(tool: &str, arguments: JsonObject) -> Result<T, Refused> {
    serde_json::from_value(Value::Object(arguments))
        .map_err(|e| refused("invalid-arguments", format!("{tool}: {e}")))
}

/// Runs management tool `name` as `identity` (which [`offers`] it).
pub(crate) async fn call(
    host: &Host,
    identity: &Identity,
    name: &str,
    arguments: JsonObject,
) -> CallToolResult {
    let manager = Manager { host, identity };
    match manager.dispatch(name, arguments).await {
        Ok(value) => {
            let mut result = CallToolResult::success(vec![ContentBlock::text(value.to_string())]);
            result.structured_content = Some(value);
            result
        }
        Err(refusal) => {
            let mut result = CallToolResult::error(vec![ContentBlock::text(format!(
                "{} ({})",
                refusal.message, refusal.rule
            ))]);
            result.structured_content = Some(json!({
                "error": {
                    "class": refusal.class,
                    "rule": refusal.rule,
                    "message": refusal.message,
                }
            }));
            result
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameArgs {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseArgs {
    name: String,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdArgs {
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EscalationIdArgs {
    id: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EscalationListArgs {
    #[serde(default)]
    include_resolved: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveArgs {
    id: u64,
    resolution: String,
    #[serde(default)]
    output: Option<Value>,
    #[serde(default)]
    note: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateArgs {
    name: String,
    cron: String,
    #[serde(default = "utc")]
    timezone: String,
    #[serde(default)]
    tool: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    task: Option<TaskArgs>,
    #[serde(default)]
    budget_tokens: Option<u64>,
    #[serde(default)]
    max_cost_per_run: Option<crate::Money>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    catch_up: CatchUp,
    #[serde(default)]
    notify: Vec<String>,
}

fn utc() -> String {
    "UTC".to_owned()
}

/// A task as an agent gives it: no agent or tenant (they are the caller's).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskArgs {
    /// Required by `task_start`; a schedule's task is named after it.
    #[serde(default)]
    id: String,
    steps: Vec<crate::model::task::StepSpec>,
}

pub(crate) struct Manager<'a> {
    host: &'a Host,
    identity: &'a Identity,
}

impl<'a> Manager<'a> {
    pub(crate) fn new(host: &'a Host, identity: &'a Identity) -> Self {
        Self { host, identity }
    }

    async fn dispatch(&self, name: &str, arguments: JsonObject) -> Result<Value, Refused> {
        match name {
            "schedule_create" => self.schedule_create(args(name, arguments)?).await,
            "schedule_list" => {
                args::<EmptyArgs>(name, arguments)?;
                self.schedule_list()
            }
            "schedule_show" => {
                let NameArgs { name } = args(name, arguments)?;
                Ok(schedule_view(&self.own_schedule(&name)?))
            }
            "schedule_pause" => {
                let PauseArgs { name, reason } = args(name, arguments)?;
                self.own_schedule(&name)?;
                let reason = if reason.is_empty() {
                    format!("paused by agent {}", self.identity.agent)
                } else {
                    reason
                };
                let paused = self.host.schedules().pause(&name, &reason).await?;
                Ok(schedule_view(&paused))
            }
            "schedule_resume" => {
                let NameArgs { name } = args(name, arguments)?;
                let schedule = self.own_schedule(&name)?;
                // Grants may have narrowed since it was made.
                self.may_target_schedule(&schedule.spec.target)?;
                Ok(schedule_view(&self.host.schedules().resume(&name).await?))
            }
            "schedule_delete" => {
                let NameArgs { name } = args(name, arguments)?;
                match self.own_schedule(&name) {
                    Ok(_) => {}
                    Err(r) if r.rule == "not-found" => {
                        return Ok(json!({"name": name, "deleted": false}));
                    }
                    Err(r) => return Err(r),
                }
                let deleted = self.host.schedules().delete(&name).await?;
                Ok(json!({"name": name, "deleted": deleted}))
            }
            "schedule_history" => {
                let NameArgs { name } = args(name, arguments)?;
                self.schedule_history(&name)
            }
            "task_start" => {
                let task: TaskArgs = args(name, arguments)?;
                self.task_start(task).await
            }
            "task_status" => {
                let IdArgs { id } = args(name, arguments)?;
                let record = self.own_task(&id)?;
                self.task_view(&record, true)
            }
            "task_cancel" => {
                let IdArgs { id } = args(name, arguments)?;
                self.own_task(&id)?;
                let record = self.host.tasks().cancel(&id).await?;
                self.task_view(&record, false)
            }
            "task_list" => {
                args::<EmptyArgs>(name, arguments)?;
                let tasks = self
                    .host
                    .tasks()
                    .list()?
                    .into_iter()
                    .filter(|t| self.owns_task(t))
                    .map(|t| self.task_view(&t, false))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(json!({ "tasks": tasks }))
            }
            "escalation_list" => {
                let EscalationListArgs { include_resolved } = args(name, arguments)?;
                Ok(json!({ "escalations": self.escalations(include_resolved)? }))
            }
            "escalation_show" => {
                let EscalationIdArgs { id } = args(name, arguments)?;
                Ok(json!(self.own_escalation(id)?))
            }
            "escalation_resolve" => {
                let resolve: ResolveArgs = args(name, arguments)?;
                let escalation = self.own_escalation(resolve.id)?;
                // `resume` may run the tool again: only one the caller may call.
                if let Some(tool) = &escalation.tool {
                    self.may_target(tool)?;
                }
                let resolution = match resolve.resolution.as_str() {
                    "resume" => Resolution::Resume,
                    "mark-done" => Resolution::MarkDone {
                        output: resolve.output.map(|o| o.to_string()),
                    },
                    "compensate" => Resolution::Compensate,
                    "abort" => Resolution::Abort,
                    other => {
                        return Err(refused(
                            "invalid-arguments",
                            format!(
                                "escalation_resolve: unknown resolution `{other}` (use resume, mark-done, compensate or abort)"
                            ),
                        ));
                    }
                };
                let note = if resolve.note.is_empty() {
                    format!("resolved by {} over MCP", self.identity.client)
                } else {
                    resolve.note
                };
                let resolved = self
                    .host
                    .escalations()
                    .resolve(resolve.id, resolution, &note)
                    .await?;
                Ok(json!(resolved))
            }
            other => Err(refused(
                "unknown-tool",
                format!("no management tool `{other}`"),
            )),
        }
    }

    pub(crate) fn agent(&self) -> &str {
        &self.identity.agent
    }

    pub(crate) fn schedule_list(&self) -> Result<Value, Refused> {
        let schedules = self
            .host
            .schedules()
            .list(Some(self.agent()))?
            .iter()
            .map(schedule_view)
            .collect::<Vec<_>>();
        Ok(json!({ "schedules": schedules }))
    }

    pub(crate) fn schedule_history(&self, name: &str) -> Result<Value, Refused> {
        let schedule = self.own_schedule(name)?;
        let schedules = self.host.schedules();
        let runs = schedules.history(name)?;
        let total: u64 = runs.iter().map(|r| r.tokens.0).sum();
        let costs: Vec<Option<crate::Money>> = runs
            .iter()
            .map(|run| schedules.run_cost(&schedule, run))
            .collect();
        let total_cost = self.host.prices().sum(costs.iter().flatten().cloned());
        let runs: Vec<Value> = runs
            .iter()
            .zip(&costs)
            .map(|(run, cost)| {
                let mut value = json!(run);
                value["cost"] = json!(cost);
                value
            })
            .collect();
        Ok(json!({
            "name": name,
            "runs": runs,
            "total_tokens": total,
            "total_cost": total_cost,
        }))
    }

    pub(crate) fn escalations(&self, include_resolved: bool) -> Result<Vec<Escalation>, Refused> {
        Ok(self
            .host
            .escalations()
            .list(include_resolved)?
            .into_iter()
            .filter(|e| self.owns_escalation(e))
            .collect())
    }

    /// The caller's schedule `name`: `not-found`, or `not-yours` when it
    /// belongs to another agent.
    pub(crate) fn own_schedule(&self, name: &str) -> Result<Schedule, Refused> {
        let schedule = self.host.schedules().get(name)?;
        if schedule.spec.owner != self.agent() {
            return Err(refused(
                "not-yours",
                format!("schedule `{name}` belongs to another agent"),
            ));
        }
        Ok(schedule)
    }

    /// Refuses a target tool the caller may not call.
    fn may_target(&self, tool: &str) -> Result<(), Refused> {
        if self.identity.grant.may_call(tool) {
            Ok(())
        } else {
            Err(refused(
                "tool-not-allowed",
                format!(
                    "client `{}` may not call tool `{tool}`",
                    self.identity.client
                ),
            ))
        }
    }

    fn may_target_schedule(&self, target: &ScheduleTarget) -> Result<(), Refused> {
        match target {
            ScheduleTarget::Tool { tool, .. } => self.may_target(tool),
            ScheduleTarget::Task { task } => self.may_run_task(task),
        }
    }

    fn may_run_task(&self, task: &TaskSpec) -> Result<(), Refused> {
        for step in &task.steps {
            self.may_target(&step.tool)?;
            for tool in step
                .fallbacks
                .iter()
                .chain(step.compensate.as_ref().map(|c| &c.tool))
            {
                self.may_target(tool)?;
            }
        }
        Ok(())
    }

    fn task_spec(&self, task: TaskArgs) -> TaskSpec {
        TaskSpec {
            id: task.id,
            agent: Some(self.identity.agent.clone()),
            tenant: self.identity.tenant.clone(),
            schedule: None,
            steps: task.steps,
        }
    }

    async fn schedule_create(&self, create: CreateArgs) -> Result<Value, Refused> {
        let target = match (create.tool, create.task) {
            (Some(tool), None) => {
                self.may_target(&tool)?;
                ScheduleTarget::Tool {
                    tool,
                    input: create.input.unwrap_or_else(|| json!({})),
                }
            }
            (None, Some(task)) if create.input.is_none() => {
                // Runs are named after the schedule (names are unique), so
                // two owners' runs never share a task id or budget scope.
                let task = self.task_spec(TaskArgs {
                    id: create.name.clone(),
                    ..task
                });
                self.may_run_task(&task)?;
                ScheduleTarget::Task { task }
            }
            _ => {
                return Err(refused(
                    "invalid-arguments",
                    "schedule_create: give either `tool` (with `input`) or `task`",
                ));
            }
        };
        match self.host.schedules().get(&create.name) {
            Ok(existing) if existing.spec.owner != self.agent() => {
                return Err(refused(
                    "name-taken",
                    format!(
                        "schedule name `{}` is taken; choose another name",
                        create.name
                    ),
                ));
            }
            Ok(_) | Err(ScheduleError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let spec = ScheduleSpec {
            name: create.name,
            owner: self.identity.agent.clone(),
            tenant: self.identity.tenant.clone(),
            cron: create.cron,
            zone: create.timezone,
            target,
            budget: create.budget_tokens.map(Tokens),
            max_cost_per_run: create.max_cost_per_run,
            timeout_ms: create.timeout_ms,
            catch_up: create.catch_up,
            notify: create.notify,
        };
        let schedule = self.host.schedules().create(spec).await?;
        Ok(schedule_view(&schedule))
    }

    pub(crate) fn owns_task(&self, record: &TaskRecord) -> bool {
        record.spec.agent.as_deref() == Some(self.agent())
    }

    pub(crate) fn own_task(&self, id: &str) -> Result<TaskRecord, Refused> {
        let record = self.host.tasks().status(id)?;
        if !self.owns_task(&record) {
            return Err(refused(
                "not-yours",
                format!("task `{id}` belongs to another agent"),
            ));
        }
        Ok(record)
    }

    async fn task_start(&self, task: TaskArgs) -> Result<Value, Refused> {
        if task.steps.len() > MAX_TASK_STEPS {
            return Err(refused(
                "too-many-steps",
                format!(
                    "a task started over MCP has at most {MAX_TASK_STEPS} steps, not {}",
                    task.steps.len()
                ),
            ));
        }
        let running = self
            .host
            .tasks()
            .list()?
            .iter()
            .filter(|t| {
                self.owns_task(t) && matches!(t.state, TaskState::Running | TaskState::Compensating)
            })
            .count();
        if running >= MAX_RUNNING_TASKS {
            return Err(refused(
                "quota-exceeded",
                format!(
                    "agent `{}` has {running} tasks running, the most allowed; wait for one or cancel one",
                    self.agent()
                ),
            ));
        }
        if task.id.contains('/') {
            return Err(refused(
                "invalid-task",
                "a task id may not contain `/` (AGENT/ID names a caller's own task scope)",
            ));
        }
        let spec = self.task_spec(task);
        self.may_run_task(&spec)?;
        match self.host.tasks().status(&spec.id) {
            Ok(existing) if !self.owns_task(&existing) => {
                return Err(refused(
                    "not-yours",
                    format!("task `{}` belongs to another agent", spec.id),
                ));
            }
            Ok(_) | Err(TaskError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let record = self.host.tasks().start(spec).await?;
        self.task_view(&record, false)
    }

    /// A task as an agent follows it; with `cost`, the tokens its attempts
    /// spent so far (from the audit history).
    pub(crate) fn task_view(&self, record: &TaskRecord, cost: bool) -> Result<Value, Refused> {
        use crate::model::task::StepStatus;
        let done = record
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Done)
            .count();
        let current = (record.state == TaskState::Running)
            .then(|| {
                record
                    .steps
                    .iter()
                    .find(|s| s.status != StepStatus::Done)
                    .map(|s| s.name.clone())
            })
            .flatten();
        let mut view = json!({
            "id": record.id,
            "state": record.state.as_str(),
            "current_step": current,
            "steps_done": done,
            "steps_total": record.steps.len(),
            "steps": record.steps.iter().map(|s| json!({
                "name": s.name,
                "status": s.status,
                "tool": s.tool,
                "error": s.error,
            })).collect::<Vec<_>>(),
            "escalations": record.escalations,
        });
        if cost {
            let attempts = self.host.history(&HistoryQuery {
                task: Some(record.id.clone()),
                limit: Some(usize::MAX),
                ..HistoryQuery::default()
            })?;
            view["tokens_spent"] = json!(attempts.iter().map(|a| a.tokens).sum::<u64>());
        }
        Ok(view)
    }

    fn owns_escalation(&self, escalation: &Escalation) -> bool {
        escalation.agent.as_deref() == Some(self.agent())
    }

    pub(crate) fn own_escalation(&self, id: u64) -> Result<Escalation, Refused> {
        let escalation = self.host.escalations().get(id)?;
        if !self.owns_escalation(&escalation) {
            return Err(refused(
                "not-yours",
                format!("escalation #{id} belongs to another agent"),
            ));
        }
        Ok(escalation)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyArgs {}

/// A schedule as an agent reads it.
pub(crate) fn schedule_view(schedule: &Schedule) -> Value {
    let spec = &schedule.spec;
    json!({
        "name": spec.name,
        "owner": spec.owner,
        "cron": spec.cron,
        "timezone": spec.zone,
        "target": spec.target,
        "budget_tokens": spec.budget.map(|t| t.0),
        "max_cost_per_run": spec.max_cost_per_run,
        "timeout_ms": spec.timeout_ms,
        "catch_up": spec.catch_up.as_str(),
        "notify": spec.notify,
        "status": schedule.status,
        "next_run": schedule.next_run,
        "last_slot": schedule.last_slot,
        "runs": schedule.runs,
        "failures": schedule.failures,
        "total_tokens": schedule.total_tokens.0,
    })
}
