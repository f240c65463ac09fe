//! The call pipeline, as stages with typed hand-offs:
//!
//! 1. **plan** ([`CallPlan`]): the tool, the call id, the narrowed limits,
//!    the budget scopes and, for a keyed call, its journal key, computed once;
//! 2. **journal** (`keyed.rs`): a keyed call claims its key, or replays;
//! 3. **admit** (`attempts.rs`): breaker, then a bulkhead slot;
//! 4. per attempt: **reserve** (`budget.rs`) what the tightest scope can pay
//!    for, **execute** (`execute.rs`) in a fresh instance with that much
//!    fuel, **settle** (`settle.rs`) the charge and audit the attempt,
//!    **decide** (`attempts.rs`) from the error-class table whether to retry;
//! 5. the journal stage stores the outcome; the **fallback** stage (here)
//!    tries the policy's fallbacks when the call failed in a class it names.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tracing::Instrument as _;

use super::{Host, LoadedTool, new_call_id};
use crate::model::budget::ScopeId;
use crate::model::journal::{Fingerprint, JournalKey};
use crate::{CallError, CallOutcome, CallRequest, FallbackUsed, Limits, MAX_IDEMPOTENCY_KEY_LEN};

mod attempts;
mod budget;
mod execute;
mod keyed;
mod settle;

/// What a call will do, fixed before its first stage runs.
struct CallPlan<'a> {
    tool: &'a Arc<LoadedTool>,
    request: &'a CallRequest,
    /// The call's id, the same for every attempt, replay and escalation;
    /// made when first needed (a call refused at admission needs none).
    call_id: OnceLock<String>,
    /// A keyed call's journal key: it runs at most once.
    key: Option<JournalKey>,
    /// A keyed call's input fingerprint, until the journal stage takes it.
    fingerprint: Option<Fingerprint>,
    /// The tool's limits narrowed by the request's.
    limits: Limits,
    /// The budget scopes the call is charged to, outermost first.
    scopes: Vec<ScopeId>,
    /// Tokens the whole call may spend (the request's and the policy's cap).
    call_cap: Option<u64>,
}

/// Whether a call's input still has to be checked to be JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    /// Text from the caller: checked before anything runs.
    Unchecked,
    /// Serialized by the host's own surface from a parsed value.
    Json,
}

impl<'a> CallPlan<'a> {
    /// Checks the input and the key, and fixes what every stage reads.
    fn new(
        tool: &'a Arc<LoadedTool>,
        request: &'a CallRequest,
        input: Input,
    ) -> Result<Self, CallError> {
        let name = &tool.description.name;
        let invalid = |e: serde_json::Error| CallError::InvalidInput {
            tool: name.clone(),
            reason: e.to_string(),
        };
        // The input is parsed once: a keyed call's fingerprint is its
        // canonical form, any other call's only needs to be JSON.
        let fingerprint = match &request.idempotency_key {
            Some(_) => {
                let value: serde_json::Value =
                    serde_json::from_str(&request.input).map_err(invalid)?;
                Some(keyed::fingerprint(
                    &tool.description.digest,
                    value.to_string(),
                ))
            }
            None => {
                if input == Input::Unchecked {
                    serde_json::from_str::<serde::de::IgnoredAny>(&request.input)
                        .map_err(invalid)?;
                }
                None
            }
        };
        let key = match &request.idempotency_key {
            Some(key) if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN => {
                return Err(CallError::InvalidKey {
                    tool: name.clone(),
                    len: key.len(),
                });
            }
            Some(key) => Some(JournalKey {
                scope: request
                    .tenant
                    .as_ref()
                    .map(|t| format!("tenant:{t}"))
                    .or_else(|| request.agent.as_ref().map(|a| format!("agent:{a}")))
                    .unwrap_or_default(),
                tool: name.to_string(),
                key: key.clone(),
            }),
            None => None,
        };
        let mut limits = tool.limits;
        if let Some(fuel) = request.fuel {
            limits.fuel = limits.fuel.min(fuel);
        }
        if let Some(timeout) = request.timeout {
            limits.timeout = limits.timeout.min(timeout);
        }
        let call_cap = match (request.max_tokens, tool.description.max_tokens_per_call) {
            (Some(asked), Some(cap)) => Some(asked.0.min(cap.0)),
            (asked, cap) => asked.or(cap).map(|t| t.0),
        };
        Ok(Self {
            tool,
            request,
            call_id: OnceLock::new(),
            key,
            fingerprint,
            limits,
            scopes: request.scopes(),
            call_cap,
        })
    }
}

impl CallPlan<'_> {
    /// The call's id: the request's, or a new one (recorded on the call's span).
    fn call_id(&self) -> &str {
        self.call_id.get_or_init(|| {
            let id = self.request.call_id.clone().unwrap_or_else(new_call_id);
            tracing::Span::current().record("call_id", id.as_str());
            id
        })
    }
}

impl Host {
    /// Calls a tool. With an idempotency key, the journal first decides
    /// whether the call runs at all (a completed key replays its stored
    /// outcome, with no execution and no charge). Then the resilience
    /// pipeline: circuit breaker, bulkhead, and up to `retry.max_attempts`
    /// attempts, each reserving what the call's budget scopes can pay for and
    /// running in a fresh sandboxed instance with exactly that much fuel.
    /// Which failures are retried and which the breaker counts is fixed by
    /// the error-class table. Every attempt is recorded in the audit history.
    pub async fn call(&self, request: CallRequest) -> Result<CallOutcome, CallError> {
        self.call_checked(request, Input::Unchecked).await
    }

    /// [`Host::call`] for an input the caller built from a parsed JSON
    /// value (the MCP surface): it is not checked a second time.
    pub(crate) async fn call_with_json_input(
        &self,
        request: CallRequest,
    ) -> Result<CallOutcome, CallError> {
        self.call_checked(request, Input::Json).await
    }

    async fn call_checked(
        &self,
        request: CallRequest,
        input: Input,
    ) -> Result<CallOutcome, CallError> {
        let started = Instant::now();
        let span = tracing::info_span!(
            "call",
            tool = %request.tool,
            call_id = request.call_id.as_deref(),
            task = request.task_id.as_deref(),
            agent = request.agent.as_deref(),
            attempts = tracing::field::Empty,
            fuel = tracing::field::Empty,
            tokens = tracing::field::Empty,
            class = tracing::field::Empty,
            replayed = tracing::field::Empty,
        );
        let result = self
            .call_with_fallbacks(&request, input, started)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(outcome) => {
                span.record("replayed", outcome.replayed);
                span.record("class", "ok");
            }
            Err(error) => {
                span.record("class", error.class().as_str());
            }
        }
        result
    }

    /// The fallback stage: when the asked tool fails in a class its policy
    /// names, its fallbacks are tried in order with the same request.
    async fn call_with_fallbacks(
        &self,
        request: &CallRequest,
        input: Input,
        started: Instant,
    ) -> Result<CallOutcome, CallError> {
        let tool = self
            .find(&request.tool)
            .ok_or_else(|| CallError::UnknownTool {
                tool: request.tool.clone(),
            })?;
        let result = self.call_tool(&tool, request, input).await;
        tool.metrics.record(&result, started.elapsed());
        let error = match result {
            Ok(outcome) => return Ok(outcome),
            Err(error) => error,
        };
        let class = error.last_attempt_error().class();
        let falls_back = tool.description.fallback_on.contains(&error.class())
            || tool.description.fallback_on.contains(&class);
        if tool.description.fallbacks.is_empty() || !falls_back {
            return Err(error);
        }
        for fallback in &tool.description.fallbacks {
            if let Some(allowed) = &request.allowed
                && !allowed(fallback.as_str())
            {
                tracing::debug!(tool = %tool.description.name, %fallback, "fallback not allowed to this caller; skipped");
                continue;
            }
            let Some(fallback_tool) = self.find(fallback.as_str()) else {
                tracing::warn!(tool = %tool.description.name, %fallback, "fallback tool is not loaded; skipped");
                continue;
            };
            let started = Instant::now();
            let attempt = CallRequest {
                tool: fallback.to_string(),
                ..request.clone()
            };
            let result = self.call_tool(&fallback_tool, &attempt, input).await;
            fallback_tool.metrics.record(&result, started.elapsed());
            match result {
                Ok(mut outcome) => {
                    tracing::info!(tool = %tool.description.name, %fallback, class = class.as_str(), "a fallback answered");
                    outcome.fallback_used = Some(FallbackUsed {
                        asked: tool.description.name.clone(),
                        because: class,
                    });
                    return Ok(outcome);
                }
                Err(e) => {
                    tracing::info!(%fallback, class = e.class().as_str(), "fallback failed");
                }
            }
        }
        Err(error)
    }

    /// One tool's call: plan it, then the journal stage for a keyed call,
    /// the attempts for any other.
    async fn call_tool(
        &self,
        tool: &Arc<LoadedTool>,
        request: &CallRequest,
        input: Input,
    ) -> Result<CallOutcome, CallError> {
        let mut plan = CallPlan::new(tool, request, input)?;
        self.reap_now_and_then();
        match (plan.fingerprint.take(), &plan.key) {
            (Some(fingerprint), Some(key)) => self.call_keyed(&plan, key, fingerprint).await,
            _ => self.attempts(&plan).await,
        }
    }
}
