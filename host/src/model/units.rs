//! Newtypes for names and units, so a fuel count cannot be passed as tokens.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Units of wasm execution (roughly one per instruction), metered by wasmtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fuel(pub u64);

/// The agent's currency: what a call costs against its token budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tokens(pub u64);

impl fmt::Display for Fuel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} fuel", self.0)
    }
}

impl fmt::Display for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} tokens", self.0)
    }
}

/// How fuel and output size turn into tokens (DESIGN §5):
/// `ceil(fuel / fuel_per_token) + ceil(output_bytes / bytes_per_token) + per_call`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPrice {
    /// Fuel that costs one token. Default 100,000.
    pub fuel_per_token: u64,
    /// Output bytes that cost one token. Default 4 (about one token of text).
    pub bytes_per_token: u64,
    /// Fixed tokens charged for every call. Default 0.
    pub per_call_tokens: u64,
}

impl Default for TokenPrice {
    fn default() -> Self {
        Self {
            fuel_per_token: 100_000,
            bytes_per_token: 4,
            per_call_tokens: 0,
        }
    }
}

impl TokenPrice {
    /// Tokens charged for a call that used `fuel` and returned `output_bytes`.
    pub fn charge(&self, fuel: Fuel, output_bytes: usize) -> Tokens {
        let fuel_tokens = fuel.0.div_ceil(self.fuel_per_token.max(1));
        let byte_tokens = (output_bytes as u64).div_ceil(self.bytes_per_token.max(1));
        Tokens(fuel_tokens + byte_tokens + self.per_call_tokens)
    }

    /// Whole tokens that `fuel` can still pay for.
    pub fn tokens_for(&self, fuel: Fuel) -> Tokens {
        Tokens(fuel.0 / self.fuel_per_token.max(1))
    }
}

/// A tool's name: 1–64 characters of `a-z`, `0-9`, `-` and `_`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ToolName(String);

/// A string that is not a valid [`ToolName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tool name `{name}`: use 1-64 characters of a-z, 0-9, `-` and `_`")]
pub struct InvalidToolName {
    /// The rejected name.
    pub name: String,
}

impl ToolName {
    /// Checks and wraps a tool name.
    pub fn new(name: &str) -> Result<Self, InvalidToolName> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(InvalidToolName {
                name: name.to_owned(),
            })
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ToolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ToolName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ToolName::new(&s).map_err(serde::de::Error::custom)
    }
}

/// What calling a tool does to the world; drives retry and journal policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    /// No side effects: safe to retry and to run twice.
    Pure,
    /// Side effects that are safe to repeat with the same input.
    Idempotent,
    /// Side effects that must happen at most once.
    SideEffecting,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Effect::Pure => "pure",
            Effect::Idempotent => "idempotent",
            Effect::SideEffecting => "side-effecting",
        })
    }
}

/// Serializes an optional duration as whole milliseconds.
pub(crate) fn opt_millis<S: serde::Serializer>(
    d: &Option<std::time::Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        None => s.serialize_none(),
    }
}

/// Serializes a duration as whole microseconds.
pub(crate) fn micros<S: serde::Serializer>(
    d: &std::time::Duration,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The longest idempotency key, in bytes (keys are 1 to this many bytes).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Milliseconds since the Unix epoch, the journal's timestamps.
pub(crate) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_are_checked() {
        assert!(ToolName::new("fetch_weather-2").is_ok());
        for bad in ["", "Fetch", "a b", "../x", &"x".repeat(65)] {
            assert_eq!(
                ToolName::new(bad),
                Err(InvalidToolName {
                    name: bad.to_owned()
                })
            );
        }
    }

    #[test]
    fn charge_rounds_each_part_up() {
        let price = TokenPrice {
            fuel_per_token: 1000,
            bytes_per_token: 4,
            per_call_tokens: 2,
        };
        assert_eq!(price.charge(Fuel(1), 1), Tokens(1 + 1 + 2));
        assert_eq!(price.charge(Fuel(2000), 8), Tokens(2 + 2 + 2));
        assert_eq!(price.charge(Fuel(0), 0), Tokens(2));
        assert_eq!(price.tokens_for(Fuel(2999)), Tokens(2));
    }
}
