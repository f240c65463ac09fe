//! Idempotency keys, budgets and the audit history with real guests.

use crate::common;

use std::time::Duration;

use cofferdam::{
    BudgetCap, CallError, CallRequest, Effect, ErrorClass, HistoryQuery, Host, Jitter, LimitsSpec,
    RetrySpec, ScopeId, Tokens, ToolPolicy,
};
use cofferdam_test_artifacts as artifacts;
use common::{load, policy_with};
use serde_json::json;

fn keyed(tool: &str, input: &str, key: &str) -> CallRequest {
    CallRequest {
        idempotency_key: Some(key.into()),
        agent: Some("a1".into()),
        ..CallRequest::new(tool, input)
    }
}

fn invocations(host: &Host, tool: &str) -> u64 {
    host.stats(tool).expect("loaded").invocations
}

fn single_attempt() -> RetrySpec {
    RetrySpec {
        max_attempts: Some(1),
        ..RetrySpec::default()
    }
}

#[tokio::test]
async fn keyed_call_runs_once_and_repeats_replay_its_output() {
    let host = common::host();
    load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    let first = host
        .call(keyed("hello", r#"{"name":"Ada"}"#, "k1"))
        .await
        .expect("runs");
    assert!(!first.replayed);
    assert!(first.tokens.0 > 0);
    // Same input with keys in another order: the canonical input is the same.
    let again = host
        .call(keyed("hello", r#"{ "name" : "Ada" }"#, "k1"))
        .await
        .expect("replays");
    assert!(again.replayed);
    assert_eq!(again.output, first.output);
    assert_eq!(
        (again.tokens, again.fuel_used, again.attempts),
        (Tokens(0), cofferdam::Fuel(0), 0)
    );
    assert_eq!(invocations(&host, "hello"), 1);
}

#[tokio::test]
async fn same_key_with_another_input_is_a_mismatch() {
    let host = common::host();
    load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    host.call(keyed("hello", r#"{"name":"Ada"}"#, "k"))
        .await
        .expect("runs");
    let error = host
        .call(keyed("hello", r#"{"name":"Bob"}"#, "k"))
        .await
        .expect_err("mismatch");
    assert!(
        matches!(error, CallError::IdempotencyMismatch { .. }),
        "{error:?}"
    );
    let elsewhere = CallRequest {
        agent: Some("a2".into()),
        ..keyed("hello", r#"{"name":"Bob"}"#, "k")
    };
    assert!(
        !host
            .call(elsewhere)
            .await
            .expect("another scope's key")
            .replayed
    );
    let long = keyed("hello", r#"{"name":"Ada"}"#, &"k".repeat(256));
    assert_eq!(
        host.call(long).await.expect_err("too long").class(),
        ErrorClass::InvalidInput
    );
}

#[tokio::test]
async fn calls_racing_one_key_execute_once() {
    let host = common::host();
    load(&host, artifacts::SLEEPY, ToolPolicy::default()).await;
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move {
                host.call(keyed("sleepy", r#"{"millis":300}"#, "race"))
                    .await
            })
        })
        .collect();
    let (mut ran, mut replayed, mut busy) = (0, 0, 0);
    for call in calls {
        match call.await.expect("task") {
            Ok(outcome) if outcome.replayed => replayed += 1,
            Ok(_) => ran += 1,
            Err(CallError::InProgress { retry_after, .. }) => {
                assert!(retry_after > Duration::ZERO);
                busy += 1;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        ran, 1,
        "exactly one execution ({replayed} replayed, {busy} in progress)"
    );
    assert_eq!(ran + replayed + busy, 16);
    assert_eq!(invocations(&host, "sleepy"), 1);
    assert!(
        host.call(keyed("sleepy", r#"{"millis":300}"#, "race"))
            .await
            .expect("done")
            .replayed
    );
}

#[tokio::test]
async fn terminal_errors_are_stored_and_replayed_but_retryable_ones_release_the_key() {
    let host = common::host();
    load(
        &host,
        artifacts::FLAKY,
        ToolPolicy {
            retry: single_attempt(),
            ..Default::default()
        },
    )
    .await;
    let permanent = r#"{"fail_times":9,"failure":"permanent"}"#;
    let error = host
        .call(keyed("flaky", permanent, "p"))
        .await
        .expect_err("fails");
    assert_eq!(error.class(), ErrorClass::Permanent);
    let replay = host
        .call(keyed("flaky", permanent, "p"))
        .await
        .expect_err("stored");
    assert_eq!(replay.class(), ErrorClass::Permanent);
    assert_eq!(
        invocations(&host, "flaky"),
        1,
        "the stored error was replayed"
    );

    let transient = r#"{"fail_times":9,"failure":"transient"}"#;
    host.call(keyed("flaky", transient, "t"))
        .await
        .expect_err("fails");
    host.call(keyed("flaky", transient, "t"))
        .await
        .expect_err("runs again");
    assert_eq!(
        invocations(&host, "flaky"),
        3,
        "a retryable failure released the key"
    );
}

#[tokio::test]
async fn keyed_side_effecting_call_is_retried_after_transient_failures() {
    let host = common::host();
    let policy = ToolPolicy {
        effect: Some(Effect::SideEffecting),
        ..Default::default()
    };
    load(&host, artifacts::FLAKY, policy).await;
    let input = r#"{"fail_times":2,"failure":"transient"}"#;
    let unkeyed = host
        .call(CallRequest::new("flaky", input))
        .await
        .expect_err("no key, no retry");
    assert_eq!(unkeyed.class(), ErrorClass::Transient);
    let outcome = host
        .call(keyed("flaky", input, "pay-1"))
        .await
        .expect("retried with a key");
    assert_eq!(outcome.attempts, 3);
}

#[tokio::test]
async fn interrupted_side_effecting_keyed_call_stays_unknown() {
    let (host, dir) = common::side_effecting_sleepy().await;
    let input = json!({"millis": 60000, "mark": "/out/mark"}).to_string();
    let error = host
        .call(keyed("sleepy", &input, "charge-7"))
        .await
        .expect_err("interrupted");
    assert_eq!(error.class(), ErrorClass::UnknownOutcome);
    let again = host
        .call(keyed("sleepy", &input, "charge-7"))
        .await
        .expect_err("never re-run");
    assert!(matches!(again, CallError::KeyUnknown { .. }), "{again:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("mark")).expect("mark"),
        "acted\n"
    );
    assert_eq!(invocations(&host, "sleepy"), 1);
    let entry = host
        .journal_entries()
        .expect("entries")
        .pop()
        .expect("one record");
    assert!(
        matches!(entry.state, cofferdam::KeyState::Unknown { .. }),
        "{entry:?}"
    );
}

#[tokio::test]
async fn a_loop_stopped_at_its_deadline_is_charged_for_what_it_burned() {
    // Compiled wasm writes its fuel counter back only at calls and returns:
    // a call-free loop stopped by the deadline used to be charged for almost
    // nothing (~1,200 fuel after half a second of spinning).
    let host = common::host();
    let policy = ToolPolicy {
        retry: single_attempt(),
        ..policy_with(LimitsSpec {
            timeout_ms: Some(300),
            fuel: Some(u64::MAX / 4),
            ..LimitsSpec::default()
        })
    };
    load(&host, artifacts::LOOP_FOREVER, policy).await;
    let agent = ScopeId::Agent("spender".into());
    host.budgets()
        .set_cap(&agent, BudgetCap::new(Tokens(u64::MAX / 2)))
        .await
        .expect("cap");
    let request = CallRequest {
        agent: Some("spender".into()),
        ..CallRequest::new("loop-forever", "{}")
    };
    let error = host.call(request).await.expect_err("stopped");
    assert_eq!(error.class(), ErrorClass::DeadlineExceeded, "{error:?}");
    let status = host.budgets().get(&agent).expect("get").expect("capped");
    // 300 ms of a tight loop is hundreds of millions of instructions on any
    // machine; 20 million (200 tokens) is far below, and far above the
    // ~1,200 fuel it was charged before.
    assert!(status.spent >= Tokens(200), "{status:?}");
    assert_eq!(status.reserved, Tokens(0));
}

#[tokio::test]
async fn endless_loop_stops_where_the_budget_runs_out() {
    let host = common::host();
    let policy = ToolPolicy {
        retry: single_attempt(),
        ..Default::default()
    };
    load(&host, artifacts::LOOP_FOREVER, policy).await;
    let agent = ScopeId::Agent("a1".into());
    host.budgets()
        .set_cap(&agent, BudgetCap::new(Tokens(1000)))
        .await
        .expect("cap");
    let request = CallRequest {
        agent: Some("a1".into()),
        ..CallRequest::new("loop-forever", "{}")
    };
    let error = host.call(request.clone()).await.expect_err("out of budget");
    match &error {
        CallError::BudgetExhausted {
            scope, asked, left, ..
        } => {
            assert_eq!(scope, "agent:a1");
            assert_eq!(*left, Tokens(1000), "it could pay for 1000 tokens of fuel");
            assert!(
                asked.0 > 1000,
                "it wanted the tool's whole fuel limit: {asked:?}"
            );
        }
        other => panic!("expected budget-exhausted, got {other:?}"),
    }
    let status = host.budgets().get(&agent).expect("get").expect("capped");
    assert_eq!(
        (status.spent, status.reserved, status.left),
        (Tokens(1000), Tokens(0), Tokens(0))
    );
    let refused = host.call(request).await.expect_err("nothing left");
    assert!(
        matches!(
            refused,
            CallError::BudgetExhausted {
                left: Tokens(0),
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(
        invocations(&host, "loop-forever"),
        1,
        "refused before running"
    );
}

#[tokio::test]
async fn output_is_charged_by_size_and_must_fit_the_budget() {
    let host = common::host();
    load(
        &host,
        artifacts::HUGE_OUTPUT,
        ToolPolicy {
            retry: single_attempt(),
            ..Default::default()
        },
    )
    .await;
    let outcome = host
        .call(CallRequest::new("huge-output", r#"{"bytes":4000}"#))
        .await
        .expect("unbudgeted");
    assert!(
        outcome.tokens.0 >= 4002 / 4,
        "charged {:?} for 4002 bytes",
        outcome.tokens
    );
    let task = ScopeId::Task("t".into());
    host.budgets()
        .set_cap(&task, BudgetCap::new(Tokens(500)))
        .await
        .expect("cap");
    let request = CallRequest {
        task_id: Some("t".into()),
        ..CallRequest::new("huge-output", r#"{"bytes":4000}"#)
    };
    let error = host.call(request).await.expect_err("does not fit");
    assert_eq!(error.class(), ErrorClass::BudgetExhausted);
    let status = host.budgets().get(&task).expect("get").expect("capped");
    assert!(status.spent.0 <= 500, "never above the cap: {status:?}");
    let per_call = CallRequest {
        max_tokens: Some(Tokens(10)),
        ..CallRequest::new("huge-output", r#"{"bytes":4000}"#)
    };
    let error = host.call(per_call).await.expect_err("call cap");
    assert!(
        matches!(&error, CallError::OutputOverBudget { scope, stored: false, .. } if scope == "call"),
        "{error:?}"
    );
}

#[tokio::test]
async fn outside_spending_counts_against_the_same_cap() {
    let host = common::host();
    load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    let agent = ScopeId::Agent("a1".into());
    host.budgets()
        .set_cap(&agent, BudgetCap::new(Tokens(100)))
        .await
        .expect("cap");
    let after = host
        .budgets()
        .charge(&agent, Tokens(100))
        .await
        .expect("charged");
    assert_eq!(after.left, Tokens(0));
    let request = CallRequest {
        agent: Some("a1".into()),
        ..CallRequest::new("hello", r#"{"name":"x"}"#)
    };
    let error = host.call(request).await.expect_err("the LLM spent it all");
    assert_eq!(error.class(), ErrorClass::BudgetExhausted);
    let unknown = host
        .budgets()
        .charge(&ScopeId::Agent("nobody".into()), Tokens(1))
        .await;
    assert!(unknown.is_err(), "no cap, nothing to charge");
}

/// Property: however many calls race against a cap, the ledger never spends
/// more than the cap and no reservation is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_never_overspend_a_cap() {
    let host = common::host();
    let queued = cofferdam::PoolSpec {
        max_concurrent: Some(8),
        max_queue: Some(64),
        max_wait_ms: Some(60_000),
    };
    load(
        &host,
        artifacts::HELLO,
        ToolPolicy {
            pool: queued,
            ..Default::default()
        },
    )
    .await;
    let rng = Jitter::seeded(2026);
    for round in 0..6 {
        let scope = format!("r{round}");
        let cap = 20 + (rng.next_unit() * 400.0) as u64;
        host.budgets()
            .set_cap(&ScopeId::Agent(scope.clone()), BudgetCap::new(Tokens(cap)))
            .await
            .expect("cap");
        let calls: Vec<_> = (0..24)
            .map(|i| {
                let host = host.clone();
                let request = CallRequest {
                    agent: Some(scope.clone()),
                    ..CallRequest::new("hello", format!(r#"{{"name":"caller {i}"}}"#))
                };
                tokio::spawn(async move { host.call(request).await })
            })
            .collect();
        let mut paid = 0;
        for call in calls {
            match call.await.expect("task") {
                Ok(outcome) => paid += outcome.tokens.0,
                Err(e) => assert_eq!(e.class(), ErrorClass::BudgetExhausted, "{e:?}"),
            }
        }
        let status = host
            .budgets()
            .get(&ScopeId::Agent(scope))
            .expect("get")
            .expect("capped");
        assert!(
            status.spent.0 <= cap,
            "round {round}: spent {:?} of {cap}",
            status.spent
        );
        assert!(paid <= status.spent.0, "successful calls were charged");
        assert_eq!(status.reserved, Tokens(0));
    }
}

#[tokio::test]
async fn history_records_every_attempt_and_totals_per_scope() {
    let host = common::host();
    load(&host, artifacts::FLAKY, ToolPolicy::default()).await;
    let request = CallRequest {
        agent: Some("histo".into()),
        task_id: Some("t1".into()),
        ..CallRequest::new("flaky", r#"{"fail_times":2,"failure":"transient"}"#)
    };
    let outcome = host.call(request).await.expect("third attempt");
    // Audit records are written asynchronously; the writer drains in order.
    let query = HistoryQuery {
        agent: Some("histo".into()),
        ..HistoryQuery::default()
    };
    let mut records = Vec::new();
    for _ in 0..200 {
        records = host.history(&query).expect("history");
        if records.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut statuses: Vec<(u32, String)> = records
        .iter()
        .map(|r| (r.attempt, r.status.clone()))
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        vec![
            (1, "transient".into()),
            (2, "transient".into()),
            (3, "ok".into())
        ]
    );
    assert!(
        records
            .iter()
            .all(|r| r.call_id == outcome.call_id && r.tool == "flaky")
    );
    let totals = host.totals(&query).expect("totals");
    let spent: u64 = records.iter().map(|r| r.tokens).sum();
    assert_eq!(totals["agent:histo"], spent);
    assert_eq!(totals["task:t1"], spent);
}

#[tokio::test]
async fn a_restarted_host_remembers_spending_and_replays_completed_keys() {
    let data = tempfile::tempdir().expect("tempdir");
    let shared = common::shared_data_dir().join("artifacts");
    let build = || {
        Host::builder()
            .data_dir(data.path())
            .artifact_dir(&shared)
            .build()
            .expect("host")
    };
    let host = build();
    load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    let agent = ScopeId::Agent("a1".into());
    host.budgets()
        .set_cap(&agent, BudgetCap::new(Tokens(10_000)))
        .await
        .expect("cap");
    let first = host
        .call(keyed("hello", r#"{"name":"Ada"}"#, "once"))
        .await
        .expect("runs");
    let spent = host
        .budgets()
        .get(&agent)
        .expect("get")
        .expect("capped")
        .spent;
    assert_eq!(spent, first.tokens);
    drop(host);

    let host = build();
    load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    assert_eq!(
        host.budgets()
            .get(&agent)
            .expect("get")
            .expect("capped")
            .spent,
        spent
    );
    let again = host
        .call(keyed("hello", r#"{"name":"Ada"}"#, "once"))
        .await
        .expect("replays");
    assert!(again.replayed);
    assert_eq!(again.output, first.output);
    assert_eq!(invocations(&host, "hello"), 0);
}

#[tokio::test]
async fn journal_records_past_retention_are_reaped() {
    let host = common::host();
    load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    host.call(keyed("hello", r#"{"name":"Ada"}"#, "old"))
        .await
        .expect("runs");
    assert_eq!(
        host.reap_journal(Duration::from_secs(3600))
            .await
            .expect("reap"),
        0
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(host.reap_journal(Duration::ZERO).await.expect("reap"), 1);
    assert!(host.journal_entries().expect("entries").is_empty());
    let rerun = host
        .call(keyed("hello", r#"{"name":"Ada"}"#, "old"))
        .await
        .expect("runs again");
    assert!(!rerun.replayed);
}

#[tokio::test]
async fn guest_sees_the_budget_it_was_given() {
    let host = common::host();
    load(&host, artifacts::INTROSPECT, ToolPolicy::default()).await;
    let agent = ScopeId::Agent("tight".into());
    host.budgets()
        .set_cap(&agent, BudgetCap::new(Tokens(500)))
        .await
        .expect("cap");
    let request = CallRequest {
        agent: Some("tight".into()),
        ..CallRequest::new("introspect", "{}")
    };
    let outcome = host.call(request).await.expect("fits");
    let remaining = outcome.output_json()["remaining_budget"]
        .as_u64()
        .expect("number");
    assert!(
        remaining < 500 && remaining > 400,
        "the store got 500 tokens of fuel: {remaining}"
    );
}

/// `notes` (side-effecting) writing into a fresh directory, on a host allowed
/// to mount it.
async fn notes_host() -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = common::builder()
        .allow_root(dir.path())
        .build()
        .expect("host");
    let policy = ToolPolicy {
        mounts: vec![cofferdam::Mount::read_write(dir.path(), "/notes")],
        ..Default::default()
    };
    load(&host, artifacts::NOTES, policy).await;
    (host, dir)
}

#[tokio::test]
async fn a_keyed_side_effect_whose_output_the_budget_cannot_pay_never_runs_twice() {
    let (host, dir) = notes_host().await;
    let agent = ScopeId::Agent("planner3".into());
    host.budgets()
        .set_cap(&agent, BudgetCap::new(Tokens(8)))
        .await
        .expect("cap");
    let request = CallRequest {
        idempotency_key: Some("order-18".into()),
        agent: Some("planner3".into()),
        ..CallRequest::new("notes", r#"{"title":"order-18","body":"ship it"}"#)
    };
    let error = host.call(request.clone()).await.expect_err("over budget");
    assert_eq!(error.class(), ErrorClass::BudgetExhausted);
    let CallError::OutputOverBudget {
        stored, cost, left, ..
    } = &error
    else {
        panic!("expected the output to be withheld, got {error:?}");
    };
    assert!(*stored && cost.0 > left.0, "{error:?}");
    assert!(error.to_string().contains("withheld"), "{error}");
    let note = dir.path().join("order-18.md");
    assert_eq!(fs_lines(&note), 1, "the tool ran and wrote its note");
    let status = host.budgets().get(&agent).expect("get").expect("capped");
    assert_eq!(
        status.spent,
        Tokens(8),
        "charged what the cap allowed, no more"
    );

    // The operator raises the cap; the agent repeats the call with its key.
    host.budgets()
        .set_cap(&agent, BudgetCap::new(Tokens(1000)))
        .await
        .expect("cap");
    let outcome = host
        .call(request)
        .await
        .expect("replays the stored outcome");
    assert!(outcome.replayed);
    assert_eq!(outcome.output_json()["path"], "/notes/order-18.md");
    assert_eq!(fs_lines(&note), 1, "the side effect happened once");
    assert_eq!(invocations(&host, "notes"), 1);
}

fn fs_lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

#[tokio::test]
async fn a_side_effect_out_of_budgeted_fuel_is_an_unknown_outcome_not_a_free_retry() {
    let host = common::host();
    let policy = ToolPolicy {
        effect: Some(Effect::SideEffecting),
        ..Default::default()
    };
    load(&host, artifacts::LOOP_FOREVER, policy).await;
    host.budgets()
        .set_cap(&ScopeId::Agent("a1".into()), BudgetCap::new(Tokens(50)))
        .await
        .expect("cap");
    let error = host
        .call(keyed("loop-forever", "{}", "spin"))
        .await
        .expect_err("stopped where the budget ended");
    assert_eq!(error.class(), ErrorClass::UnknownOutcome, "{error:?}");
    // The key is not released: raising the cap does not run it again.
    host.budgets()
        .set_cap(&ScopeId::Agent("a1".into()), BudgetCap::new(Tokens(5000)))
        .await
        .expect("cap");
    let again = host
        .call(keyed("loop-forever", "{}", "spin"))
        .await
        .expect_err("unknown");
    assert_eq!(again.class(), ErrorClass::UnknownOutcome, "{again:?}");
    assert_eq!(invocations(&host, "loop-forever"), 1);
    let escalations = host.escalations().list(false).expect("list");
    assert_eq!(escalations.len(), 1, "{escalations:?}");
}

#[tokio::test]
async fn concurrent_calls_wait_for_a_held_budget_instead_of_failing() {
    let host = common::host();
    let pool = cofferdam::PoolSpec {
        max_concurrent: Some(20),
        max_queue: Some(0),
        max_wait_ms: None,
    };
    load(
        &host,
        artifacts::HELLO,
        ToolPolicy {
            pool,
            ..Default::default()
        },
    )
    .await;
    let probe = host
        .call(CallRequest::new("hello", r#"{"name":"caller 00"}"#))
        .await
        .expect("unbudgeted");
    let each = probe.tokens.0;
    // Room for 20 calls and a half: every one of 20 concurrent calls is
    // paid for, although each reservation asks for far more than that.
    let cap = each * 20 + each / 2;
    let agent = ScopeId::Agent("planner".into());
    host.budgets()
        .set_cap(&agent, BudgetCap::new(Tokens(cap)))
        .await
        .expect("cap");
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let host = host.clone();
            let request = CallRequest {
                agent: Some("planner".into()),
                ..CallRequest::new("hello", format!(r#"{{"name":"caller {i:02}"}}"#))
            };
            tokio::spawn(async move { host.call(request).await })
        })
        .collect();
    for call in calls {
        let outcome = call.await.expect("task").expect("paid for");
        assert_eq!(outcome.tokens.0, each);
    }
    let status = host.budgets().get(&agent).expect("get").expect("capped");
    assert_eq!(
        (status.spent, status.reserved),
        (Tokens(each * 20), Tokens(0))
    );
}

#[tokio::test]
async fn a_replayed_tool_error_says_it_is_a_replay() {
    let host = common::host();
    load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    let first = host
        .call(keyed("hello", r#"{"name":""}"#, "empty"))
        .await
        .expect_err("invalid");
    assert!(
        first.is_tool_reported() && !first.is_replayed(),
        "{first:?}"
    );
    let replay = host
        .call(keyed("hello", r#"{"name":""}"#, "empty"))
        .await
        .expect_err("stored");
    assert!(replay.is_replayed(), "{replay:?}");
    assert!(replay.is_tool_reported(), "{replay:?}");
    assert_eq!(replay.class(), ErrorClass::InvalidInput);
    assert!(replay.to_string().ends_with("(replayed)"), "{replay}");
    assert_eq!(invocations(&host, "hello"), 1);
}

#[tokio::test]
async fn a_reload_that_changes_only_the_digest_keeps_replaying_completed_keys() {
    let host = common::host();
    load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    let first = host
        .call(keyed("hello", r#"{"name":"Ada"}"#, "k"))
        .await
        .expect("runs");
    let original = host.tool("hello").expect("loaded").digest;
    // The same code with one more custom section: a new digest.
    let mut bytes = std::fs::read(artifacts::HELLO).expect("component");
    let name = b"rebuilt";
    bytes.extend_from_slice(&[0, (name.len() + 1 + 3) as u8, name.len() as u8]);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(b"abc");
    let dir = tempfile::tempdir().expect("tempdir");
    let rebuilt = dir.path().join("hello.wasm");
    std::fs::write(&rebuilt, &bytes).expect("write");
    let replaced = host
        .replace_file(&rebuilt, ToolPolicy::default())
        .await
        .expect("reloads");
    assert_ne!(replaced.digest, original);
    let again = host
        .call(keyed("hello", r#"{"name":"Ada"}"#, "k"))
        .await
        .expect("replays, not a mismatch");
    assert!(again.replayed);
    assert_eq!(again.output, first.output);
}

#[tokio::test]
async fn a_pure_tool_spinning_past_its_deadline_is_not_retried() {
    let host = common::host();
    let policy = ToolPolicy {
        limits: cofferdam::LimitsSpec {
            timeout_ms: Some(150),
            fuel: Some(u64::MAX / 4),
            ..Default::default()
        },
        ..Default::default()
    };
    load(&host, artifacts::LOOP_FOREVER, policy).await;
    let error = host
        .call(CallRequest::new("loop-forever", "{}"))
        .await
        .expect_err("deadline");
    assert_eq!(error.class(), ErrorClass::DeadlineExceeded, "{error:?}");
    assert!(
        matches!(
            error,
            CallError::DeadlineExceeded {
                in_guest_code: true,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(invocations(&host, "loop-forever"), 1, "not retried");
}

#[tokio::test]
async fn a_bad_idempotency_key_is_its_own_error_not_bad_input() {
    let host = common::host();
    load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    for key in [
        String::new(),
        "k".repeat(cofferdam::MAX_IDEMPOTENCY_KEY_LEN + 1),
    ] {
        let len = key.len();
        let error = host
            .call(keyed("hello", r#"{"name":"Ada"}"#, &key))
            .await
            .expect_err("bad key");
        assert!(
            matches!(error, CallError::InvalidKey { len: l, .. } if l == len),
            "{error:?}"
        );
        assert_eq!(error.class(), ErrorClass::InvalidInput);
        let text = error.to_string();
        assert!(
            text.contains("idempotency key") && !text.contains("JSON"),
            "{text}"
        );
    }
    assert_eq!(invocations(&host, "hello"), 0, "nothing ran");
}
