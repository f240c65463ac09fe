//! Warm instance reuse: visible reuse (a tool that counts its calls), and
//! retirement on trap, timeout, cancellation, `max_invocations` and idleness.

use crate::common;

use std::path::Path;
use std::time::Duration;

use cofferdam::{
    CallRequest, ErrorClass, Host, LimitsSpec, PolicyError, PoolSpec, ToolPolicy, WarmSpec,
};
use cofferdam_test_artifacts as artifacts;

fn warm(instances: u32, max_invocations: Option<u32>, idle_ms: Option<u64>) -> ToolPolicy {
    ToolPolicy {
        warm: WarmSpec {
            instances: Some(instances),
            max_invocations,
            idle_ms,
        },
        ..common::policy_with(LimitsSpec::default())
    }
}

async fn count(host: &Host, trap: bool) -> Result<u64, cofferdam::CallError> {
    let input = format!(r#"{{"trap":{trap}}}"#);
    let outcome = host.call(CallRequest::new("counter", input)).await?;
    Ok(outcome.output_json().as_u64().expect("a count"))
}

async fn counts(host: &Host, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(count(host, false).await.expect("count"));
    }
    out
}

#[tokio::test]
async fn a_fresh_instance_per_call_unless_the_tool_opts_in() {
    let host = common::host();
    common::load(&host, artifacts::COUNTER, ToolPolicy::default()).await;
    assert_eq!(
        counts(&host, 3).await,
        [1, 1, 1],
        "no state survives a call"
    );
    assert_eq!(host.stats("counter").unwrap().warm, None);

    let host = common::host();
    common::load(&host, artifacts::COUNTER, warm(1, None, None)).await;
    assert_eq!(
        counts(&host, 3).await,
        [1, 2, 3],
        "the same instance served all three"
    );
    let stats = host.stats("counter").unwrap().warm.unwrap();
    assert_eq!((stats.idle, stats.reused, stats.retired), (1, 2, 0));
}

#[tokio::test]
async fn a_trapped_instance_is_never_reused() {
    let host = common::host();
    common::load(&host, artifacts::COUNTER, warm(1, None, None)).await;
    assert_eq!(counts(&host, 2).await, [1, 2]);
    let trapped = count(&host, true).await.unwrap_err();
    assert_eq!(trapped.class(), ErrorClass::Panic, "{trapped}");
    assert_eq!(
        counts(&host, 2).await,
        [1, 2],
        "a fresh instance after the trap"
    );
    let stats = host.stats("counter").unwrap().warm.unwrap();
    assert_eq!(stats.retired, 1);
    common::assert_host_still_serves(&host).await;
}

#[tokio::test]
async fn instances_retire_after_max_invocations_and_when_idle() {
    let host = common::host();
    common::load(&host, artifacts::COUNTER, warm(1, Some(2), None)).await;
    assert_eq!(counts(&host, 5).await, [1, 2, 1, 2, 1]);
    assert_eq!(host.stats("counter").unwrap().warm.unwrap().retired, 2);

    let host = common::host();
    common::load(&host, artifacts::COUNTER, warm(1, None, Some(20))).await;
    assert_eq!(counts(&host, 2).await, [1, 2]);
    // Idle past 20 ms (the sleep is the lower bound of the idle time).
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(counts(&host, 1).await, [1], "the idle instance was retired");
}

#[tokio::test]
async fn timed_out_and_cancelled_instances_are_dropped() {
    let host = common::host();
    let policy = ToolPolicy {
        limits: LimitsSpec {
            timeout_ms: Some(100),
            ..LimitsSpec::default()
        },
        ..warm(1, None, None)
    };
    common::load(&host, artifacts::SLEEPY, policy).await;
    let quick = || CallRequest::new("sleepy", r#"{"millis":1}"#);
    host.call(quick()).await.expect("quick call");
    assert_eq!(host.stats("sleepy").unwrap().warm.unwrap().idle, 1);
    let slow = host
        .call(CallRequest::new("sleepy", r#"{"millis":10000}"#))
        .await
        .unwrap_err();
    assert_eq!(slow.class(), ErrorClass::DeadlineExceeded);
    let stats = host.stats("sleepy").unwrap().warm.unwrap();
    assert_eq!((stats.idle, stats.reused, stats.retired), (0, 1, 1));

    host.call(quick()).await.expect("a fresh instance serves");
    let cancel = cofferdam::CancellationToken::new();
    let call = tokio::spawn({
        let (host, cancel) = (host.clone(), cancel.clone());
        async move {
            let request = CallRequest {
                cancel: Some(cancel),
                ..CallRequest::new("sleepy", r#"{"millis":10000}"#)
            };
            host.call(request).await
        }
    });
    while host.stats("sleepy").unwrap().in_flight == 0 {
        tokio::task::yield_now().await;
    }
    cancel.cancel();
    assert_eq!(
        call.await.unwrap().unwrap_err().class(),
        ErrorClass::Cancelled
    );
    let stats = host.stats("sleepy").unwrap().warm.unwrap();
    assert_eq!((stats.idle, stats.retired), (0, 2));
}

#[tokio::test]
async fn concurrent_calls_keep_at_most_the_configured_idle_instances() {
    let host = common::host();
    let policy = ToolPolicy {
        pool: PoolSpec {
            max_concurrent: Some(4),
            ..PoolSpec::default()
        },
        ..warm(2, None, None)
    };
    common::load(&host, artifacts::SLEEPY, policy).await;
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move {
                host.call(CallRequest::new("sleepy", r#"{"millis":50}"#))
                    .await
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("call");
    }
    // However the calls interleaved, two instances stay and the rest retired.
    let stats = host.stats("sleepy").unwrap().warm.unwrap();
    assert_eq!(stats.idle, 2);
    assert_eq!(stats.retired, 4 - stats.reused - 2);
}

#[tokio::test]
async fn more_warm_instances_than_the_bulkhead_is_refused() {
    let host = common::host();
    let err = host
        .load_file(Path::new(artifacts::COUNTER), warm(5, None, None))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            cofferdam::LoadError::Policy(PolicyError::WarmAbovePool {
                instances: 5,
                max_concurrent: 4
            })
        ),
        "{err}"
    );
}
