//! The escalation queue: unknown outcomes land in it on their own, with
//! their context; every reason can be raised; every resolution settles the
//! key the way it says, once.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cofferdam::{
    CallError, CallRequest, CancellationToken, Effect, EscalationError, EscalationReason, Host,
    LimitsSpec, Mount, NewEscalation, Resolution, ToolPolicy,
};
use cofferdam_test_artifacts as artifacts;

const INPUT: &str = r#"{"millis":60000,"mark":"/out/mark"}"#;

/// A host (journal in `data`) with side-effecting `sleepy` writing marks to `out`.
async fn host(data: &Path, out: &Path) -> Host {
    let host = common::builder()
        .data_dir(data)
        .artifact_dir(common::shared_data_dir().join("artifacts"))
        .allow_root(out)
        .build()
        .expect("host");
    let policy = ToolPolicy {
        effect: Some(Effect::SideEffecting),
        mounts: vec![Mount::read_write(out, "/out")],
        limits: LimitsSpec {
            timeout_ms: Some(60_000),
            ..LimitsSpec::default()
        },
        ..ToolPolicy::default()
    };
    common::load(&host, artifacts::SLEEPY, policy).await;
    host
}

fn marks(out: &Path) -> usize {
    std::fs::read_to_string(out.join("mark")).map_or(0, |t| t.lines().count())
}

/// Runs a keyed side-effecting call and cancels it once it has acted.
async fn interrupted_call(host: &Host, out: &Path, key: &str) -> CallError {
    let before = marks(out);
    let cancel = CancellationToken::new();
    let call = tokio::spawn({
        let host = host.clone();
        let request = CallRequest {
            idempotency_key: Some(key.into()),
            agent: Some("planner".into()),
            task_id: Some("trip-7".into()),
            cancel: Some(cancel.clone()),
            ..CallRequest::new("sleepy", INPUT)
        };
        async move { host.call(request).await }
    });
    for _ in 0..1000 {
        if marks(out) > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    call.await.expect("joins").expect_err("interrupted")
}

fn keyed(key: &str, input: &str) -> CallRequest {
    CallRequest {
        idempotency_key: Some(key.into()),
        agent: Some("planner".into()),
        ..CallRequest::new("sleepy", input)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_outcome_lands_in_the_queue_once_with_its_context() {
    let (data, out) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let host = host(data.path(), out.path()).await;
    let error = interrupted_call(&host, out.path(), "pay-1").await;
    assert_eq!(error.class().as_str(), "unknown-outcome");

    let open = host.escalations().list(false).expect("list");
    assert_eq!(open.len(), 1, "{open:?}");
    let e = &open[0];
    assert_eq!(e.reason, EscalationReason::UnknownOutcome);
    assert_eq!(e.tool.as_deref(), Some("sleepy"));
    let key = e.key.as_ref().expect("key");
    assert_eq!(
        (key.scope.as_str(), key.key.as_str()),
        ("agent:planner", "pay-1")
    );
    assert_eq!(e.task.as_deref(), Some("trip-7"));
    assert_eq!(e.agent.as_deref(), Some("planner"));
    assert_eq!(e.input.as_deref(), Some(INPUT));
    assert!(e.error.contains("cancelled"), "{}", e.error);
    assert!(e.call_id.is_some());

    // Asking again is refused and does not escalate twice.
    let again = host
        .call(keyed("pay-1", INPUT))
        .await
        .expect_err("never re-run");
    assert!(matches!(again, CallError::KeyUnknown { .. }), "{again:?}");
    assert_eq!(host.escalations().list(false).expect("list").len(), 1);
    assert_eq!(marks(out.path()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolutions_settle_the_key_as_they_say() {
    let (data, out) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let host = host(data.path(), out.path()).await;
    let queue = host.escalations();

    // mark-done: the human saw it happen; repeats replay their output.
    interrupted_call(&host, out.path(), "done").await;
    let id = queue.list(false).expect("list")[0].id;
    let bad = queue
        .resolve(
            id,
            Resolution::MarkDone {
                output: Some("{nope".into()),
            },
            "ops",
        )
        .await
        .expect_err("bad output");
    assert!(matches!(bad, EscalationError::BadOutput { .. }), "{bad:?}");
    let resolved = queue
        .resolve(
            id,
            Resolution::MarkDone {
                output: Some("60000".into()),
            },
            "ana: charge is on the statement",
        )
        .await
        .expect("resolved");
    assert_eq!(
        resolved.resolved.as_ref().expect("resolved").note,
        "ana: charge is on the statement"
    );
    let replay = host.call(keyed("done", INPUT)).await.expect("replayed");
    assert!(replay.replayed);
    assert_eq!(replay.output, "60000");
    let twice = queue
        .resolve(id, Resolution::Abort, "late")
        .await
        .expect_err("once");
    assert!(
        matches!(
            twice,
            EscalationError::AlreadyResolved {
                resolution: "mark-done",
                ..
            }
        ),
        "{twice:?}"
    );

    // resume: it did not happen; the next call with the key runs.
    interrupted_call(&host, out.path(), "again").await;
    let id = queue.list(false).expect("list")[0].id;
    queue
        .resolve(id, Resolution::Resume, "ana: not charged")
        .await
        .expect("resolved");
    let error = interrupted_call(&host, out.path(), "again").await;
    assert!(
        matches!(error, CallError::UnknownOutcome { .. }),
        "the resumed key ran again (and was interrupted again): {error:?}"
    );
    let id = queue.list(false).expect("list")[0].id;
    queue
        .resolve(id, Resolution::Compensate, "ana: refunded")
        .await
        .expect("resolved");

    // abort: later calls get a final error saying so.
    interrupted_call(&host, out.path(), "gone").await;
    let id = queue.list(false).expect("list")[0].id;
    queue
        .resolve(id, Resolution::Abort, "ana: customer cancelled")
        .await
        .expect("resolved");
    let error = host
        .call(keyed("gone", INPUT))
        .await
        .expect_err("final error");
    assert!(error.to_string().contains("aborted"), "{error}");
    assert!(queue.list(false).expect("list").is_empty());
    assert_eq!(queue.list(true).expect("list").len(), 4);
}

#[tokio::test]
async fn every_reason_can_be_raised_and_unknown_ids_are_named() {
    let host = common::host();
    let queue = host.escalations();
    let reasons = [
        EscalationReason::MaxRetriesExceeded,
        EscalationReason::UnknownOutcome,
        EscalationReason::CompensationFailed,
        EscalationReason::BudgetReached,
        EscalationReason::RequiresHuman,
        EscalationReason::IrreversibleAction,
    ];
    for (step, reason) in reasons.into_iter().enumerate() {
        let id = queue
            .raise(NewEscalation {
                reason: Some(reason),
                task: Some("trip-9".into()),
                step: Some(step as u32),
                error: format!("step {step} needs a person"),
                ..NewEscalation::default()
            })
            .await
            .expect("raised");
        let e = queue.get(id).expect("stored");
        assert_eq!((e.reason, e.step), (reason, Some(step as u32)));
    }
    assert_eq!(queue.list(false).expect("list").len(), 6);
    let missing = queue.get(99).expect_err("missing");
    assert_eq!(missing.to_string(), "no escalation #99");
    let missing = queue
        .resolve(99, Resolution::Abort, "x")
        .await
        .expect_err("missing");
    assert!(matches!(missing, EscalationError::NotFound { id: 99 }));
    let reasonless = queue
        .raise(NewEscalation::default())
        .await
        .expect_err("no reason");
    assert!(matches!(reasonless, EscalationError::NoReason));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_shows_and_resolves_escalations() {
    let (data, out) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    {
        let host = host(data.path(), out.path()).await;
        interrupted_call(&host, out.path(), "cli-1").await;
    }
    let cofferdam = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_cofferdam"))
            .args(args)
            .arg("--data-dir")
            .arg(data.path())
            .output()
            .expect("runs");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        (
            output.status.success(),
            text,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, text, err) = cofferdam(&["escalations", "list"]);
    assert!(ok, "{err}");
    assert!(
        text.contains("#1") && text.contains("OPEN") && text.contains("unknown-outcome"),
        "{text}"
    );
    assert!(text.contains("task trip-7"), "{text}");
    let (ok, text, _) = cofferdam(&["escalations", "show", "1"]);
    assert!(ok);
    let shown: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(shown["input"], INPUT);
    let (ok, _, err) = cofferdam(&["escalations", "resolve", "1", "--note", "x"]);
    assert!(!ok && err.contains("--resume"), "{err}");
    let (ok, text, err) = cofferdam(&["escalations", "resolve", "1", "--abort", "--note", "ana"]);
    assert!(ok, "{err}");
    assert_eq!(text.trim(), "escalation #1 resolved: abort");
    let (ok, text, _) = cofferdam(&["escalations", "list"]);
    assert!(ok);
    assert_eq!(text.trim(), "no open escalations");
    let (ok, _, err) = cofferdam(&["escalations", "resolve", "1", "--resume", "--note", "ana"]);
    assert!(!ok && err.contains("already resolved"), "{err}");
}
