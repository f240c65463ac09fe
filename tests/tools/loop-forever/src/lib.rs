//! Spins forever without calling the host; only fuel or the epoch deadline stop it.

use cofferdam_guest::ToolError;
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Deserialize, JsonSchema)]
struct Input {}

fn spin(_input: Input) -> Result<u64, ToolError> {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

cofferdam_guest::export_tool!(spin);
