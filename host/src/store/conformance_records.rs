//! More of the store conformance suite (`conformance.rs`): both backends
//! write a run's notifications with its end, once, and lease each entry to
//! one deliverer at a time; and attempts started in one millisecond all keep
//! their own audit record.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::model::notify::{Delivery, EventKind, Route, RunReport, Settle};
use crate::model::schedule::{
    RunEnd, RunOutcome, RunStatus, RunningSlot, Schedule, ScheduleSpec, SlotClaim,
};
use crate::model::units::Tokens;
use crate::store::Store;

fn at(text: &str) -> Timestamp {
    text.parse().expect("time")
}

pub(crate) async fn a_run_end_writes_its_notifications_once_and_leases_hold(j: Arc<dyn Store>) {
    let now = at("2026-01-01T00:00:00Z");
    let spec = ScheduleSpec::tool("nightly", "a", "0 * * * *", "echo", serde_json::json!({}));
    let record = Schedule::new(spec, now);
    j.create_schedule(record, 10).await.expect("create");
    let slot = at("2026-01-01T01:00:00Z");
    let runner = RunningSlot {
        slot,
        pid: std::process::id(),
        owner: Some("runner".into()),
        runner: 1,
    };
    let claim = SlotClaim {
        name: "nightly".into(),
        generation: 1,
        skip: None,
        run: Some(slot),
        now: slot,
        runner,
    };
    assert!(j.claim_slot(claim).await.expect("claim").is_some());
    let end = RunEnd {
        name: "nightly".into(),
        slot,
        outcome: RunOutcome {
            status: RunStatus::Failed,
            tokens: Tokens(5),
            fuel: 0,
            error: Some("boom".into()),
            class: None,
            output: None,
        },
        now: slot,
        threshold: 1,
        report: RunReport {
            cost: None,
            output: None,
            routes: vec![
                Route {
                    sink: "all".into(),
                    kinds: EventKind::ALL.to_vec(),
                },
                Route {
                    sink: "paging".into(),
                    kinds: vec![EventKind::SchedulePaused],
                },
            ],
        },
    };
    assert!(j.finish_run(end.clone()).await.expect("finish").is_some());
    // Recording the same end again writes nothing more.
    assert!(j.finish_run(end).await.expect("finish").is_none());
    let outbox = j.outbox().expect("outbox");
    let mut keys: Vec<(String, EventKind)> = outbox
        .iter()
        .map(|e| (e.sink.clone(), e.event.kind))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            ("all".to_owned(), EventKind::RunFailed),
            ("all".to_owned(), EventKind::SchedulePaused),
            ("all".to_owned(), EventKind::RunEscalated),
            ("paging".to_owned(), EventKind::SchedulePaused),
        ]
    );
    assert!(outbox.iter().all(|e| e.state == Delivery::Pending));

    // Two deliverers claiming at once share the entries, never one twice.
    let lease = Duration::from_secs(60);
    let (a, b) = tokio::join!(
        j.outbox_claim(slot, lease, "a".into(), 10),
        j.outbox_claim(slot, lease, "b".into(), 10)
    );
    let (a, b) = (a.expect("claim"), b.expect("claim"));
    assert_eq!(a.len() + b.len(), 4, "{a:?} {b:?}");
    let (holder, held) = if a.is_empty() { ("b", &b) } else { ("a", &a) };
    let entry = &held[0];
    // Held until the lease ends.
    let soon = slot + SignedDuration::from_secs(59);
    assert!(
        j.outbox_claim(soon, lease, "c".into(), 10)
            .await
            .expect("claim")
            .is_empty()
    );
    // Only the holder settles.
    let key = (entry.sink.clone(), entry.event.id.clone());
    let retry = Settle::Retry {
        at: slot + SignedDuration::from_secs(600),
        error: "503".into(),
    };
    assert!(
        !j.outbox_settle(key.0.clone(), key.1.clone(), "c".into(), retry.clone())
            .await
            .expect("settle")
    );
    assert!(
        j.outbox_settle(key.0.clone(), key.1.clone(), holder.into(), retry)
            .await
            .expect("settle")
    );
    // Due again at its retry time (the others, unsettled, when their lease ends).
    let later = slot + SignedDuration::from_secs(600);
    let again = j
        .outbox_claim(later, lease, "c".into(), 10)
        .await
        .expect("claim");
    assert_eq!(again.len(), 4, "{again:?}");
    let retried = again
        .iter()
        .find(|e| (e.sink.clone(), e.event.id.clone()) == key)
        .expect("retried entry");
    assert_eq!(retried.attempts, 2);
    for e in &again {
        let done = Settle::Delivered { at: later };
        assert!(
            j.outbox_settle(e.sink.clone(), e.event.id.clone(), "c".into(), done)
                .await
                .expect("settle")
        );
    }
    let far = later + SignedDuration::from_hours(48);
    assert!(
        j.outbox_claim(far, lease, "d".into(), 10)
            .await
            .expect("claim")
            .is_empty()
    );
    let outbox = j.outbox().expect("outbox");
    assert_eq!(outbox.len(), 4);
    assert!(outbox.iter().all(|e| e.state == Delivery::Delivered));
    // Settled entries go once they are older than the cutoff, not before.
    assert_eq!(j.outbox_prune(slot).await.expect("prune"), 0);
    assert_eq!(j.outbox_prune(far).await.expect("prune"), 4);
    assert!(j.outbox().expect("outbox").is_empty());
}

pub(crate) async fn attempts_started_in_one_millisecond_all_stay_in_the_history(j: Arc<dyn Store>) {
    use crate::model::budget::ScopeId;
    use crate::model::journal::HistoryQuery;
    // Over two batches (a durable write commits the buffered records).
    for batch in 0..2 {
        for i in 0..40 {
            let mut same = super::conformance::attempt("echo", None, "c", 5_000);
            same.call_id = format!("same-{batch}-{i}");
            j.audit(same);
        }
        j.set_cap(ScopeId::Agent("z".into()), None)
            .await
            .expect("write");
    }
    let at_5000 = HistoryQuery {
        since_ms: Some(5_000),
        until_ms: Some(5_001),
        limit: Some(usize::MAX),
        ..HistoryQuery::default()
    };
    let mut same: Vec<String> = j
        .history(&at_5000)
        .expect("history")
        .into_iter()
        .map(|r| r.call_id)
        .collect();
    same.sort();
    same.dedup();
    assert_eq!(same.len(), 80);
}
