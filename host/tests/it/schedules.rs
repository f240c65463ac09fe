//! Schedules on a simulated calendar clock: what creation refuses, DST
//! slots, runs with cost and history, no double fire across a restart or a
//! crash, catch-up policies, auto-pause, sensitive tools, idempotent
//! lifecycle calls and reconciliation.

use crate::common;

use std::path::Path;
use std::sync::Arc;

use cofferdam::{
    CatchUp, CronError, CronField, ErrorClass, EscalationReason, Host, ManualWallClock, RunStatus,
    ScheduleConfig, ScheduleError, ScheduleSpec, ScheduleStatus, ScheduleTarget, Schedules,
    TaskSpec, Timestamp, Tokens, ToolName, ToolPolicy,
};
use cofferdam_test_artifacts as artifacts;
use serde_json::json;

fn at(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

/// A host on a manual calendar clock standing at `now`, with `hello`,
/// `trap` and `sleepy` loaded; its journal lives in `data` when given.
async fn host(
    now: &str,
    config: ScheduleConfig,
    data: Option<&Path>,
) -> (Host, Schedules, Arc<ManualWallClock>) {
    let clock = Arc::new(ManualWallClock::new(at(now)));
    let mut builder = common::builder()
        .wall_clock(clock.clone())
        .schedule_config(config);
    if let Some(dir) = data {
        builder = builder
            .data_dir(dir)
            .artifact_dir(common::shared_data_dir().join("artifacts"));
    }
    let host = builder.build().expect("host");
    common::load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    common::load(
        &host,
        artifacts::TRAP,
        common::policy_with(Default::default()),
    )
    .await;
    common::load(&host, artifacts::SLEEPY, ToolPolicy::default()).await;
    let schedules = host.schedules();
    (host, schedules, clock)
}

fn hello(name: &str, cron: &str, zone: &str) -> ScheduleSpec {
    ScheduleSpec {
        zone: zone.into(),
        ..ScheduleSpec::tool(name, "ops", cron, "hello", json!({"name": name}))
    }
}

#[tokio::test]
async fn creation_enforces_every_rule() {
    let config = ScheduleConfig {
        min_interval: std::time::Duration::from_secs(2 * 3600),
        quota_per_owner: 2,
        max_run_budget: Tokens(1_000),
        ..ScheduleConfig::default()
    };
    let (host, schedules, _) = host("2026-11-25T12:00:00Z", config, None).await;

    let err = schedules
        .create(hello("bad", "0 25 * * *", "UTC"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ScheduleError::Cron {
                source: CronError::Field {
                    field: CronField::Hour,
                    ..
                },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("hour field `25`"), "{err}");
    let err = schedules
        .create(hello("bad", "0 9 * * *", "Mars/Olympus"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Mars/Olympus"), "{err}");
    let err = schedules
        .create(hello("bad", "0 0 30 2 *", "UTC"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ScheduleError::Cron {
                source: CronError::NeverFires(_),
                ..
            }
        ),
        "{err}"
    );
    let err = schedules
        .create(hello("bad name", "0 9 * * *", "UTC"))
        .await
        .unwrap_err();
    assert!(matches!(err, ScheduleError::InvalidName { .. }), "{err}");

    // Too often: hourly is under the 2 h minimum.
    let err = schedules
        .create(hello("bad", "0 * * * *", "UTC"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ScheduleError::TooFrequent {
                gap_minutes: 60,
                min_minutes: 120,
                ..
            }
        ),
        "{err}"
    );
    // The first runs are 23 h apart; only 31 December 23:00 → 1 January
    // 00:00 comes closer. The whole next year is checked, not two runs.
    let err = schedules
        .create(hello("bad", "0 0,23 1,31 * *", "UTC"))
        .await
        .unwrap_err();
    match err {
        ScheduleError::TooFrequent {
            at: first,
            gap_minutes,
            ..
        } => {
            assert_eq!(first, at("2026-12-31T23:00:00Z"));
            assert_eq!(gap_minutes, 60);
        }
        other => panic!("{other}"),
    }

    // Budget within the system maximum; timeout within bounds.
    let err = schedules
        .create(ScheduleSpec {
            budget: Some(Tokens(1_001)),
            ..hello("b", "0 9 * * *", "UTC")
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ScheduleError::BudgetTooHigh {
                budget: 1_001,
                max: 1_000,
                ..
            }
        ),
        "{err}"
    );
    let err = schedules
        .create(ScheduleSpec {
            timeout_ms: Some(0),
            ..hello("b", "0 9 * * *", "UTC")
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ScheduleError::BadTimeout { .. }), "{err}");

    // The target must be loaded.
    let err = schedules
        .create(ScheduleSpec::tool(
            "x",
            "ops",
            "0 9 * * *",
            "nope",
            json!({}),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ScheduleError::UnknownTool { ref tool, .. } if tool == "nope"),
        "{err}"
    );

    // A valid one shows its next run in UTC and in its zone.
    let digest = || ScheduleSpec {
        budget: Some(Tokens(1_000)),
        ..hello("digest", "0 9 * * *", "Europe/Berlin")
    };
    let created = schedules.create(digest()).await.expect("created");
    let next = created.next_run.clone().expect("next run");
    assert_eq!(next.utc, at("2026-11-26T08:00:00Z"));
    assert_eq!(
        next.local.to_string(),
        "2026-11-26T09:00:00+01:00[Europe/Berlin]"
    );
    // Creating the same again is idempotent; a different one is refused.
    let again = schedules.create(digest()).await.expect("same spec again");
    assert_eq!(again.created, created.created);
    let err = schedules
        .create(hello("digest", "0 10 * * *", "Europe/Berlin"))
        .await
        .unwrap_err();
    assert!(matches!(err, ScheduleError::Exists { .. }), "{err}");

    // Quota: two per owner.
    schedules
        .create(hello("second", "0 9 * * *", "UTC"))
        .await
        .expect("second");
    let err = schedules
        .create(hello("third", "0 9 * * *", "UTC"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ScheduleError::QuotaExceeded { quota: 2, .. }),
        "{err}"
    );
    let other = ScheduleSpec {
        owner: "someone-else".into(),
        ..hello("third", "0 9 * * *", "UTC")
    };
    schedules
        .create(other)
        .await
        .expect("another owner has their own quota");
    assert_eq!(schedules.list(Some("ops")).unwrap().len(), 2);
    assert_eq!(schedules.list(None).unwrap().len(), 3);
    drop(host);
}

#[tokio::test]
async fn dst_gap_and_fold_fire_once_at_defined_instants() {
    let (_host, schedules, clock) =
        host("2026-03-07T12:00:00Z", ScheduleConfig::default(), None).await;
    // 02:30 does not exist in New York on 8 March 2026: it runs at 03:30 EDT.
    schedules
        .create(hello("spring", "30 2 * * *", "America/New_York"))
        .await
        .unwrap();
    let runner = schedules.runner();
    clock.set(at("2026-03-08T07:29:00Z"));
    assert!(runner.tick().await.unwrap().fired.is_empty());
    clock.set(at("2026-03-08T07:30:00Z"));
    let tick = runner.tick().await.unwrap();
    assert_eq!(
        tick.fired,
        [("spring".to_owned(), at("2026-03-08T07:30:00Z"))]
    );
    tick.finished().await;
    clock.set(at("2026-03-08T08:30:00Z"));
    assert!(
        runner.tick().await.unwrap().fired.is_empty(),
        "no second run at 03:30"
    );

    // 01:30 happens twice in New York on 1 November 2026: it runs at the first.
    clock.set(at("2026-10-31T12:00:00Z"));
    schedules
        .create(hello("autumn", "30 1 * * *", "America/New_York"))
        .await
        .unwrap();
    clock.set(at("2026-11-01T05:30:00Z")); // 01:30 EDT
    let tick = runner.tick().await.unwrap();
    assert!(
        tick.fired
            .contains(&("autumn".to_owned(), at("2026-11-01T05:30:00Z")))
    );
    tick.finished().await;
    clock.set(at("2026-11-01T06:30:00Z")); // 01:30 EST, the repeat
    let tick = runner.tick().await.unwrap();
    assert!(
        !tick.fired.iter().any(|(n, _)| n == "autumn"),
        "{:?}",
        tick.fired
    );
    let next = schedules.get("autumn").unwrap().next_run.unwrap();
    assert_eq!(
        next.local.to_string(),
        "2026-11-02T01:30:00-05:00[America/New_York]"
    );
}

#[tokio::test]
async fn a_daily_run_fires_at_its_local_time_with_cost_and_history() {
    let (host, schedules, clock) =
        host("2026-11-25T12:00:00Z", ScheduleConfig::default(), None).await;
    schedules
        .create(ScheduleSpec {
            budget: Some(Tokens(500)),
            ..hello("digest", "0 9 * * *", "Asia/Tokyo")
        })
        .await
        .unwrap();
    let runner = schedules.runner();
    clock.set(at("2026-11-25T23:59:59Z")); // 08:59:59 in Tokyo
    assert!(runner.tick().await.unwrap().fired.is_empty());
    clock.set(at("2026-11-26T00:00:01Z"));
    let runs = runner.tick().await.unwrap().finished().await;
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.slot, at("2026-11-26T00:00:00Z"));
    assert_eq!(run.run_id, "digest-20261126T0000Z");
    assert!(run.tokens.0 > 0 && run.fuel > 0, "{run:?}");
    // The run had its own budget scope, capped at the schedule's budget.
    let scope = host
        .budgets()
        .get(&cofferdam::ScopeId::Task(run.run_id.clone()))
        .unwrap()
        .expect("run scope");
    assert_eq!(scope.cap.hard, Tokens(500));
    assert_eq!(scope.spent, run.tokens);
    // The next day runs again; history and totals add up.
    clock.set(at("2026-11-27T00:00:30Z"));
    runner.tick().await.unwrap().finished().await;
    let history = schedules.history("digest").unwrap();
    assert_eq!(history.len(), 2);
    let schedule = schedules.get("digest").unwrap();
    assert_eq!(schedule.runs, 2);
    assert_eq!(
        schedule.total_tokens.0,
        history.iter().map(|r| r.tokens.0).sum::<u64>()
    );
    assert!(schedule.escalations.is_empty());
}

#[tokio::test]
async fn a_run_over_its_budget_or_timeout_fails_and_says_why() {
    let (_host, schedules, clock) =
        host("2026-11-25T12:00:00Z", ScheduleConfig::default(), None).await;
    schedules
        .create(ScheduleSpec {
            budget: Some(Tokens(0)),
            ..hello("broke", "0 13 * * *", "UTC")
        })
        .await
        .unwrap();
    let slow = ScheduleSpec {
        timeout_ms: Some(100),
        ..ScheduleSpec::tool(
            "slow",
            "ops",
            "0 13 * * *",
            "sleepy",
            json!({"millis": 10_000}),
        )
    };
    schedules.create(slow).await.unwrap();
    clock.set(at("2026-11-25T13:00:00Z"));
    let runs = schedules.runner().tick().await.unwrap().finished().await;
    let broke = runs.iter().find(|r| r.schedule == "broke").unwrap();
    assert_eq!(broke.status, RunStatus::Failed);
    assert_eq!(broke.class, Some(ErrorClass::BudgetExhausted), "{broke:?}");
    let slow = runs.iter().find(|r| r.schedule == "slow").unwrap();
    assert_eq!(slow.status, RunStatus::TimedOut, "{slow:?}");
    assert!(
        slow.error
            .as_deref()
            .unwrap()
            .contains("run timeout of 100 ms"),
        "{slow:?}"
    );
}

#[tokio::test]
async fn no_slot_fires_twice_across_a_restart_or_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let (_host, schedules, clock) = host(
            "2026-11-25T12:00:00Z",
            ScheduleConfig::default(),
            Some(&data),
        )
        .await;
        schedules
            .create(hello("daily", "0 13 * * *", "UTC"))
            .await
            .unwrap();
        let slow = ScheduleSpec::tool(
            "slow",
            "ops",
            "0 13 * * *",
            "sleepy",
            json!({"millis": 30_000}),
        );
        schedules.create(slow).await.unwrap();
        clock.set(at("2026-11-25T13:00:00Z"));
        let runner = schedules.runner();
        let tick = runner.tick().await.unwrap();
        assert_eq!(tick.fired.len(), 2);
        // `daily` finishes; `slow` is going when the "process" dies.
        while schedules.get("daily").unwrap().running.is_some() {
            tokio::task::yield_now().await;
        }
        tick.abort();
    }
    let (_host, schedules, clock) = host(
        "2026-11-25T13:00:30Z",
        ScheduleConfig::default(),
        Some(&data),
    )
    .await;
    let runner = schedules.runner();
    let tick = runner.tick().await.unwrap();
    assert!(tick.fired.is_empty(), "{:?}", tick.fired);
    assert_eq!(
        tick.reconciled.interrupted,
        [("slow".to_owned(), at("2026-11-25T13:00:00Z"))]
    );
    let slow = schedules.history("slow").unwrap();
    assert_eq!(slow.len(), 1);
    assert_eq!(slow[0].status, RunStatus::Interrupted);
    let escalation = host_escalation(&_host, slow[0].escalation.expect("escalated"));
    assert_eq!(escalation.reason, EscalationReason::UnknownOutcome);
    assert_eq!(escalation.schedule.as_deref(), Some("slow"));
    assert_eq!(schedules.history("daily").unwrap().len(), 1);
    // The next slot runs as usual.
    schedules.delete("slow").await.unwrap();
    clock.set(at("2026-11-26T13:00:00Z"));
    let runs = runner.tick().await.unwrap().finished().await;
    assert_eq!(runs.iter().filter(|r| r.schedule == "daily").count(), 1);
}

fn host_escalation(host: &Host, id: u64) -> cofferdam::Escalation {
    host.escalations().get(id).expect("escalation exists")
}

#[tokio::test]
async fn missed_slots_follow_the_catch_up_policy() {
    let (_host, schedules, clock) =
        host("2026-11-25T12:00:00Z", ScheduleConfig::default(), None).await;
    schedules
        .create(hello("skipper", "0 * * * *", "UTC"))
        .await
        .unwrap();
    schedules
        .create(ScheduleSpec {
            catch_up: CatchUp::Once,
            ..hello("catcher", "0 * * * *", "UTC")
        })
        .await
        .unwrap();
    // Down from 12:00 to 17:10: slots 13:00..17:00 passed, the latest 10 min late.
    clock.set(at("2026-11-25T17:10:00Z"));
    let runner = schedules.runner();
    let tick = runner.tick().await.unwrap();
    assert_eq!(
        tick.fired,
        [("catcher".to_owned(), at("2026-11-25T17:00:00Z"))]
    );
    tick.finished().await;
    let skipper = schedules.history("skipper").unwrap();
    assert_eq!(skipper.len(), 1);
    assert_eq!(skipper[0].status, RunStatus::Skipped);
    assert_eq!(
        (skipper[0].missed, skipper[0].first_missed),
        (5, Some(at("2026-11-25T13:00:00Z")))
    );
    let catcher = schedules.history("catcher").unwrap();
    assert_eq!(
        catcher
            .iter()
            .map(|r| (r.status, r.missed))
            .collect::<Vec<_>>(),
        [(RunStatus::Skipped, 4), (RunStatus::Succeeded, 0)]
    );
    // Both run on time at the next slot.
    clock.set(at("2026-11-25T18:00:05Z"));
    let tick = runner.tick().await.unwrap();
    assert_eq!(tick.fired.len(), 2);
    tick.finished().await;
}

#[tokio::test]
async fn three_failed_runs_pause_the_schedule_and_escalate() {
    let (host, schedules, clock) =
        host("2026-11-25T12:00:00Z", ScheduleConfig::default(), None).await;
    schedules
        .create(ScheduleSpec::tool(
            "broken",
            "ops",
            "0 * * * *",
            "trap",
            json!({}),
        ))
        .await
        .unwrap();
    let runner = schedules.runner();
    for hour in 13..=15 {
        clock.set(at(&format!("2026-11-25T{hour}:00:00Z")));
        let runs = runner.tick().await.unwrap().finished().await;
        assert_eq!(runs[0].status, RunStatus::Failed);
    }
    let schedule = schedules.get("broken").unwrap();
    match &schedule.status {
        ScheduleStatus::Paused {
            reason, automatic, ..
        } => {
            assert!(*automatic);
            assert!(reason.starts_with("3 consecutive failed runs"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(schedule.next_run.is_none());
    let escalation = host_escalation(&host, schedule.escalations[0]);
    assert_eq!(escalation.reason, EscalationReason::MaxRetriesExceeded);
    assert_eq!(escalation.schedule.as_deref(), Some("broken"));
    clock.set(at("2026-11-25T16:00:00Z"));
    assert!(
        runner.tick().await.unwrap().fired.is_empty(),
        "paused: no run"
    );
    // Resuming starts afresh from now (16:00 is not caught up).
    let resumed = schedules.resume("broken").await.unwrap();
    assert_eq!(resumed.consecutive_failures, 0);
    assert_eq!(resumed.next_run.unwrap().utc, at("2026-11-25T17:00:00Z"));
    assert!(runner.tick().await.unwrap().fired.is_empty());
}

#[tokio::test]
async fn sensitive_tools_are_refused_in_background_runs() {
    let (host, schedules, clock) =
        host("2026-11-25T12:00:00Z", ScheduleConfig::default(), None).await;
    let sensitive = ToolPolicy {
        name: Some(ToolName::new("payments").unwrap()),
        sensitive: true,
        ..ToolPolicy::default()
    };
    common::load(&host, artifacts::HELLO, sensitive.clone()).await;
    let err = schedules
        .create(ScheduleSpec::tool(
            "pay",
            "ops",
            "0 13 * * *",
            "payments",
            json!({}),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ScheduleError::SensitiveTool { ref tool, .. } if tool == "payments"),
        "{err}"
    );

    // A tool that becomes sensitive after the schedule was made.
    let plain = ToolPolicy {
        name: Some(ToolName::new("greeter").unwrap()),
        ..ToolPolicy::default()
    };
    common::load(&host, artifacts::HELLO, plain).await;
    schedules
        .create(ScheduleSpec::tool(
            "greet",
            "ops",
            "0 13 * * *",
            "greeter",
            json!({"name": "x"}),
        ))
        .await
        .unwrap();
    let now_sensitive = ToolPolicy {
        name: Some(ToolName::new("greeter").unwrap()),
        ..sensitive
    };
    host.replace_file(Path::new(artifacts::HELLO), now_sensitive)
        .await
        .unwrap();
    clock.set(at("2026-11-25T13:00:00Z"));
    let runs = schedules.runner().tick().await.unwrap().finished().await;
    assert_eq!(runs[0].status, RunStatus::Refused);
    assert_eq!(runs[0].fuel, 0, "nothing ran");
    let schedule = schedules.get("greet").unwrap();
    assert!(matches!(
        schedule.status,
        ScheduleStatus::Paused {
            automatic: true,
            ..
        }
    ));
    let escalation = host_escalation(&host, runs[0].escalation.unwrap());
    assert_eq!(escalation.reason, EscalationReason::RequiresHuman);
    assert!(
        escalation.error.contains("sensitive"),
        "{}",
        escalation.error
    );
}

#[tokio::test]
async fn lifecycle_calls_are_idempotent() {
    let (_host, schedules, clock) =
        host("2026-11-25T12:00:00Z", ScheduleConfig::default(), None).await;
    schedules
        .create(hello("d", "0 9 * * *", "UTC"))
        .await
        .unwrap();
    let paused = schedules.pause("d", "holiday").await.unwrap();
    clock.set(at("2026-11-25T12:05:00Z"));
    let again = schedules.pause("d", "other reason").await.unwrap();
    assert_eq!(
        paused.status, again.status,
        "pausing a paused one keeps its reason"
    );
    assert!(again.next_run.is_none());
    let resumed = schedules.resume("d").await.unwrap();
    assert_eq!(
        resumed.next_run.as_ref().unwrap().utc,
        at("2026-11-26T09:00:00Z")
    );
    let again = schedules.resume("d").await.unwrap();
    assert_eq!(
        again.generation, resumed.generation,
        "resuming an active one changes nothing"
    );
    assert_eq!(again.next_run.unwrap().utc, at("2026-11-26T09:00:00Z"));
    assert!(schedules.delete("d").await.unwrap());
    assert!(
        !schedules.delete("d").await.unwrap(),
        "deleting again succeeds"
    );
    assert!(matches!(
        schedules.get("d"),
        Err(ScheduleError::NotFound { .. })
    ));
    assert!(matches!(
        schedules.pause("d", "").await,
        Err(ScheduleError::NotFound { .. })
    ));
    assert!(matches!(
        schedules.history("d"),
        Err(ScheduleError::NotFound { .. })
    ));
}

#[tokio::test]
async fn reconcile_repairs_orphans_and_reports_missing_tools() {
    let (host, schedules, _clock) =
        host("2026-11-25T12:00:00Z", ScheduleConfig::default(), None).await;
    schedules
        .create(hello("a", "0 9 * * *", "UTC"))
        .await
        .unwrap();
    let runner = schedules.runner();
    let first = runner.reconcile().await.unwrap();
    assert_eq!(first.registered, ["a"]);
    assert!(first.is_clean());
    assert_eq!(runner.registered(), ["a"]);

    // Changed behind the runner's back (another process, the CLI).
    schedules.delete("a").await.unwrap();
    schedules
        .create(hello("b", "0 9 * * *", "UTC"))
        .await
        .unwrap();
    let report = runner.reconcile().await.unwrap();
    assert_eq!(report.dropped, ["a"], "orphan registration");
    assert_eq!(report.registered, ["b"]);
    assert_eq!(runner.registered(), ["b"]);
    schedules.pause("b", "").await.unwrap();
    assert_eq!(runner.reconcile().await.unwrap().dropped, ["b"]);
    schedules.resume("b").await.unwrap();
    assert_eq!(runner.reconcile().await.unwrap().registered, ["b"]);

    host.unload("hello");
    let report = runner.reconcile().await.unwrap();
    assert_eq!(report.missing_tools, [("b".to_owned(), "hello".to_owned())]);
    assert!(!report.is_clean());
}

#[tokio::test]
async fn a_task_runs_as_a_schedule_under_one_budget() {
    let (_host, schedules, clock) =
        host("2026-11-25T12:00:00Z", ScheduleConfig::default(), None).await;
    let task: TaskSpec = toml::from_str(
        r#"
id = "greetings"
[[steps]]
name = "first"
tool = "hello"
input = { name = "one" }
[[steps]]
name = "second"
tool = "hello"
input = { name = "${steps.first.output.greeting}" }
"#,
    )
    .unwrap();
    let spec = ScheduleSpec {
        target: ScheduleTarget::Task { task },
        ..hello("tasky", "0 13 * * *", "UTC")
    };
    schedules.create(spec).await.unwrap();
    clock.set(at("2026-11-25T13:00:00Z"));
    let runs = schedules.runner().tick().await.unwrap().finished().await;
    assert_eq!(runs[0].status, RunStatus::Succeeded, "{:?}", runs[0]);
    assert_eq!(runs[0].run_id, "greetings-20261125T1300Z");
    assert!(
        runs[0].tokens.0 >= 2,
        "both steps were charged: {:?}",
        runs[0]
    );
    let record = _host.tasks().status("greetings-20261125T1300Z").unwrap();
    assert_eq!(record.steps.len(), 2);
}

/// Sets the time a `--clock-file` reads (atomically: no half-written file).
fn set_clock(file: &Path, now: &str) {
    let fresh = file.with_extension("new");
    std::fs::write(&fresh, now).expect("write clock");
    std::fs::rename(&fresh, file).expect("move clock");
}

fn cofferdam(dir: &Path, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cofferdam"));
    command
        .arg("--clock-file")
        .arg(dir.join("now"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--artifact-dir")
        .arg(common::shared_data_dir().join("artifacts"))
        .args(args)
        .env_remove("COFFERDAM_LOG");
    command
}

fn history(dir: &Path) -> Vec<serde_json::Value> {
    let out = cofferdam(dir, &["schedules", "history", "digest", "--json"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON history")
}

#[test]
fn a_daily_schedule_created_from_the_cli_runs_under_serve_at_its_local_time() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let config = dir.join("cofferdam.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"data\"\n[tools.hello]\ncomponent = \"{}\"\n",
            artifacts::HELLO
        ),
    )
    .unwrap();
    set_clock(&dir.join("now"), "2026-11-25T12:00:00Z");
    let config = config.to_str().unwrap();
    let created = cofferdam(
        dir,
        &[
            "schedules",
            "create",
            "digest",
            "--config",
            config,
            "--owner",
            "ops",
            "--cron",
            "0 9 * * *",
            "--zone",
            "Europe/Berlin",
            "--tool",
            "hello",
            "--input",
            r#"{"name":"digest"}"#,
            "--budget",
            "500",
        ],
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&created.stdout);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert!(
        stdout.contains("next run 2026-11-26T08:00:00Z (2026-11-26T09:00:00+01:00[Europe/Berlin])"),
        "{stdout}"
    );
    // A second create with another cron is refused, naming the schedule.
    let again = cofferdam(
        dir,
        &[
            "schedules",
            "create",
            "digest",
            "--config",
            config,
            "--owner",
            "ops",
            "--cron",
            "0 25 * * *",
            "--tool",
            "hello",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("cron hour field `25`"));

    set_clock(&dir.join("now"), "2026-11-26T07:59:00Z"); // 08:59 in Berlin
    let mut serve = cofferdam(
        dir,
        &[
            "serve",
            "--config",
            config,
            "--http",
            "127.0.0.1:0",
            "--tick-every",
            "20ms",
        ],
    )
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("serve starts");
    let stderr = std::io::BufReader::new(serve.stderr.take().unwrap());
    let mut lines = stderr.lines();
    loop {
        let line = lines.next().expect("serve is up").expect("stderr");
        if line.contains("serving") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    assert!(history(dir).is_empty(), "nothing runs before 09:00 local");

    set_clock(&dir.join("now"), "2026-11-26T08:00:02Z");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let run = loop {
        let runs = history(dir);
        if let Some(run) = runs.first().filter(|r| r["status"] != "running") {
            break run.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no run within a minute: {runs:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(serve.id().to_string())
        .status();
    assert!(serve.wait().expect("serve stops").success());
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["slot"], "2026-11-26T08:00:00Z");
    assert!(run["tokens"].as_u64().unwrap() > 0, "{run}");

    let text = cofferdam(dir, &["schedules", "history", "digest"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("succeeded"), "{text}");
    assert!(
        text.contains(&format!(
            "total: 1 runs (0 failed), {} tokens",
            run["tokens"]
        )),
        "{text}"
    );
    let list = cofferdam(dir, &["schedules", "list", "--owner", "ops"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains("next run 2026-11-27T08:00:00Z"), "{list}");
}
