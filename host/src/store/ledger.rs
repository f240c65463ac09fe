//! A capped scope's balance as every backend stores it: cap, spending,
//! reservations and the reset window. Pure rules, no database.

use serde::{Deserialize, Serialize};

use crate::model::budget::{BudgetCap, BudgetStatus};
use crate::model::journal::Reserved;
use crate::model::units::Tokens;

/// One capped scope's ledger record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct BudgetRecord {
    pub(crate) v: u32,
    pub(crate) cap: BudgetCap,
    pub(crate) spent: u64,
    pub(crate) reserved: u64,
    pub(crate) window_start_ms: u64,
    /// Whether the soft-threshold event fired in this window.
    pub(crate) soft_alerted: bool,
}

impl BudgetRecord {
    /// A scope with nothing spent, its window starting at `now_ms`.
    pub(crate) fn new(cap: BudgetCap, now_ms: u64) -> Self {
        Self {
            v: 1,
            cap,
            spent: 0,
            reserved: 0,
            window_start_ms: now_ms,
            soft_alerted: false,
        }
    }

    /// Starts a new window when the current one is over.
    pub(crate) fn roll_window(&mut self, now_ms: u64) {
        if let Some(window) = self.cap.window_ms
            && now_ms >= self.window_start_ms.saturating_add(window)
        {
            self.spent = 0;
            self.soft_alerted = false;
            self.window_start_ms = now_ms - (now_ms - self.window_start_ms) % window.max(1);
        }
    }

    /// Tokens neither spent nor reserved.
    pub(crate) fn left(&self) -> u64 {
        self.cap.hard.0.saturating_sub(self.spent + self.reserved)
    }

    /// The record as reported.
    pub(crate) fn status(&self, scope: &str) -> BudgetStatus {
        BudgetStatus {
            scope: scope.to_owned(),
            cap: self.cap,
            spent: Tokens(self.spent),
            reserved: Tokens(self.reserved),
            left: Tokens(self.left()),
            window_start_ms: self.cap.window_ms.map(|_| self.window_start_ms),
            past_soft_threshold: self.soft_alerted,
        }
    }

    /// Changes the cap, keeping what was spent.
    pub(crate) fn recap(&mut self, cap: BudgetCap) {
        self.cap = cap;
        self.soft_alerted = self.spent >= cap.soft_threshold();
    }
}

/// Fires the soft-threshold event once per window, when spending first
/// passes it.
pub(crate) fn alert_soft_threshold(scope: &str, record: &mut BudgetRecord) {
    let soft = record.cap.soft_threshold();
    if !record.soft_alerted && record.spent >= soft {
        record.soft_alerted = true;
        tracing::warn!(target: "cofferdam::budget", scope, spent = record.spent,
            cap = record.cap.hard.0, "budget passed its soft threshold");
    }
}

/// How many tokens a reservation of `want` sets aside in every capped scope
/// of `capped` (the records as locked by the backend's transaction), with
/// the scope that had the least left; or the
/// answer when it sets aside none: `Unlimited` without a capped scope, `Held`
/// when `whole` was asked and other calls' reservations may come back,
/// `Exhausted` when the tightest scope has nothing left.
pub(crate) fn tokens_to_reserve(
    capped: &[(String, BudgetRecord)],
    want: u64,
    whole: bool,
) -> Result<(u64, String), Reserved> {
    let Some((tightest, left)) = capped
        .iter()
        .map(|(scope, record)| (scope, record.left()))
        .min_by_key(|(_, left)| *left)
    else {
        return Err(Reserved::Unlimited);
    };
    let held = capped
        .iter()
        .any(|(_, record)| record.left() < want && record.reserved > 0);
    if whole && left < want && held {
        return Err(Reserved::Held {
            scope: tightest.clone(),
            left,
        });
    }
    if left == 0 {
        return Err(Reserved::Exhausted {
            scope: tightest.clone(),
            left,
        });
    }
    Ok((want.min(left), tightest.clone()))
}
