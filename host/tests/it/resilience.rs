//! Breakers, bulkheads and retries with real guests. Time runs on a
//! `ManualClock` wherever the test is about time, so nothing here races.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use cofferdam::{
    BreakerMode, BreakerSpec, BreakerState, CallError, CallRequest, Clock, Effect, ErrorClass,
    Host, LimitsSpec, LoadError, ManualClock, PoolSpec, RetrySpec, ToolPolicy,
};
use cofferdam_test_artifacts as artifacts;
use common::{assert_host_still_serves, load};
use serde_json::json;

fn manual_host() -> (Host, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let host = common::builder()
        .clock(clock.clone())
        .jitter_seed(42)
        .build()
        .expect("host");
    (host, clock)
}

fn flaky_input(fail_times: u32, failure: &str) -> String {
    json!({"fail_times": fail_times, "failure": failure}).to_string()
}

fn invocations(host: &Host, tool: &str) -> u64 {
    host.stats(tool).expect("loaded").invocations
}

#[tokio::test]
async fn tool_that_fails_twice_then_succeeds_returns_success_after_three_attempts() {
    let (host, clock) = manual_host();
    load(&host, artifacts::FLAKY, ToolPolicy::default()).await;
    let outcome = host
        .call(CallRequest::new("flaky", flaky_input(2, "transient")))
        .await
        .expect("third try");
    assert_eq!(outcome.output_json()["succeeded_on_attempt"], 3);
    assert_eq!(outcome.attempts, 3);
    assert_eq!(
        outcome.failed_attempts,
        vec![ErrorClass::Transient, ErrorClass::Transient]
    );
    assert_eq!(outcome.breaker, BreakerState::Closed);
    assert!(
        outcome.waited <= Duration::from_millis(200 + 400),
        "{:?}",
        outcome.waited
    );
    assert_eq!(
        clock.now(),
        outcome.waited,
        "backoff slept on the injected clock"
    );
    assert_eq!(invocations(&host, "flaky"), 3);
}

#[tokio::test]
async fn attempts_stop_at_the_configured_maximum() {
    let (host, _) = manual_host();
    load(&host, artifacts::FLAKY, ToolPolicy::default()).await;
    let error = host
        .call(CallRequest::new("flaky", flaky_input(5, "transient")))
        .await
        .expect_err("gives up");
    match &error {
        CallError::RetriesExhausted {
            attempts,
            classes,
            last,
            ..
        } => {
            assert_eq!(*attempts, 3);
            assert_eq!(classes, &vec![ErrorClass::Transient; 3]);
            assert_eq!(last.class(), ErrorClass::Transient);
        }
        other => panic!("expected retries-exhausted, got {other:?}"),
    }
    assert_eq!(error.class(), ErrorClass::RetriesExhausted);
    assert_eq!(
        error.cause_class(),
        ErrorClass::Transient,
        "why, without the message"
    );
    assert_eq!(invocations(&host, "flaky"), 3);
}

#[tokio::test]
async fn rate_limited_retry_waits_at_least_what_the_tool_asked() {
    let (host, _) = manual_host();
    load(&host, artifacts::FLAKY, ToolPolicy::default()).await;
    let outcome = host
        .call(CallRequest::new("flaky", flaky_input(1, "rate-limited")))
        .await
        .expect("second try");
    assert_eq!(outcome.attempts, 2);
    assert!(
        outcome.waited >= Duration::from_millis(25),
        "{:?}",
        outcome.waited
    );
}

#[tokio::test]
async fn permanent_and_invalid_input_errors_are_not_retried() {
    let (host, _) = manual_host();
    load(&host, artifacts::FLAKY, ToolPolicy::default()).await;
    for (failure, class) in [
        ("permanent", ErrorClass::Permanent),
        ("invalid-input", ErrorClass::InvalidInput),
    ] {
        let error = host
            .call(CallRequest::new("flaky", flaky_input(1, failure)))
            .await
            .expect_err("fails");
        assert_eq!(error.class(), class);
    }
    assert_eq!(invocations(&host, "flaky"), 2, "one attempt each");
}

#[tokio::test]
async fn side_effecting_tool_that_times_out_is_unknown_and_not_invoked_again() {
    let (host, dir) = common::side_effecting_sleepy().await;
    let input = json!({"millis": 60000, "mark": "/out/marks.txt"}).to_string();
    let error = host
        .call(CallRequest::new("sleepy", input))
        .await
        .expect_err("times out");
    match &error {
        CallError::UnknownOutcome { cause, .. } => {
            assert_eq!(cause.class(), ErrorClass::DeadlineExceeded);
        }
        other => panic!("expected unknown-outcome, got {other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("marks.txt")).expect("marked"),
        "acted\n"
    );
    assert_eq!(invocations(&host, "sleepy"), 1, "never re-invoked");
}

#[tokio::test]
async fn side_effecting_transient_failure_is_not_retried_without_a_key() {
    let (host, _) = manual_host();
    let policy = ToolPolicy {
        effect: Some(Effect::SideEffecting),
        ..Default::default()
    };
    load(&host, artifacts::FLAKY, policy).await;
    let error = host
        .call(CallRequest::new("flaky", flaky_input(1, "transient")))
        .await
        .expect_err("fails");
    assert_eq!(error.class(), ErrorClass::Transient);
    assert_eq!(invocations(&host, "flaky"), 1);
}

#[tokio::test]
async fn breaker_opens_after_repeated_failures_and_then_fails_fast_with_retry_after() {
    let (host, clock) = manual_host();
    load(&host, artifacts::FLAKY, ToolPolicy::default()).await;
    let always = flaky_input(u32::MAX, "permanent");
    for _ in 0..5 {
        let error = host
            .call(CallRequest::new("flaky", always.clone()))
            .await
            .expect_err("fails");
        assert_eq!(error.class(), ErrorClass::Permanent);
    }
    let error = host
        .call(CallRequest::new("flaky", always.clone()))
        .await
        .expect_err("open");
    let CallError::CircuitOpen {
        state,
        retry_after: Some(wait),
        attempts: 0,
        ..
    } = error
    else {
        panic!("expected an open breaker, got {error:?}");
    };
    assert_eq!(state, BreakerState::Open);
    assert!(
        wait >= Duration::from_secs(24) && wait <= Duration::from_secs(36),
        "{wait:?}"
    );
    assert_eq!(
        invocations(&host, "flaky"),
        5,
        "the open breaker spared the tool"
    );

    clock.advance(wait);
    let probe = host
        .call(CallRequest::new("flaky", always.clone()))
        .await
        .expect_err("probe fails");
    assert_eq!(probe.class(), ErrorClass::Permanent);
    assert_eq!(invocations(&host, "flaky"), 6);
    let snapshot = host.stats("flaky").expect("stats").breaker;
    assert_eq!(
        (snapshot.state, snapshot.opened, snapshot.half_opened),
        (BreakerState::Open, 2, 1)
    );
    assert!(
        snapshot.retry_after.expect("open") > wait,
        "the open period grows"
    );

    clock.advance(Duration::from_secs(600));
    let healthy = flaky_input(0, "permanent");
    for _ in 0..3 {
        host.call(CallRequest::new("flaky", healthy.clone()))
            .await
            .expect("probes succeed");
    }
    assert_eq!(
        host.stats("flaky").expect("stats").breaker.state,
        BreakerState::Closed
    );
}

/// The weather-API-is-down scenario: an agent calls a tool once a second for
/// eight hours while its upstream fails every time. Without a breaker that is
/// 28,800 calls and up to 86,400 invocations; with it, the tool runs about
/// once per open period (30 s doubling to 5 min).
#[tokio::test]
async fn eight_hour_outage_invokes_the_broken_tool_a_bounded_number_of_times() {
    let (host, clock) = manual_host();
    load(&host, artifacts::FLAKY, ToolPolicy::default()).await;
    let always = flaky_input(u32::MAX, "transient");
    let (mut failed_fast, mut with_retry_after) = (0u32, 0u32);
    for _ in 0..8 * 3600 {
        clock.advance(Duration::from_secs(1));
        let error = host
            .call(CallRequest::new("flaky", always.clone()))
            .await
            .expect_err("down");
        if error.class() == ErrorClass::CircuitOpen {
            failed_fast += 1;
            with_retry_after += u32::from(error.retry_after().is_some());
        }
    }
    let invoked = invocations(&host, "flaky");
    assert!(
        invoked <= 150,
        "the broken tool ran {invoked} times in 8 hours"
    );
    assert!(invoked >= 90, "it was still probed: {invoked}");
    assert!(
        failed_fast > 28_000,
        "{failed_fast} of 28800 calls failed fast"
    );
    assert_eq!(
        with_retry_after, failed_fast,
        "every refusal says when to come back"
    );
}

#[tokio::test]
async fn full_bulkhead_refuses_fast_while_a_healthy_neighbour_keeps_serving() {
    let host = common::host();
    let hung = ToolPolicy {
        pool: PoolSpec {
            max_concurrent: Some(2),
            ..Default::default()
        },
        limits: LimitsSpec {
            timeout_ms: Some(3000),
            ..Default::default()
        },
        retry: RetrySpec {
            max_attempts: Some(1),
            ..Default::default()
        },
        ..Default::default()
    };
    load(&host, artifacts::SLEEPY, hung).await;
    let stuck: Vec<_> = (0..2)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move {
                host.call(CallRequest::new("sleepy", r#"{"millis":60000}"#))
                    .await
            })
        })
        .collect();
    while host.stats("sleepy").expect("stats").in_flight < 2 {
        tokio::task::yield_now().await;
    }
    let error = host
        .call(CallRequest::new("sleepy", r#"{"millis":1}"#))
        .await
        .expect_err("full");
    assert!(matches!(error, CallError::BulkheadFull { .. }), "{error:?}");
    assert!(error.retry_after().is_some());
    for _ in 0..10 {
        assert_host_still_serves(&host).await;
    }
    for call in stuck {
        let error = call.await.expect("task").expect_err("hung at its deadline");
        assert_eq!(error.class(), ErrorClass::DeadlineExceeded);
    }
    assert_eq!(
        host.stats("sleepy")
            .expect("stats")
            .breaker
            .consecutive_failures,
        2
    );
}

#[tokio::test]
async fn forced_open_breaker_is_remembered_across_hosts() {
    let data = tempfile::tempdir().expect("tempdir");
    let host = Host::builder().data_dir(data.path()).build().expect("host");
    load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    host.set_breaker_mode("hello", BreakerMode::ForcedOpen)
        .expect("set");
    let refused = host
        .call(CallRequest::new("hello", r#"{"name":"x"}"#))
        .await
        .expect_err("off");
    assert!(
        matches!(
            refused,
            CallError::CircuitOpen {
                state: BreakerState::ForcedOpen,
                retry_after: None,
                ..
            }
        ),
        "{refused:?}"
    );
    drop(host);

    let again = Host::builder().data_dir(data.path()).build().expect("host");
    load(&again, artifacts::HELLO, ToolPolicy::default()).await;
    assert_eq!(
        again.stats("hello").expect("stats").breaker.state,
        BreakerState::ForcedOpen
    );
    again
        .set_breaker_mode("hello", BreakerMode::Normal)
        .expect("set");
    assert_host_still_serves(&again).await;
}

#[tokio::test]
async fn metrics_only_breaker_never_refuses() {
    let (host, _) = manual_host();
    let policy = ToolPolicy {
        breaker: BreakerSpec {
            mode: Some(BreakerMode::MetricsOnly),
            ..Default::default()
        },
        ..Default::default()
    };
    load(&host, artifacts::FLAKY, policy).await;
    for _ in 0..20 {
        let error = host
            .call(CallRequest::new(
                "flaky",
                flaky_input(u32::MAX, "permanent"),
            ))
            .await
            .expect_err("fails");
        assert_eq!(error.class(), ErrorClass::Permanent, "never circuit-open");
    }
    assert_eq!(invocations(&host, "flaky"), 20);
}

#[tokio::test]
async fn bulkheads_may_not_overcommit_the_instance_pool() {
    let host = common::builder().max_instances(6).build().expect("host");
    load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    let error = host
        .load_file(artifacts::INTROSPECT.as_ref(), ToolPolicy::default())
        .await
        .expect_err("4 + 4 > 6");
    assert!(
        matches!(
            error,
            LoadError::PoolExhausted {
                needed: 4,
                free: 2,
                total: 6
            }
        ),
        "{error:?}"
    );
    let small = ToolPolicy {
        pool: PoolSpec {
            max_concurrent: Some(2),
            ..Default::default()
        },
        ..Default::default()
    };
    load(&host, artifacts::INTROSPECT, small).await;
}

#[tokio::test]
async fn a_burst_past_the_default_pool_queues_instead_of_failing() {
    let host = common::host();
    load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    let calls: Vec<_> = (0..12)
        .map(|i| {
            let host = host.clone();
            tokio::spawn(async move {
                host.call(CallRequest::new("hello", format!(r#"{{"name":"c{i}"}}"#)))
                    .await
            })
        })
        .collect();
    for call in calls {
        call.await
            .expect("task")
            .expect("12 concurrent calls fit 4 slots and the default queue");
    }
}
