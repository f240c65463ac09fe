//! Durable tasks: their definition and their stored progress.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::error::ErrorClass;

/// A task: what to run, in order, and in whose name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Unique id; running a spec with a known id resumes that task.
    pub id: String,
    /// Agent the calls are made for (a budget scope and the idempotency scope).
    #[serde(default)]
    pub agent: Option<String>,
    /// Tenant (outermost budget scope; the idempotency scope when set).
    #[serde(default)]
    pub tenant: Option<String>,
    /// The schedule this task is a run of (set by the scheduler): its
    /// steps see the schedule's `schedule`-scoped state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The steps, run in order.
    pub steps: Vec<StepSpec>,
}

/// One step: a tool call and how to undo it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Name, unique in the task; later templates refer to it.
    pub name: String,
    /// Tool to call.
    pub tool: String,
    /// Input template.
    #[serde(default = "empty_object")]
    pub input: Value,
    /// How to undo the step if a later one fails for good.
    #[serde(default)]
    pub compensate: Option<CompensationSpec>,
    /// Point of no return: once it is done, a later failure escalates
    /// instead of compensating.
    #[serde(default)]
    pub pivot: bool,
    /// Tools tried in order (same input) when the tool fails in a class of
    /// the default fallback list (circuit-open, bulkhead-full, transient,
    /// rate-limited, deadline-exceeded).
    #[serde(default)]
    pub fallbacks: Vec<String>,
}

/// The call that undoes a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompensationSpec {
    /// Tool to call.
    pub tool: String,
    /// Input template; sees `${input.…}` and `${output.…}` of its step.
    #[serde(default = "empty_object")]
    pub input: Value,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskState {
    /// Steps are running (or the process running them stopped).
    Running,
    /// Every step is done.
    Completed,
    /// A step failed for good; finished steps are being undone.
    Compensating,
    /// A step failed for good and every finished step was undone.
    Compensated,
    /// A step failed for good and nothing needed undoing.
    Failed,
    /// A human must act; see the task's escalations. Resume after resolving.
    Escalated,
    /// Stopped by [`Tasks::cancel`]; resume to go on.
    Cancelled,
}

impl TaskState {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Compensating => "compensating",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
            Self::Escalated => "escalated",
            Self::Cancelled => "cancelled",
        }
    }

    pub(crate) fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Compensated | Self::Failed)
    }
}

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// Started; its call may have finished in the journal.
    Running,
    /// Finished with an output.
    Done,
    /// Failed.
    Failed,
    /// Finished, then undone.
    Compensated,
    /// Finished; undoing it failed (escalated).
    CompensationFailed,
}

/// One step's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's name.
    pub name: String,
    /// Where it stands.
    pub status: StepStatus,
    /// The tool that answered (a fallback's name when one did).
    pub tool: Option<String>,
    /// Whether a fallback answered.
    pub fallback: bool,
    /// The rendered input.
    pub input: Option<Value>,
    /// The output.
    pub output: Option<Value>,
    /// The last error, with its class.
    pub error: Option<String>,
    /// The last error's class.
    pub class: Option<ErrorClass>,
}

/// A task's durable state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Record encoding version.
    pub v: u32,
    /// The task id.
    pub id: String,
    /// What it runs.
    pub spec: TaskSpec,
    /// Where it stands.
    pub state: TaskState,
    /// Each step's progress, in order.
    pub steps: Vec<StepRecord>,
    /// The step that failed for good, if one did.
    pub failed_step: Option<usize>,
    /// Whether undoing the finished steps has begun (a resume continues it).
    #[serde(default)]
    pub compensating: bool,
    /// Escalations raised for it.
    pub escalations: Vec<u64>,
    /// When created (Unix ms).
    pub created_ms: u64,
    /// When last changed (Unix ms).
    pub updated_ms: u64,
}
