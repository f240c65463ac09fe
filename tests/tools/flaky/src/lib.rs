//! Fails attempts `1..=fail_times` with the given error case, then succeeds.
//!
//! Uses the attempt number from the call context, so the outcome of each
//! attempt is deterministic.

use cofferdam_guest::{Context, Effect, ToolError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum Failure {
    InvalidInput,
    Transient,
    RateLimited,
    Permanent,
}

#[derive(Deserialize, JsonSchema)]
struct Input {
    /// Number of attempts that fail before one succeeds.
    fail_times: u32,
    /// How they fail.
    failure: Failure,
}

#[derive(Serialize)]
struct Output {
    succeeded_on_attempt: u32,
}

fn flaky(ctx: &Context, input: Input) -> Result<Output, ToolError> {
    if ctx.attempt() <= input.fail_times {
        let message = format!("attempt {} failed on purpose", ctx.attempt());
        return Err(match input.failure {
            Failure::InvalidInput => ToolError::invalid_input(message),
            Failure::Transient => ToolError::transient(message),
            Failure::RateLimited => ToolError::rate_limited(25),
            Failure::Permanent => ToolError::permanent(message),
        });
    }
    Ok(Output {
        succeeded_on_attempt: ctx.attempt(),
    })
}

cofferdam_guest::export_tool!(flaky, effect = Effect::Idempotent);
