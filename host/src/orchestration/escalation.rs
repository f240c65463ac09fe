//! The escalation queue: what the host cannot settle on its own, kept
//! durably (in the journal's redb file) for a human, with enough context to
//! act, and the resolution they chose.
//!
//! A side-effecting call whose outcome became unknown (stopped mid-run, or
//! its process died holding the key) lands here automatically, in the same
//! transaction that marks its key unknown. Task runners and embedders raise
//! the other reasons through [`Escalations::raise`]. Resolving an
//! unknown-outcome escalation also settles its idempotency key: `resume`
//! frees the key so the next call runs, `mark-done` stores an output that
//! later calls replay, `compensate` and `abort` store a final error.
//!
//! It does not notify anyone: poll [`Escalations::list`], `cofferdam
//! escalations list`, or the MCP/HTTP layer of the embedding service.

use std::sync::Arc;

use crate::Host;
pub use crate::model::escalation::{
    Escalation, EscalationError, EscalationKey, EscalationReason, NewEscalation, Resolution,
};
use crate::store::Store;

/// The escalation queue of a host; from [`Host::escalations`](crate::Host::escalations).
#[derive(Clone)]
pub struct Escalations {
    pub(crate) store: Arc<dyn Store>,
}

impl Escalations {
    /// Open escalations (or all, with `include_resolved`), oldest first.
    pub fn list(&self, include_resolved: bool) -> Result<Vec<Escalation>, EscalationError> {
        let all = self.store.escalations()?;
        Ok(all
            .into_iter()
            .filter(|e| include_resolved || e.resolved.is_none())
            .collect())
    }

    /// One escalation.
    pub fn get(&self, id: u64) -> Result<Escalation, EscalationError> {
        self.store
            .escalation(id)?
            .ok_or(EscalationError::NotFound { id })
    }

    /// Raises an escalation; returns its id (the open one's, when one is
    /// already open for the same key).
    pub async fn raise(&self, new: NewEscalation) -> Result<u64, EscalationError> {
        if new.reason.is_none() {
            return Err(EscalationError::NoReason);
        }
        Ok(self.store.escalate(new).await?)
    }

    /// Applies a resolution (and settles the escalation's unknown key, if
    /// any) in one transaction; returns the resolved record.
    pub async fn resolve(
        &self,
        id: u64,
        resolution: Resolution,
        note: &str,
    ) -> Result<Escalation, EscalationError> {
        if let Resolution::MarkDone {
            output: Some(output),
        } = &resolution
            && let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(output)
        {
            return Err(EscalationError::BadOutput {
                id,
                reason: e.to_string(),
            });
        }
        self.store
            .resolve_escalation(id, resolution, note.to_owned())
            .await?
    }
}

impl Host {
    /// The escalation queue: what needs a human, and their resolutions.
    pub fn escalations(&self) -> Escalations {
        Escalations {
            store: self.store().clone(),
        }
    }
}
