//! Escalations: what needs a human, with its context and resolution.

use serde::{Deserialize, Serialize};

use crate::model::error::JournalError;

/// Why a human is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum EscalationReason {
    /// A step failed every attempt its retry policy allowed.
    MaxRetriesExceeded,
    /// A side-effecting call may or may not have acted.
    UnknownOutcome,
    /// Undoing a finished step failed.
    CompensationFailed,
    /// A budget scope cannot pay for what remains.
    BudgetReached,
    /// The work asks for a person (a sensitive tool, a policy).
    RequiresHuman,
    /// A failure after a step that cannot be undone (no compensation, or
    /// past the pivot).
    IrreversibleAction,
}

impl EscalationReason {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxRetriesExceeded => "max-retries-exceeded",
            Self::UnknownOutcome => "unknown-outcome",
            Self::CompensationFailed => "compensation-failed",
            Self::BudgetReached => "budget-reached",
            Self::RequiresHuman => "requires-human",
            Self::IrreversibleAction => "irreversible-action",
        }
    }
}

/// What a human decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "resolution", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Resolution {
    /// Go on: the work did not happen (or may run again); an unknown key is
    /// freed so the next call with it runs.
    Resume,
    /// The work happened; an unknown key completes with `output` (JSON,
    /// `null` when not given), which later calls replay.
    MarkDone {
        /// The output to record.
        output: Option<String>,
    },
    /// The work was undone by hand; an unknown key ends in a final error.
    Compensate,
    /// Give up; an unknown key ends in a final error.
    Abort,
}

impl Resolution {
    /// The kebab-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Resume => "resume",
            Self::MarkDone { .. } => "mark-done",
            Self::Compensate => "compensate",
            Self::Abort => "abort",
        }
    }
}

/// The idempotency key an escalation is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationKey {
    /// Idempotency scope (`tenant:…`, `agent:…` or empty).
    pub scope: String,
    /// The tool.
    pub tool: String,
    /// The caller's key.
    pub key: String,
}

/// What to escalate: the reason and the context a human needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEscalation {
    /// Why (required; `None` is refused by [`Escalations::raise`]).
    pub reason: Option<EscalationReason>,
    /// The tool involved.
    pub tool: Option<String>,
    /// The idempotency key involved; at most one open escalation per key.
    pub key: Option<EscalationKey>,
    /// The task, and the step within it.
    pub task: Option<String>,
    /// Step number within the task.
    pub step: Option<u32>,
    /// The agent that made the call.
    pub agent: Option<String>,
    /// The call id.
    pub call_id: Option<String>,
    /// The input (JSON).
    pub input: Option<String>,
    /// The schedule whose background run raised it; at most one open
    /// escalation per schedule and reason.
    #[serde(default)]
    pub schedule: Option<String>,
    /// The last error, or what needs deciding.
    pub error: String,
}

/// One escalation record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    /// Record encoding version.
    pub v: u32,
    /// Its number, increasing.
    pub id: u64,
    /// Why.
    pub reason: EscalationReason,
    /// The tool involved.
    pub tool: Option<String>,
    /// The idempotency key involved.
    pub key: Option<EscalationKey>,
    /// The task.
    pub task: Option<String>,
    /// The step within the task.
    pub step: Option<u32>,
    /// The agent.
    pub agent: Option<String>,
    /// The call id.
    pub call_id: Option<String>,
    /// The input (JSON).
    pub input: Option<String>,
    /// The schedule whose background run raised it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The last error.
    pub error: String,
    /// When raised (Unix ms).
    pub created_ms: u64,
    /// How it was resolved, once it is.
    pub resolved: Option<Resolved>,
}

/// A resolution and when it was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// What was decided.
    #[serde(flatten)]
    pub resolution: Resolution,
    /// Who decided and why, in their words.
    pub note: String,
    /// When (Unix ms).
    pub resolved_ms: u64,
}

/// A resolution that cannot be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EscalationError {
    /// No escalation has that id.
    #[error("no escalation #{id}")]
    NotFound {
        /// The id asked for.
        id: u64,
    },
    /// It was resolved before.
    #[error("escalation #{id} was already resolved ({resolution})")]
    AlreadyResolved {
        /// The id.
        id: u64,
        /// The earlier resolution.
        resolution: &'static str,
    },
    /// `mark-done` output is not JSON.
    #[error("output for escalation #{id} is not JSON: {reason}")]
    BadOutput {
        /// The id.
        id: u64,
        /// The parser's message.
        reason: String,
    },
    /// A raised escalation has no reason.
    #[error("an escalation needs a reason")]
    NoReason,
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
}
