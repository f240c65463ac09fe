//! Budget scopes, caps and balances: what the ledger stores and reports.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::units::Tokens;

/// A budget scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScopeId {
    /// A tenant of the embedding service.
    Tenant(String),
    /// An agent.
    Agent(String),
    /// A task (a multi-step run).
    Task(String),
}

impl fmt::Display for ScopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tenant(id) => write!(f, "tenant:{id}"),
            Self::Agent(id) => write!(f, "agent:{id}"),
            Self::Task(id) => write!(f, "task:{id}"),
        }
    }
}

/// A string that is not `tenant:ID`, `agent:ID` or `task:ID`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid budget scope `{0}`: use tenant:ID, agent:ID or task:ID")]
pub struct InvalidScope(pub String);

impl FromStr for ScopeId {
    type Err = InvalidScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidScope(s.to_owned());
        let (kind, id) = s.split_once(':').ok_or_else(bad)?;
        if id.is_empty() || id.len() > 255 || id.contains('\u{1f}') {
            return Err(bad());
        }
        match kind {
            "tenant" => Ok(Self::Tenant(id.to_owned())),
            "agent" => Ok(Self::Agent(id.to_owned())),
            "task" => Ok(Self::Task(id.to_owned())),
            _ => Err(bad()),
        }
    }
}

/// A scope's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetCap {
    /// Tokens the scope may spend; calls beyond it are refused.
    pub hard: Tokens,
    /// Percent of `hard` at which a warning event fires, once per crossing (default 80).
    pub soft_percent: u8,
    /// Spending resets every this many milliseconds (an hour, a day), if set.
    pub window_ms: Option<u64>,
}

impl BudgetCap {
    /// A hard cap with the default 80% soft threshold and no reset window.
    pub fn new(hard: Tokens) -> Self {
        Self {
            hard,
            soft_percent: 80,
            window_ms: None,
        }
    }

    /// Tokens at which the soft threshold fires.
    pub fn soft_threshold(&self) -> u64 {
        self.hard
            .0
            .saturating_mul(u64::from(self.soft_percent.min(100)))
            / 100
    }
}

/// A scope's spending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetStatus {
    /// The scope (`agent:a1`).
    pub scope: String,
    /// Its limits.
    pub cap: BudgetCap,
    /// Tokens spent (in the current window).
    pub spent: Tokens,
    /// Tokens set aside for attempts running now.
    pub reserved: Tokens,
    /// Tokens still available.
    pub left: Tokens,
    /// Start of the current window (Unix ms), for windowed caps.
    pub window_start_ms: Option<u64>,
    /// Whether spending passed the soft threshold in this window (the warning
    /// event fires once, when it first does).
    pub past_soft_threshold: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_bad_ones_are_named() {
        for s in ["tenant:acme", "agent:a-1", "task:t/9"] {
            assert_eq!(s.parse::<ScopeId>().expect("valid").to_string(), s);
        }
        for bad in ["agent", "agent:", "user:x", ":x"] {
            assert_eq!(bad.parse::<ScopeId>(), Err(InvalidScope(bad.to_owned())));
        }
    }

    #[test]
    fn soft_threshold_is_a_percentage_of_the_cap() {
        assert_eq!(BudgetCap::new(Tokens(1000)).soft_threshold(), 800);
        let cap = BudgetCap {
            soft_percent: 250,
            ..BudgetCap::new(Tokens(10))
        };
        assert_eq!(cap.soft_threshold(), 10);
    }
}
