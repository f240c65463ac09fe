//! The redb store: the conformance suite in memory, and what only the
//! embedded file does (schema stamp, recovery on reopen, record formats).

use super::*;
use crate::model::budget::{BudgetCap, ScopeId};
use crate::model::journal::{Fingerprint, Reserved};
use crate::model::units::Tokens;
use crate::store::BudgetLedger;

#[test]
fn newer_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.redb");
    drop(RedbStore::open(&path, true).expect("create"));
    {
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .open(&path)
            .expect("open");
        let txn = db.begin_write().expect("txn");
        txn.open_table(META)
            .expect("meta")
            .insert("schema", 99)
            .expect("insert");
        txn.commit().expect("commit");
    }
    let error = RedbStore::open(&path, true).err().expect("refused");
    assert!(
        matches!(error, JournalError::NewerVersion { found: 99, .. }),
        "{error}"
    );
    let error = RedbStore::open(&path, true)
        .err()
        .expect("still refused, not rewritten");
    assert!(matches!(
        error,
        JournalError::NewerVersion { found: 99, .. }
    ));
}

#[test]
fn windowed_budgets_reset_at_each_window_boundary() {
    let cap = BudgetCap {
        window_ms: Some(3_600_000),
        ..BudgetCap::new(Tokens(100))
    };
    let mut record = BudgetRecord {
        v: 1,
        cap,
        spent: 90,
        reserved: 5,
        window_start_ms: 1_000_000,
        soft_alerted: true,
    };
    record.roll_window(1_000_000 + 3_599_999);
    assert_eq!(
        (record.spent, record.window_start_ms),
        (90, 1_000_000),
        "same window"
    );
    record.roll_window(1_000_000 + 2 * 3_600_000 + 42);
    assert_eq!(record.spent, 0, "a new window starts empty");
    assert!(!record.soft_alerted, "and may warn again");
    assert_eq!(
        record.reserved, 5,
        "running attempts keep their reservations"
    );
    assert_eq!(
        record.window_start_ms,
        1_000_000 + 2 * 3_600_000,
        "aligned to the boundary"
    );
}

#[tokio::test]
async fn a_dead_owners_reservation_counts_as_spent_on_reopen_even_if_its_pid_lives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.redb");
    let scope = ScopeId::Agent("a".into());
    {
        let j = RedbStore::open(&path, true).expect("open");
        j.set_cap(scope.clone(), Some(BudgetCap::new(Tokens(100))))
            .await
            .expect("cap");
        let Reserved::Granted(r) = j
            .reserve(vec![scope.clone()], 40, false)
            .await
            .expect("reserve")
        else {
            panic!("granted");
        };
        // Pretend the process that reserved died before settling, and
        // its PID went to a live process (ours): the owner's lock says
        // dead, whatever the PID says. A record from before owner ids
        // falls back to the PID check.
        let dead = Reservation {
            owner_pid: std::process::id(),
            owner: Some("00000000000000000000000000000dead".into()),
            ..r.clone()
        };
        let legacy = Reservation {
            id: r.id + 1,
            tokens: 0,
            owner_pid: 4_000_000,
            owner: None,
            ..r
        };
        let txn = j.db.begin_write().expect("txn");
        let mut table = txn.open_table(RESERVATIONS).expect("table");
        table
            .insert(dead.id, encode(&dead).as_slice())
            .expect("insert");
        table
            .insert(legacy.id, encode(&legacy).as_slice())
            .expect("insert");
        drop(table);
        txn.commit().expect("commit");
    }
    let j = RedbStore::open(&path, true).expect("reopen");
    let status = j.budgets().expect("budgets").pop().expect("capped");
    assert_eq!(
        (status.spent, status.reserved, status.left),
        (Tokens(40), Tokens(0), Tokens(60))
    );
}

#[test]
fn a_fingerprint_matches_records_written_before_v2() {
    use sha2::Digest as _;
    let fingerprint = Fingerprint {
        current: "v2:abc".into(),
        legacy: Some(("d1".into(), r#"{"a":1}"#.into())),
    };
    let legacy = hex::encode(sha2::Sha256::digest(b"d1\0{\"a\":1}"));
    assert!(fingerprint.matches("v2:abc"));
    assert!(fingerprint.matches(&legacy));
    assert!(!fingerprint.matches("v2:other"));
    assert!(!fingerprint.matches(&hex::encode(sha2::Sha256::digest(b"d2\0{}"))));
}

#[test]
fn garbage_file_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.redb");
    std::fs::write(&path, b"definitely not a redb file, just text").expect("write");
    let error = RedbStore::open(&path, true).err().expect("refused");
    assert!(matches!(error, JournalError::Open { .. }), "{error}");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        b"definitely not a redb file, just text"
    );
}

#[test]
fn storage_errors_keep_their_cause_as_a_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.redb");
    std::fs::write(&path, b"not redb").expect("write");
    let error = RedbStore::open(&path, true).err().expect("refused");
    // The file is named by the error, what redb said by its source.
    assert!(error.to_string().contains("journal.redb"), "{error}");
    let cause = std::error::Error::source(&error).expect("a source");
    assert!(!cause.to_string().is_empty());
    let stored = crate::model::error::storage(std::io::Error::other("disk on fire"));
    let source = std::error::Error::source(&stored).expect("a source");
    assert_eq!(source.to_string(), "disk on fire");
}

fn open_in_memory() -> (std::sync::Arc<dyn crate::store::Store>, ()) {
    (
        std::sync::Arc::new(RedbStore::in_memory().expect("journal")),
        (),
    )
}

mod conformance {
    crate::store::conformance::conformance_suite!(super::open_in_memory());
}
