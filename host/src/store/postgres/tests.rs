//! The PostgreSQL store: the conformance suite on a database of its own per
//! test, and what only a shared store does (leases across replicas, schema
//! versions, a lost server).
//!
//! Tests need a server: `COFFERDAM_TEST_PG` (default
//! `postgres://root@127.0.0.1:5432/test`) names a database whose role may
//! create databases. Without one they fail at once, saying how to start it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::PgStore;
use crate::model::budget::{BudgetCap, ScopeId};
use crate::model::error::JournalError;
use crate::model::escalation::EscalationReason;
use crate::model::journal::{Claim, JournalKey, KeyState, Reserved};
use crate::model::units::{Effect, Tokens};
use crate::resilience::breaker::BreakerMode;
use crate::store::config::PostgresConfig;
use crate::store::{BreakerModeStore, BudgetLedger, EscalationStore, IdempotencyStore, Store};

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

/// A database made for one test and dropped (`WITH (FORCE)`) after it.
pub(crate) struct TestDb {
    admin: String,
    name: String,
    /// The test database's URL.
    pub(crate) url: String,
}

/// Runs `work` on a runtime of its own on a thread of its own, so a test
/// may call it inside or outside a runtime.
fn on_own_runtime<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(work)
    })
    .join()
    .expect("test database thread")
}

async fn admin_execute(url: String, sql: String) -> Result<(), String> {
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
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let (authority, query) = match rest.find('/') {
        Some(slash) => {
            let tail = &rest[slash..];
            (&rest[..slash], tail.find('?').map_or("", |q| &tail[q..]))
        }
        None => (rest, ""),
    };
    format!("{scheme}://{authority}/{name}{query}")
}

impl TestDb {
    /// Creates a fresh database, or panics saying how to get a server.
    pub(crate) fn create() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let admin = std::env::var("COFFERDAM_TEST_PG")
            .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
        let name = format!(
            "cofferdam_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            crate::model::units::unix_millis() % 1_000_000
        );
        let sql = format!("CREATE DATABASE {name}");
        if let Err(e) = on_own_runtime(admin_execute(admin.clone(), sql)) {
            panic!(
                "these tests need PostgreSQL at {admin} (set COFFERDAM_TEST_PG to another \
                 server whose role may create databases): {e}. Start the local one with \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
            );
        }
        let url = with_database(&admin, &name);
        Self { admin, name, url }
    }

    /// A store on this database with its own owner id and `lease`.
    pub(crate) fn store(&self, owner: &str, lease: Duration) -> PgStore {
        let mut config = PostgresConfig::new(&self.url).lease(lease);
        config.owner = Some(owner.to_owned());
        PgStore::open(&config).expect("open the store")
    }

    /// Runs SQL on this database, as a test's way to reach behind the store.
    pub(crate) fn execute(&self, sql: &str) {
        on_own_runtime(admin_execute(self.url.clone(), sql.to_owned())).expect("sql");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = on_own_runtime(admin_execute(self.admin.clone(), sql)) {
            eprintln!("cannot drop test database {}: {e}", self.name);
        }
    }
}

fn open_fresh() -> (Arc<dyn Store>, TestDb) {
    let db = TestDb::create();
    let store: Arc<dyn Store> =
        Arc::new(db.store(crate::store::owner::me(), Duration::from_secs(15)));
    (store, db)
}

mod conformance {
    crate::store::conformance::conformance_suite!(super::open_fresh());
}

/// The same store with group commit off: every write a transaction of its
/// own (the path `HostBuilder::group_commit(false)` takes).
fn open_fresh_alone() -> (Arc<dyn Store>, TestDb) {
    let db = TestDb::create();
    let mut config = PostgresConfig::new(&db.url);
    config.group_commit = false;
    let store: Arc<dyn Store> = Arc::new(PgStore::open(&config).expect("open the store"));
    (store, db)
}

mod conformance_alone {
    crate::store::conformance::conformance_suite!(super::open_fresh_alone());
}

fn key(k: &str) -> JournalKey {
    JournalKey {
        scope: "agent:a".into(),
        tool: "t".into(),
        key: k.into(),
    }
}

/// Waits until `owner`'s lease has run out as `store` sees it (bounded).
fn wait_until_dead(store: &PgStore, owner: &str) {
    let start = Instant::now();
    while store.owner_alive(Some(owner), 0) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "lease of {owner} never ran out"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_side_effecting_key_becomes_unknown_and_is_escalated_once() {
    let db = TestDb::create();
    let a = db.store("aaaa", Duration::from_millis(300));
    let b = db.store("bbbb", Duration::from_secs(15));
    let long = Duration::from_secs(600);
    assert_eq!(
        a.claim(
            key("charge"),
            "fp".into(),
            Effect::SideEffecting,
            long,
            None
        )
        .await
        .expect("claim"),
        Claim::Claimed
    );
    a.claim(key("pure"), "fp".into(), Effect::Pure, long, None)
        .await
        .expect("claim");
    let scope = ScopeId::Agent("a".into());
    b.set_cap(scope.clone(), Some(BudgetCap::new(Tokens(100))))
        .await
        .expect("cap");
    let Reserved::Granted(_) = a
        .reserve(vec![scope.clone()], 40, false)
        .await
        .expect("reserve")
    else {
        panic!("granted");
    };
    // While `a` heartbeats, its claims hold whatever their lease says.
    assert!(b.owner_alive(Some("aaaa"), 0));
    let busy = b
        .claim(
            key("charge"),
            "fp".into(),
            Effect::SideEffecting,
            long,
            None,
        )
        .await;
    assert!(matches!(busy.expect("claim"), Claim::InProgress { .. }));
    // `a` dies (no goodbye: its runtime stops, its row stays).
    drop(a);
    wait_until_dead(&b, "aaaa");
    for _ in 0..3 {
        let claim = b
            .claim(
                key("charge"),
                "fp".into(),
                Effect::SideEffecting,
                long,
                None,
            )
            .await;
        assert!(
            matches!(claim.expect("claim"), Claim::Unknown { ref reason } if reason.contains("aaaa"))
        );
    }
    let escalations = b.escalations().expect("escalations");
    assert_eq!(escalations.len(), 1, "{escalations:?}");
    assert_eq!(escalations[0].reason, EscalationReason::UnknownOutcome);
    assert_eq!(
        escalations[0].key.as_ref().map(|k| k.key.as_str()),
        Some("charge")
    );
    // A pure key is simply claimed again.
    let pure = b
        .claim(key("pure"), "fp".into(), Effect::Pure, long, None)
        .await;
    assert_eq!(pure.expect("claim"), Claim::Claimed);
    // The sweep counts the dead reservation as spent.
    super::lease::take_over_dead(&b.shared)
        .await
        .expect("sweep");
    let status = b.budgets().expect("budgets").pop().expect("capped");
    assert_eq!(
        (status.spent, status.reserved, status.left),
        (Tokens(40), Tokens(0), Tokens(60))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_escalates_a_dead_replicas_key_without_waiting_for_a_claim() {
    let db = TestDb::create();
    let a = db.store("aaaa", Duration::from_millis(300));
    a.claim(
        key("k"),
        "fp".into(),
        Effect::SideEffecting,
        Duration::from_secs(600),
        None,
    )
    .await
    .expect("claim");
    drop(a);
    let b = db.store("bbbb", Duration::from_secs(15));
    wait_until_dead(&b, "aaaa");
    super::lease::take_over_dead(&b.shared)
        .await
        .expect("sweep");
    super::lease::take_over_dead(&b.shared)
        .await
        .expect("sweep again");
    let entry = b.entries().expect("entries").pop().expect("entry");
    assert!(matches!(entry.state, KeyState::Unknown { .. }), "{entry:?}");
    assert_eq!(b.escalations().expect("escalations").len(), 1);
}

#[test]
fn a_newer_schema_is_refused_and_left_untouched() {
    let db = TestDb::create();
    drop(db.store("aaaa", Duration::from_secs(15)));
    db.execute("INSERT INTO cofferdam_schema (version) VALUES (99)");
    let config = PostgresConfig::new(&db.url);
    for _ in 0..2 {
        let error = PgStore::open(&config).err().expect("refused");
        assert!(
            matches!(error, JournalError::NewerSchema { found: 99, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("upgrade cofferdam"), "{error}");
    }
}

#[test]
fn reopening_applies_no_migration_twice() {
    let db = TestDb::create();
    drop(db.store("aaaa", Duration::from_secs(15)));
    drop(db.store("bbbb", Duration::from_secs(15)));
}

#[test]
fn an_unreachable_server_is_unavailable_at_once_and_the_password_is_never_shown() {
    let started = Instant::now();
    // Nothing listens on port 1.
    let config = PostgresConfig::new("postgres://app:s3cret@127.0.0.1:1/x")
        .connect_timeout(Duration::from_secs(2));
    let error = PgStore::open(&config).err().expect("refused");
    assert!(matches!(error, JournalError::Unavailable { .. }), "{error}");
    let message = format!("{error}");
    assert!(
        message.contains("postgres://app:***@127.0.0.1:1/x"),
        "{message}"
    );
    assert!(!format!("{error:?}").contains("s3cret"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_fails_writes_as_unavailable_without_hanging() {
    let db = TestDb::create();
    let store = db.store("aaaa", Duration::from_secs(15));
    store
        .set_cap(ScopeId::Agent("a".into()), None)
        .await
        .expect("write");
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    );
    // Connections the pool held are gone: the next use finds out and the
    // pool opens new ones, so the store recovers by itself.
    let mut recovered = false;
    for _ in 0..5 {
        match store.set_cap(ScopeId::Agent("a".into()), None).await {
            Ok(()) => {
                recovered = true;
                break;
            }
            Err(JournalError::Unavailable { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(recovered);
}

#[test]
fn breaker_modes_are_shared_by_every_replica() {
    let db = TestDb::create();
    let a = db.store("aaaa", Duration::from_secs(15));
    let b = db.store("bbbb", Duration::from_secs(15));
    a.set_breaker_mode("fetch", BreakerMode::ForcedOpen)
        .expect("set");
    assert_eq!(
        b.breaker_modes().get("fetch"),
        Some(&BreakerMode::ForcedOpen)
    );
    b.set_breaker_mode("fetch", BreakerMode::Normal)
        .expect("set");
    assert!(a.breaker_modes().is_empty());
}

#[test]
fn an_owner_is_alive_while_it_heartbeats() {
    let db = TestDb::create();
    let a = db.store("aaaa", Duration::from_millis(150));
    let b = db.store("bbbb", Duration::from_secs(15));
    assert_eq!(a.owner(), "aaaa");
    // Several leases long: the heartbeat keeps it alive.
    std::thread::sleep(Duration::from_millis(600));
    assert!(b.owner_alive(Some("aaaa"), 0));
    assert!(!b.owner_alive(Some("never-seen"), 0));
    assert!(!b.owner_alive(None, std::process::id()));
    drop(a);
    wait_until_dead(&b, "aaaa");
}
