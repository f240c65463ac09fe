//! Money: what tokens cost, so owners can say "at most $2 per run".
//!
//! Amounts are decimals (`rust_decimal`), never floats. A host has one
//! currency: every price it knows is in it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::model::units::Tokens;

/// An amount of money in a currency (`2.00 USD`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Money {
    /// The amount.
    pub amount: Decimal,
    /// ISO 4217 code, three capital letters.
    pub currency: String,
}

/// Text that is not an amount of money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid amount `{text}`: {reason} (write it as `2.00 USD`)")]
pub struct InvalidMoney {
    /// The text.
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

impl FromStr for Money {
    type Err = InvalidMoney;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| InvalidMoney {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let mut parts = text.split_whitespace();
        let (Some(amount), Some(currency), None) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected an amount and a currency"));
        };
        let amount = Decimal::from_str(amount).map_err(|e| bad(&e.to_string()))?;
        if amount.is_sign_negative() {
            return Err(bad("amounts are not negative"));
        }
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(bad("the currency is three capital letters, such as USD"));
        }
        Ok(Self {
            amount,
            currency: currency.to_owned(),
        })
    }
}

impl TryFrom<String> for Money {
    type Error = InvalidMoney;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Money> for String {
    fn from(money: Money) -> Self {
        money.to_string()
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // At least cents; more digits when they matter (token prices).
        let mut amount = self.amount.normalize();
        if amount.scale() < 2 {
            amount.rescale(2);
        }
        write!(f, "{amount} {}", self.currency)
    }
}

/// `[prices]`: what 1,000 tokens cost, by tool, with a default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    /// The price of tools not named in `tools`.
    #[serde(default)]
    pub default: Option<Money>,
    /// Prices per tool name.
    #[serde(default)]
    pub tools: BTreeMap<String, Money>,
}

/// Why money cannot be turned into tokens or back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PriceError {
    /// No price is set for the tool (and no default).
    #[error("no price is set for tool `{tool}`: add it (or a default) under [prices]")]
    NoPrice {
        /// The tool.
        tool: String,
    },
    /// Prices or amounts in two currencies.
    #[error("{found} is not in the host's currency, {expected}")]
    OtherCurrency {
        /// The currency of the prices.
        expected: String,
        /// The one found.
        found: String,
    },
    /// A tool costs nothing, so money cannot cap it.
    #[error("tool `{tool}` costs nothing: a money cap cannot limit it")]
    Free {
        /// The tool.
        tool: String,
    },
}

impl Prices {
    /// Whether any price is set.
    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.tools.is_empty()
    }

    /// Checks that every price is in one currency.
    pub fn check(&self) -> Result<(), PriceError> {
        let mut all = self.default.iter().chain(self.tools.values());
        let Some(first) = all.next() else {
            return Ok(());
        };
        for price in all {
            if price.currency != first.currency {
                return Err(PriceError::OtherCurrency {
                    expected: first.currency.clone(),
                    found: price.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The price of 1,000 tokens of `tool`.
    pub fn price(&self, tool: &str) -> Option<&Money> {
        self.tools.get(tool).or(self.default.as_ref())
    }

    /// What `tokens` of `tool` cost.
    pub fn cost(&self, tool: &str, tokens: Tokens) -> Option<Money> {
        price_of(self.price(tool)?, tokens)
    }

    /// The most tokens `money` pays for, whichever of `tools` spends them
    /// (at the dearest one's price, so the cap holds for any of them).
    pub fn tokens_for<'a>(
        &self,
        money: &Money,
        tools: impl IntoIterator<Item = &'a str>,
    ) -> Result<Tokens, PriceError> {
        let mut dearest: Option<&Money> = None;
        for tool in tools {
            let price = self.price(tool).ok_or_else(|| PriceError::NoPrice {
                tool: tool.to_owned(),
            })?;
            usable(price, money, tool)?;
            if dearest.is_none_or(|d| price.amount > d.amount) {
                dearest = Some(price);
            }
        }
        let Some(price) = dearest else {
            return Ok(Tokens(0));
        };
        Ok(tokens_at(money, price))
    }

    /// The budget ledger's tokens in money: at the default price (the
    /// ledger counts tokens of every tool alike).
    pub fn ledger_money(&self, tokens: Tokens) -> Option<Money> {
        price_of(self.default.as_ref()?, tokens)
    }

    /// The tokens a ledger cap of `money` is, at the default price (never
    /// more than the money pays for).
    pub fn ledger_tokens(&self, money: &Money) -> Result<Tokens, PriceError> {
        let price = self.default.as_ref().ok_or_else(|| PriceError::NoPrice {
            tool: "(default)".to_owned(),
        })?;
        usable(price, money, "(default)")?;
        Ok(tokens_at(money, price))
    }

    /// Sums money in the prices' currency (`None` when nothing is priced).
    pub fn sum(&self, amounts: impl IntoIterator<Item = Money>) -> Option<Money> {
        amounts.into_iter().reduce(|a, b| Money {
            amount: a.amount.saturating_add(b.amount),
            currency: a.currency,
        })
    }
}

/// Refuses `price` for capping `money`: another currency, or free (no cap
/// can limit a free tool).
fn usable(price: &Money, money: &Money, tool: &str) -> Result<(), PriceError> {
    if price.currency != money.currency {
        return Err(PriceError::OtherCurrency {
            expected: price.currency.clone(),
            found: money.to_string(),
        });
    }
    if price.amount.is_zero() {
        return Err(PriceError::Free {
            tool: tool.to_owned(),
        });
    }
    Ok(())
}

/// What `tokens` cost at `price` per 1,000 (saturating: never a panic).
fn price_of(price: &Money, tokens: Tokens) -> Option<Money> {
    let amount = price
        .amount
        .checked_mul(Decimal::from(tokens.0))
        .map_or(Decimal::MAX, |a| a / Decimal::from(1000));
    Some(Money {
        amount,
        currency: price.currency.clone(),
    })
}

/// The tokens `money` buys at `price` per 1,000, rounded down (a price
/// too small or an amount too large to compute buys every token).
fn tokens_at(money: &Money, price: &Money) -> Tokens {
    let tokens = money
        .amount
        .checked_mul(Decimal::from(1000))
        .and_then(|m| m.checked_div(price.amount))
        .map(|t| t.floor());
    Tokens(tokens.map_or(u64::MAX, |t| u64::try_from(t).unwrap_or(u64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(text: &str) -> Money {
        text.parse().unwrap()
    }

    #[test]
    fn amounts_parse_exactly_and_print_with_cents() {
        assert_eq!(money("2 USD").to_string(), "2.00 USD");
        assert_eq!(money("0.002 USD").to_string(), "0.002 USD");
        assert_eq!(money("1.10 EUR").to_string(), "1.10 EUR");
        for bad in ["2", "USD 2", "-1 USD", "2 usd", "2 USD extra", "two USD"] {
            assert!(bad.parse::<Money>().is_err(), "{bad}");
        }
        // Amounts far past any price never panic.
        let huge = money("79228162514264337593543950335 USD");
        let tiny = Prices {
            default: Some(money("0.0000000001 USD")),
            ..Prices::default()
        };
        assert_eq!(tiny.tokens_for(&huge, ["x"]).unwrap(), Tokens(u64::MAX));
        let dear = Prices {
            default: Some(huge.clone()),
            ..Prices::default()
        };
        assert!(dear.cost("x", Tokens(u64::MAX)).is_some());
        // No float rounding: 0.1 + 0.2 is 0.3.
        let prices = Prices {
            default: Some(money("0.1 USD")),
            ..Prices::default()
        };
        let sum = prices
            .sum([prices.cost("a", Tokens(1000)).unwrap(), money("0.2 USD")])
            .unwrap();
        assert_eq!(sum, money("0.3 USD"));
    }

    #[test]
    fn a_money_cap_buys_tokens_at_the_dearest_price() {
        let prices = Prices {
            default: Some(money("0.002 USD")),
            tools: [("pricey".to_owned(), money("0.01 USD"))].into(),
        };
        let two = money("2.00 USD");
        assert_eq!(
            prices.tokens_for(&two, ["cheap"]).unwrap(),
            Tokens(1_000_000)
        );
        assert_eq!(
            prices.tokens_for(&two, ["cheap", "pricey"]).unwrap(),
            Tokens(200_000)
        );
        assert_eq!(
            prices.cost("pricey", Tokens(200_000)).unwrap(),
            money("2 USD")
        );
        assert!(matches!(
            prices.tokens_for(&money("2 EUR"), ["cheap"]),
            Err(PriceError::OtherCurrency { .. })
        ));
        assert!(matches!(
            Prices::default().tokens_for(&two, ["x"]),
            Err(PriceError::NoPrice { .. })
        ));
        assert_eq!(prices.ledger_tokens(&two).unwrap(), Tokens(1_000_000));
        assert_eq!(
            prices.ledger_money(Tokens(1500)).unwrap(),
            money("0.003 USD")
        );
        let mixed = Prices {
            default: Some(money("1 USD")),
            tools: [("x".to_owned(), money("1 EUR"))].into(),
        };
        assert!(mixed.check().is_err());
    }
}
