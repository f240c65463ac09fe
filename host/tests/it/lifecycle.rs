//! Calls cancelled by their caller, and tools replaced or reloaded while the
//! host serves.

use crate::common;

use std::time::Duration;

use cofferdam::{
    BulkheadConfig, CallError, CallRequest, CancellationToken, Effect, Host, HostConfig,
    LimitsSpec, LoadError, Mount, PoolSpec, ToolPolicy,
};
use cofferdam_test_artifacts as artifacts;
use common::{assert_host_still_serves, builder, host, load};

/// Waits (on a condition, not a timer) until `tool` has `n` calls in flight.
async fn wait_in_flight(host: &Host, tool: &str, n: u32) {
    for _ in 0..1000 {
        if host.stats(tool).expect("loaded").in_flight == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{tool} never had {n} call(s) in flight");
}

fn long(limits: LimitsSpec) -> LimitsSpec {
    LimitsSpec {
        timeout_ms: Some(60_000),
        ..limits
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_stops_a_spinning_guest_and_the_host_keeps_serving() {
    let host = host();
    let policy = ToolPolicy {
        limits: long(LimitsSpec {
            fuel: Some(u64::MAX / 4),
            ..LimitsSpec::default()
        }),
        ..ToolPolicy::default()
    };
    load(&host, artifacts::LOOP_FOREVER, policy).await;
    let cancel = CancellationToken::new();
    let call = tokio::spawn({
        let host = host.clone();
        let request = CallRequest {
            cancel: Some(cancel.clone()),
            ..CallRequest::new("loop-forever", "{}")
        };
        async move { host.call(request).await }
    });
    wait_in_flight(&host, "loop-forever", 1).await;
    cancel.cancel();
    let error = call.await.expect("joins").expect_err("cancelled");
    assert!(
        matches!(error, CallError::Cancelled { .. }),
        "pure tool: plain cancel, got {error:?}"
    );
    assert_eq!(error.class().as_str(), "cancelled");
    assert_eq!(host.stats("loop-forever").expect("loaded").in_flight, 0);
    assert_host_still_serves(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_side_effecting_call_cancelled_mid_run_has_an_unknown_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = builder().allow_root(dir.path()).build().expect("host");
    let policy = ToolPolicy {
        effect: Some(Effect::SideEffecting),
        mounts: vec![Mount::read_write(dir.path(), "/out")],
        limits: long(LimitsSpec::default()),
        ..ToolPolicy::default()
    };
    load(&host, artifacts::SLEEPY, policy).await;
    let input = r#"{"millis":60000,"mark":"/out/mark"}"#;
    let cancel = CancellationToken::new();
    let call = tokio::spawn({
        let host = host.clone();
        let request = CallRequest {
            idempotency_key: Some("pay-1".into()),
            cancel: Some(cancel.clone()),
            ..CallRequest::new("sleepy", input)
        };
        async move { host.call(request).await }
    });
    // The side effect has happened once the mark holds its line (the file
    // exists a moment before the line is written).
    let marked =
        || std::fs::read_to_string(dir.path().join("mark")).is_ok_and(|text| text.ends_with('\n'));
    for _ in 0..1000 {
        if marked() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    let error = call.await.expect("joins").expect_err("cancelled");
    match &error {
        CallError::UnknownOutcome { cause, .. } => {
            assert!(matches!(**cause, CallError::Cancelled { .. }), "{cause:?}")
        }
        other => panic!("expected an unknown outcome, got {other:?}"),
    }
    // The key is never re-run automatically.
    let again = host
        .call(CallRequest {
            idempotency_key: Some("pay-1".into()),
            ..CallRequest::new("sleepy", input)
        })
        .await
        .expect_err("not re-run");
    assert!(matches!(again, CallError::KeyUnknown { .. }), "{again:?}");
    let marks = std::fs::read_to_string(dir.path().join("mark")).expect("mark");
    assert_eq!(marks.lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_queued_call_leaves_the_running_one_alone() {
    let host = host();
    let policy = ToolPolicy {
        pool: PoolSpec {
            max_concurrent: Some(1),
            max_queue: Some(1),
            max_wait_ms: Some(60_000),
        },
        limits: long(LimitsSpec::default()),
        ..ToolPolicy::default()
    };
    load(&host, artifacts::SLEEPY, policy).await;
    let running = tokio::spawn({
        let host = host.clone();
        async move {
            host.call(CallRequest::new("sleepy", r#"{"millis":300}"#))
                .await
        }
    });
    wait_in_flight(&host, "sleepy", 1).await;
    let cancel = CancellationToken::new();
    let queued = tokio::spawn({
        let host = host.clone();
        let request = CallRequest {
            cancel: Some(cancel.clone()),
            ..CallRequest::new("sleepy", r#"{"millis":1}"#)
        };
        async move { host.call(request).await }
    });
    for _ in 0..1000 {
        if host.stats("sleepy").expect("loaded").queued == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    let error = queued.await.expect("joins").expect_err("cancelled");
    assert!(matches!(error, CallError::Cancelled { .. }), "{error:?}");
    let outcome = running
        .await
        .expect("joins")
        .expect("the running call finishes");
    assert_eq!(outcome.output, "300");
    assert_eq!(
        BulkheadConfig::default().max_queue,
        16,
        "a burst queues briefly by default"
    );
}

#[tokio::test]
async fn replacing_a_tool_swaps_its_policy_and_a_failed_replace_keeps_the_old_one() {
    let host = host();
    load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    assert_eq!(host.tool("hello").expect("loaded").effect, Effect::Pure);
    let again = host
        .load_file(artifacts::HELLO.as_ref(), ToolPolicy::default())
        .await
        .expect_err("already loaded");
    assert!(
        matches!(again, LoadError::AlreadyLoaded { .. }),
        "{again:?}"
    );

    let replaced = host
        .replace_file(
            artifacts::HELLO.as_ref(),
            ToolPolicy {
                effect: Some(Effect::Idempotent),
                ..ToolPolicy::default()
            },
        )
        .await
        .expect("replaced");
    assert_eq!(replaced.effect, Effect::Idempotent);
    assert_eq!(
        host.tool("hello").expect("loaded").effect,
        Effect::Idempotent
    );

    let pinned = ToolPolicy {
        sha256: Some("00".repeat(32)),
        ..ToolPolicy::default()
    };
    let error = host
        .replace_file(artifacts::HELLO.as_ref(), pinned)
        .await
        .expect_err("pin mismatch");
    assert!(
        matches!(error, LoadError::DigestMismatch { .. }),
        "{error:?}"
    );
    assert_eq!(host.tool("hello").expect("kept").effect, Effect::Idempotent);
    assert_host_still_serves(&host).await;
}

#[tokio::test]
async fn reloading_a_config_adds_updates_and_removes_tools() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |text: String| {
        let path = dir.path().join("cofferdam.toml");
        std::fs::write(&path, text).expect("write");
        HostConfig::from_file(&path).expect("valid")
    };
    let first = write(format!(
        "[tools.hello]\ncomponent = {:?}\n[tools.grep]\ncomponent = {:?}\n",
        artifacts::HELLO,
        artifacts::GREP
    ));
    let host = first
        .builder()
        .artifact_dir(common::shared_data_dir().join("artifacts"))
        .build()
        .expect("host");
    for (name, result) in first.load(&host).await {
        result.unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    let unchanged = first.reload(&host, &first).await;
    assert!(!unchanged.tools_changed(), "{unchanged:?}");

    let second = write(format!(
        "[defaults]\ntimeout_ms = 1000\n\
         [tools.hello]\ncomponent = {:?}\neffect = \"idempotent\"\n\
         [tools.greeter]\ncomponent = {:?}\n\
         [tools.broken]\ncomponent = {:?}\nsha256 = \"{}\"\n",
        artifacts::HELLO,
        artifacts::HELLO,
        artifacts::HELLO,
        "0".repeat(64)
    ));
    let report = second.reload(&host, &first).await;
    assert_eq!(report.added, ["greeter"]);
    assert_eq!(report.updated, ["hello"]);
    assert_eq!(report.removed, ["grep"]);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, "broken");
    assert_eq!(report.needs_restart, ["defaults"]);
    let names: Vec<String> = host.tools().iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, ["greeter", "hello"]);
    assert_eq!(
        host.tool("hello").expect("loaded").effect,
        Effect::Idempotent
    );
    let outcome = host
        .call(CallRequest::new("greeter", r#"{"name":"Ada"}"#))
        .await
        .expect("the added tool serves");
    assert_eq!(outcome.output_json()["greeting"], "Hello, Ada!");
}

#[tokio::test]
async fn a_fallback_answers_when_the_asked_tool_fails_in_a_listed_class() {
    let host = host();
    let primary = ToolPolicy {
        fallbacks: vec![
            cofferdam::ToolName::new("missing").expect("name"),
            cofferdam::ToolName::new("strong").expect("name"),
        ],
        ..ToolPolicy::default()
    };
    load(&host, artifacts::HELLO, primary).await;
    let strong = ToolPolicy {
        name: Some(cofferdam::ToolName::new("strong").expect("name")),
        ..ToolPolicy::default()
    };
    load(&host, artifacts::HELLO, strong).await;
    host.set_breaker_mode("hello", cofferdam::BreakerMode::ForcedOpen)
        .expect("set");

    let outcome = host
        .call(CallRequest::new("hello", r#"{"name":"Ada"}"#))
        .await
        .expect("the fallback answers");
    assert_eq!(outcome.tool.as_str(), "strong");
    let used = outcome.fallback_used.expect("marked as a fallback");
    assert_eq!(used.asked.as_str(), "hello");
    assert_eq!(used.because.as_str(), "circuit-open");

    // Bad input is not a reason to ask another tool.
    host.set_breaker_mode("hello", cofferdam::BreakerMode::Normal)
        .expect("set");
    let error = host
        .call(CallRequest::new("hello", r#"{"name":""}"#))
        .await
        .expect_err("invalid input");
    assert_eq!(error.class().as_str(), "invalid-input");
    assert_eq!(error.tool().map(|t| t.as_str()), Some("hello"));

    // When every fallback fails too, the caller gets the asked tool's error.
    host.set_breaker_mode("hello", cofferdam::BreakerMode::ForcedOpen)
        .expect("set");
    host.set_breaker_mode("strong", cofferdam::BreakerMode::ForcedOpen)
        .expect("set");
    let error = host
        .call(CallRequest::new("hello", r#"{"name":"Ada"}"#))
        .await
        .expect_err("all refuse");
    assert_eq!(error.tool().map(|t| t.as_str()), Some("hello"));
    assert_eq!(error.class().as_str(), "circuit-open");
}

#[tokio::test]
async fn a_policy_caps_what_one_call_may_spend() {
    let host = host();
    let policy = ToolPolicy {
        budget: cofferdam::BudgetSpec {
            max_tokens_per_call: Some(1),
        },
        ..ToolPolicy::default()
    };
    load(&host, artifacts::HELLO, policy).await;
    let error = host
        .call(CallRequest::new("hello", r#"{"name":"Ada"}"#))
        .await
        .expect_err("one token buys nothing");
    assert!(
        matches!(&error, CallError::BudgetExhausted { scope, .. }
            | CallError::OutputOverBudget { scope, .. } if scope == "call"),
        "{error:?}"
    );
    let self_fallback = ToolPolicy {
        fallbacks: vec![cofferdam::ToolName::new("hello").expect("name")],
        ..ToolPolicy::default()
    };
    let error = host
        .replace_file(artifacts::HELLO.as_ref(), self_fallback)
        .await
        .expect_err("a tool cannot fall back to itself");
    assert!(error.to_string().contains("lists itself"), "{error}");
}
