//! Writes `set` into its state bucket, increments `count` (when given),
//! then fails with a transient error while the attempt is below
//! `fail_below_attempt` — so a test sees which attempt's writes persist —
//! and returns what it reads back for `read`. With `delete_many` it first
//! deletes that many absent keys, as a hostile guest would.

use std::collections::BTreeMap;

use cofferdam_guest::{Context, Effect, ToolError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// Keys to set (the value `"$attempt"` stores the attempt number).
    #[serde(default)]
    set: BTreeMap<String, Value>,
    /// A counter to add 1 to.
    #[serde(default)]
    count: Option<String>,
    /// Keys to read back after writing.
    #[serde(default)]
    read: Vec<String>,
    /// Attempts below this one fail (transient) after writing.
    #[serde(default)]
    fail_below_attempt: u32,
    /// Deletes this many keys that do not exist (a guest trying to grow
    /// the host's buffer).
    #[serde(default)]
    delete_many: u32,
}

#[derive(Serialize)]
struct Output {
    attempt: u32,
    counter: Option<u64>,
    read: BTreeMap<String, Option<Value>>,
    keys: Vec<String>,
}

fn write(ctx: &Context, input: Input) -> Result<Output, ToolError> {
    let state = ctx.state()?;
    for (key, value) in &input.set {
        let value = if value == "$attempt" {
            Value::from(ctx.attempt())
        } else {
            value.clone()
        };
        state.set(key, &value)?;
    }
    for i in 0..input.delete_many {
        state.delete(&format!("absent-{i}"))?;
    }
    let counter = match &input.count {
        Some(key) => Some(state.increment(key, 1)?),
        None => None,
    };
    if ctx.attempt() < input.fail_below_attempt {
        return Err(ToolError::transient(format!(
            "attempt {} fails on purpose",
            ctx.attempt()
        )));
    }
    let mut read = BTreeMap::new();
    for key in input.read {
        let value = state.get(&key)?;
        read.insert(key, value);
    }
    Ok(Output {
        attempt: ctx.attempt(),
        counter,
        read,
        keys: state.keys()?,
    })
}

cofferdam_guest::export_tool!(write, name = "state-writer", effect = Effect::SideEffecting);
