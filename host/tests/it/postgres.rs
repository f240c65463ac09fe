//! Two hosts on one PostgreSQL database, as two replicas of a service:
//! the guarantees of one host hold across both.
//!
//! Needs a server: `COFFERDAM_TEST_PG` (default
//! `postgres://root@127.0.0.1:5432/test`) names a database whose role may
//! create databases; each test makes its own and drops it. Without a
//! server, the tests fail at once saying how to start one.

use crate::common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cofferdam::{
    BudgetCap, BuildError, CallError, CallRequest, ErrorClass, Host, JournalError, LimitsSpec,
    PoolSpec, PostgresConfig, ScopeId, StoreConfig, Tokens, ToolPolicy,
};
use cofferdam_test_artifacts as artifacts;

/// An error and its causes on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// A database for one test, dropped (`WITH (FORCE)`) after it.
pub(crate) struct TestDb {
    admin: String,
    name: String,
    pub(crate) url: String,
}

fn admin_execute(url: &str, sql: String) -> Result<(), String> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            let mut config: tokio_postgres::Config = url.parse().map_err(|e| chain(&e))?;
            config.connect_timeout(Duration::from_secs(3));
            let (client, connection) = tokio::time::timeout(
                Duration::from_secs(5),
                config.connect(tokio_postgres::NoTls),
            )
            .await
            .map_err(|_| "no answer within 5 s".to_owned())?
            .map_err(|e| chain(&e))?;
            tokio::spawn(connection);
            client.batch_execute(&sql).await.map_err(|e| chain(&e))
        })
    })
    .join()
    .expect("admin thread")
}

impl TestDb {
    pub(crate) fn create() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let admin = std::env::var("COFFERDAM_TEST_PG")
            .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
        let name = format!(
            "cofferdam_it_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        if let Err(e) = admin_execute(&admin, format!("CREATE DATABASE {name}")) {
            panic!(
                "these tests need PostgreSQL at {admin} (set COFFERDAM_TEST_PG to another \
                 server whose role may create databases): {e}. Start the local one with \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
            );
        }
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        Self { admin, name, url }
    }

    /// Runs SQL on the server's admin database, beside this one.
    fn admin(&self, sql: &str) {
        admin_execute(&self.admin, sql.to_owned()).expect("admin sql");
    }

    /// A host on this database: one replica.
    pub(crate) fn host(&self, dir: &std::path::Path) -> Host {
        common::builder()
            .store(StoreConfig::Postgres(PostgresConfig::new(&self.url)))
            .allow_root(dir)
            .build()
            .expect("host on postgres")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = admin_execute(&self.admin, sql) {
            eprintln!("cannot drop test database {}: {e}", self.name);
        }
    }
}

/// Room for every racing call, so none is turned away by the bulkhead.
fn roomy() -> PoolSpec {
    PoolSpec {
        max_concurrent: Some(64),
        max_queue: Some(64),
        max_wait_ms: Some(60_000),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_calls_with_one_key_over_two_replicas_act_once() {
    let db = TestDb::create();
    let dir = tempfile::tempdir().expect("tempdir");
    let replicas = [db.host(dir.path()), db.host(dir.path())];
    for host in &replicas {
        let policy = ToolPolicy {
            effect: Some(cofferdam::Effect::SideEffecting),
            mounts: vec![cofferdam::Mount::read_write(dir.path(), "/out")],
            pool: roomy(),
            limits: LimitsSpec {
                timeout_ms: Some(10_000),
                ..LimitsSpec::default()
            },
            ..ToolPolicy::default()
        };
        common::load(host, artifacts::SLEEPY, policy).await;
    }
    let request = CallRequest {
        idempotency_key: Some("charge-card-7".into()),
        agent: Some("a1".into()),
        ..CallRequest::new("sleepy", r#"{"millis":300,"mark":"/out/acted"}"#)
    };
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let host = replicas[i % 2].clone();
            let request = request.clone();
            tokio::spawn(async move { host.call(request).await })
        })
        .collect();
    let (mut ran, mut replayed, mut busy) = (0, 0, 0);
    for call in calls {
        match call.await.expect("task") {
            Ok(outcome) if outcome.replayed => replayed += 1,
            Ok(_) => ran += 1,
            Err(CallError::InProgress { .. }) => busy += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        ran, 1,
        "one execution ({replayed} replayed, {busy} in progress)"
    );
    let acted = std::fs::read_to_string(dir.path().join("acted")).expect("the tool acted");
    assert_eq!(acted.lines().count(), 1, "the side effect happened once");
    // Either replica now replays it.
    for host in &replicas {
        let outcome = host.call(request.clone()).await.expect("replay");
        assert!(outcome.replayed);
    }
    let ran_on: u64 = replicas
        .iter()
        .map(|h| h.stats("sleepy").expect("loaded").invocations)
        .sum();
    assert_eq!(ran_on, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_racing_a_cap_over_two_replicas_never_overspend_it() {
    let db = TestDb::create();
    let dir = tempfile::tempdir().expect("tempdir");
    let replicas = [db.host(dir.path()), db.host(dir.path())];
    for host in &replicas {
        let policy = ToolPolicy {
            pool: roomy(),
            ..ToolPolicy::default()
        };
        common::load(host, artifacts::HELLO, policy).await;
    }
    let scope = ScopeId::Agent("shared".into());
    let cap = 150;
    replicas[0]
        .budgets()
        .set_cap(&scope, BudgetCap::new(Tokens(cap)))
        .await
        .expect("cap");
    let calls: Vec<_> = (0..60)
        .map(|i| {
            let host = replicas[i % 2].clone();
            let request = CallRequest {
                agent: Some("shared".into()),
                ..CallRequest::new("hello", format!(r#"{{"name":"caller {i}"}}"#))
            };
            tokio::spawn(async move { host.call(request).await })
        })
        .collect();
    let (mut paid, mut refused) = (0, 0);
    for call in calls {
        match call.await.expect("task") {
            Ok(outcome) => paid += outcome.tokens.0,
            Err(e) => {
                assert_eq!(e.class(), ErrorClass::BudgetExhausted, "{e:?}");
                refused += 1;
            }
        }
    }
    assert!(
        refused > 0,
        "the cap must bite for this test to mean anything"
    );
    // Both replicas see the one ledger.
    for host in &replicas {
        let status = host.budgets().get(&scope).expect("get").expect("capped");
        assert!(status.spent.0 <= cap, "spent {:?} of {cap}", status.spent);
        assert!(paid <= status.spent.0, "successful calls were charged");
        assert_eq!(status.reserved, Tokens(0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_raised_on_one_replica_is_seen_and_resolved_on_the_other() {
    let db = TestDb::create();
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (db.host(dir.path()), db.host(dir.path()));
    let id = a
        .escalations()
        .raise(cofferdam::NewEscalation {
            reason: Some(cofferdam::EscalationReason::RequiresHuman),
            tool: Some("deploy".into()),
            error: "needs sign-off".into(),
            ..Default::default()
        })
        .await
        .expect("raise");
    let seen = b.escalations().list(false).expect("list");
    assert_eq!(seen.iter().map(|e| e.id).collect::<Vec<_>>(), [id]);
    b.escalations()
        .resolve(id, cofferdam::Resolution::Abort, "not today")
        .await
        .expect("resolve");
    assert!(a.escalations().list(false).expect("list").is_empty());
}

#[test]
fn a_bad_store_url_is_named_without_its_password() {
    let error = common::builder()
        .store_url("mysql://app:s3cret@db/x")
        .build()
        .err()
        .expect("refused");
    let BuildError::Journal(JournalError::BadUrl { url, .. }) = &error else {
        panic!("expected a bad url, got {error:?}");
    };
    assert_eq!(url, "mysql://app:***@db/x");
    assert!(!format!("{error} {error:?}").contains("s3cret"));
}

/// The binary on the shared store: `--store` sends operator commands and
/// runs to the database, where a library host sees them.
fn cofferdam(db: &TestDb, data_dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cofferdam"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--store")
        .arg(&db.url)
        .env_remove("COFFERDAM_LOG")
        .output()
        .expect("runs cofferdam")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_with_store_changes_what_every_replica_sees() {
    let db = TestDb::create();
    let data = tempfile::tempdir().expect("tempdir");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let cap = cofferdam(
        &db,
        data.path(),
        &["budget", "set", "agent:p", "--cap", "8"],
    );
    assert!(cap.status.success(), "{}", text(&cap.stderr));
    let set = cofferdam(
        &db,
        data.path(),
        &["breakers", "set", "hello", "forced-open"],
    );
    assert!(set.status.success(), "{}", text(&set.stderr));
    let list = cofferdam(&db, data.path(), &["breakers", "list"]);
    assert!(
        text(&list.stdout).contains("forced-open"),
        "{}",
        text(&list.stdout)
    );
    let run = cofferdam(
        &db,
        data.path(),
        &[
            "run",
            artifacts::HELLO,
            "--input",
            r#"{"name":"x"}"#,
            "--json",
        ],
    );
    assert_eq!(run.status.code(), Some(5), "{}", text(&run.stderr));

    // A library host on the same database: the cap and the mode hold there.
    let dir = tempfile::tempdir().expect("tempdir");
    let host = db.host(dir.path());
    let status = host
        .budgets()
        .get(&ScopeId::Agent("p".into()))
        .expect("get")
        .expect("capped");
    assert_eq!(status.cap.hard, Tokens(8));
    common::load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    let refused = host
        .call(CallRequest::new("hello", r#"{"name":"x"}"#))
        .await
        .expect_err("forced open");
    assert_eq!(refused.class(), ErrorClass::CircuitOpen);
    // Nothing was written to the data dir's journal.
    assert!(!data.path().join("journal.redb").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_on_one_clock_run_each_slot_once() {
    let db = TestDb::create();
    let clock = std::sync::Arc::new(cofferdam::ManualWallClock::new(
        "2026-11-25T12:00:30Z".parse().expect("time"),
    ));
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let host = common::builder()
            .store(StoreConfig::Postgres(PostgresConfig::new(&db.url)))
            .wall_clock(clock.clone())
            .build()
            .expect("host on postgres");
        common::load(&host, artifacts::HELLO, ToolPolicy::default()).await;
        replicas.push(host);
    }
    replicas[0]
        .schedules()
        .create(cofferdam::ScheduleSpec::tool(
            "hourly",
            "ops",
            "0 * * * *",
            "hello",
            serde_json::json!({"name": "cron"}),
        ))
        .await
        .expect("create");
    let runners = [
        replicas[0].schedules().runner(),
        replicas[1].schedules().runner(),
    ];
    for hour in 13..16 {
        clock.set(format!("2026-11-25T{hour}:00:05Z").parse().expect("time"));
        let (a, b) = tokio::join!(runners[0].tick(), runners[1].tick());
        let (a, b) = (a.expect("tick"), b.expect("tick"));
        let fired = a.fired.len() + b.fired.len();
        assert_eq!(fired, 1, "hour {hour}: {:?} and {:?}", a.fired, b.fired);
        let mut runs = a.finished().await;
        runs.extend(b.finished().await);
        assert_eq!(runs.len(), 1);
        assert_eq!(
            runs[0].status,
            cofferdam::RunStatus::Succeeded,
            "{:?}",
            runs[0]
        );
    }
    // Either replica sees the one history.
    for host in &replicas {
        let history = host.schedules().history("hourly").expect("history");
        assert_eq!(history.len(), 3, "{history:?}");
        assert_eq!(host.schedules().get("hourly").expect("get").runs, 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_loses_the_database_fails_calls_as_store_unavailable_and_recovers() {
    let db = TestDb::create();
    let dir = tempfile::tempdir().expect("tempdir");
    let host = db.host(dir.path());
    common::load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    let call = |key: &str| CallRequest {
        idempotency_key: Some(key.into()),
        agent: Some("a1".into()),
        ..CallRequest::new("hello", r#"{"name":"x"}"#)
    };
    host.call(call("before")).await.expect("served");
    // The database goes away: no new connections, the open ones cut.
    db.admin(&format!(
        "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false",
        db.name
    ));
    db.admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
        db.name
    ));
    let started = std::time::Instant::now();
    let error = host.call(call("during")).await.expect_err("no database");
    assert_eq!(error.class(), ErrorClass::StoreUnavailable, "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The chain names the store (without a password) and says what failed.
    let message = chain(&error);
    assert!(
        message.contains(&format!("store {} is unavailable", db.url)),
        "{message}"
    );
    // It comes back: the same call runs, once.
    db.admin(&format!(
        "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true",
        db.name
    ));
    let outcome = host.call(call("during")).await.expect("recovered");
    assert!(!outcome.replayed);
    assert!(host.call(call("during")).await.expect("replay").replayed);
}
