//! What a caller asks ([`CallRequest`]) and gets back ([`CallOutcome`]).

use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::budget::ScopeId;
use crate::runtime::host_api::{LogRecord, ProgressSink};
use crate::runtime::net::HttpStats;
use crate::{BreakerState, ErrorClass, Fuel, Tokens, ToolName};

/// A call to make. Build with [`CallRequest::new`] and struct update syntax:
///
/// ```
/// # use cofferdam::{CallRequest, Fuel};
/// let request = CallRequest { fuel: Some(Fuel(1_000_000)), ..CallRequest::new("hello", "{}") };
/// ```
#[derive(Clone)]
pub struct CallRequest {
    /// Tool to call.
    pub tool: String,
    /// Input, as JSON text.
    pub input: String,
    /// Identifier of the call, stable across attempts; generated when `None`.
    pub call_id: Option<String>,
    /// Task the call belongs to, passed to the tool; also a budget scope.
    pub task_id: Option<String>,
    /// Agent making the call: a budget scope, and the idempotency scope
    /// when no tenant is given.
    pub agent: Option<String>,
    /// Tenant of the embedding service: the outermost budget scope and the
    /// idempotency scope.
    pub tenant: Option<String>,
    /// Idempotency key (1–255 bytes): the same key and input run once; a
    /// repeat gets the stored outcome.
    pub idempotency_key: Option<String>,
    /// Tokens this call may spend at most, across its attempts.
    pub max_tokens: Option<Tokens>,
    /// Fuel for this call; capped at the tool's limit.
    pub fuel: Option<Fuel>,
    /// Deadline for this call; capped at the tool's limit.
    pub timeout: Option<Duration>,
    /// Receives the tool's progress reports.
    pub progress: Option<ProgressSink>,
    /// Cancelling it stops the call wherever it is: waiting for a bulkhead
    /// slot, backing off, or running (the guest is stopped at its next
    /// yield). The call fails with `Cancelled`, or `UnknownOutcome` when a
    /// side-effecting tool was stopped mid-run.
    pub cancel: Option<CancellationToken>,
    /// The schedule this call is a run of, if any (a `schedule`-scoped
    /// state bucket is per schedule).
    pub schedule: Option<String>,
    /// The tools this call may run, its policy fallbacks included (`None`:
    /// any); a fallback it may not run is skipped. An MCP client's grant.
    pub allowed: Option<ToolFilter>,
}

/// Which tools a call may run ([`CallRequest::allowed`]).
pub type ToolFilter = std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>;

impl CallRequest {
    /// A request with only the tool and input set.
    pub fn new(tool: &str, input: impl Into<String>) -> Self {
        Self {
            tool: tool.to_owned(),
            input: input.into(),
            call_id: None,
            task_id: None,
            agent: None,
            tenant: None,
            idempotency_key: None,
            max_tokens: None,
            fuel: None,
            timeout: None,
            progress: None,
            cancel: None,
            schedule: None,
            allowed: None,
        }
    }
}

impl CallRequest {
    /// The capped-or-not budget scopes of this call, outermost first.
    pub(super) fn scopes(&self) -> Vec<ScopeId> {
        let mut scopes = Vec::new();
        if let Some(t) = &self.tenant {
            scopes.push(ScopeId::Tenant(t.clone()));
        }
        if let Some(a) = &self.agent {
            scopes.push(ScopeId::Agent(a.clone()));
        }
        if let Some(t) = &self.task_id {
            scopes.push(ScopeId::Task(t.clone()));
        }
        scopes
    }
}

impl std::fmt::Debug for CallRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallRequest")
            .field("tool", &self.tool)
            .field("call_id", &self.call_id)
            .field("task_id", &self.task_id)
            .field("agent", &self.agent)
            .field("tenant", &self.tenant)
            .field("idempotency_key", &self.idempotency_key)
            .field("max_tokens", &self.max_tokens)
            .field("fuel", &self.fuel)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Why a fallback answered a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FallbackUsed {
    /// The tool the caller asked for.
    pub asked: ToolName,
    /// The class it failed with.
    pub because: ErrorClass,
}

/// A successful call.
#[derive(Debug, Clone, Serialize)]
pub struct CallOutcome {
    /// The tool that ran.
    pub tool: ToolName,
    /// The call's identifier.
    pub call_id: String,
    /// The output, as JSON text (checked to be valid JSON).
    pub output: String,
    /// Fuel the call used, instantiation included.
    pub fuel_used: Fuel,
    /// Tokens the call costs ([`TokenPrice::charge`]).
    pub tokens: Tokens,
    /// Wall-clock time of the successful attempt.
    #[serde(rename = "duration_us", serialize_with = "crate::model::units::micros")]
    pub duration: Duration,
    /// Attempts made, this one included.
    pub attempts: u32,
    /// Class of each failed attempt before the one that succeeded.
    pub failed_attempts: Vec<ErrorClass>,
    /// The tool's breaker state after the call.
    pub breaker: BreakerState,
    /// Time spent queued for a slot and backing off between attempts.
    #[serde(rename = "waited_us", serialize_with = "crate::model::units::micros")]
    pub waited: Duration,
    /// Answered from the idempotency journal: nothing ran and nothing was charged.
    pub replayed: bool,
    /// Set when the asked tool failed and a fallback answered; `tool` is
    /// then the fallback.
    pub fallback_used: Option<FallbackUsed>,
    /// What the successful attempt's outbound HTTP did.
    pub http: HttpStats,
    /// What the tool logged through the host interface.
    pub logs: Vec<LogRecord>,
    /// Log records dropped past the limit.
    pub logs_dropped: u64,
    /// The tool's stdout (lossy UTF-8), up to the limit.
    pub stdout: String,
    /// Whether stdout was cut at the limit.
    pub stdout_truncated: bool,
    /// The tool's stderr (lossy UTF-8), up to the limit.
    pub stderr: String,
    /// Whether stderr was cut at the limit.
    pub stderr_truncated: bool,
}

impl CallOutcome {
    /// The output parsed as JSON.
    pub fn output_json(&self) -> serde_json::Value {
        // The host checked the output is JSON before returning it.
        serde_json::from_str(&self.output).unwrap_or(serde_json::Value::Null)
    }
}
