//! The batch path on a real database: one transaction per batch, one claim
//! per key however often it is queued, a failing write run alone while the
//! rest of its batch commits, and two replicas' batches over the same keys
//! in opposite orders without a deadlock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Done, Ended, KeyWrite, Queued, commit, in_lock_order, together};
use crate::model::error::JournalError;
use crate::model::journal::{Claim, JournalKey, KeyState, StoredOutcome};
use crate::model::units::{Effect, Tokens};
use crate::store::IdempotencyStore;
use crate::store::postgres::tests::TestDb;
use crate::store::postgres::{Failure, Outcome};

const LONG: Duration = Duration::from_secs(600);

fn key(k: &str) -> JournalKey {
    JournalKey {
        scope: "agent:a".into(),
        tool: "t".into(),
        key: k.into(),
    }
}

fn claim(k: &str) -> KeyWrite {
    KeyWrite::Claim {
        key: key(k),
        fingerprint: "fp".into(),
        effect: Effect::SideEffecting,
        lease: LONG,
        context: None,
    }
}

fn complete(k: &str) -> KeyWrite {
    KeyWrite::Update {
        key: key(k),
        state: KeyState::Completed {
            outcome: StoredOutcome::Output {
                output: "\"done\"".into(),
                tokens: Tokens(0),
            },
        },
        escalation: None,
    }
}

/// `writes` queued, and their answers in the same order.
fn queue(writes: Vec<KeyWrite>) -> (Vec<Queued>, Vec<oneshot::Receiver<Outcome<Done>>>) {
    writes.into_iter().map(Queued::new).unzip()
}

async fn answers(receivers: Vec<oneshot::Receiver<Outcome<Done>>>) -> Vec<Outcome<Done>> {
    let mut out = Vec::with_capacity(receivers.len());
    for receiver in receivers {
        out.push(receiver.await.expect("every write is answered"));
    }
    out
}

fn claimed(answer: &Outcome<Done>) -> bool {
    matches!(answer, Ok(Some(Claim::Claimed)))
}

fn in_progress(answer: &Outcome<Done>) -> bool {
    matches!(answer, Ok(Some(Claim::InProgress { .. })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_claims_each_key_once_however_often_it_is_queued() {
    let db = TestDb::create();
    let store = db.store("aaaa", Duration::from_secs(15));
    let writes = ["b", "a", "b", "c", "a", "b"].map(claim).into();
    let (batch, receivers) = queue(writes);
    commit(&store.shared, batch).await;
    let answers = answers(receivers).await;
    // The first write of each key in queue order claims it.
    let firsts = [true, true, false, true, false, false];
    for (answer, first) in answers.iter().zip(firsts) {
        if first {
            assert!(claimed(answer), "{answer:?}");
        } else {
            assert!(in_progress(answer), "{answer:?}");
        }
    }
    let entries = store.entries().expect("entries");
    assert_eq!(entries.len(), 3);
    assert!(entries.iter().all(|e| e.claims == 1), "{entries:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_is_run_alone_and_the_rest_of_its_batch_commits() {
    let db = TestDb::create();
    let store = db.store("aaaa", Duration::from_secs(15));
    let (batch, _) = queue(vec![claim("x")]);
    commit(&store.shared, batch).await;
    let writes = || vec![complete("x"), complete("ghost"), claim("y")];
    // Together, the missing key fails the batch and nothing is written.
    let (mut batch, _) = queue(writes());
    in_lock_order(&mut batch);
    assert!(matches!(
        together(&store.shared, &batch).await,
        Ended::WriteFailed
    ));
    assert_eq!(store.entries().expect("entries").len(), 1);
    // Committed, each write is answered with its own result.
    let (batch, receivers) = queue(writes());
    commit(&store.shared, batch).await;
    let answers = answers(receivers).await;
    assert!(matches!(answers[0], Ok(None)), "{:?}", answers[0]);
    assert!(
        matches!(&answers[1], Err(Failure::Journal(JournalError::Missing { key })) if key.contains("ghost")),
        "{:?}",
        answers[1]
    );
    assert!(claimed(&answers[2]), "{:?}", answers[2]);
    let states: BTreeMap<String, KeyState> = store
        .entries()
        .expect("entries")
        .into_iter()
        .map(|e| (e.key, e.state))
        .collect();
    assert!(
        matches!(states["x"], KeyState::Completed { .. }),
        "{states:?}"
    );
    assert!(
        matches!(states["y"], KeyState::InProgress { .. }),
        "{states:?}"
    );
    assert_eq!(states.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_through_one_store_claim_each_key_once() {
    let db = TestDb::create();
    let store = Arc::new(db.store("aaaa", Duration::from_secs(15)));
    let mut calls = tokio::task::JoinSet::new();
    for round in 0..8 {
        for k in 0..16 {
            let store = Arc::clone(&store);
            calls.spawn(async move {
                let claim = store
                    .claim(
                        key(&format!("k{k}")),
                        "fp".into(),
                        Effect::SideEffecting,
                        LONG,
                        None,
                    )
                    .await;
                (k, round, claim.expect("claim"))
            });
        }
    }
    let mut claimed: BTreeMap<u32, u32> = BTreeMap::new();
    while let Some(joined) = calls.join_next().await {
        let (k, _, claim) = joined.expect("task");
        match claim {
            Claim::Claimed => *claimed.entry(k).or_default() += 1,
            Claim::InProgress { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(claimed.len(), 16, "{claimed:?}");
    assert!(claimed.values().all(|&n| n == 1), "{claimed:?}");
    // Outcomes go in batches too, and replay.
    let mut done = tokio::task::JoinSet::new();
    for k in 0..16 {
        let store = Arc::clone(&store);
        done.spawn(async move {
            store
                .complete(
                    key(&format!("k{k}")),
                    StoredOutcome::Output {
                        output: "1".into(),
                        tokens: Tokens(0),
                    },
                )
                .await
        });
    }
    while let Some(joined) = done.join_next().await {
        joined.expect("task").expect("complete");
    }
    let again = store
        .claim(key("k3"), "fp".into(), Effect::SideEffecting, LONG, None)
        .await;
    assert!(matches!(again.expect("claim"), Claim::Replay(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_batching_overlapping_keys_in_opposite_orders_never_deadlock() {
    let db = TestDb::create();
    let a = db.store("aaaa", Duration::from_secs(15));
    let b = db.store("bbbb", Duration::from_secs(15));
    for round in 0..4 {
        let name = |i: u32| format!("r{round}-{i:02}");
        // `a` queues keys 0..48 upwards, `b` keys 16..64 downwards: 32 keys
        // both want, taken in opposite queue orders.
        let (mut first, _) = queue((0..48).map(|i| claim(&name(i))).collect());
        let (mut second, _) = queue((16..64).rev().map(|i| claim(&name(i))).collect());
        in_lock_order(&mut first);
        in_lock_order(&mut second);
        let (ended_a, ended_b) = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(together(&a.shared, &first), together(&b.shared, &second))
        })
        .await
        .expect("no batch hangs");
        let mut claims: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (ended, batch) in [(ended_a, &first), (ended_b, &second)] {
            // A deadlock would abort one of the transactions (40P01).
            let Ended::Committed(answers) = ended else {
                panic!("round {round}: a batch did not commit in one transaction");
            };
            for (queued, done) in batch.iter().zip(answers) {
                let count = claims.entry(queued.row.clone()).or_default();
                match done {
                    Some(Claim::Claimed) => count.0 += 1,
                    Some(Claim::InProgress { .. }) => count.1 += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!(claims.len(), 64);
        for (row, (won, busy)) in &claims {
            assert_eq!(*won, 1, "{row} claimed {won} times");
            let shared = row.ends_with(|c: char| c.is_ascii_digit())
                && (16..48).any(|i| row.ends_with(&format!("-{i:02}")));
            assert_eq!(*busy, usize::from(shared), "{row}");
        }
    }
}
