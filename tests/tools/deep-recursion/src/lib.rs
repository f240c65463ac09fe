//! Recurses without a base case the optimizer can see, until the stack overflows.

use cofferdam_guest::ToolError;
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Deserialize, JsonSchema)]
struct Input {}

#[inline(never)]
fn descend(depth: u64) -> u64 {
    if std::hint::black_box(depth) == u64::MAX {
        return depth;
    }
    descend(depth + 1).wrapping_add(std::hint::black_box(1))
}

fn recurse(_input: Input) -> Result<u64, ToolError> {
    Ok(descend(0))
}

cofferdam_guest::export_tool!(recurse);
