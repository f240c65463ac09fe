//! Returns a JSON string of `bytes` characters.

use cofferdam_guest::ToolError;
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Deserialize, JsonSchema)]
struct Input {
    /// Length of the returned string.
    bytes: usize,
}

fn huge(input: Input) -> Result<String, ToolError> {
    Ok("y".repeat(input.bytes))
}

cofferdam_guest::export_tool!(huge);
