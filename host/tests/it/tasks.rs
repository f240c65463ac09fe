//! Durable tasks: steps that replay instead of running twice, compensations
//! in reverse order exactly once (also when resumed mid-compensation), the
//! pivot, per-step fallbacks, cancellation and escalations.

use crate::common;

use std::path::Path;
use std::time::Duration;

use cofferdam::{
    BreakerMode, Effect, EscalationReason, Host, LimitsSpec, Mount, Resolution, StepStatus,
    TaskError, TaskSpec, TaskState, ToolName, ToolPolicy,
};
use cofferdam_test_artifacts as artifacts;

/// A host with `notes` (side-effecting, writing into `dir`) loaded under
/// each of `names`.
async fn host(dir: &Path, names: &[&str]) -> Host {
    let host = common::builder()
        .data_dir(dir.join("data"))
        .artifact_dir(common::shared_data_dir().join("artifacts"))
        .allow_root(dir)
        .build()
        .expect("host");
    std::fs::create_dir_all(dir.join("notes")).expect("mkdir");
    for name in names {
        let policy = ToolPolicy {
            name: Some(ToolName::new(name).expect("name")),
            mounts: vec![Mount::read_write(dir.join("notes"), "/notes")],
            ..ToolPolicy::default()
        };
        common::load(&host, artifacts::NOTES, policy).await;
    }
    host
}

fn note(dir: &Path, title: &str) -> String {
    std::fs::read_to_string(dir.join("notes").join(format!("{title}.md"))).unwrap_or_default()
}

/// Flight, hotel (referring to the flight), charge; `charge_title` decides
/// whether the charge succeeds (a bad title is a terminal invalid-input).
fn trip(id: &str, charge_title: &str, pivot_hotel: bool) -> TaskSpec {
    let text = format!(
        r#"
id = "{id}"
agent = "planner"

[[steps]]
name = "flight"
tool = "notes"
input = {{ title = "flight", body = "reserve LIS-JFK for {id}" }}
compensate = {{ tool = "notes", input = {{ title = "cancellations", body = "cancel flight ${{output.path}}" }} }}

[[steps]]
name = "hotel"
tool = "notes"
pivot = {pivot_hotel}
input = {{ title = "hotel", body = "reserve a room near the flight in ${{steps.flight.output.path}}" }}
compensate = {{ tool = "notes", input = {{ title = "cancellations", body = "cancel hotel ${{output.path}}" }} }}

[[steps]]
name = "charge"
tool = "notes"
input = {{ title = "{charge_title}", body = "charge card for ${{task}}" }}
"#
    );
    let spec: TaskSpec = toml::from_str(&text).expect("task parses");
    spec.validate().expect("valid");
    spec
}

#[tokio::test]
async fn a_task_runs_its_steps_in_order_and_a_rerun_replays_instead_of_repeating() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path(), &["notes"]).await;
    let record = host
        .tasks()
        .run(trip("trip-1", "charges", false))
        .await
        .expect("runs");
    assert_eq!(record.state, TaskState::Completed);
    assert!(record.steps.iter().all(|s| s.status == StepStatus::Done));
    assert_eq!(
        note(dir.path(), "hotel"),
        "reserve a room near the flight in /notes/flight.md\n"
    );
    assert_eq!(note(dir.path(), "charges"), "charge card for trip-1\n");

    let again = host
        .tasks()
        .run(trip("trip-1", "charges", false))
        .await
        .expect("reruns");
    assert_eq!(again.state, TaskState::Completed);
    assert_eq!(note(dir.path(), "flight"), "reserve LIS-JFK for trip-1\n");
    let other = host.tasks().run(trip("trip-1", "other", false)).await;
    assert!(
        matches!(other, Err(TaskError::SpecMismatch { .. })),
        "{other:?}"
    );
    assert_eq!(
        host.tasks().status("trip-1").expect("stored").state,
        TaskState::Completed
    );
}

#[tokio::test]
async fn a_step_failing_for_good_undoes_the_finished_ones_in_reverse_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path(), &["notes"]).await;
    let record = host
        .tasks()
        .run(trip("trip-2", "bad title!", false))
        .await
        .expect("runs");
    assert_eq!(record.state, TaskState::Compensated);
    let statuses: Vec<StepStatus> = record.steps.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [
            StepStatus::Compensated,
            StepStatus::Compensated,
            StepStatus::Failed
        ]
    );
    assert_eq!(
        record.steps[2].class.map(|c| c.as_str()),
        Some("invalid-input")
    );
    assert_eq!(
        note(dir.path(), "cancellations"),
        "cancel hotel /notes/hotel.md\ncancel flight /notes/flight.md\n"
    );
    // A finished task is not run again.
    host.tasks()
        .run(trip("trip-2", "bad title!", false))
        .await
        .expect("reruns");
    assert_eq!(note(dir.path(), "cancellations").lines().count(), 2);
}

#[tokio::test]
async fn a_compensation_interrupted_midway_resumes_without_repeating() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The hotel is undone by a tool whose breaker an operator holds open.
    let host = host(dir.path(), &["notes", "undo"]).await;
    let mut spec = trip("trip-3", "bad title!", false);
    if let Some(c) = spec.steps[1].compensate.as_mut() {
        c.tool = "undo".into();
    }
    host.set_breaker_mode("undo", BreakerMode::ForcedOpen)
        .expect("set");
    let record = host.tasks().run(spec.clone()).await.expect("runs");
    assert_eq!(record.state, TaskState::Escalated);
    assert_eq!(record.steps[1].status, StepStatus::CompensationFailed);
    assert_eq!(
        record.steps[0].status,
        StepStatus::Done,
        "the flight waits: compensations keep their reverse order"
    );
    let escalation = host
        .escalations()
        .get(record.escalations[0])
        .expect("escalated");
    assert_eq!(escalation.reason, EscalationReason::CompensationFailed);
    assert_eq!(escalation.task.as_deref(), Some("trip-3"));
    assert_eq!(escalation.step, Some(1));

    // The operator fixes the tool; resuming finishes the compensation.
    host.set_breaker_mode("undo", BreakerMode::Normal)
        .expect("set");
    let record = host.tasks().resume("trip-3").await.expect("resumes");
    assert_eq!(record.state, TaskState::Compensated);
    assert_eq!(
        note(dir.path(), "cancellations"),
        "cancel hotel /notes/hotel.md\ncancel flight /notes/flight.md\n",
        "each compensation ran exactly once, in reverse order"
    );
}

#[tokio::test]
async fn past_the_pivot_a_failure_escalates_instead_of_compensating() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path(), &["notes"]).await;
    let record = host
        .tasks()
        .run(trip("trip-4", "bad title!", true))
        .await
        .expect("runs");
    assert_eq!(record.state, TaskState::Escalated);
    assert_eq!(note(dir.path(), "cancellations"), "", "nothing undone");
    let escalation = host
        .escalations()
        .get(record.escalations[0])
        .expect("escalated");
    assert_eq!(escalation.reason, EscalationReason::IrreversibleAction);
    assert!(
        escalation.error.contains("pivot `hotel`"),
        "{}",
        escalation.error
    );
}

#[tokio::test]
async fn a_step_falls_back_to_the_next_tool_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path(), &["notes", "backup"]).await;
    let mut spec = trip("trip-5", "charges", false);
    spec.steps[0].fallbacks = vec!["backup".into()];
    host.set_breaker_mode("notes", BreakerMode::ForcedOpen)
        .expect("set");
    let record = host.tasks().run(spec.clone()).await.expect("runs");
    // The flight fell back; the hotel had no fallback and failed fast,
    // so the flight was undone (by `notes`, still refusing: escalated).
    assert_eq!(record.steps[0].tool.as_deref(), Some("backup"));
    assert!(record.steps[0].fallback);
    assert_eq!(
        record.steps[1].class.map(|c| c.as_str()),
        Some("circuit-open")
    );
    assert_eq!(record.state, TaskState::Escalated);
    assert_eq!(note(dir.path(), "flight"), "reserve LIS-JFK for trip-5\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_task_escalates_its_unknown_step_and_resume_finishes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path(), &["notes"]).await;
    let policy = ToolPolicy {
        effect: Some(Effect::SideEffecting),
        mounts: vec![Mount::read_write(dir.path().join("notes"), "/out")],
        limits: LimitsSpec {
            timeout_ms: Some(60_000),
            ..LimitsSpec::default()
        },
        ..ToolPolicy::default()
    };
    common::load(&host, artifacts::SLEEPY, policy).await;
    let spec: TaskSpec = toml::from_str(
        r#"
id = "slow-1"
agent = "planner"
[[steps]]
name = "book"
tool = "notes"
input = { title = "booked", body = "seat 4A" }
[[steps]]
name = "wait"
tool = "sleepy"
input = { millis = 60000, mark = "/out/waited.md" }
"#,
    )
    .expect("parses");
    let run = tokio::spawn({
        let tasks = host.tasks();
        let spec = spec.clone();
        async move { tasks.run(spec).await }
    });
    for _ in 0..1000 {
        if !note(dir.path(), "waited").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let running = host.tasks().status("slow-1").expect("stored");
    assert_eq!(running.state, TaskState::Running);
    assert_eq!(running.steps[0].status, StepStatus::Done);
    assert_eq!(running.steps[1].status, StepStatus::Running);

    host.tasks().cancel("slow-1").await.expect("cancels");
    let record = run.await.expect("joins").expect("ends");
    assert_eq!(record.state, TaskState::Escalated);
    let escalation = host
        .escalations()
        .get(record.escalations[0])
        .expect("escalated");
    assert_eq!(escalation.reason, EscalationReason::UnknownOutcome);
    assert_eq!(
        host.escalations().list(false).expect("list").len(),
        1,
        "the journal's escalation and the task's are one"
    );

    // A human checks: it happened. The task then completes by replay.
    host.escalations()
        .resolve(
            escalation.id,
            Resolution::MarkDone {
                output: Some("60000".into()),
            },
            "ops",
        )
        .await
        .expect("resolved");
    let record = host.tasks().resume("slow-1").await.expect("resumes");
    assert_eq!(record.state, TaskState::Completed);
    assert_eq!(record.steps[1].output, Some(serde_json::json!(60000)));
    assert_eq!(note(dir.path(), "booked"), "seat 4A\n", "step 1 ran once");
    assert_eq!(
        note(dir.path(), "waited").lines().count(),
        1,
        "step 2 ran once"
    );
}

#[tokio::test]
async fn resolutions_of_task_escalations_are_applied_on_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path(), &["notes"]).await;
    // The hotel's compensation cannot work (a terminal invalid-input).
    let mut spec = trip("trip-6", "bad title!", false);
    if let Some(c) = spec.steps[1].compensate.as_mut() {
        c.input = serde_json::json!({"title": "no good!", "body": "x"});
    }
    let record = host.tasks().run(spec.clone()).await.expect("runs");
    assert_eq!(record.state, TaskState::Escalated);
    assert_eq!(record.steps[1].status, StepStatus::CompensationFailed);
    let escalation = host
        .escalations()
        .get(record.escalations[0])
        .expect("escalated");
    assert_eq!(escalation.reason, EscalationReason::CompensationFailed);

    // Resuming unresolved tries again, fails the same way, and stays escalated.
    let again = host.tasks().resume("trip-6").await.expect("resumes");
    assert_eq!(again.state, TaskState::Escalated);
    assert_eq!(host.escalations().list(false).expect("list").len(), 1);

    // A person cancels the hotel by hand; the task then undoes the flight.
    host.escalations()
        .resolve(
            escalation.id,
            Resolution::Compensate,
            "ana: hotel cancelled by phone",
        )
        .await
        .expect("resolved");
    let done = host.tasks().resume("trip-6").await.expect("resumes");
    assert_eq!(done.state, TaskState::Compensated);
    assert_eq!(done.steps[1].status, StepStatus::Compensated);
    assert_eq!(done.steps[0].status, StepStatus::Compensated);
    assert_eq!(
        note(dir.path(), "cancellations"),
        "cancel flight /notes/flight.md\n"
    );

    // Past a pivot, `abort` ends the task as failed.
    let record = host
        .tasks()
        .run(trip("trip-7", "bad title!", true))
        .await
        .expect("runs");
    assert_eq!(record.state, TaskState::Escalated);
    host.escalations()
        .resolve(
            record.escalations[0],
            Resolution::Abort,
            "ana: customer keeps the booking",
        )
        .await
        .expect("resolved");
    let ended = host.tasks().resume("trip-7").await.expect("resumes");
    assert_eq!(ended.state, TaskState::Failed);
}

#[tokio::test]
async fn a_template_naming_a_missing_field_fails_the_task_with_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path(), &["notes"]).await;
    let mut spec = trip("trip-8", "charges", false);
    spec.steps[1].input =
        serde_json::json!({"title": "hotel", "body": "${steps.flight.output.nope}"});
    let error = host.tasks().run(spec).await.expect_err("cannot fill");
    assert!(
        error
            .to_string()
            .contains("`${steps.flight.output.nope}` is not set"),
        "{error}"
    );
    let record = host.tasks().status("trip-8").expect("stored");
    assert_eq!(record.state, TaskState::Failed);
    assert_eq!(record.steps[0].status, StepStatus::Done);
    assert_eq!(record.steps[1].status, StepStatus::Failed);
}
