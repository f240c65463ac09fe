//! Reports what the host told it (call context, remaining budget), and logs
//! and reports progress as many times as asked.

use cofferdam_guest::{Context, Level, ToolError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, JsonSchema)]
struct Input {
    /// Log lines to emit.
    #[serde(default)]
    logs: u32,
    /// Progress reports to emit.
    #[serde(default)]
    progress: u64,
}

#[derive(Serialize)]
struct Output {
    call_id: String,
    task_id: Option<String>,
    attempt: u32,
    deadline_ms: u64,
    remaining_budget: u64,
}

fn introspect(ctx: &Context, input: Input) -> Result<Output, ToolError> {
    for i in 0..input.logs {
        ctx.log(Level::Debug, &format!("line {i}"));
    }
    for done in 1..=input.progress {
        ctx.progress(done, Some(input.progress), "working");
    }
    Ok(Output {
        call_id: ctx.call_id().to_owned(),
        task_id: ctx.task_id().map(str::to_owned),
        attempt: ctx.attempt(),
        deadline_ms: ctx.deadline_ms(),
        remaining_budget: ctx.remaining_budget(),
    })
}

cofferdam_guest::export_tool!(introspect);
