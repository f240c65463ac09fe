//! Allocates and touches memory without end, until the memory cap stops it.

use cofferdam_guest::ToolError;
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Deserialize, JsonSchema)]
struct Input {}

fn hoard(_input: Input) -> Result<usize, ToolError> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![0xAB; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

cofferdam_guest::export_tool!(hoard);
