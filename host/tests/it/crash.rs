//! Crash test with real processes: a `cofferdam run` of a keyed,
//! side-effecting call is killed with SIGKILL at a random point, then the
//! same call is issued again. Whatever the kill hit (start-up, the claim, the
//! side effect, the commit of the result), the side effect never happens
//! twice, a completed result is never lost, and an in-doubt call is reported
//! as unknown rather than run again.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cofferdam::Jitter;
use cofferdam_test_artifacts as artifacts;

const ROUNDS: u32 = 16;

fn marks(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

#[test]
fn killed_keyed_calls_never_repeat_a_side_effect_or_lose_a_result() {
    let data = tempfile::tempdir().expect("tempdir");
    let out = tempfile::tempdir().expect("tempdir");
    let artifacts_dir = common::shared_data_dir().join("artifacts");
    let rng = Jitter::seeded(0xC0FFE);
    let (mut replayed, mut unknown, mut fresh) = (0, 0, 0);
    for round in 0..ROUNDS {
        let key = format!("order-{round}");
        let millis = (rng.next_unit() * 150.0) as u64;
        let input =
            serde_json::json!({"millis": millis, "mark": format!("/out/{key}")}).to_string();
        let mount = format!("{}:/out:rw", out.path().display());
        let args = [
            "run",
            artifacts::SLEEPY,
            "--effect",
            "side-effecting",
            "--mount",
            &mount,
            "--key",
            &key,
            "--input",
            &input,
            "--json",
        ];
        let command = || {
            let mut c = Command::new(env!("CARGO_BIN_EXE_cofferdam"));
            c.args(args)
                .arg("--data-dir")
                .arg(data.path())
                .arg("--artifact-dir")
                .arg(&artifacts_dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            c
        };
        let mut child = command().spawn().expect("spawn");
        std::thread::sleep(Duration::from_millis((rng.next_unit() * 250.0) as u64));
        let first_completed = match child.try_wait().expect("wait") {
            Some(status) => status.success(),
            None => {
                child.kill().expect("SIGKILL");
                child.wait().expect("reap");
                false
            }
        };
        let marked = marks(&out.path().join(&key));
        assert!(
            marked <= 1,
            "round {round}: the first run acted {marked} times"
        );

        let rerun = command().output().expect("rerun");
        let after = marks(&out.path().join(&key));
        assert!(
            after <= 1,
            "round {round}: the side effect happened {after} times"
        );
        let json: serde_json::Value = serde_json::from_slice(&rerun.stdout).unwrap_or_else(|e| {
            panic!(
                "round {round}: {e}: {}",
                String::from_utf8_lossy(&rerun.stderr)
            )
        });
        let ok = json["ok"] == true;
        let class = json["error"]["class"].as_str().unwrap_or("");
        if first_completed {
            assert!(
                ok && json["replayed"] == true,
                "round {round}: completed result lost: {json}"
            );
        }
        match (ok, json["replayed"] == true, class) {
            (true, true, _) => replayed += 1,
            (true, false, _) => {
                assert_eq!(marked, 0, "round {round}: re-ran a call that had acted");
                assert_eq!(after, 1);
                fresh += 1;
            }
            (false, _, "unknown-outcome") => unknown += 1,
            _ => panic!("round {round}: unexpected rerun outcome {json}"),
        }
    }
    eprintln!("{ROUNDS} kills: {replayed} replayed, {unknown} unknown, {fresh} ran fresh");
    assert_eq!(replayed + unknown + fresh, ROUNDS);
}
