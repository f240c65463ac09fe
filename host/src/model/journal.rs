//! Idempotency records, attempt records and budget reservations: what the
//! journal stores about calls.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::error::{ErrorClass, ToolError};
use crate::model::escalation::{EscalationKey, EscalationReason, NewEscalation, Resolution};
use crate::model::units::{Effect, Tokens};

/// Where a keyed call stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum KeyState {
    /// An attempt holds the key until `lease_until_ms` (Unix ms).
    InProgress {
        /// When the lease lapses.
        lease_until_ms: u64,
        /// Process that holds it.
        owner_pid: u32,
        /// Owner id of that process (see `owner.rs`); absent in records
        /// written before owners had ids.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    /// Finished; the stored outcome is replayed to later callers.
    Completed {
        /// What the call produced.
        outcome: StoredOutcome,
    },
    /// A side-effecting call was interrupted: it may or may not have acted.
    /// Never re-run automatically; a human or the embedder decides.
    Unknown {
        /// What happened.
        reason: String,
    },
}

impl KeyState {
    /// What an operator's `resolution` (with its `note`) makes of an unknown
    /// key: `None` frees it (the next call runs), otherwise the outcome later
    /// calls replay. Every store applies it in the transaction that resolves
    /// the escalation.
    pub(crate) fn resolved(resolution: &Resolution, note: &str) -> Option<Self> {
        let settled = |message: &str| Self::Completed {
            outcome: StoredOutcome::Error {
                class: ErrorClass::UnknownOutcome,
                message: format!("resolved by an operator: {message} ({note})"),
                tool_error: None,
            },
        };
        match resolution {
            Resolution::Resume => None,
            Resolution::MarkDone { output } => Some(Self::Completed {
                outcome: StoredOutcome::Output {
                    output: output.clone().unwrap_or_else(|| "null".into()),
                    tokens: Tokens(0),
                },
            }),
            Resolution::Compensate => Some(settled("compensated")),
            Resolution::Abort => Some(settled("aborted")),
        }
    }
}

/// What claiming a key that already has a record comes to: the rule every
/// store applies inside its claim transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reclaim {
    /// Answer the caller; the record stays as it is.
    Answer(Claim),
    /// A side-effecting call's holder died or outlived its lease: it may
    /// have acted. The key becomes unknown for this reason, and is escalated.
    Unknown(String),
    /// Take the key for a new attempt.
    Take,
}

impl JournalEntry {
    /// Marks a key whose holder is gone unknown at `now` (the
    /// [`Reclaim::Unknown`] case) and returns the escalation that asks a
    /// human about it, with `context` from the claim.
    pub(crate) fn lapse(
        &mut self,
        key: &JournalKey,
        reason: &str,
        now: u64,
        context: NewEscalation,
    ) -> NewEscalation {
        self.state = KeyState::Unknown {
            reason: reason.to_owned(),
        };
        self.updated_ms = now;
        NewEscalation {
            reason: Some(EscalationReason::UnknownOutcome),
            tool: Some(key.tool.clone()),
            key: Some(key.escalation_key()),
            error: reason.to_owned(),
            ..context
        }
    }

    /// What a claim with `fingerprint` at `now` makes of this record.
    /// `holder_gone` is, for an in-progress key whose holder is dead, the
    /// reason to give (each store names the holder its own way).
    pub(crate) fn reclaim(
        &self,
        fingerprint: &Fingerprint,
        now: u64,
        holder_gone: Option<String>,
    ) -> Reclaim {
        if !fingerprint.matches(&self.fingerprint) {
            return Reclaim::Answer(Claim::Mismatch);
        }
        match &self.state {
            KeyState::Completed { outcome } => Reclaim::Answer(Claim::Replay(outcome.clone())),
            KeyState::Unknown { reason } => Reclaim::Answer(Claim::Unknown {
                reason: reason.clone(),
            }),
            KeyState::InProgress { lease_until_ms, .. } => {
                if now < *lease_until_ms && holder_gone.is_none() {
                    Reclaim::Answer(Claim::InProgress {
                        retry_after: Duration::from_millis(lease_until_ms - now),
                    })
                } else if self.effect == Effect::SideEffecting {
                    Reclaim::Unknown(
                        holder_gone
                            .unwrap_or_else(|| "the lease on the key expired mid-call".to_owned()),
                    )
                } else {
                    Reclaim::Take
                }
            }
        }
    }
}

/// A finished call's outcome, as replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StoredOutcome {
    /// The call succeeded with this JSON output.
    Output {
        /// The output.
        output: String,
        /// Tokens it was charged.
        tokens: Tokens,
    },
    /// The call ended in a terminal error (Stripe-style, errors are stored too).
    Error {
        /// Its class.
        class: ErrorClass,
        /// Its message.
        message: String,
        /// The tool's own error, when the tool reported it.
        tool_error: Option<ToolError>,
    },
}

/// One idempotency record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Record encoding version.
    pub v: u32,
    /// Scope the key lives in (tenant, else agent, else empty).
    pub scope: String,
    /// The tool.
    pub tool: String,
    /// The caller's idempotency key.
    pub key: String,
    /// SHA-256 of the tool digest and the canonical input.
    pub fingerprint: String,
    /// The tool's effect class when claimed.
    pub effect: Effect,
    /// Attempts that claimed the key.
    pub claims: u32,
    /// Where it stands.
    #[serde(flatten)]
    pub state: KeyState,
    /// When first claimed (Unix ms).
    pub created_ms: u64,
    /// When last changed (Unix ms).
    pub updated_ms: u64,
}

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The caller holds the key and must run the call.
    Claimed,
    /// Completed before: replay this.
    Replay(StoredOutcome),
    /// Same key, different input.
    Mismatch,
    /// Another attempt holds the key.
    InProgress { retry_after: Duration },
    /// An earlier side-effecting attempt was interrupted.
    Unknown { reason: String },
}

/// One attempt, as the audit history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Record encoding version.
    pub v: u32,
    /// The tool.
    pub tool: String,
    /// SHA-256 of its component.
    pub digest: String,
    /// The call.
    pub call_id: String,
    /// The task, if any.
    pub task: Option<String>,
    /// The agent, if any.
    pub agent: Option<String>,
    /// The tenant, if any.
    pub tenant: Option<String>,
    /// Attempt number (0 for a replay, which runs nothing).
    pub attempt: u32,
    /// Start, Unix ms.
    pub started_ms: u64,
    /// End, Unix ms.
    pub ended_ms: u64,
    /// `ok`, or the error class.
    pub status: String,
    /// Fuel used.
    pub fuel: u64,
    /// Tokens charged.
    pub tokens: u64,
    /// The error message, if it failed.
    pub error: Option<String>,
    /// Whether this was a replay from the journal.
    pub replayed: bool,
    /// Outbound HTTP requests that reached an upstream.
    #[serde(default)]
    pub http_requests: u32,
    /// Outbound HTTP bytes received (response bodies).
    #[serde(default)]
    pub http_bytes_in: u64,
    /// Outbound HTTP bytes sent (request bodies).
    #[serde(default)]
    pub http_bytes_out: u64,
}

/// Which attempts [`crate::Host::history`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only this tool.
    pub tool: Option<String>,
    /// Only this task.
    pub task: Option<String>,
    /// Only this agent.
    pub agent: Option<String>,
    /// Started at or after (Unix ms).
    pub since_ms: Option<u64>,
    /// Started before (Unix ms).
    pub until_ms: Option<u64>,
    /// At most this many, newest first (default 100).
    pub limit: Option<usize>,
}

/// A budget reservation: tokens set aside in every capped scope of a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Reservation {
    pub id: u64,
    pub scopes: Vec<String>,
    pub tokens: u64,
    pub owner_pid: u32,
    /// Owner id of the reserving process; absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The scope with the least left when reserved.
    pub tightest: String,
}

/// What a reservation request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reserved {
    /// No scope of the call has a cap: nothing to reserve.
    Unlimited,
    /// Granted `tokens` (at most what was asked).
    Granted(Reservation),
    /// The tightest scope has nothing left.
    Exhausted { scope: String, left: u64 },
    /// Asked for the whole amount: a scope has less left than asked, but
    /// other calls hold reservations in it that may come back when they
    /// settle. Nothing was reserved.
    Held { scope: String, left: u64 },
}

/// The scope, tool and key of an idempotency record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JournalKey {
    pub scope: String,
    pub tool: String,
    pub key: String,
}

impl JournalKey {
    pub(crate) fn escalation_key(&self) -> EscalationKey {
        EscalationKey {
            scope: self.scope.clone(),
            tool: self.tool.clone(),
            key: self.key.clone(),
        }
    }

    pub(crate) fn encode(&self) -> String {
        format!("{}\u{1f}{}\u{1f}{}", self.scope, self.tool, self.key)
    }
}

/// What a keyed call's input is, as the journal compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    /// SHA-256 of the canonical input, as stored in new records (`v2:…`).
    pub current: String,
    /// The tool digest and canonical input, to recompute the fingerprint that
    /// records written before `v2` carry (digest mixed in) — only when such
    /// a record is met, so a keyed call hashes its input once.
    pub legacy: Option<(String, String)>,
}

impl Fingerprint {
    /// Whether a stored fingerprint is this input's.
    pub(crate) fn matches(&self, stored: &str) -> bool {
        if stored == self.current {
            return true;
        }
        if stored.starts_with("v2:") {
            return false;
        }
        self.legacy.as_ref().is_some_and(|(digest, canonical)| {
            use sha2::Digest as _;
            let mut hasher = sha2::Sha256::new();
            hasher.update(digest.as_bytes());
            hasher.update([0]);
            hasher.update(canonical.as_bytes());
            hex::encode(hasher.finalize()) == stored
        })
    }
}

impl From<&str> for Fingerprint {
    fn from(text: &str) -> Self {
        Self {
            current: text.to_owned(),
            legacy: None,
        }
    }
}

/// The scopes of a call, keyed by kind, for reports.
pub(crate) fn totals(records: &[AttemptRecord]) -> BTreeMap<String, u64> {
    let mut totals = BTreeMap::new();
    for r in records {
        for scope in [
            r.tenant.as_ref().map(|t| format!("tenant:{t}")),
            r.agent.as_ref().map(|a| format!("agent:{a}")),
            r.task.as_ref().map(|t| format!("task:{t}")),
        ]
        .into_iter()
        .flatten()
        {
            *totals.entry(scope).or_insert(0) += r.tokens;
        }
    }
    totals
}
