//! Panics with a known message; a Rust panic in a guest is a wasm trap.

use cofferdam_guest::ToolError;
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Deserialize, JsonSchema)]
struct Input {}

fn boom(_input: Input) -> Result<(), ToolError> {
    let empty: Option<u8> = std::hint::black_box(None);
    panic!("the tool broke on purpose (value was {empty:?})");
}

cofferdam_guest::export_tool!(boom);
