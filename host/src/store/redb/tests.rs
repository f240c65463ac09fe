//! The redb store, tested through its traits and its file.

use super::*;
use crate::model::budget::ScopeId;
use crate::model::escalation::EscalationReason;
use crate::model::journal::{Claim, Fingerprint, JournalKey, Reserved, StoredOutcome};
use crate::model::units::Effect;
use crate::store::{BudgetLedger, EscalationStore, IdempotencyStore};

fn key(k: &str) -> JournalKey {
    JournalKey {
        scope: "agent:a".into(),
        tool: "t".into(),
        key: k.into(),
    }
}

#[tokio::test]
async fn claim_complete_replay_and_mismatch() {
    let j = RedbStore::in_memory().expect("journal");
    let lease = Duration::from_secs(30);
    let claim = j
        .claim(key("k"), "fp".into(), Effect::Pure, lease, None)
        .await
        .expect("claim");
    assert_eq!(claim, Claim::Claimed);
    let busy = j
        .claim(key("k"), "fp".into(), Effect::Pure, lease, None)
        .await
        .expect("claim");
    assert!(matches!(busy, Claim::InProgress { retry_after } if retry_after <= lease));
    let stored = StoredOutcome::Output {
        output: "1".into(),
        tokens: Tokens(3),
    };
    j.complete(key("k"), stored.clone())
        .await
        .expect("complete");
    assert_eq!(
        j.claim(key("k"), "fp".into(), Effect::Pure, lease, None)
            .await
            .expect("claim"),
        Claim::Replay(stored)
    );
    assert_eq!(
        j.claim(key("k"), "other".into(), Effect::Pure, lease, None)
            .await
            .expect("claim"),
        Claim::Mismatch
    );
}

#[tokio::test]
async fn released_key_can_be_claimed_again() {
    let j = RedbStore::in_memory().expect("journal");
    let lease = Duration::from_secs(30);
    j.claim(key("k"), "fp".into(), Effect::SideEffecting, lease, None)
        .await
        .expect("claim");
    j.release(key("k")).await.expect("release");
    let again = j
        .claim(key("k"), "fp".into(), Effect::SideEffecting, lease, None)
        .await;
    assert_eq!(again.expect("claim"), Claim::Claimed);
}

#[tokio::test]
async fn expired_lease_is_unknown_for_side_effects_and_reclaimable_otherwise() {
    let j = RedbStore::in_memory().expect("journal");
    let gone = Duration::ZERO;
    j.claim(key("s"), "fp".into(), Effect::SideEffecting, gone, None)
        .await
        .expect("claim");
    let s = j
        .claim(key("s"), "fp".into(), Effect::SideEffecting, gone, None)
        .await
        .expect("claim");
    assert!(matches!(s, Claim::Unknown { .. }), "{s:?}");
    let again = j
        .claim(key("s"), "fp".into(), Effect::SideEffecting, gone, None)
        .await;
    assert!(
        matches!(again.expect("claim"), Claim::Unknown { .. }),
        "stays unknown"
    );
    // The lapse escalated the key once, with the tool and key named.
    let escalations = j.escalations().expect("escalations");
    assert_eq!(escalations.len(), 1, "{escalations:?}");
    assert_eq!(escalations[0].reason, EscalationReason::UnknownOutcome);
    assert_eq!(
        escalations[0].key.as_ref().map(|k| k.key.as_str()),
        Some("s")
    );
    assert!(
        escalations[0].error.contains("lease"),
        "{}",
        escalations[0].error
    );

    j.claim(key("p"), "fp".into(), Effect::Pure, gone, None)
        .await
        .expect("claim");
    let p = j
        .claim(key("p"), "fp".into(), Effect::Pure, gone, None)
        .await
        .expect("claim");
    assert_eq!(p, Claim::Claimed);
    let entry = j
        .entries()
        .expect("entries")
        .into_iter()
        .find(|e| e.key == "p")
        .expect("p");
    assert_eq!(entry.claims, 2);
}

#[tokio::test]
async fn reserve_never_grants_more_than_the_tightest_scope_has_left() {
    let j = RedbStore::in_memory().expect("journal");
    let agent = ScopeId::Agent("a".into());
    let task = ScopeId::Task("t".into());
    j.set_cap(agent.clone(), Some(BudgetCap::new(Tokens(100))))
        .await
        .expect("cap");
    j.set_cap(task.clone(), Some(BudgetCap::new(Tokens(30))))
        .await
        .expect("cap");
    let scopes = vec![agent.clone(), task.clone()];
    let Reserved::Granted(r) = j.reserve(scopes.clone(), 50, false).await.expect("reserve") else {
        panic!("granted");
    };
    assert_eq!(r.tokens, 30, "the task has only 30");
    let second = j.reserve(scopes.clone(), 50, false).await.expect("reserve");
    assert_eq!(
        second,
        Reserved::Exhausted {
            scope: "task:t".into(),
            left: 0
        }
    );
    j.settle(r, 12).await.expect("settle");
    let Reserved::Granted(r) = j
        .reserve(vec![task.clone()], 18, false)
        .await
        .expect("reserve")
    else {
        panic!("granted");
    };
    j.settle(r, 0).await.expect("settle");
    let budgets = j.budgets().expect("budgets");
    let task_status = budgets.iter().find(|b| b.scope == "task:t").expect("task");
    assert_eq!(
        (task_status.spent, task_status.reserved, task_status.left),
        (Tokens(12), Tokens(0), Tokens(18))
    );
    let agent_status = budgets
        .iter()
        .find(|b| b.scope == "agent:a")
        .expect("agent");
    assert_eq!(agent_status.spent, Tokens(12));
    assert!(!task_status.past_soft_threshold, "12 of 30 is below 80%");
    let status = j
        .charge(task.clone(), 12)
        .await
        .expect("charge")
        .expect("capped");
    assert!(status.past_soft_threshold, "24 of 30 is past 80%");
    assert_eq!(
        j.reserve(vec![ScopeId::Agent("other".into())], 5, false)
            .await
            .expect("reserve"),
        Reserved::Unlimited
    );
}

#[tokio::test]
async fn reap_removes_only_finished_records_older_than_the_cutoff() {
    let j = RedbStore::in_memory().expect("journal");
    let lease = Duration::from_secs(30);
    j.claim(key("done"), "fp".into(), Effect::Pure, lease, None)
        .await
        .expect("claim");
    j.complete(
        key("done"),
        StoredOutcome::Output {
            output: "1".into(),
            tokens: Tokens(1),
        },
    )
    .await
    .expect("complete");
    j.claim(key("running"), "fp".into(), Effect::Pure, lease, None)
        .await
        .expect("claim");
    assert_eq!(j.reap(0).await.expect("reap"), 0, "nothing is older than 0");
    assert_eq!(
        j.reap(u64::MAX).await.expect("reap"),
        1,
        "only the finished one"
    );
    let keys: Vec<String> = j
        .entries()
        .expect("entries")
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, vec!["running".to_owned()]);
}

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
