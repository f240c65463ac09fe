//! Durable tasks: ordered steps, each a keyed tool call (`TASK/step-N`), with
//! compensations, a pivot, fallbacks and escalation, stored in the journal.
//!
//! Running a task again (after a crash, or with [`Tasks::resume`]) replays
//! what finished: a step's call has an idempotency key, so a completed step
//! answers from the journal with no execution and no charge, and the task
//! continues at the first unfinished step. When a step fails for good, the
//! finished steps are compensated in reverse order, each compensation a
//! keyed call (`TASK/compensate-N`) under the tool's retry policy (a failed
//! compensation stops the walk: earlier steps wait until a resume); a step
//! past the pivot, a side-effecting step without compensation, a failed
//! compensation, an unknown outcome or an exhausted budget goes to the
//! escalation queue instead.
//!
//! Inputs are JSON templates: `"${steps.flight.output.id}"` is replaced by
//! that value (a whole-string reference keeps its JSON type; inside a longer
//! string it is interpolated). A compensation also sees `${input.…}` and
//! `${output.…}` of its own step, and every template sees `${task}`.
//!
//! It does not schedule tasks (see schedules) and does not run two steps of
//! one task at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::model::error::JournalError;
use crate::model::units::unix_millis;
use crate::orchestration::escalation::{
    EscalationKey, EscalationReason, NewEscalation, Resolution,
};
use crate::policy::tool::DEFAULT_FALLBACK_ON;
use crate::{CallError, CallRequest, Effect, ErrorClass, Host};

/// Longest task id: its journal keys (`ID/compensate-N`) stay within 255 bytes.
const MAX_TASK_ID: usize = 200;

pub use crate::model::task::{StepRecord, StepStatus, TaskRecord, TaskSpec, TaskState};

/// A task that cannot be run as asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The definition is invalid.
    #[error("task `{id}` is invalid: {reason}")]
    Invalid {
        /// The task.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A task file could not be read.
    #[error("cannot read task file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A task file could not be parsed.
    #[error("invalid task file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key.
        message: String,
    },
    /// A task with this id exists with another definition.
    #[error("task `{id}` already exists with a different definition; use a new id")]
    SpecMismatch {
        /// The task.
        id: String,
    },
    /// No task has this id.
    #[error("no task `{id}`")]
    NotFound {
        /// The id.
        id: String,
    },
    /// The task is running in this process already.
    #[error("task `{id}` is already running")]
    AlreadyRunning {
        /// The task.
        id: String,
    },
    /// A template refers to something that is not there.
    #[error("task `{id}`, step `{step}`: {reason}")]
    Template {
        /// The task.
        id: String,
        /// The step.
        step: String,
        /// What is missing.
        reason: String,
    },
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl TaskSpec {
    /// Reads a task from TOML, or JSON when the file ends in `.json`.
    pub fn from_file(path: &Path) -> Result<Self, TaskError> {
        let text = std::fs::read_to_string(path).map_err(|source| TaskError::Read {
            path: path.to_owned(),
            source,
        })?;
        let parsed = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            toml::from_str(&text).map_err(|e| e.to_string())
        };
        let spec: Self = parsed.map_err(|message| TaskError::Parse {
            path: path.to_owned(),
            message,
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks ids, names and that templates refer only to earlier steps.
    pub fn validate(&self) -> Result<(), TaskError> {
        let invalid = |reason: String| TaskError::Invalid {
            id: self.id.clone(),
            reason,
        };
        if self.id.is_empty() || self.id.len() > MAX_TASK_ID || self.id.contains('\u{1f}') {
            return Err(invalid(format!("the id must be 1 to {MAX_TASK_ID} bytes")));
        }
        if self.steps.is_empty() {
            return Err(invalid("it has no steps".into()));
        }
        let mut earlier: Vec<&str> = Vec::new();
        for step in &self.steps {
            if step.name.is_empty() || earlier.contains(&step.name.as_str()) {
                return Err(invalid(format!(
                    "step names must be unique and non-empty (`{}`)",
                    step.name
                )));
            }
            for reference in references(&step.input) {
                if let Some(rest) = reference.strip_prefix("steps.") {
                    let name = rest.split('.').next().unwrap_or("");
                    if !earlier.contains(&name) {
                        return Err(invalid(format!(
                            "step `{}` refers to `${{{reference}}}`, not an earlier step",
                            step.name
                        )));
                    }
                }
            }
            earlier.push(&step.name);
        }
        Ok(())
    }
}

/// The tasks of a host; from [`Host::tasks`].
#[derive(Clone)]
pub struct Tasks {
    pub(crate) host: Host,
    pub(crate) running: Arc<Mutex<HashMap<String, CancellationToken>>>,
}

impl Tasks {
    /// Runs a task to its end (completed, compensated, failed, escalated or
    /// cancelled) and returns its record. A known id with the same
    /// definition resumes; a finished task is returned as it is.
    pub async fn run(&self, spec: TaskSpec) -> Result<TaskRecord, TaskError> {
        let (record, _) = self.prepare(spec)?;
        self.drive(record).await
    }

    /// Starts a task in the background (on the current Tokio runtime) and
    /// returns its record at once, stored, so [`Tasks::status`] follows it
    /// from the first moment. A known id with the same definition resumes;
    /// a finished task is returned as it is, and one running in this
    /// process is refused ([`TaskError::AlreadyRunning`]).
    ///
    /// How the run ends is in its record; a run that cannot go on (its
    /// store failed) is logged.
    pub async fn start(&self, spec: TaskSpec) -> Result<TaskRecord, TaskError> {
        let (mut record, new) = self.prepare(spec)?;
        if record.state.is_final() {
            return Ok(record);
        }
        if self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&record.id)
        {
            return Err(TaskError::AlreadyRunning { id: record.id });
        }
        if new {
            self.save(&mut record).await?;
        }
        let (tasks, started) = (self.clone(), record.clone());
        tokio::spawn(async move {
            let id = started.id.clone();
            if let Err(e) = tasks.drive(started).await {
                tracing::warn!(task = %id, error = %e, "a background task stopped");
            }
        });
        Ok(record)
    }

    /// The stored record of `spec`'s task, or a new one (and whether it is
    /// new).
    fn prepare(&self, spec: TaskSpec) -> Result<(TaskRecord, bool), TaskError> {
        spec.validate()?;
        let record = match self.host.store().task(&spec.id)? {
            Some(record) if record.spec != spec => {
                return Err(TaskError::SpecMismatch { id: spec.id });
            }
            Some(record) => return Ok((record, false)),
            None => TaskRecord {
                v: 1,
                id: spec.id.clone(),
                steps: spec
                    .steps
                    .iter()
                    .map(|s| StepRecord {
                        name: s.name.clone(),
                        status: StepStatus::Pending,
                        tool: None,
                        fallback: false,
                        input: None,
                        output: None,
                        error: None,
                        class: None,
                    })
                    .collect(),
                spec,
                state: TaskState::Running,
                failed_step: None,
                compensating: false,
                escalations: Vec::new(),
                created_ms: unix_millis(),
                updated_ms: unix_millis(),
            },
        };
        Ok((record, true))
    }

    /// Resumes a stored task where it stopped.
    pub async fn resume(&self, id: &str) -> Result<TaskRecord, TaskError> {
        let record = self
            .host
            .store()
            .task(id)?
            .ok_or_else(|| TaskError::NotFound { id: id.to_owned() })?;
        self.drive(record).await
    }

    /// A task's stored state, with per-step progress (also while it runs).
    pub fn status(&self, id: &str) -> Result<TaskRecord, TaskError> {
        self.host
            .store()
            .task(id)?
            .ok_or_else(|| TaskError::NotFound { id: id.to_owned() })
    }

    /// Every stored task.
    pub fn list(&self) -> Result<Vec<TaskRecord>, TaskError> {
        Ok(self.host.store().tasks()?)
    }

    /// Cancels a task: a run in this process stops its current call (a
    /// side-effecting step stopped mid-run becomes an unknown outcome) and
    /// ends `cancelled`; a task not running here is marked `cancelled`, and a
    /// run in another process stops before its next step. Finished tasks
    /// are left alone.
    pub async fn cancel(&self, id: &str) -> Result<TaskRecord, TaskError> {
        let token = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        if let Some(token) = token {
            token.cancel();
            return self.status(id);
        }
        let mut record = self.status(id)?;
        if !record.state.is_final() {
            record.state = TaskState::Cancelled;
            self.save(&mut record).await?;
        }
        Ok(record)
    }

    async fn save(&self, record: &mut TaskRecord) -> Result<(), TaskError> {
        record.updated_ms = unix_millis();
        Ok(self.host.store().put_task(record.clone()).await?)
    }

    async fn drive(&self, mut record: TaskRecord) -> Result<TaskRecord, TaskError> {
        if record.state.is_final() {
            return Ok(record);
        }
        let cancel = CancellationToken::new();
        {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if running.contains_key(&record.id) {
                return Err(TaskError::AlreadyRunning { id: record.id });
            }
            running.insert(record.id.clone(), cancel.clone());
        }
        let result = match self.apply_resolutions(&mut record).await {
            Ok(()) if record.state.is_final() => Ok(()),
            Ok(()) => self.steps(&mut record, &cancel).await,
            Err(e) => Err(e),
        };
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&record.id);
        result.map(|()| record)
    }

    /// Applies what humans decided on this task's escalations: `abort` ends
    /// it `failed`; `compensate` or `mark-done` on a failed compensation
    /// counts that step as undone; `compensate` on an irreversible step
    /// (undone by hand) ends it `compensated`, `mark-done` there `failed`.
    /// `resume` changes nothing: the run goes on.
    async fn apply_resolutions(&self, record: &mut TaskRecord) -> Result<(), TaskError> {
        let mut changed = false;
        for id in record.escalations.clone() {
            let Some(escalation) = self.host.store().escalation(id)? else {
                continue;
            };
            let Some(resolved) = escalation.resolved else {
                continue;
            };
            let step = escalation.step.and_then(|s| usize::try_from(s).ok());
            let irreversible = escalation.reason == EscalationReason::IrreversibleAction;
            match resolved.resolution {
                Resolution::Abort => {
                    record.state = TaskState::Failed;
                    changed = true;
                    break;
                }
                Resolution::Compensate if irreversible => {
                    record.state = TaskState::Compensated;
                    changed = true;
                }
                Resolution::MarkDone { .. } if irreversible => {
                    record.state = TaskState::Failed;
                    changed = true;
                }
                Resolution::Compensate | Resolution::MarkDone { .. } => {
                    if let Some(step) = step.and_then(|s| record.steps.get_mut(s))
                        && step.status == StepStatus::CompensationFailed
                    {
                        step.status = StepStatus::Compensated;
                        changed = true;
                    }
                }
                _ => {}
            }
        }
        if changed {
            self.save(record).await?;
        }
        Ok(())
    }

    async fn steps(
        &self,
        record: &mut TaskRecord,
        cancel: &CancellationToken,
    ) -> Result<(), TaskError> {
        if let Some(failed) = record.failed_step
            && record.compensating
        {
            return self.compensate(record, failed, cancel).await;
        }
        record.state = TaskState::Running;
        self.save(record).await?;
        for n in 0..record.steps.len() {
            if record.steps[n].status == StepStatus::Done {
                continue;
            }
            // `cofferdam tasks cancel` from another process marks the record.
            let stored = self.host.store().task(&record.id)?;
            if cancel.is_cancelled()
                || stored.is_some_and(|stored| stored.state == TaskState::Cancelled)
            {
                record.state = TaskState::Cancelled;
                return self.save(record).await;
            }
            let spec = record.spec.steps[n].clone();
            let input = match self.render(record, n, &spec.input, None) {
                Ok(input) => input,
                Err(error) => {
                    // A template that cannot be filled never will be: the
                    // task ends here (nothing ran for this step).
                    record.steps[n].status = StepStatus::Failed;
                    record.steps[n].error = Some(error.to_string());
                    record.state = TaskState::Failed;
                    self.save(record).await?;
                    return Err(error);
                }
            };
            // The compensation is part of the stored spec: it is on record
            // before the step runs.
            record.steps[n].status = StepStatus::Running;
            record.steps[n].input = Some(input.clone());
            self.save(record).await?;

            let key = format!("{}/step-{n}", record.id);
            let tools = std::iter::once(&spec.tool).chain(&spec.fallbacks);
            let mut result = None;
            for (i, tool) in tools.enumerate() {
                let attempt = self.call(record, tool, &input, &key, cancel).await;
                let fall_back = match &attempt {
                    Err(e) => {
                        DEFAULT_FALLBACK_ON.contains(&e.class())
                            || DEFAULT_FALLBACK_ON.contains(&e.last_attempt_error().class())
                    }
                    Ok(_) => false,
                };
                result = Some((i > 0, attempt));
                if !fall_back || cancel.is_cancelled() {
                    break;
                }
            }
            let Some((fallback, result)) = result else {
                unreachable!("a step has a tool");
            };
            let step = &mut record.steps[n];
            match result {
                Ok(outcome) => {
                    step.status = StepStatus::Done;
                    step.tool = Some(outcome.tool.to_string());
                    step.fallback = fallback || outcome.fallback_used.is_some();
                    step.output = Some(outcome.output_json());
                    step.error = None;
                    step.class = None;
                    self.save(record).await?;
                }
                Err(error) => {
                    step.status = StepStatus::Failed;
                    step.error = Some(error.to_string());
                    step.class = Some(error.class());
                    record.failed_step = Some(n);
                    return self.failed(record, n, &error, cancel).await;
                }
            }
        }
        record.state = TaskState::Completed;
        record.failed_step = None;
        self.save(record).await
    }

    /// Decides what a failed step means for the task.
    async fn failed(
        &self,
        record: &mut TaskRecord,
        n: usize,
        error: &CallError,
        cancel: &CancellationToken,
    ) -> Result<(), TaskError> {
        let class = error.class();
        if cancel.is_cancelled() && class != ErrorClass::UnknownOutcome {
            record.state = TaskState::Cancelled;
            return self.save(record).await;
        }
        // A replayed error is settled (an operator aborted the key, or the
        // failure was stored): it is a failure of the work, not a question.
        let settled = matches!(error, CallError::Replayed { .. });
        let reason = match class {
            _ if settled => None,
            ErrorClass::UnknownOutcome => Some(EscalationReason::UnknownOutcome),
            ErrorClass::BudgetExhausted => Some(EscalationReason::BudgetReached),
            _ => None,
        };
        if let Some(reason) = reason {
            // Not a failure of the work: a human settles it, then resumes.
            let spec = &record.spec.steps[n];
            let key = (reason == EscalationReason::UnknownOutcome).then(|| EscalationKey {
                scope: self.scope(record),
                tool: error
                    .tool()
                    .map_or_else(|| spec.tool.clone(), ToString::to_string),
                key: format!("{}/step-{n}", record.id),
            });
            self.escalate(record, n, reason, key, error.to_string())
                .await?;
            record.state = TaskState::Escalated;
            return self.save(record).await;
        }
        self.compensate(record, n, cancel).await
    }

    /// Undoes the finished steps before `failed`, last first.
    async fn compensate(
        &self,
        record: &mut TaskRecord,
        failed: usize,
        cancel: &CancellationToken,
    ) -> Result<(), TaskError> {
        let failure = record.steps[failed].error.clone().unwrap_or_default();
        if let Some(pivot) = (0..failed)
            .find(|&m| record.spec.steps[m].pivot && record.steps[m].status == StepStatus::Done)
        {
            let error = format!(
                "step `{}` failed after the pivot `{}`: {failure}",
                record.spec.steps[failed].name, record.spec.steps[pivot].name
            );
            self.escalate(
                record,
                failed,
                EscalationReason::IrreversibleAction,
                None,
                error,
            )
            .await?;
            record.state = TaskState::Escalated;
            return self.save(record).await;
        }
        record.state = TaskState::Compensating;
        record.compensating = true;
        self.save(record).await?;
        let mut escalated = false;
        for m in (0..failed).rev() {
            if record.steps[m].status != StepStatus::Done
                && record.steps[m].status != StepStatus::CompensationFailed
            {
                continue;
            }
            let spec = record.spec.steps[m].clone();
            let Some(compensation) = &spec.compensate else {
                let tool = record.steps[m].tool.clone().unwrap_or(spec.tool.clone());
                let effect = self.host.tool(&tool).map(|t| t.effect);
                if effect != Some(Effect::Pure) && effect != Some(Effect::Idempotent) {
                    let error = format!(
                        "step `{}` ({tool}) cannot be undone: it has no compensation; `{}` failed: {failure}",
                        spec.name, record.spec.steps[failed].name
                    );
                    self.escalate(record, m, EscalationReason::IrreversibleAction, None, error)
                        .await?;
                    escalated = true;
                }
                continue;
            };
            let own = Some((
                record.steps[m].input.clone().unwrap_or(Value::Null),
                record.steps[m].output.clone().unwrap_or(Value::Null),
            ));
            let input = self.render(record, m, &compensation.input, own)?;
            let key = format!("{}/compensate-{m}", record.id);
            match self
                .call(record, &compensation.tool, &input, &key, cancel)
                .await
            {
                Ok(_) => {
                    record.steps[m].status = StepStatus::Compensated;
                    self.save(record).await?;
                }
                Err(error) => {
                    record.steps[m].status = StepStatus::CompensationFailed;
                    record.steps[m].error = Some(error.to_string());
                    record.steps[m].class = Some(error.class());
                    // An unknown compensation is the journal's escalation
                    // of its key; any other failure is the task's own.
                    let (reason, key) = if error.class() == ErrorClass::UnknownOutcome {
                        let key = EscalationKey {
                            scope: self.scope(record),
                            tool: compensation.tool.clone(),
                            key,
                        };
                        (EscalationReason::UnknownOutcome, Some(key))
                    } else {
                        (EscalationReason::CompensationFailed, None)
                    };
                    self.escalate(record, m, reason, key, error.to_string())
                        .await?;
                    escalated = true;
                    self.save(record).await?;
                    // Strict reverse order: earlier steps wait until this
                    // one is undone (a resume after the escalation goes on).
                    break;
                }
            }
        }
        let undone = record
            .steps
            .iter()
            .any(|s| s.status == StepStatus::Compensated);
        record.state = if escalated {
            TaskState::Escalated
        } else if undone {
            TaskState::Compensated
        } else {
            TaskState::Failed
        };
        self.save(record).await
    }

    async fn call(
        &self,
        record: &TaskRecord,
        tool: &str,
        input: &Value,
        key: &str,
        cancel: &CancellationToken,
    ) -> Result<crate::CallOutcome, CallError> {
        self.host
            .call(CallRequest {
                idempotency_key: Some(key.to_owned()),
                task_id: Some(record.id.clone()),
                agent: record.spec.agent.clone(),
                tenant: record.spec.tenant.clone(),
                schedule: record.spec.schedule.clone(),
                cancel: Some(cancel.clone()),
                ..CallRequest::new(tool, input.to_string())
            })
            .await
    }

    async fn escalate(
        &self,
        record: &mut TaskRecord,
        step: usize,
        reason: EscalationReason,
        key: Option<EscalationKey>,
        error: String,
    ) -> Result<(), TaskError> {
        let id = self
            .host
            .store()
            .escalate(NewEscalation {
                reason: Some(reason),
                tool: Some(record.spec.steps[step].tool.clone()),
                key,
                task: Some(record.id.clone()),
                step: Some(u32::try_from(step).unwrap_or(u32::MAX)),
                agent: record.spec.agent.clone(),
                call_id: None,
                input: record.steps[step].input.as_ref().map(Value::to_string),
                schedule: None,
                error,
            })
            .await?;
        if !record.escalations.contains(&id) {
            record.escalations.push(id);
        }
        Ok(())
    }

    /// The idempotency scope the host uses for this task's calls.
    fn scope(&self, record: &TaskRecord) -> String {
        record
            .spec
            .tenant
            .as_ref()
            .map(|t| format!("tenant:{t}"))
            .or_else(|| record.spec.agent.as_ref().map(|a| format!("agent:{a}")))
            .unwrap_or_default()
    }

    /// Fills a template from the task's finished steps (and, for a
    /// compensation, its own step's input and output).
    fn render(
        &self,
        record: &TaskRecord,
        step: usize,
        template: &Value,
        own: Option<(Value, Value)>,
    ) -> Result<Value, TaskError> {
        let mut steps = Map::new();
        for (spec, done) in record.spec.steps.iter().zip(&record.steps) {
            steps.insert(
                spec.name.clone(),
                serde_json::json!({ "input": done.input, "output": done.output }),
            );
        }
        let mut context = serde_json::json!({ "task": record.id, "steps": steps });
        if let Some((input, output)) = own {
            context["input"] = input;
            context["output"] = output;
        }
        fill(template, &context).map_err(|reason| TaskError::Template {
            id: record.id.clone(),
            step: record.spec.steps[step].name.clone(),
            reason,
        })
    }
}

/// Replaces `${path}` references in every string of `template`.
fn fill(template: &Value, context: &Value) -> Result<Value, String> {
    Ok(match template {
        Value::String(text) => {
            let refs = references_in(text);
            if refs.len() == 1 && text == &format!("${{{}}}", refs[0]) {
                lookup(context, refs[0])?.clone()
            } else {
                let mut out = text.clone();
                for reference in refs {
                    let value = lookup(context, reference)?;
                    let text = match value {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    out = out.replace(&format!("${{{reference}}}"), &text);
                }
                Value::String(out)
            }
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| fill(v, context))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), fill(v, context)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

fn lookup<'a>(context: &'a Value, path: &str) -> Result<&'a Value, String> {
    let mut value = context;
    for part in path.split('.') {
        value = match value {
            Value::Object(map) => map.get(part),
            Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        }
        .filter(|v| !v.is_null())
        .ok_or_else(|| format!("`${{{path}}}` is not set"))?;
    }
    Ok(value)
}

fn references_in(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        out.push(&after[..end]);
        rest = &after[end + 1..];
    }
    out
}

/// Every `${…}` reference in a template.
fn references(template: &Value) -> Vec<String> {
    match template {
        Value::String(text) => references_in(text).into_iter().map(str::to_owned).collect(),
        Value::Array(items) => items.iter().flat_map(references).collect(),
        Value::Object(map) => map.values().flat_map(references).collect(),
        _ => Vec::new(),
    }
}

impl Host {
    /// Durable tasks: run, resume, cancel and inspect multi-step work.
    pub fn tasks(&self) -> Tasks {
        Tasks {
            host: self.clone(),
            running: Arc::clone(self.tasks_running()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_keep_types_and_interpolate() {
        let context =
            json!({"task": "t1", "steps": {"flight": {"output": {"id": 7, "code": "LIS"}}}});
        let filled = fill(
            &json!({"id": "${steps.flight.output.id}", "note": "flight ${steps.flight.output.code} for ${task}", "n": 1}),
            &context,
        )
        .expect("fills");
        assert_eq!(
            filled,
            json!({"id": 7, "note": "flight LIS for t1", "n": 1})
        );
        let missing = fill(&json!("${steps.hotel.output.id}"), &context).expect_err("missing");
        assert_eq!(missing, "`${steps.hotel.output.id}` is not set");
    }

    #[test]
    fn specs_refer_only_to_earlier_steps() {
        let spec: TaskSpec = toml::from_str(
            "id = \"t\"\n[[steps]]\nname = \"a\"\ntool = \"x\"\ninput = { v = \"${steps.b.output}\" }\n\
             [[steps]]\nname = \"b\"\ntool = \"x\"\n",
        )
        .expect("parses");
        let error = spec.validate().expect_err("forward reference");
        assert!(error.to_string().contains("not an earlier step"), "{error}");
        let unknown = toml::from_str::<TaskSpec>("id = \"t\"\nstep = []\n").expect_err("typo");
        assert!(unknown.to_string().contains("step"), "{unknown}");
    }
}
