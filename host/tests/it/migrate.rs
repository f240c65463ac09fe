//! `cofferdam store migrate --to postgres://…`: a data dir's journal moves
//! into PostgreSQL whole, and a host on the database carries on where the
//! embedded one stopped; a database in use or a journal a host holds is
//! refused, and nothing is half-written.
//!
//! Needs a server, as the `postgres` tests do (`COFFERDAM_TEST_PG`).

use crate::common;
use crate::postgres::TestDb;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use cofferdam::{
    BreakerMode, BudgetCap, CallRequest, CancellationToken, Effect, ErrorClass, EscalationReason,
    HistoryQuery, Host, KeyState, LimitsSpec, ManualWallClock, Mount, NewEscalation, ScheduleSpec,
    ScopeId, TaskSpec, TaskState, Tokens, ToolPolicy,
};
use cofferdam_test_artifacts as artifacts;
use serde_json::json;

/// Sleeps a minute after writing its mark: cancelled once it has acted.
const SLEEPY: &str = r#"{"millis":60000,"mark":"/out/mark"}"#;

fn migrate(data: &Path, url: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cofferdam"))
        .args(["store", "migrate", "--to", url, "--data-dir"])
        .arg(data)
        .output()
        .expect("cofferdam runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `hello`, and `sleepy` side-effecting with a read-write `/out`.
async fn load_tools(host: &Host, out: &Path) {
    common::load(host, artifacts::HELLO, ToolPolicy::default()).await;
    let sleepy = ToolPolicy {
        effect: Some(Effect::SideEffecting),
        mounts: vec![Mount::read_write(out, "/out")],
        limits: LimitsSpec {
            timeout_ms: Some(60_000),
            ..LimitsSpec::default()
        },
        ..ToolPolicy::default()
    };
    common::load(host, artifacts::SLEEPY, sleepy).await;
    let writer = ToolPolicy {
        state: Some(cofferdam::StateSpec {
            bucket: "w".into(),
            scope: cofferdam::StateScope::Tool,
            max_bytes: None,
            max_keys: None,
        }),
        ..ToolPolicy::default()
    };
    common::load(host, artifacts::STATE_WRITER, writer).await;
}

fn greet(key: &str) -> CallRequest {
    CallRequest {
        idempotency_key: Some(key.into()),
        agent: Some("planner".into()),
        ..CallRequest::new("hello", r#"{"name":"Ada"}"#)
    }
}

/// A keyed side-effecting call cancelled after it acted: its key is unknown
/// and escalated.
async fn interrupted_call(host: &Host, out: &Path, key: &str) {
    let cancel = CancellationToken::new();
    let call = tokio::spawn({
        let host = host.clone();
        let request = CallRequest {
            idempotency_key: Some(key.into()),
            agent: Some("planner".into()),
            cancel: Some(cancel.clone()),
            ..CallRequest::new("sleepy", SLEEPY)
        };
        async move { host.call(request).await }
    });
    // Acted once the mark holds its line (the file exists a moment before).
    for _ in 0..1000 {
        if std::fs::read_to_string(out.join("mark")).is_ok_and(|text| text.ends_with('\n')) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    call.await.expect("joins").expect_err("interrupted");
}

/// What the embedded store held, to compare with the database.
struct Before {
    /// Keys: the two calls', the task step's, the schedule run's.
    keys: usize,
    /// Budgets: the capped agent's and the task's.
    budgets: Vec<cofferdam::BudgetStatus>,
    history: Vec<cofferdam::AttemptRecord>,
    escalation: u64,
}

/// A data dir holding one record of every kind: a completed key, an unknown
/// key and its escalation, a capped budget with spending, history, a task,
/// a schedule with a run and a breaker mode.
async fn fill(data: &Path, out: &Path) -> Before {
    let clock = Arc::new(ManualWallClock::new(
        "2026-11-25T08:59:00Z".parse().expect("time"),
    ));
    let host = common::builder()
        .data_dir(data)
        .artifact_dir(common::shared_data_dir().join("artifacts"))
        .allow_root(out)
        .wall_clock(clock.clone())
        .notify(
            "ops",
            cofferdam::Webhook::new("http://127.0.0.1:9/hook", "a-secret-of-16-bytes+")
                .allow_private("127.0.0.0/8"),
        )
        .build()
        .expect("host");
    load_tools(&host, out).await;
    // Its audit record rides along with the durable writes below.
    host.call(CallRequest::new(
        "state-writer",
        r#"{"set":{"memo":"kept"}}"#,
    ))
    .await
    .expect("state written");
    let first = host.call(greet("greet-1")).await.expect("greets");
    assert!(!first.replayed);
    interrupted_call(&host, out, "charge-1").await;
    let scope = "agent:planner".parse::<ScopeId>().expect("scope");
    host.budgets()
        .set_cap(&scope, BudgetCap::new(Tokens(1_000)))
        .await
        .expect("cap");
    host.budgets()
        .charge(&scope, Tokens(40))
        .await
        .expect("charge");
    let task: TaskSpec = toml::from_str(
        r#"
id = "trip-1"
agent = "planner"

[[steps]]
name = "greet"
tool = "hello"
input = { name = "trip" }
"#,
    )
    .expect("task parses");
    let record = host.tasks().run(task).await.expect("task runs");
    assert_eq!(record.state, TaskState::Completed);
    let schedules = host.schedules();
    schedules
        .create(ScheduleSpec {
            notify: vec!["ops".into()],
            ..ScheduleSpec::tool(
                "morning",
                "ops",
                "0 9 * * *",
                "hello",
                json!({"name": "morning"}),
            )
        })
        .await
        .expect("schedule");
    clock.set("2026-11-25T09:00:00Z".parse().expect("time"));
    let tick = schedules.runner().tick().await.expect("ticks");
    assert_eq!(tick.fired.len(), 1, "{tick:?}");
    assert_eq!(tick.finished().await.len(), 1);
    Host::remember_breaker_mode(data, "sleepy", BreakerMode::ForcedOpen).expect("mode");
    let before = Before {
        keys: host.journal_entries().expect("entries").len(),
        budgets: host.budgets().list().expect("budgets"),
        history: host.history(&HistoryQuery::default()).expect("history"),
        escalation: host
            .escalations()
            .list(false)
            .expect("escalations")
            .iter()
            .map(|e| e.id)
            .max()
            .expect("one escalation"),
    };
    drop(schedules);
    drop(host);
    before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_data_dir_carries_on_in_postgres() {
    let (data, out) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let before = fill(data.path(), out.path()).await;
    let db = TestDb::create();

    let migrated = migrate(data.path(), &db.url);
    assert!(migrated.status.success(), "{}", text(&migrated.stderr));
    assert_eq!(
        text(&migrated.stdout).trim(),
        format!(
            "migrated {} keys, {} budgets, {} attempts, 1 escalations, 1 tasks, \
             1 schedules (1 runs), 1 breaker modes, 1 state keys, 1 notifications into {}",
            before.keys,
            before.budgets.len(),
            before.history.len(),
            db.url
        )
    );

    let host = db.host(out.path());
    load_tools(&host, out.path()).await;
    // The run's notification moved, still to be delivered.
    let notifications = host.schedules().notifications().expect("outbox");
    assert_eq!(notifications.len(), 1, "{notifications:?}");
    assert_eq!(notifications[0].state, cofferdam::Delivery::Pending);
    assert_eq!(notifications[0].event.schedule, "morning");
    // The completed key replays; the unknown one stays unknown, escalated once.
    let again = host.call(greet("greet-1")).await.expect("replays");
    assert!(again.replayed, "the completed key ran again");
    let entries = host.journal_entries().expect("entries");
    let unknown = entries
        .iter()
        .find(|e| e.key == "charge-1")
        .expect("unknown key");
    assert!(
        matches!(unknown.state, KeyState::Unknown { .. }),
        "{unknown:?}"
    );
    let open = host.escalations().list(false).expect("escalations");
    let for_key: Vec<_> = open
        .iter()
        .filter(|e| e.key.as_ref().is_some_and(|k| k.key == "charge-1"))
        .collect();
    assert_eq!(for_key.len(), 1, "{open:?}");
    assert_eq!(for_key[0].id, before.escalation);
    assert_eq!(for_key[0].reason, EscalationReason::UnknownOutcome);
    // New escalations are numbered after the migrated ones.
    let raised = host
        .escalations()
        .raise(NewEscalation {
            reason: Some(EscalationReason::RequiresHuman),
            error: "after the move".into(),
            ..NewEscalation::default()
        })
        .await
        .expect("raises");
    assert_eq!(raised, before.escalation + 1);
    // Same caps and spending (the charge and the task's call).
    let budgets = host.budgets().list().expect("budgets");
    assert_eq!(budgets, before.budgets);
    let planner = budgets.iter().find(|b| b.scope == "agent:planner");
    assert!(planner.is_some_and(|b| b.spent > Tokens(40)), "{budgets:?}");
    // The replay above is one attempt more, newest first.
    let history = host.history(&HistoryQuery::default()).expect("history");
    assert_eq!(history[1..], before.history[..]);
    assert_eq!(
        host.tasks().status("trip-1").expect("task").state,
        TaskState::Completed
    );
    let schedules = host.schedules();
    assert_eq!(schedules.history("morning").expect("runs").len(), 1);
    assert_eq!(
        host.state().get("w/tool", "memo").expect("state"),
        Some(br#""kept""#.to_vec())
    );
    assert_eq!(
        host.stored_breaker_modes().get("sleepy"),
        Some(&BreakerMode::ForcedOpen)
    );
    let refused = host
        .call(CallRequest::new("sleepy", r#"{"millis":1}"#))
        .await
        .expect_err("the breaker is held open");
    assert_eq!(refused.class(), ErrorClass::CircuitOpen, "{refused}");

    // A second migration is refused and changes nothing.
    let history = host.history(&HistoryQuery::default()).expect("history");
    let second = migrate(data.path(), &db.url);
    assert_eq!(second.status.code(), Some(2));
    let stderr = text(&second.stderr);
    assert!(
        stderr.contains(&format!("{} already holds cofferdam data", db.url))
            && stderr.contains(&format!("{} keys", before.keys)),
        "{stderr}"
    );
    assert_eq!(
        host.history(&HistoryQuery::default()).expect("history"),
        history
    );
    assert_eq!(host.escalations().list(true).expect("all").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_a_host_holds_is_not_migrated() {
    let data = tempfile::tempdir().expect("dir");
    let db = TestDb::create();
    let host = common::builder()
        .data_dir(data.path())
        .artifact_dir(common::shared_data_dir().join("artifacts"))
        .build()
        .expect("host");
    common::load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    host.call(greet("greet-1")).await.expect("greets");

    let refused = migrate(data.path(), &db.url);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("is in use by a running cofferdam") && stderr.contains("stop it"),
        "{stderr}"
    );

    // Nothing was written: once the host is gone, the migration goes through.
    drop(host);
    let migrated = migrate(data.path(), &db.url);
    assert!(migrated.status.success(), "{}", text(&migrated.stderr));
    assert!(
        text(&migrated.stdout).starts_with("migrated 1 keys"),
        "{}",
        text(&migrated.stdout)
    );
}
