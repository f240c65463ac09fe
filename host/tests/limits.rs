//! Every per-call limit, driven by a misbehaving guest; the host must stop
//! it with the exact error and keep serving.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cofferdam::{CallError, CallRequest, ErrorClass, Fuel, LimitsSpec, Progress, ToolPolicy};
use cofferdam_test_artifacts as artifacts;
use common::{assert_host_still_serves, host, load, policy_with};

#[tokio::test]
async fn infinite_loop_runs_out_of_fuel() {
    let host = host();
    load(
        &host,
        artifacts::LOOP_FOREVER,
        policy_with(LimitsSpec {
            fuel: Some(50_000_000),
            ..Default::default()
        }),
    )
    .await;
    let error = host
        .call(CallRequest::new("loop-forever", "{}"))
        .await
        .expect_err("must stop");
    assert!(
        matches!(
            error,
            CallError::OutOfFuel {
                fuel: Fuel(50_000_000),
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.class(), ErrorClass::OutOfFuel);
    assert_host_still_serves(&host).await;
}

#[tokio::test]
async fn infinite_loop_with_plenty_of_fuel_is_stopped_by_the_deadline() {
    let host = host();
    let limits = LimitsSpec {
        fuel: Some(u64::MAX / 2),
        timeout_ms: Some(200),
        ..Default::default()
    };
    load(&host, artifacts::LOOP_FOREVER, policy_with(limits)).await;
    let started = Instant::now();
    let error = host
        .call(CallRequest::new("loop-forever", "{}"))
        .await
        .expect_err("must stop");
    assert!(
        matches!(error, CallError::DeadlineExceeded { timeout, .. } if timeout == Duration::from_millis(200)),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped late: {:?}",
        started.elapsed()
    );
    assert_host_still_serves(&host).await;
}

#[tokio::test]
async fn guest_blocked_in_a_host_call_is_stopped_by_the_deadline() {
    let host = host();
    load(
        &host,
        artifacts::SLEEPY,
        policy_with(LimitsSpec {
            timeout_ms: Some(200),
            ..Default::default()
        }),
    )
    .await;
    let started = Instant::now();
    let error = host
        .call(CallRequest::new("sleepy", r#"{"millis":60000}"#))
        .await
        .expect_err("must stop");
    assert_eq!(error.class(), ErrorClass::DeadlineExceeded, "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped late: {:?}",
        started.elapsed()
    );
    assert_host_still_serves(&host).await;
}

#[tokio::test]
async fn request_can_lower_but_not_raise_the_tool_deadline() {
    let host = host();
    load(
        &host,
        artifacts::SLEEPY,
        policy_with(LimitsSpec {
            timeout_ms: Some(5_000),
            ..Default::default()
        }),
    )
    .await;
    let request = CallRequest {
        timeout: Some(Duration::from_millis(100)),
        ..CallRequest::new("sleepy", r#"{"millis":60000}"#)
    };
    let error = host.call(request).await.expect_err("must stop");
    assert!(
        matches!(error, CallError::DeadlineExceeded { timeout, .. } if timeout == Duration::from_millis(100)),
        "{error:?}"
    );
    let request = CallRequest {
        timeout: Some(Duration::from_secs(3600)),
        ..CallRequest::new("sleepy", r#"{"millis":1}"#)
    };
    let outcome = host.call(request).await.expect("short sleep fits");
    assert_eq!(outcome.output, "1");
}

#[tokio::test]
async fn unbounded_allocation_hits_the_memory_limit() {
    let host = host();
    load(
        &host,
        artifacts::ALLOC_FOREVER,
        policy_with(LimitsSpec {
            memory_mib: Some(32),
            ..Default::default()
        }),
    )
    .await;
    let error = host
        .call(CallRequest::new("alloc-forever", "{}"))
        .await
        .expect_err("must stop");
    assert!(
        matches!(error, CallError::MemoryLimit { limit_bytes, .. } if limit_bytes == 32 << 20),
        "{error:?}"
    );
    assert_host_still_serves(&host).await;
}

#[tokio::test]
async fn memory_limit_above_the_host_maximum_is_refused_at_load() {
    let host = common::builder()
        .max_memory_bytes(64 << 20)
        .build()
        .expect("host");
    let error = host
        .load_file(
            artifacts::HELLO.as_ref(),
            policy_with(LimitsSpec {
                memory_mib: Some(65),
                ..Default::default()
            }),
        )
        .await
        .expect_err("above the pool slot");
    assert!(error.to_string().contains("memory_mib"), "{error}");
}

#[tokio::test]
async fn deep_recursion_overflows_the_stack() {
    let host = host();
    load(&host, artifacts::DEEP_RECURSION, ToolPolicy::default()).await;
    let error = host
        .call(CallRequest::new("deep-recursion", "{}"))
        .await
        .expect_err("must stop");
    assert!(
        matches!(error, CallError::StackOverflow { .. }),
        "{error:?}"
    );
    assert_host_still_serves(&host).await;
}

#[tokio::test]
async fn panic_is_reported_with_its_message() {
    let host = host();
    load(&host, artifacts::TRAP, ToolPolicy::default()).await;
    let error = host
        .call(CallRequest::new("trap", "{}"))
        .await
        .expect_err("panics");
    match &error {
        CallError::Panic { message, .. } => {
            assert_eq!(message, "the tool broke on purpose (value was None)");
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_host_still_serves(&host).await;
}

#[tokio::test]
async fn stdout_flood_is_truncated_not_fatal() {
    let host = host();
    let limits = LimitsSpec {
        max_stdout_bytes: Some(1000),
        max_stderr_bytes: Some(10),
        ..Default::default()
    };
    load(&host, artifacts::STDOUT_FLOOD, policy_with(limits)).await;
    let outcome = host
        .call(CallRequest::new("stdout-flood", r#"{"bytes":1000000}"#))
        .await
        .expect("a chatty tool still finishes");
    assert_eq!(outcome.output, "1000000");
    assert_eq!(outcome.stdout, "x".repeat(1000));
    assert!(outcome.stdout_truncated);
    assert_eq!(outcome.stderr, "x".repeat(10));
    assert!(outcome.stderr_truncated);
    assert_host_still_serves(&host).await;
}

#[tokio::test]
async fn output_past_its_limit_is_refused() {
    let host = host();
    load(
        &host,
        artifacts::HUGE_OUTPUT,
        policy_with(LimitsSpec {
            max_output_bytes: Some(1000),
            ..Default::default()
        }),
    )
    .await;
    let error = host
        .call(CallRequest::new("huge-output", r#"{"bytes":2000}"#))
        .await
        .expect_err("too large");
    assert!(
        matches!(
            error,
            CallError::OutputTooLarge {
                size: 2002,
                limit: 1000,
                ..
            }
        ),
        "{error:?}"
    );
    let fits = host
        .call(CallRequest::new("huge-output", r#"{"bytes":998}"#))
        .await
        .expect("fits");
    assert_eq!(fits.output.len(), 1000);
}

#[tokio::test]
async fn output_far_beyond_the_transfer_limit_is_a_data_limit() {
    let host = host();
    let limits = LimitsSpec {
        max_output_bytes: Some(1000),
        hostcall_bytes: Some(10_000),
        ..Default::default()
    };
    load(&host, artifacts::HUGE_OUTPUT, policy_with(limits)).await;
    let error = host
        .call(CallRequest::new("huge-output", r#"{"bytes":3000000}"#))
        .await
        .expect_err("too large to copy");
    assert!(
        matches!(error, CallError::DataLimit { limit: 10_000, .. }),
        "{error:?}"
    );
    assert_host_still_serves(&host).await;
}

#[tokio::test]
async fn log_records_are_bounded_and_counted() {
    let host = host();
    load(
        &host,
        artifacts::INTROSPECT,
        policy_with(LimitsSpec {
            max_log_records: Some(10),
            ..Default::default()
        }),
    )
    .await;
    let outcome = host
        .call(CallRequest::new("introspect", r#"{"logs":50}"#))
        .await
        .expect("succeeds");
    assert_eq!(outcome.logs.len(), 10);
    assert_eq!(outcome.logs[9].message, "line 9");
    assert_eq!(outcome.logs_dropped, 40);
}

#[tokio::test]
async fn guest_sees_its_call_context_and_fuel_derived_budget() {
    let host = host();
    load(
        &host,
        artifacts::INTROSPECT,
        policy_with(LimitsSpec {
            fuel: Some(1_000_000_000),
            timeout_ms: Some(4_000),
            ..Default::default()
        }),
    )
    .await;
    let request = CallRequest {
        call_id: Some("call-42".into()),
        task_id: Some("task-7".into()),
        ..CallRequest::new("introspect", "{}")
    };
    let outcome = host.call(request).await.expect("succeeds");
    let out = outcome.output_json();
    assert_eq!(out["call_id"], "call-42");
    assert_eq!(out["task_id"], "task-7");
    assert_eq!(out["attempt"], 1);
    assert_eq!(out["deadline_ms"], 4000);
    // 1e9 fuel at 100,000 fuel per token, less what the call had used so far.
    let budget = out["remaining_budget"].as_u64().expect("number");
    assert!(
        budget < 10_000 && budget > 9_000,
        "remaining budget {budget}"
    );
    assert_eq!(outcome.call_id, "call-42");
    assert!(outcome.fuel_used.0 > 0);
    assert!(outcome.tokens.0 >= outcome.fuel_used.0.div_ceil(100_000));
}

#[tokio::test]
async fn progress_reports_reach_the_caller() {
    let host = host();
    load(&host, artifacts::INTROSPECT, ToolPolicy::default()).await;
    let seen: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let request = CallRequest {
        progress: Some(Arc::new(move |p: &Progress| {
            sink.lock().expect("lock").push(p.clone())
        })),
        ..CallRequest::new("introspect", r#"{"progress":3}"#)
    };
    host.call(request).await.expect("succeeds");
    let seen = seen.lock().expect("lock");
    let done: Vec<(u64, Option<u64>)> = seen.iter().map(|p| (p.done, p.total)).collect();
    assert_eq!(done, vec![(1, Some(3)), (2, Some(3)), (3, Some(3))]);
    assert_eq!(seen[0].message, "working");
}

#[tokio::test]
async fn many_concurrent_calls_all_succeed() {
    let host = host();
    load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    let calls = (0..64).map(|i| {
        let host = host.clone();
        tokio::spawn(async move {
            host.call(CallRequest::new("hello", format!(r#"{{"name":"n{i}"}}"#)))
                .await
        })
    });
    for (i, call) in calls.enumerate() {
        let outcome = call.await.expect("task").expect("call");
        assert_eq!(outcome.output_json()["greeting"], format!("Hello, n{i}!"));
    }
}
