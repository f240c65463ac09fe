//! Crash test for durable tasks with real processes: `cofferdam tasks run`
//! of the trip task (flight, hotel, charge through the `booking` example
//! tool) is killed with SIGKILL at a random point, then run again until it
//! finishes. An operator (this test) settles any step whose outcome became
//! unknown by looking at the ledger, as a person would. Whatever the kill
//! hit, every booking happens exactly once and the task completes.

use crate::common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cofferdam::Jitter;
use cofferdam_test_artifacts as artifacts;
use serde_json::Value;

const ROUNDS: u32 = 16;

fn ledger(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("ledger/ledger.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("ledger line is JSON"))
        .collect()
}

/// What a step's booking looks like in the ledger.
fn matches_step(line: &Value, step: u64) -> bool {
    match step {
        0 => line["item"] == "flight LIS-JFK",
        1 => line["item"] == "hotel near JFK",
        _ => line["action"] == "charge",
    }
}

/// The ledger line a journal key (`TASK/step-N` or `TASK/compensate-N`)
/// would have written, if it ran.
fn booked_by(lines: &[Value], key: &str) -> Option<Value> {
    let (kind, n) = key.rsplit('/').next()?.rsplit_once('-')?;
    let n: u64 = n.parse().ok()?;
    match kind {
        "step" => lines.iter().find(|l| matches_step(l, n)).cloned(),
        _ => {
            let reserved = lines.iter().find(|l| matches_step(l, n))?;
            lines
                .iter()
                .find(|l| l["action"] == "cancel" && l["reference"] == reserved["reference"])
                .cloned()
        }
    }
}

#[test]
fn killed_task_runs_book_everything_exactly_once_and_complete() {
    let final_lines = crash_rounds("trip.toml", "completed", 0x7219);
    for lines in final_lines {
        let actions: Vec<&str> = lines.iter().filter_map(|l| l["action"].as_str()).collect();
        assert_eq!(actions, ["reserve", "reserve", "charge"], "{lines:?}");
        for step in 0..3 {
            assert_eq!(
                lines.iter().filter(|l| matches_step(l, step)).count(),
                1,
                "{lines:?}"
            );
        }
    }
}

#[test]
fn killed_compensations_resume_and_undo_each_booking_exactly_once_in_reverse() {
    let final_lines = crash_rounds("trip-declined.toml", "compensated", 0xDEC1);
    for lines in final_lines {
        let summary: Vec<String> = lines
            .iter()
            .map(|l| {
                let what = l["item"].as_str().or(l["reference"].as_str()).unwrap_or("");
                format!("{} {what}", l["action"].as_str().unwrap_or(""))
            })
            .collect();
        assert_eq!(
            summary,
            [
                "reserve flight LIS-JFK",
                "reserve hotel near JFK",
                "cancel reserve-2",
                "cancel reserve-1"
            ],
            "{lines:?}"
        );
    }
}

/// Runs the example task `file` in fresh directories, killing the first
/// process of each round at a random point, then re-running (and settling
/// unknown steps as an operator would) until the task reaches `done`.
/// Returns each round's final ledger.
fn crash_rounds(file: &str, done: &str, seed: u64) -> Vec<Vec<Value>> {
    let mut finals = Vec::new();
    let root = tempfile::tempdir().expect("tempdir");
    let artifacts_dir = common::shared_data_dir().join("artifacts");
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/trip")
            .join(file),
    )
    .expect("example task");
    let rng = Jitter::seeded(seed);
    let mut settled = 0;
    let mut booked_at_kill = Vec::new();
    for round in 0..ROUNDS {
        let dir = root.path().join(format!("round-{round}"));
        std::fs::create_dir_all(dir.join("ledger")).expect("mkdir");
        let config = dir.join("cofferdam.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"data\"\nallowed_roots = [\".\"]\n\
                 [tools.booking]\ncomponent = {:?}\n\
                 [[tools.booking.mounts]]\nhost = \"ledger\"\nguest = \"/ledger\"\nmode = \"rw\"\n",
                artifacts::BOOKING
            ),
        )
        .expect("config");
        let task = dir.join("trip.toml");
        let task_text = template
            .replace("\"trip-42\"", &format!("\"trip-{round}\""))
            .replace("\"trip-43\"", &format!("\"trip-{round}\""));
        std::fs::write(&task, task_text).expect("task");
        let cofferdam = |args: &[&str]| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_cofferdam"));
            c.args(args)
                .arg("--artifact-dir")
                .arg(&artifacts_dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            c
        };
        let config_arg = config.to_str().expect("utf-8 path");
        let task_arg = task.to_str().expect("utf-8 path");
        let data = dir.join("data");
        let data_arg = data.to_str().expect("utf-8 path");
        let run = || cofferdam(&["tasks", "run", task_arg, "--config", config_arg, "--json"]);

        let mut child = run().spawn().expect("spawn");
        std::thread::sleep(Duration::from_millis((rng.next_unit() * 120.0) as u64));
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("SIGKILL");
        }
        child.wait().expect("reap");
        booked_at_kill.push(ledger(&dir).len());

        let mut finished = false;
        for _ in 0..6 {
            let output: Output = run().output().expect("rerun");
            let record: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
                panic!(
                    "round {round}: no record: {}",
                    String::from_utf8_lossy(&output.stderr)
                )
            });
            if record["state"] == done {
                finished = true;
                break;
            }
            assert_eq!(record["state"], "escalated", "round {round}: {record}");
            // The operator: did the step in doubt book anything?
            let open = cofferdam(&["escalations", "list", "--json", "--data-dir", data_arg])
                .output()
                .expect("list");
            let open: Vec<Value> = serde_json::from_slice(&open.stdout).expect("JSON list");
            for escalation in open {
                assert_eq!(escalation["reason"], "unknown-outcome", "{escalation}");
                let key = escalation["key"]["key"]
                    .as_str()
                    .expect("an unknown outcome has a key");
                let booked = booked_by(&ledger(&dir), key);
                let id = escalation["id"].to_string();
                let mut args = vec![
                    "escalations",
                    "resolve",
                    id.as_str(),
                    "--note",
                    "checked the ledger",
                ];
                let output_json;
                match &booked {
                    Some(line) => {
                        output_json = serde_json::json!({
                            "reference": line["reference"],
                            "action": line["action"],
                        })
                        .to_string();
                        args.extend(["--mark-done", "--output", output_json.as_str()]);
                    }
                    None => args.push("--resume"),
                }
                args.extend(["--data-dir", data_arg]);
                let resolved = cofferdam(&args).output().expect("resolve");
                assert!(
                    resolved.status.success(),
                    "{}",
                    String::from_utf8_lossy(&resolved.stderr)
                );
                settled += 1;
            }
        }
        assert!(finished, "round {round}: the task never became {done}");
        finals.push(ledger(&dir));
    }
    // Not an assertion on luck: just what the kills hit, for the log.
    eprintln!(
        "{ROUNDS} rounds; bookings made before each kill: {booked_at_kill:?}; \
         {settled} unknown step(s) settled by the operator"
    );
    finals
}
