//! `hello`: the smallest useful cofferdam tool, with typed input and output.
//!
//! Build and run it:
//!
//! ```text
//! cargo build --release --target wasm32-wasip2 -p hello
//! cargo run -p cofferdam -- run target/wasm32-wasip2/release/hello.wasm --input '{"name":"Ada"}'
//! ```

use cofferdam_guest::{Context, ToolError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Whom to greet.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// The name to put in the greeting.
    name: String,
    /// How many exclamation marks to add (at most 10).
    #[serde(default)]
    excitement: u8,
}

#[derive(Serialize)]
struct Output {
    greeting: String,
}

fn hello(ctx: &Context, input: Input) -> Result<Output, ToolError> {
    if input.name.trim().is_empty() {
        return Err(ToolError::invalid_input("`name` must not be empty"));
    }
    if input.excitement > 10 {
        return Err(ToolError::invalid_input("`excitement` must be at most 10"));
    }
    ctx.log_info(&format!("greeting {}", input.name));
    let marks = "!".repeat(usize::from(input.excitement.max(1)));
    Ok(Output {
        greeting: format!("Hello, {}{marks}", input.name),
    })
}

cofferdam_guest::export_tool!(hello);
