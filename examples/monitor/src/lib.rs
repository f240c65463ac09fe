//! `monitor`: a competitor-price monitor with memory. Each run gets the
//! prices seen now, compares them with what the previous run stored in the
//! tool's state bucket, stores the new ones and reports what changed.
//!
//! It needs a state grant in the host's config (per owner, so two agents'
//! monitors never see each other's prices):
//!
//! ```toml
//! [tools.monitor]
//! component = "target/wasm32-wasip2/release/monitor.wasm"
//! [tools.monitor.state]
//! bucket = "monitor"
//! scope = "owner"
//! ```

use std::collections::BTreeMap;

use cofferdam_guest::{Context, Effect, ToolError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What was seen on this run.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// Price per product, in cents.
    prices: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct Change {
    product: String,
    before: u64,
    after: u64,
}

#[derive(Serialize)]
struct Output {
    /// This run's number for this owner (1 on the first run).
    run: u64,
    /// Whether an earlier run's prices were there to compare with.
    had_previous: bool,
    changed: Vec<Change>,
    added: Vec<String>,
    removed: Vec<String>,
}

fn watch(ctx: &Context, input: Input) -> Result<Output, ToolError> {
    let state = ctx.state()?;
    let previous: Option<BTreeMap<String, u64>> = state.get("prices")?;
    let run = state.increment("runs", 1)?;
    let before = previous.clone().unwrap_or_default();
    let changed = input
        .prices
        .iter()
        .filter_map(|(product, after)| {
            let before = *before.get(product)?;
            (before != *after).then(|| Change {
                product: product.clone(),
                before,
                after: *after,
            })
        })
        .collect();
    let added = input
        .prices
        .keys()
        .filter(|p| previous.is_some() && !before.contains_key(*p))
        .cloned()
        .collect();
    let removed = before
        .keys()
        .filter(|p| !input.prices.contains_key(*p))
        .cloned()
        .collect();
    state.set("prices", &input.prices)?;
    Ok(Output {
        run,
        had_previous: previous.is_some(),
        changed,
        added,
        removed,
    })
}

cofferdam_guest::export_tool!(
    watch,
    description = "Compares today's prices with the last run's and reports what changed",
    effect = Effect::Idempotent
);
