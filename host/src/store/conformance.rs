//! One suite for the store traits, run against every backend: what a store
//! must answer, whichever database it keeps. Each test is an async function
//! over a fresh `Arc<dyn Store>`; [`conformance_suite!`] instantiates them
//! for a backend (see `redb/tests.rs` and `postgres/tests.rs`).
//!
//! Backend-specific behaviour (file formats, leases across processes,
//! schema versions) is tested beside each backend, not here.

use std::sync::Arc;
use std::time::Duration;

use crate::model::budget::{BudgetCap, ScopeId};
use crate::model::escalation::{
    EscalationError, EscalationKey, EscalationReason, NewEscalation, Resolution,
};
use crate::model::journal::{
    AttemptRecord, Claim, HistoryQuery, JournalKey, Reserved, StoredOutcome,
};
use crate::model::schedule::{RunningSlot, Schedule, ScheduleSpec, SlotClaim};
use crate::model::task::{TaskRecord, TaskSpec, TaskState};
use crate::model::units::{Effect, Tokens};
use crate::store::Store;

/// Instantiates every conformance test for a backend; `$open` makes a
/// fresh store and a guard that outlives it (its database, say).
pub(crate) async fn an_unkeyed_escalation_joins_an_open_keyed_one_of_the_same_step(
    j: Arc<dyn Store>,
) {
    // A task step whose side effect ended unknown, then the same step
    // escalated again without its key: one open escalation.
    let keyed = NewEscalation {
        task: Some("task-9".into()),
        step: Some(3),
        ..about("k9", EscalationReason::UnknownOutcome)
    };
    let first = j.escalate(keyed).await.expect("escalate");
    let unkeyed = |task: &str, step, reason| NewEscalation {
        reason: Some(reason),
        task: Some(task.into()),
        step: Some(step),
        ..NewEscalation::default()
    };
    let joined = unkeyed("task-9", 3, EscalationReason::UnknownOutcome);
    assert_eq!(j.escalate(joined).await.expect("escalate"), first);
    for other in [
        unkeyed("task-9", 4, EscalationReason::UnknownOutcome),
        unkeyed("task-9", 3, EscalationReason::MaxRetriesExceeded),
        unkeyed("task-8", 3, EscalationReason::UnknownOutcome),
    ] {
        assert_ne!(j.escalate(other).await.expect("escalate"), first);
    }
    // The same for a schedule's background run.
    let keyed = NewEscalation {
        schedule: Some("digest".into()),
        ..about("k10", EscalationReason::UnknownOutcome)
    };
    let first = j.escalate(keyed).await.expect("escalate");
    let joined = NewEscalation {
        reason: Some(EscalationReason::UnknownOutcome),
        schedule: Some("digest".into()),
        ..NewEscalation::default()
    };
    assert_eq!(j.escalate(joined).await.expect("escalate"), first);
}

macro_rules! conformance_suite {
    ($open:expr) => {
        $crate::store::conformance::conformance_suite!(@tests $open;
            claim_complete_replay_and_mismatch,
            state_commits_all_or_nothing_under_the_quota,
            released_key_can_be_claimed_again,
            expired_lease_is_unknown_for_side_effects_and_reclaimable_otherwise,
            fifty_concurrent_claims_of_one_key_claim_it_once,
            reserve_never_grants_more_than_the_tightest_scope_has_left,
            fifty_concurrent_reservations_never_exceed_the_cap,
            reap_removes_only_finished_records_older_than_the_cutoff,
            escalations_are_deduplicated_per_key_while_open,
            an_unkeyed_escalation_joins_an_open_keyed_one_of_the_same_step,
            resolving_settles_the_unknown_key_in_the_same_step,
            tasks_are_stored_and_read_back,
            a_slot_is_claimed_once_by_two_concurrent_claimers,
            history_filters_by_tool_task_and_agent_newest_first,
            a_run_end_writes_its_notifications_once_and_leases_hold,
            attempts_started_in_one_millisecond_all_stay_in_the_history,
        );
    };
    (@tests $open:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                // The guard (a test database) outlives the store.
                let (store, _guard) = $open;
                $crate::store::conformance::$name(store).await;
            }
        )*
    };
}
pub(crate) use super::conformance_records::{
    a_run_end_writes_its_notifications_once_and_leases_hold,
    attempts_started_in_one_millisecond_all_stay_in_the_history,
};
pub(crate) use conformance_suite;

fn key(k: &str) -> JournalKey {
    JournalKey {
        scope: "agent:a".into(),
        tool: "t".into(),
        key: k.into(),
    }
}

const LEASE: Duration = Duration::from_secs(30);

pub(crate) async fn claim_complete_replay_and_mismatch(j: Arc<dyn Store>) {
    let claim = j
        .claim(key("k"), "fp".into(), Effect::Pure, LEASE, None)
        .await;
    assert_eq!(claim.expect("claim"), Claim::Claimed);
    let busy = j
        .claim(key("k"), "fp".into(), Effect::Pure, LEASE, None)
        .await;
    assert!(
        matches!(busy.expect("claim"), Claim::InProgress { retry_after } if retry_after <= LEASE)
    );
    let stored = StoredOutcome::Output {
        output: "1".into(),
        tokens: Tokens(3),
    };
    j.complete(key("k"), stored.clone())
        .await
        .expect("complete");
    let replay = j
        .claim(key("k"), "fp".into(), Effect::Pure, LEASE, None)
        .await;
    assert_eq!(replay.expect("claim"), Claim::Replay(stored));
    let other = j
        .claim(key("k"), "other".into(), Effect::Pure, LEASE, None)
        .await;
    assert_eq!(other.expect("claim"), Claim::Mismatch);
    let missing = j
        .complete(
            key("never-claimed"),
            StoredOutcome::Output {
                output: "1".into(),
                tokens: Tokens(0),
            },
        )
        .await;
    assert!(
        matches!(
            missing,
            Err(crate::model::error::JournalError::Missing { .. })
        ),
        "{missing:?}"
    );
}

pub(crate) async fn released_key_can_be_claimed_again(j: Arc<dyn Store>) {
    j.claim(key("k"), "fp".into(), Effect::SideEffecting, LEASE, None)
        .await
        .expect("claim");
    j.release(key("k")).await.expect("release");
    let again = j
        .claim(key("k"), "fp".into(), Effect::SideEffecting, LEASE, None)
        .await;
    assert_eq!(again.expect("claim"), Claim::Claimed);
}

pub(crate) async fn expired_lease_is_unknown_for_side_effects_and_reclaimable_otherwise(
    j: Arc<dyn Store>,
) {
    let gone = Duration::ZERO;
    j.claim(key("s"), "fp".into(), Effect::SideEffecting, gone, None)
        .await
        .expect("claim");
    let s = j
        .claim(key("s"), "fp".into(), Effect::SideEffecting, gone, None)
        .await;
    assert!(
        matches!(s.as_ref().expect("claim"), Claim::Unknown { .. }),
        "{s:?}"
    );
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
        .await;
    assert_eq!(p.expect("claim"), Claim::Claimed);
    let entries = j.entries().expect("entries");
    let entry = entries.iter().find(|e| e.key == "p").expect("p");
    assert_eq!(entry.claims, 2);
}

pub(crate) async fn fifty_concurrent_claims_of_one_key_claim_it_once(j: Arc<dyn Store>) {
    let mut claims = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let j = Arc::clone(&j);
        claims.spawn(async move {
            j.claim(key("once"), "fp".into(), Effect::SideEffecting, LEASE, None)
                .await
                .expect("claim")
        });
    }
    let mut claimed = 0;
    while let Some(claim) = claims.join_next().await {
        match claim.expect("task") {
            Claim::Claimed => claimed += 1,
            Claim::InProgress { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(claimed, 1);
}

pub(crate) async fn reserve_never_grants_more_than_the_tightest_scope_has_left(j: Arc<dyn Store>) {
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
    let held = j.reserve(scopes.clone(), 50, true).await.expect("reserve");
    assert_eq!(
        held,
        Reserved::Held {
            scope: "task:t".into(),
            left: 0
        }
    );
    j.settle(r.clone(), 12).await.expect("settle");
    // Settling twice changes nothing.
    j.settle(r, 12).await.expect("settle again");
    let Reserved::Granted(r) = j
        .reserve(vec![task.clone()], 18, false)
        .await
        .expect("reserve")
    else {
        panic!("granted");
    };
    // Settlement never exceeds the reservation.
    j.settle(r, 1_000).await.expect("settle");
    let budgets = j.budgets().expect("budgets");
    let task_status = budgets.iter().find(|b| b.scope == "task:t").expect("task");
    assert_eq!(
        (task_status.spent, task_status.reserved, task_status.left),
        (Tokens(30), Tokens(0), Tokens(0))
    );
    let agent_status = budgets
        .iter()
        .find(|b| b.scope == "agent:a")
        .expect("agent");
    assert_eq!(agent_status.spent, Tokens(12));
    assert!(task_status.past_soft_threshold, "30 of 30 is past 80%");
    let status = j
        .charge(agent.clone(), 70)
        .await
        .expect("charge")
        .expect("capped");
    assert_eq!((status.spent, status.left), (Tokens(82), Tokens(18)));
    assert!(status.past_soft_threshold, "82 of 100 is past 80%");
    j.set_cap(agent.clone(), Some(BudgetCap::new(Tokens(200))))
        .await
        .expect("recap");
    let agent_status = j
        .budgets()
        .expect("budgets")
        .into_iter()
        .find(|b| b.scope == "agent:a");
    assert_eq!(
        agent_status.map(|b| (b.spent, b.left)),
        Some((Tokens(82), Tokens(118)))
    );
    j.set_cap(task.clone(), None).await.expect("uncap");
    assert_eq!(j.budgets().expect("budgets").len(), 1);
    assert_eq!(
        j.reserve(vec![ScopeId::Agent("other".into())], 5, false)
            .await
            .expect("reserve"),
        Reserved::Unlimited
    );
    assert_eq!(
        j.charge(ScopeId::Agent("other".into()), 5)
            .await
            .expect("charge"),
        None
    );
}

pub(crate) async fn fifty_concurrent_reservations_never_exceed_the_cap(j: Arc<dyn Store>) {
    let agent = ScopeId::Agent("a".into());
    let task = ScopeId::Task("t".into());
    j.set_cap(agent.clone(), Some(BudgetCap::new(Tokens(1_000))))
        .await
        .expect("cap");
    j.set_cap(task.clone(), Some(BudgetCap::new(Tokens(100))))
        .await
        .expect("cap");
    let mut reservations = tokio::task::JoinSet::new();
    for i in 0..50 {
        let j = Arc::clone(&j);
        // Half name the scopes in the other order: locks must not deadlock.
        let scopes = if i % 2 == 0 {
            vec![agent.clone(), task.clone()]
        } else {
            vec![task.clone(), agent.clone()]
        };
        reservations.spawn(async move { j.reserve(scopes, 7, false).await.expect("reserve") });
    }
    let mut granted = Vec::new();
    while let Some(reserved) = reservations.join_next().await {
        match reserved.expect("task") {
            Reserved::Granted(r) => granted.push(r),
            Reserved::Exhausted { scope, .. } => assert_eq!(scope, "task:t"),
            other => panic!("unexpected {other:?}"),
        }
    }
    let total: u64 = granted.iter().map(|r| r.tokens).sum();
    assert_eq!(total, 100, "every token of the tightest scope, and no more");
    let status = j.budgets().expect("budgets");
    let task_status = status.iter().find(|b| b.scope == "task:t").expect("task");
    assert_eq!(
        (task_status.reserved, task_status.left),
        (Tokens(100), Tokens(0))
    );
    for r in granted {
        let tokens = r.tokens;
        j.settle(r, tokens + 5).await.expect("settle");
    }
    let status = j.budgets().expect("budgets");
    for b in &status {
        assert_eq!((b.spent, b.reserved), (Tokens(100), Tokens(0)), "{b:?}");
    }
}

pub(crate) async fn reap_removes_only_finished_records_older_than_the_cutoff(j: Arc<dyn Store>) {
    j.claim(key("done"), "fp".into(), Effect::Pure, LEASE, None)
        .await
        .expect("claim");
    let output = StoredOutcome::Output {
        output: "1".into(),
        tokens: Tokens(1),
    };
    j.complete(key("done"), output).await.expect("complete");
    j.claim(key("running"), "fp".into(), Effect::Pure, LEASE, None)
        .await
        .expect("claim");
    assert_eq!(j.reap(0).await.expect("reap"), 0, "nothing is older than 0");
    assert_eq!(
        j.reap(u64::MAX / 2).await.expect("reap"),
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

fn about(k: &str, reason: EscalationReason) -> NewEscalation {
    NewEscalation {
        reason: Some(reason),
        tool: Some("t".into()),
        key: Some(EscalationKey {
            scope: "agent:a".into(),
            tool: "t".into(),
            key: k.into(),
        }),
        error: format!("about {k}"),
        ..NewEscalation::default()
    }
}

pub(crate) async fn escalations_are_deduplicated_per_key_while_open(j: Arc<dyn Store>) {
    let first = j
        .escalate(about("k", EscalationReason::UnknownOutcome))
        .await
        .expect("escalate");
    let same = j
        .escalate(about("k", EscalationReason::RequiresHuman))
        .await
        .expect("escalate");
    assert_eq!(first, same, "one open escalation per key");
    let other = j
        .escalate(about("k2", EscalationReason::UnknownOutcome))
        .await
        .expect("escalate");
    assert_ne!(first, other);
    let step = |step| NewEscalation {
        reason: Some(EscalationReason::MaxRetriesExceeded),
        task: Some("task-1".into()),
        step: Some(step),
        ..NewEscalation::default()
    };
    let s1 = j.escalate(step(1)).await.expect("escalate");
    assert_eq!(j.escalate(step(1)).await.expect("escalate"), s1);
    assert_ne!(j.escalate(step(2)).await.expect("escalate"), s1);
    j.resolve_escalation(first, Resolution::Abort, "gave up".into())
        .await
        .expect("resolve")
        .expect("resolved");
    let again = j
        .escalate(about("k", EscalationReason::UnknownOutcome))
        .await
        .expect("escalate");
    assert!(
        again > first,
        "a resolved escalation does not swallow a new one"
    );
    let all = j.escalations().expect("escalations");
    assert_eq!(all.len(), 5, "{all:?}");
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
    let shown = j.escalation(first).expect("escalation").expect("exists");
    assert_eq!((shown.id, shown.error.as_str()), (first, "about k"));
    assert!(j.escalation(9_999).expect("escalation").is_none());
}

pub(crate) async fn resolving_settles_the_unknown_key_in_the_same_step(j: Arc<dyn Store>) {
    for k in ["done", "resume"] {
        j.claim(key(k), "fp".into(), Effect::SideEffecting, LEASE, None)
            .await
            .expect("claim");
        j.mark_unknown(
            key(k),
            "cancelled".into(),
            about(k, EscalationReason::UnknownOutcome),
        )
        .await
        .expect("unknown");
    }
    let claim = j
        .claim(key("done"), "fp".into(), Effect::SideEffecting, LEASE, None)
        .await;
    assert!(matches!(claim.expect("claim"), Claim::Unknown { reason } if reason == "cancelled"));
    let escalations = j.escalations().expect("escalations");
    assert_eq!(escalations.len(), 2);
    assert_eq!(escalations[0].error, "cancelled");
    let (done, resume) = (escalations[0].id, escalations[1].id);
    let resolved = j
        .resolve_escalation(
            done,
            Resolution::MarkDone {
                output: Some("42".into()),
            },
            "did it".into(),
        )
        .await
        .expect("resolve")
        .expect("resolved");
    assert_eq!(
        resolved.resolved.as_ref().map(|r| r.note.as_str()),
        Some("did it")
    );
    let replay = j
        .claim(key("done"), "fp".into(), Effect::SideEffecting, LEASE, None)
        .await;
    assert_eq!(
        replay.expect("claim"),
        Claim::Replay(StoredOutcome::Output {
            output: "42".into(),
            tokens: Tokens(0)
        })
    );
    let twice = j
        .resolve_escalation(done, Resolution::Abort, String::new())
        .await;
    assert!(matches!(
        twice.expect("resolve"),
        Err(EscalationError::AlreadyResolved {
            resolution: "mark-done",
            ..
        })
    ));
    j.resolve_escalation(resume, Resolution::Resume, String::new())
        .await
        .expect("resolve")
        .expect("resolved");
    let fresh = j
        .claim(
            key("resume"),
            "fp".into(),
            Effect::SideEffecting,
            LEASE,
            None,
        )
        .await;
    assert_eq!(
        fresh.expect("claim"),
        Claim::Claimed,
        "resume frees the key"
    );
    let missing = j
        .resolve_escalation(9_999, Resolution::Abort, String::new())
        .await;
    assert!(matches!(
        missing.expect("resolve"),
        Err(EscalationError::NotFound { id: 9_999 })
    ));
}

fn task(id: &str, state: TaskState) -> TaskRecord {
    TaskRecord {
        v: 1,
        id: id.into(),
        spec: TaskSpec {
            id: id.into(),
            agent: Some("a".into()),
            tenant: None,
            schedule: None,
            steps: Vec::new(),
        },
        state,
        steps: Vec::new(),
        failed_step: None,
        compensating: false,
        escalations: vec![1],
        created_ms: 1,
        updated_ms: 2,
    }
}

pub(crate) async fn tasks_are_stored_and_read_back(j: Arc<dyn Store>) {
    j.put_task(task("b", TaskState::Running))
        .await
        .expect("put");
    j.put_task(task("a", TaskState::Running))
        .await
        .expect("put");
    j.put_task(task("b", TaskState::Completed))
        .await
        .expect("put again");
    assert_eq!(
        j.task("b").expect("task"),
        Some(task("b", TaskState::Completed))
    );
    assert_eq!(j.task("c").expect("task"), None);
    let ids: Vec<String> = j
        .tasks()
        .expect("tasks")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, ["a", "b"]);
}

pub(crate) async fn a_slot_is_claimed_once_by_two_concurrent_claimers(j: Arc<dyn Store>) {
    let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
    let spec = ScheduleSpec::tool(
        "nightly",
        "agent-1",
        "0 * * * *",
        "echo",
        serde_json::json!({}),
    );
    let record = Schedule::new(spec, now);
    use crate::model::schedule::Created;
    let created = j.create_schedule(record.clone(), 1).await.expect("create");
    assert!(matches!(created, Created::New(_)));
    let same = j.create_schedule(record.clone(), 1).await.expect("create");
    assert!(matches!(same, Created::Same(_)));
    let mut other = record.clone();
    other.spec.name = "other".into();
    let over = j.create_schedule(other, 1).await.expect("create");
    assert!(matches!(over, Created::OverQuota));
    let slot: jiff::Timestamp = "2026-01-01T01:00:00Z".parse().expect("time");
    let mut claimers = tokio::task::JoinSet::new();
    for runner in 1..=2 {
        let j = Arc::clone(&j);
        claimers.spawn(async move {
            let claim = SlotClaim {
                name: "nightly".into(),
                generation: 1,
                skip: None,
                run: Some(slot),
                now: slot,
                runner: RunningSlot {
                    slot,
                    pid: std::process::id(),
                    owner: Some(format!("runner-{runner}")),
                    runner,
                },
            };
            j.claim_slot(claim).await.expect("claim")
        });
    }
    let mut claimed = Vec::new();
    while let Some(result) = claimers.join_next().await {
        claimed.extend(result.expect("task"));
    }
    assert_eq!(claimed.len(), 1, "one runner runs the slot");
    let runs = j.schedule_runs("nightly").expect("runs");
    assert_eq!(runs.len(), 1);
    let stored = j.schedules().expect("schedules");
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].last_slot, stored[0].runs), (Some(slot), 1));
    assert!(stored[0].running.is_some());
    let paused = j
        .update_schedule(
            "nightly".into(),
            crate::model::schedule::ScheduleChange::Pause {
                reason: "quiet".into(),
                since: slot,
            },
        )
        .await
        .expect("pause")
        .expect("exists");
    assert!(!paused.is_active());
    assert!(j.delete_schedule("nightly".into()).await.expect("delete"));
    assert!(!j.delete_schedule("nightly".into()).await.expect("delete"));
    assert!(j.schedule_runs("nightly").expect("runs").is_empty());
}

pub(crate) fn attempt(
    tool: &str,
    task: Option<&str>,
    agent: &str,
    started_ms: u64,
) -> AttemptRecord {
    AttemptRecord {
        v: 1,
        tool: tool.into(),
        digest: "d".into(),
        call_id: format!("c{started_ms}"),
        task: task.map(Into::into),
        agent: Some(agent.into()),
        tenant: None,
        attempt: 1,
        started_ms,
        ended_ms: started_ms + 1,
        status: "ok".into(),
        fuel: 10,
        tokens: 1,
        error: None,
        replayed: false,
        http_requests: 0,
        http_bytes_in: 0,
        http_bytes_out: 0,
    }
}

pub(crate) async fn history_filters_by_tool_task_and_agent_newest_first(j: Arc<dyn Store>) {
    j.audit(attempt("echo", Some("t1"), "a", 1_000));
    j.audit(attempt("grep", Some("t1"), "b", 2_000));
    j.audit(attempt("echo", None, "b", 3_000));
    // A durable write carries buffered audit records with it.
    j.set_cap(ScopeId::Agent("z".into()), None)
        .await
        .expect("write");
    let calls = |query: HistoryQuery| -> Vec<String> {
        j.history(&query)
            .expect("history")
            .into_iter()
            .map(|r| r.call_id)
            .collect()
    };
    assert_eq!(calls(HistoryQuery::default()), ["c3000", "c2000", "c1000"]);
    let tool = HistoryQuery {
        tool: Some("echo".into()),
        ..HistoryQuery::default()
    };
    assert_eq!(calls(tool), ["c3000", "c1000"]);
    let task = HistoryQuery {
        task: Some("t1".into()),
        ..HistoryQuery::default()
    };
    assert_eq!(calls(task), ["c2000", "c1000"]);
    let agent = HistoryQuery {
        agent: Some("b".into()),
        limit: Some(1),
        ..HistoryQuery::default()
    };
    assert_eq!(calls(agent), ["c3000"]);
    let range = HistoryQuery {
        since_ms: Some(2_000),
        until_ms: Some(3_000),
        ..HistoryQuery::default()
    };
    assert_eq!(calls(range), ["c2000"]);
}

pub(crate) async fn state_commits_all_or_nothing_under_the_quota(j: Arc<dyn Store>) {
    use crate::model::state::{StateChanges, StateQuota, StateRefused, StateUsage, StateWrite};
    let quota = Some(StateQuota {
        max_keys: 2,
        max_bytes: 100,
    });
    let changes = |writes: Vec<(&str, StateWrite)>| StateChanges {
        space: "b/owner:a".into(),
        writes: writes.into_iter().map(|(k, w)| (k.to_owned(), w)).collect(),
        quota,
    };
    let usage = j
        .state_commit(changes(vec![
            ("k", StateWrite::Set(b"v1".to_vec())),
            ("n", StateWrite::Add(5)),
        ]))
        .await
        .expect("store")
        .expect("within the quota");
    assert_eq!(usage, StateUsage { keys: 2, bytes: 5 });
    // A third key is over the quota: nothing of the batch is written.
    let refused = j
        .state_commit(changes(vec![
            ("k", StateWrite::Set(b"v2".to_vec())),
            ("x", StateWrite::Set(b"y".to_vec())),
        ]))
        .await
        .expect("store");
    assert!(
        matches!(refused, Err(StateRefused::OverQuota { keys: 3, .. })),
        "{refused:?}"
    );
    assert_eq!(j.state_get("b/owner:a", "k").unwrap(), Some(b"v1".to_vec()));
    // Counters add to what is stored; deletes free room.
    j.state_commit(changes(vec![
        ("n", StateWrite::Add(2)),
        ("k", StateWrite::Delete),
        ("x", StateWrite::Set(b"y".to_vec())),
    ]))
    .await
    .expect("store")
    .expect("within the quota");
    assert_eq!(j.state_get("b/owner:a", "n").unwrap(), Some(b"7".to_vec()));
    assert_eq!(j.state_keys("b/owner:a").unwrap(), ["n", "x"]);
    assert_eq!(
        j.state_usage("b/owner:a").unwrap(),
        StateUsage { keys: 2, bytes: 4 }
    );
    // Another space of the bucket is apart.
    assert!(j.state_keys("b/owner:other").unwrap().is_empty());
    let spaces = j.state_spaces().unwrap();
    assert_eq!(
        spaces,
        [("b/owner:a".to_owned(), StateUsage { keys: 2, bytes: 4 })]
    );
    // Two commits racing for the last key: one wins.
    let (one, two) = tokio::join!(
        j.state_commit(changes(vec![
            ("p", StateWrite::Set(b"1".to_vec())),
            ("n", StateWrite::Delete)
        ])),
        j.state_commit(changes(vec![("q", StateWrite::Set(b"1".to_vec()))])),
    );
    let wins = [one.expect("store"), two.expect("store")]
        .iter()
        .filter(|r| r.is_ok())
        .count();
    assert!(wins >= 1);
    assert!(j.state_usage("b/owner:a").unwrap().keys <= 2);
}
