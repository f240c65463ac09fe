//! The journal stage: a keyed call claims its key before it runs and stores
//! its outcome after, so it runs at most once; a completed key replays.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::CallPlan;
use crate::host::Host;
use crate::model::error::JournalError;
use crate::model::escalation::{EscalationReason, NewEscalation};
use crate::model::journal::{AttemptRecord, Claim, Fingerprint, JournalKey, StoredOutcome};
use crate::model::units::unix_millis;
use crate::resilience::classify::disposition;
use crate::runtime::net::HttpStats;
use crate::{CallError, CallOutcome, Effect, Fuel, Tokens};

/// A key's lease outlives the call's total deadline by this much.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

impl Host {
    /// Claims `key`, runs the attempts, stores their outcome.
    pub(super) async fn call_keyed(
        &self,
        plan: &CallPlan<'_>,
        key: &JournalKey,
        fingerprint: Fingerprint,
    ) -> Result<CallOutcome, CallError> {
        if let Some(replayed) = self.claim(plan, key, fingerprint).await? {
            return Ok(replayed);
        }
        let mut result = self.attempts(plan).await;
        self.record(plan, key, &mut result).await?;
        result
    }

    /// Claims `key` for this call: `None` when it is this call's to run, a
    /// replayed outcome, or why it must not run (a stored error, another
    /// input, a holder, an unknown outcome).
    async fn claim(
        &self,
        plan: &CallPlan<'_>,
        key: &JournalKey,
        fingerprint: Fingerprint,
    ) -> Result<Option<CallOutcome>, CallError> {
        let (tool, name) = (plan.tool, &plan.tool.description.name);
        let side_effecting = tool.description.effect == Effect::SideEffecting;
        let lease = tool.retry.total_timeout + LEASE_MARGIN;
        let claim = self.inner.store.claim(
            key.clone(),
            fingerprint,
            tool.description.effect,
            lease,
            side_effecting.then(|| unknown_outcome(plan, key)),
        );
        // Names are copied only into an error: the claimed path copies nothing.
        let (tool, key) = (|| name.clone(), || key.key.clone());
        match claim.await.map_err(|source| journal_error(plan, source))? {
            Claim::Claimed => Ok(None),
            Claim::Replay(stored) => self.replay(plan, stored).map(Some),
            Claim::Mismatch => Err(CallError::IdempotencyMismatch {
                tool: tool(),
                key: key(),
            }),
            Claim::InProgress { retry_after } => Err(CallError::InProgress {
                tool: tool(),
                key: key(),
                retry_after,
            }),
            Claim::Unknown { reason } => Err(CallError::KeyUnknown {
                tool: tool(),
                key: key(),
                reason,
            }),
        }
    }

    /// Stores what the attempts ended in under `key`: an output or a final
    /// error to replay, an unknown outcome (escalated), or nothing (the key
    /// is released for a later try). Nothing is reported before its record
    /// is committed.
    async fn record(
        &self,
        plan: &CallPlan<'_>,
        key: &JournalKey,
        result: &mut Result<CallOutcome, CallError>,
    ) -> Result<(), CallError> {
        let (store, key) = (&self.inner.store, key.clone());
        let recorded = match result {
            // The tool finished: its outcome is final even though the budget
            // could not pay for the output. Storing it keeps the key from
            // running the tool (and its side effect) a second time.
            Err(CallError::OutputOverBudget {
                output,
                left,
                stored,
                ..
            }) => {
                *stored = true;
                let outcome = StoredOutcome::Output {
                    output: output.clone(),
                    tokens: *left,
                };
                store.complete(key, outcome).await
            }
            Ok(outcome) => {
                let stored = StoredOutcome::Output {
                    output: outcome.output.clone(),
                    tokens: outcome.tokens,
                };
                store.complete(key, stored).await
            }
            Err(error @ CallError::UnknownOutcome { .. }) => {
                let context = unknown_outcome(plan, &key);
                store.mark_unknown(key, error.to_string(), context).await
            }
            Err(error) if is_terminal(error) => {
                let tool_error = match error.last_attempt_error() {
                    CallError::Tool { error, .. } => Some(error.clone()),
                    _ => None,
                };
                let stored = StoredOutcome::Error {
                    class: error.last_attempt_error().class(),
                    message: error.to_string(),
                    tool_error,
                };
                store.complete(key, stored).await
            }
            Err(_) => store.release(key).await,
        };
        recorded.map_err(|source| journal_error(plan, source))
    }

    /// Answers a keyed call from its stored outcome: no execution, no charge.
    fn replay(&self, plan: &CallPlan<'_>, stored: StoredOutcome) -> Result<CallOutcome, CallError> {
        let (tool, request) = (plan.tool, plan.request);
        let name = &tool.description.name;
        let now = unix_millis();
        let status = match &stored {
            StoredOutcome::Output { .. } => "ok".to_owned(),
            StoredOutcome::Error { class, .. } => class.as_str().to_owned(),
        };
        self.inner.store.audit(AttemptRecord {
            v: 1,
            tool: name.to_string(),
            digest: tool.description.digest.clone(),
            call_id: plan.call_id().to_owned(),
            task: request.task_id.clone(),
            agent: request.agent.clone(),
            tenant: request.tenant.clone(),
            attempt: 0,
            started_ms: now,
            ended_ms: now,
            status,
            fuel: 0,
            tokens: 0,
            error: None,
            replayed: true,
            http_requests: 0,
            http_bytes_in: 0,
            http_bytes_out: 0,
        });
        match stored {
            StoredOutcome::Output { output, .. } => Ok(CallOutcome {
                tool: name.clone(),
                call_id: plan.call_id().to_owned(),
                output,
                fuel_used: Fuel(0),
                tokens: Tokens(0),
                duration: Duration::ZERO,
                attempts: 0,
                failed_attempts: Vec::new(),
                breaker: tool.breaker.state(),
                waited: Duration::ZERO,
                replayed: true,
                fallback_used: None,
                http: HttpStats::default(),
                logs: Vec::new(),
                logs_dropped: 0,
                stdout: String::new(),
                stdout_truncated: false,
                stderr: String::new(),
                stderr_truncated: false,
            }),
            StoredOutcome::Error {
                class,
                message,
                tool_error,
            } => Err(CallError::Replayed {
                tool: name.clone(),
                class,
                message,
                tool_error,
            }),
        }
    }
}

/// What a human needs if this key's outcome becomes unknown.
fn unknown_outcome(plan: &CallPlan<'_>, key: &JournalKey) -> NewEscalation {
    let request = plan.request;
    NewEscalation {
        reason: Some(EscalationReason::UnknownOutcome),
        tool: Some(plan.tool.description.name.to_string()),
        key: Some(key.escalation_key()),
        task: request.task_id.clone(),
        agent: request.agent.clone(),
        call_id: Some(plan.call_id().to_owned()),
        input: Some(request.input.clone()),
        ..NewEscalation::default()
    }
}

/// The journal failed: the call's outcome is not reported.
fn journal_error(plan: &CallPlan<'_>, source: JournalError) -> CallError {
    CallError::Journal {
        tool: plan.tool.description.name.clone(),
        source,
    }
}

/// A keyed call's fingerprint: its canonical input (object keys sorted, no
/// whitespace) only. The tool is part of the key already; its digest is not
/// part of the request, so a reload of the same tool (a new build, a new
/// custom section) neither breaks replays nor turns them into mismatches.
/// `canonical` is the input parsed once and printed back (see `CallPlan`).
pub(super) fn fingerprint(digest: &str, canonical: String) -> Fingerprint {
    Fingerprint {
        current: format!("v2:{}", hex::encode(Sha256::digest(canonical.as_bytes()))),
        legacy: Some((digest.to_owned(), canonical)),
    }
}

/// Whether a keyed call's error is its final answer (stored and replayed)
/// rather than a passing condition (the key is released for a later try).
fn is_terminal(error: &CallError) -> bool {
    disposition(error.last_attempt_error().class()).terminal
}
