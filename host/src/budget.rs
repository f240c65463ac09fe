//! Token budgets (DESIGN §5): scopes call ⊂ task ⊂ agent ⊂ tenant, each with
//! a hard cap and a soft threshold. This module holds the types and the
//! [`Budgets`] handle; the ledger itself is stored behind [`crate::store::BudgetLedger`].
//!
//! A call reserves, before each attempt, what the tightest capped scope can
//! pay for; the store gets exactly that much fuel; afterwards the actual
//! charge is settled (never more than was reserved, so a cap is never
//! exceeded). Scopes without a cap are not limited; their spending is still
//! in the audit history.

use crate::Tokens;
pub use crate::model::budget::{BudgetCap, BudgetStatus, ScopeId};
use std::sync::Arc;

use crate::model::error::JournalError;
use crate::store::Store;

/// Reading or changing budgets failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// The scope has no cap, so there is nothing to charge against.
    #[error("scope `{0}` has no budget cap")]
    NoCap(String),
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// The budget ledger of a host: set caps, charge outside spending, read
/// balances. Get it from [`crate::Host::budgets`].
#[derive(Clone)]
pub struct Budgets {
    pub(crate) store: Arc<dyn Store>,
}

impl Budgets {
    /// Sets a scope's cap (keeping what it has spent).
    pub async fn set_cap(&self, scope: &ScopeId, cap: BudgetCap) -> Result<(), BudgetError> {
        Ok(self.store.set_cap(scope.clone(), Some(cap)).await?)
    }

    /// Removes a scope's cap and its balance.
    pub async fn remove(&self, scope: &ScopeId) -> Result<(), BudgetError> {
        Ok(self.store.set_cap(scope.clone(), None).await?)
    }

    /// Charges tokens spent elsewhere (LLM calls, say) to a capped scope, so
    /// they count against the same cap as tool calls.
    pub async fn charge(
        &self,
        scope: &ScopeId,
        tokens: Tokens,
    ) -> Result<BudgetStatus, BudgetError> {
        self.store
            .charge(scope.clone(), tokens.0)
            .await?
            .ok_or_else(|| BudgetError::NoCap(scope.to_string()))
    }

    /// Every capped scope's balance.
    pub fn list(&self) -> Result<Vec<BudgetStatus>, BudgetError> {
        Ok(self.store.budgets()?)
    }

    /// One scope's balance, if it has a cap.
    pub fn get(&self, scope: &ScopeId) -> Result<Option<BudgetStatus>, BudgetError> {
        let name = scope.to_string();
        Ok(self.list()?.into_iter().find(|b| b.scope == name))
    }
}
