//! Money: prices per 1,000 tokens, a schedule capped in money, and runs'
//! costs in money beside tokens.

use crate::common;

use std::sync::Arc;

use cofferdam::{
    ManualWallClock, Money, Prices, RunStatus, ScheduleError, ScheduleSpec, Timestamp, ToolPolicy,
};
use cofferdam_test_artifacts as artifacts;
use serde_json::json;

fn at(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

fn money(text: &str) -> Money {
    text.parse().expect("money")
}

#[tokio::test]
async fn a_run_capped_in_money_stops_when_the_money_runs_out_and_shows_its_cost() {
    let clock = Arc::new(ManualWallClock::new(at("2026-11-30T08:00:00Z")));
    let prices = Prices {
        default: Some(money("0.002 USD")),
        tools: [("loop-forever".to_owned(), money("1.00 USD"))].into(),
    };
    let host = common::builder()
        .wall_clock(clock.clone())
        .prices(prices)
        .build()
        .expect("host");
    common::load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    let spin = ToolPolicy {
        limits: cofferdam::LimitsSpec {
            timeout_ms: Some(60_000),
            fuel: Some(u64::MAX / 4),
            ..Default::default()
        },
        ..common::policy_with(Default::default())
    };
    common::load(&host, artifacts::LOOP_FOREVER, spin).await;
    let schedules = host.schedules();
    // $0.02 at $1.00 per 1,000 tokens buys 20 tokens of the spinner.
    let capped = ScheduleSpec {
        max_cost_per_run: Some(money("0.02 USD")),
        ..ScheduleSpec::tool("spin", "ops", "0 9 * * *", "loop-forever", json!({}))
    };
    schedules.create(capped).await.expect("schedule");
    let greet = ScheduleSpec {
        max_cost_per_run: Some(money("2.00 USD")),
        ..ScheduleSpec::tool("greet", "ops", "0 9 * * *", "hello", json!({"name": "x"}))
    };
    schedules.create(greet).await.expect("schedule");
    // A cap in another currency, or on an unpriced tool, is refused.
    let euros = ScheduleSpec {
        max_cost_per_run: Some(money("2.00 EUR")),
        ..ScheduleSpec::tool("euros", "ops", "0 9 * * *", "hello", json!({}))
    };
    assert!(matches!(
        schedules.create(euros).await,
        Err(ScheduleError::Price { .. })
    ));

    clock.set(at("2026-11-30T09:00:00Z"));
    let runs = schedules
        .runner()
        .tick()
        .await
        .expect("tick")
        .finished()
        .await;
    assert_eq!(runs.len(), 2, "{runs:?}");

    let spin = schedules.get("spin").expect("spin");
    let run = &schedules.history("spin").expect("history")[0];
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert_eq!(
        run.class.map(|c| c.as_str()),
        Some("budget-exhausted"),
        "{run:?}"
    );
    assert!(run.tokens.0 <= 20, "{run:?}");
    let cost = schedules.run_cost(&spin, run).expect("priced");
    assert!(cost.amount <= money("0.02 USD").amount, "{cost}");
    assert_eq!(cost.currency, "USD");

    let greet = schedules.get("greet").expect("greet");
    let run = &schedules.history("greet").expect("history")[0];
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    let cost = schedules.run_cost(&greet, run).expect("priced");
    assert_eq!(
        cost,
        host.prices().cost("hello", run.tokens).expect("priced"),
        "{cost} for {} tokens",
        run.tokens.0
    );
    assert!(cost.amount > rust_decimal_zero(), "{cost}");
}

fn rust_decimal_zero() -> cofferdam::Decimal {
    cofferdam::Decimal::ZERO
}
