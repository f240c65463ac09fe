//! Tool state over `wasi:keyvalue`: a scheduled monitor remembering between
//! runs per owner, writes that take effect only with a successful attempt
//! (never a failed one's, never again on replay), quotas that refuse
//! without a partial write, and no state without a grant.

use crate::common;

use std::sync::Arc;

use cofferdam::{
    CallError, CallRequest, Host, KeyState, ManualWallClock, RetrySpec, ScheduleSpec, StateScope,
    StateSpec, Timestamp, ToolPolicy,
};
use cofferdam_test_artifacts as artifacts;
use serde_json::{Value, json};

fn at(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

fn state(bucket: &str, scope: StateScope) -> Option<StateSpec> {
    Some(StateSpec {
        bucket: bucket.into(),
        scope,
        max_bytes: None,
        max_keys: None,
    })
}

async fn writer(host: &Host, spec: Option<StateSpec>) {
    let policy = ToolPolicy {
        state: spec,
        retry: RetrySpec {
            max_attempts: Some(3),
            base_backoff_ms: Some(1),
            max_backoff_ms: Some(2),
            ..RetrySpec::default()
        },
        ..ToolPolicy::default()
    };
    common::load(host, artifacts::STATE_WRITER, policy).await;
}

async fn write(
    host: &Host,
    agent: &str,
    input: Value,
    key: Option<&str>,
) -> Result<Value, CallError> {
    let request = CallRequest {
        agent: Some(agent.into()),
        idempotency_key: key.map(str::to_owned),
        ..CallRequest::new("state-writer", input.to_string())
    };
    host.call(request)
        .await
        .map(|outcome| outcome.output_json())
}

#[tokio::test]
async fn a_scheduled_monitor_remembers_between_runs_and_owners_are_apart() {
    let clock = Arc::new(ManualWallClock::new(at("2026-11-30T07:00:00Z")));
    let host = common::builder()
        .wall_clock(clock.clone())
        .build()
        .expect("host");
    let policy = ToolPolicy {
        state: state("monitor", StateScope::Owner),
        ..ToolPolicy::default()
    };
    common::load(&host, artifacts::MONITOR, policy).await;
    let schedules = host.schedules();
    let prices = json!({"prices": {"widget": 1200, "gadget": 800}});
    for owner in ["agent-a", "agent-b"] {
        schedules
            .create(ScheduleSpec::tool(
                &format!("watch-{owner}"),
                owner,
                "0 9 * * *",
                "monitor",
                prices.clone(),
            ))
            .await
            .expect("schedule");
    }
    let runner = schedules.runner();
    for day in ["2026-11-30", "2026-12-01", "2026-12-02"] {
        clock.set(at(&format!("{day}T09:00:00Z")));
        let runs = runner.tick().await.expect("tick").finished().await;
        assert_eq!(runs.len(), 2, "{runs:?}");
    }
    // Each run's output is its stored outcome under the run's key.
    let mut outputs: Vec<(String, Value)> = host
        .journal_entries()
        .expect("journal")
        .into_iter()
        .filter_map(|entry| match entry.state {
            KeyState::Completed { outcome } => Some((entry.key, outcome)),
            _ => None,
        })
        .map(|(key, outcome)| {
            let output: Value = match outcome {
                cofferdam::StoredOutcome::Output { output, .. } => {
                    serde_json::from_str(&output).expect("json output")
                }
                other => panic!("{other:?}"),
            };
            (key, output)
        })
        .collect();
    outputs.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(outputs.len(), 6, "{outputs:?}");
    for owner in ["agent-a", "agent-b"] {
        let runs: Vec<&Value> = outputs
            .iter()
            .filter(|(key, _)| key.contains(&format!("watch-{owner}")))
            .map(|(_, output)| output)
            .collect();
        let seen: Vec<(u64, bool)> = runs
            .iter()
            .map(|o| {
                (
                    o["run"].as_u64().unwrap(),
                    o["had_previous"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [(1, false), (2, true), (3, true)],
            "{owner}: {runs:?}"
        );
    }
    // A change between runs is reported against the stored prices.
    let request = CallRequest {
        agent: Some("agent-a".into()),
        ..CallRequest::new("monitor", json!({"prices": {"widget": 999}}).to_string())
    };
    let output = host.call(request).await.expect("call").output_json();
    assert_eq!(output["run"], 4);
    assert_eq!(
        output["changed"],
        json!([{"product": "widget", "before": 1200, "after": 999}])
    );
    assert_eq!(output["removed"], json!(["gadget"]));
}

#[tokio::test]
async fn only_the_successful_attempts_writes_persist_and_a_replay_writes_nothing() {
    let host = common::host();
    writer(&host, state("w", StateScope::Tool)).await;
    let input = json!({"set": {"a": "$attempt"}, "count": "n", "fail_below_attempt": 3});
    let first = write(&host, "x", input.clone(), Some("once"))
        .await
        .expect("third attempt");
    assert_eq!(first["attempt"], 3);
    assert_eq!(
        first["counter"], 1,
        "the failed attempts' increments are gone"
    );
    let read = json!({"read": ["a", "n"]});
    let seen = write(&host, "x", read.clone(), None).await.expect("read");
    assert_eq!(seen["read"], json!({"a": 3, "n": 1}));

    let replayed = CallRequest {
        agent: Some("x".into()),
        idempotency_key: Some("once".into()),
        ..CallRequest::new("state-writer", input.to_string())
    };
    let replayed = host.call(replayed).await.expect("replay");
    assert!(replayed.replayed);
    let seen = write(&host, "x", read, None).await.expect("read");
    assert_eq!(seen["read"]["n"], 1, "a replay writes nothing");
}

#[tokio::test]
async fn a_write_past_the_quota_is_a_typed_error_and_writes_nothing() {
    let host = common::host();
    let spec = Some(StateSpec {
        max_keys: Some(2),
        ..state("small", StateScope::Owner).unwrap()
    });
    writer(&host, spec).await;
    let error = write(&host, "x", json!({"set": {"a": 1, "b": 2, "c": 3}}), None)
        .await
        .expect_err("over the quota");
    let message = error.to_string() + &format!("{error:?}");
    assert!(message.contains("state-quota-exceeded"), "{message}");
    assert_eq!(
        error.class().as_str(),
        "invalid-input",
        "the caller's scope is full: not a tool failure the breaker counts"
    );
    let seen = write(&host, "x", json!({"read": ["a", "b"]}), None)
        .await
        .expect("read");
    assert_eq!(seen["keys"], json!([]), "no partial write");
    // Within the quota it works, and another owner has a space of its own.
    write(&host, "x", json!({"set": {"a": 1, "b": 2}}), None)
        .await
        .expect("fits");
    let other = write(&host, "y", json!({"read": ["a"]}), None)
        .await
        .expect("read");
    assert_eq!(other["read"], json!({"a": null}));
}

#[tokio::test]
async fn a_tool_without_a_grant_gets_no_state() {
    let host = common::host();
    writer(&host, None).await;
    let error = write(&host, "x", json!({"set": {"a": 1}}), None)
        .await
        .expect_err("no grant");
    assert!(
        format!("{error:?}").contains("no state is granted"),
        "{error:?}"
    );
    common::assert_host_still_serves(&host).await;
}

#[tokio::test]
async fn a_schedule_scoped_bucket_is_shared_by_its_runs_tool_or_task_and_closed_outside() {
    let clock = Arc::new(ManualWallClock::new(at("2026-11-30T07:00:00Z")));
    let host = common::builder()
        .wall_clock(clock.clone())
        .build()
        .expect("host");
    writer(&host, state("runs", StateScope::Schedule)).await;
    let schedules = host.schedules();
    let counting = json!({"count": "n"});
    schedules
        .create(ScheduleSpec::tool(
            "by-tool",
            "ops",
            "0 9 * * *",
            "state-writer",
            counting.clone(),
        ))
        .await
        .expect("schedule");
    let task: cofferdam::TaskSpec = serde_json::from_value(json!({
        "id": "count",
        "steps": [{"name": "count", "tool": "state-writer", "input": counting}],
    }))
    .expect("task");
    schedules
        .create(ScheduleSpec {
            target: cofferdam::ScheduleTarget::Task { task },
            ..ScheduleSpec::tool("by-task", "ops", "0 9 * * *", "state-writer", json!({}))
        })
        .await
        .expect("schedule");
    let runner = schedules.runner();
    for day in ["2026-11-30", "2026-12-01"] {
        clock.set(at(&format!("{day}T09:00:00Z")));
        runner.tick().await.expect("tick").finished().await;
    }
    let state = host.state();
    for name in ["by-tool", "by-task"] {
        let space = format!("runs/schedule:ops/{name}");
        assert_eq!(
            state.get(&space, "n").expect("state"),
            Some(b"2".to_vec()),
            "{name}: both runs counted in the schedule's own space"
        );
    }
    // Outside a schedule run there is no schedule scope to open.
    let error = write(&host, "x", json!({"count": "n"}), None)
        .await
        .expect_err("no schedule");
    assert!(
        format!("{error:?}").contains("no state is granted"),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_guest_cannot_grow_the_hosts_buffer_by_deleting_absent_keys() {
    let host = common::host();
    let spec = Some(StateSpec {
        max_keys: Some(10),
        ..state("small", StateScope::Tool).unwrap()
    });
    writer(&host, spec).await;
    let started = std::time::Instant::now();
    let error = write(&host, "x", json!({"delete_many": 1_000_000}), None)
        .await
        .expect_err("too many writes");
    assert!(
        format!("{error:?}").contains("state-too-many-writes"),
        "{error:?}"
    );
    assert_eq!(error.class().as_str(), "invalid-input");
    // Refused after 84 keys, not after a million: the call was quick.
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    common::assert_host_still_serves(&host).await;
}
