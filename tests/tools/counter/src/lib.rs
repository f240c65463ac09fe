//! Counts its calls in a global: 1 on a fresh instance every time, 1, 2, 3…
//! on a reused one. With `trap`, it counts and then panics (a wasm trap).

use std::sync::atomic::{AtomicU64, Ordering};

use cofferdam_guest::ToolError;
use schemars::JsonSchema;
use serde::Deserialize;

static CALLS: AtomicU64 = AtomicU64::new(0);

#[derive(Deserialize, JsonSchema)]
struct Input {
    /// Panic after counting.
    #[serde(default)]
    trap: bool,
}

fn count(input: Input) -> Result<u64, ToolError> {
    let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    if input.trap {
        panic!("trapping on call {calls}");
    }
    Ok(calls)
}

cofferdam_guest::export_tool!(count);
