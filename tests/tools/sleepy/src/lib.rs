//! Blocks in a host call (a WASI clock wait) for `millis` milliseconds.
//!
//! Fuel and epochs do not interrupt a guest waiting in the host, so only the
//! host's wall-clock deadline around the whole call stops this one.

use cofferdam_guest::ToolError;
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Deserialize, JsonSchema)]
struct Input {
    /// How long to sleep.
    millis: u64,
}

fn sleep(input: Input) -> Result<u64, ToolError> {
    std::thread::sleep(std::time::Duration::from_millis(input.millis));
    Ok(input.millis)
}

cofferdam_guest::export_tool!(sleep);
