//! Every per-call limit, driven by a misbehaving guest; the host must stop
//! it with the exact error and keep serving.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cofferdam::{CallError, CallRequest, ErrorClass, Fuel, LimitsSpec, Progress, ToolPolicy};
use cofferdam_test_artifacts as artifacts;
use common::{assert_host_still_serves, host, load, policy_with};

#[tokio::test]
async fn infinite_loop_runs_out_of_fuel() {
    let host = host();
    load(
        &host,
        artifacts::LOOP_FOREVER,
        policy_with(LimitsSpec {
            fuel: Some(50_000_000),
            ..Default::default()
        }),
    )
    .await;
    let error = host
        .call(CallRequest::new("loop-forever", "{}"))
        .await
        .expect_err("must stop");
    assert!(
        matches!(
            error,
            CallError::OutOfFuel {
                fuel: Fuel(50_000_000),
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.class(), ErrorClass::OutOfFuel);
    assert_host_still_serves(&host).await;
}

#[tokio::test]
async fn infinite_loop_with_plenty_of_fuel_is_stopped_by_the_deadline() {
    let host = host();
    let limits = LimitsSpec {
        fuel: Some(u64::MAX / 2),
        timeout_ms: Some(200),
        ..Default::default()
    };
    load(&host, artifacts::LOOP_FOREVER, policy_with(limits)).await;
    let started = Instant::now();
    let error = host
        .call(CallRequest::new("loop-forever", "{}"))
        .await
        .expect_err("must stop");
    assert!(
        matches!(error, CallError::DeadlineExceeded { timeout, .. } if timeout == Duration::from_millis(200)),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped late: {:?}",
        started.elapsed()
    );
    assert_host_still_serves(&host).await;
}

#[tokio::test]
async fn guest_blocked_in_a_host_call_is_stopped_by_the_deadline() {
    let host = host();
    load(
        &host,
        artifacts::SLEEPY,
        policy_with(LimitsSpec {
            timeout_ms: Some(200),
            ..Default::default()
        }),
    )
    .await;
    let started = Instant::now();
    let error = host
        .call(CallRequest::new("sleepy", r#"{"millis":60000}"#))
        .await
        .expect_err("must stop");
    assert_eq!(error.class(), ErrorClass::DeadlineExceeded, "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped late: {:?}",
        started.elapsed()
    );
    assert_host_still_serves(&host).await;
}

#[tokio::test]
async fn request_can_lower_but_not_raise_the_tool_deadline() {
    let host = host();
    load(
        &host,
        artifacts::SLEEPY,
        policy_with(LimitsSpec {
            timeout_ms: Some(5_000),
            ..Default::default()
        }),
    )
    .await;
    let request = CallRequest {
        timeout: Some(Duration::from_millis(100)),
        ..CallRequest::new("sleepy", r#"{"millis":60000}"#)
    };
    let error = host.call(request).await.expect_err("must stop");
    assert!(
        matches!(error, CallError::DeadlineExceeded { timeout, .. } if timeout == Duration::from_millis(100)),
        "{error:?}"
    );
    let request = CallRequest {
        timeout: Some(Duration::from_secs(3600)),
        ..CallRequest::new("sleepy", r#"{"millis":1}"#)
    };
    let outcome = host.call(request).await.expect("short sleep fits");
    assert_eq!(outcome.output, "1");
}

#[tokio::test]
async fn unbounded_allocation_hits_the_memory_limit() {
    let host = host();
    load(
        &host,
        artifacts::ALLOC_FOREVER,
        policy_with(LimitsSpec {
            memory_mib: Some(32),
            ..Default::default()
        }),
    )
    .await;
    let error = host
        .call(CallRequest::new("alloc-forever", "{}"))
        .await
        .expect_err("must stop");
    assert!(
        matches!(error, CallError::MemoryLimit { limit_bytes, .. } if limit_bytes == 32 << 20),
        "{error:?}"
    );
    assert_host_still_serves(&host).await;
}

#[tokio::test]
async fn memory_limit_above_the_host_maximum_is_refused_at_load() {
    let host = common::builder()
        .max_memory_bytes(64 << 20)
        .build()
        .expect("host");
    let error = host
        .load_file(
            artifacts::HELLO.as_ref(),
            policy_with(LimitsSpec {
                memory_mib: Some(65),
                ..Default::default()
            }),
        )
        .await
        .expect_err("above the pool slot");
    assert!(error.to_string().contains("memory_mib"), "{error}");
}

#[tokio::test]
async fn deep_recursion_overflows_the_stack() {
    let host = host();
    load(&host, artifacts::DEEP_RECURSION, ToolPolicy::default()).await;
    let error = host
        .call(CallRequest::new("deep-recursion", "{}"))
        .await
        .expect_err("must stop");
    assert!(
        matches!(error, CallError::StackOverflow { .. }),
        "{error:?}"
    );
    assert_host_still_serves(&host).await;
}

#[tokio::test]
async fn panic_is_reported_with_its_message() {
    let host = host();
    load(&host, artifacts::TRAP, ToolPolicy::default()).await;
    let error = host
        .call(CallRequest::new("trap", "{}"))
        .await
        .expect_err("panics");
    match &error {
        CallError::Panic { message, .. } => {
            assert_eq!(message, "the tool broke on purpose (value was None)");
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_host_still_serves(&host).await;
}

#[tokio::test]
async fn stdout_flood_is_truncated_not_fatal() {
    let host = host();
    let limits = LimitsSpec {
        max_stdout_bytes: Some(1000),
        max_stderr_bytes: Some(10),
        ..Default::default()
    };
    load(&host, artifacts::STDOUT_FLOOD, policy_with(limits)).await;
    let outcome = host
        .call(CallRequest::new("stdout-flood", r#"{"bytes":1000000}"#))
        .await
        .expect("a chatty tool still finishes");
    assert_eq!(outcome.output, "1000000");
    assert_eq!(outcome.stdout, "x".repeat(1000));
    assert!(outcome.stdout_truncated);
    assert_eq!(outcome.stderr, "x".repeat(10));
    assert!(outcome.stderr_truncated);
    assert_host_still_serves(&host).await;
}

#[tokio::test]
async fn output_past_its_limit_is_refused() {
    let host = host();
    load(
        &host,
        artifacts::HUGE_OUTPUT,
        policy_with(LimitsSpec {
            max_output_bytes: Some(1000),
            ..Default::default()
        }),
    )
    .await;
    let error = host
        .call(CallRequest::new("huge-output", r#"{"bytes":2000}"#))
        .await
        .expect_err("too large");
    assert!(
        matches!(
            error,
            CallError::OutputTooLarge {
                size: 2002,
                limit: 1000,
                ..
            }
        ),
        "{error:?}"
    );
    let fits = host
        .call(CallRequest::new("huge-output", r#"{"bytes":998}"#))
        .await
        .expect("fits");
    assert_eq!(fits.output.len(), 1000);
}

#[tokio::test]
async fn output_far_beyond_the_transfer_limit_is_a_data_limit() {
    let host = host();
    let limits = LimitsSpec {
        max_output_bytes: Some(1000),
        hostcall_bytes: Some(10_000),
        ..Default::default()
    };
    load(&host, artifacts::HUGE_OUTPUT, policy_with(limits)).await;
    let error = host
        .call(CallRequest::new("huge-output", r#"{"bytes":3000000}"#))
        .await
        .expect_err("too large to copy");
    assert!(
        matches!(error, CallError::DataLimit { limit: 10_000, .. }),
        "{error:?}"
    );
    assert_host_still_serves(&host).await;
}

#[tokio::test]
async fn log_records_are_bounded_and_counted() {
    let host = host();
    load(
        &host,
        artifacts::INTROSPECT,
        policy_with(LimitsSpec {
            max_log_records: Some(10),
            ..Default::default()
        }),
    )
    .await;
    let outcome = host
        .call(CallRequest::new("introspect", r#"{"logs":50}"#))
        .await
        .expect("succeeds");
    assert_eq!(outcome.logs.len(), 10);
    assert_eq!(outcome.logs[9].message, "line 9");
    assert_eq!(outcome.logs_dropped, 40);
}

#[tokio::test]
async fn guest_sees_its_call_context_and_fuel_derived_budget() {
    let host = host();
    load(
        &host,
        artifacts::INTROSPECT,
        policy_with(LimitsSpec {
            fuel: Some(1_000_000_000),
            timeout_ms: Some(4_000),
            ..Default::default()
        }),
    )
    .await;
    let request = CallRequest {
        call_id: Some("call-42".into()),
        task_id: Some("task-7".into()),
        ..CallRequest::new("introspect", "{}")
    };
    let outcome = host.call(request).await.expect("succeeds");
    let out = outcome.output_json();
    assert_eq!(out["call_id"], "call-42");
    assert_eq!(out["task_id"], "task-7");
    assert_eq!(out["attempt"], 1);
    assert_eq!(out["deadline_ms"], 4000);
    // 1e9 fuel at 100,000 fuel per token, less what the call had used so far.
    let budget = out["remaining_budget"].as_u64().expect("number");
    assert!(
        budget < 10_000 && budget > 9_000,
        "remaining budget {budget}"
    );
    assert_eq!(outcome.call_id, "call-42");
    assert!(outcome.fuel_used.0 > 0);
    assert!(outcome.tokens.0 >= outcome.fuel_used.0.div_ceil(100_000));
}

#[tokio::test]
async fn progress_reports_reach_the_caller() {
    let host = host();
    load(&host, artifacts::INTROSPECT, ToolPolicy::default()).await;
    let seen: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let request = CallRequest {
        progress: Some(Arc::new(move |p: &Progress| {
            sink.lock().expect("lock").push(p.clone())
        })),
        ..CallRequest::new("introspect", r#"{"progress":3}"#)
    };
    host.call(request).await.expect("succeeds");
    let seen = seen.lock().expect("lock");
    let done: Vec<(u64, Option<u64>)> = seen.iter().map(|p| (p.done, p.total)).collect();
    assert_eq!(done, vec![(1, Some(3)), (2, Some(3)), (3, Some(3))]);
    assert_eq!(seen[0].message, "working");
}

#[tokio::test]
async fn many_concurrent_calls_all_succeed() {
    let host = host();
    load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    let calls = (0..64).map(|i| {
        let host = host.clone();
        tokio::spawn(async move {
            host.call(CallRequest::new("hello", format!(r#"{{"name":"n{i}"}}"#)))
                .await
        })
    });
    for (i, call) in calls.enumerate() {
        let outcome = call.await.expect("task").expect("call");
        assert_eq!(outcome.output_json()["greeting"], format!("Hello, n{i}!"));
    }
}

/// Inside the mounts: links the guest creates, special files it opens, bytes
/// it writes, and the scratch directories the host makes for it.
mod filesystem {
    use std::fs;
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use cofferdam::{
        CallRequest, FilesystemSpec, Host, LimitsSpec, Mount, SymlinkPolicy, ToolPolicy,
    };
    use cofferdam_test_artifacts as artifacts;
    use serde_json::{Value, json};

    use super::common::{self, assert_host_still_serves, load, policy_with};

    /// A temp root with `mount/` (holding `sub/` and `inside.txt`) and
    /// `secret.txt` beside it.
    struct Layout {
        root: tempfile::TempDir,
    }

    impl Layout {
        fn new() -> Self {
            let root = tempfile::tempdir().expect("tempdir");
            fs::create_dir_all(root.path().join("mount/sub")).expect("mkdir");
            fs::write(root.path().join("mount/inside.txt"), "inside").expect("write");
            fs::write(root.path().join("secret.txt"), "SECRET").expect("write");
            Self { root }
        }

        fn mount(&self) -> PathBuf {
            self.root.path().join("mount")
        }

        /// `fs-escape` with the mount read-write at /data, and `fs`.
        async fn host(&self, fs: FilesystemSpec) -> Host {
            self.host_with(fs, LimitsSpec::default()).await
        }

        async fn host_with(&self, fs: FilesystemSpec, limits: LimitsSpec) -> Host {
            let host = common::builder()
                .allow_root(self.mount())
                .build()
                .expect("host");
            let policy = ToolPolicy {
                mounts: vec![Mount::read_write(self.mount(), "/data")],
                filesystem: fs,
                ..policy_with(limits)
            };
            load(&host, artifacts::FS_ESCAPE, policy).await;
            host
        }
    }

    async fn attempt(host: &Host, input: Value) -> Value {
        host.call(CallRequest::new("fs-escape", input.to_string()))
            .await
            .expect("the tool reports refusals as output")
            .output_json()
    }

    fn assert_refused(result: &Value, like: &str) {
        assert_eq!(result["ok"], false, "expected a refusal, got {result}");
        let error = result["error"].as_str().expect("an error message");
        assert!(
            error.to_lowercase().contains(like),
            "expected an error like `{like}`, got {result}"
        );
    }

    fn symlink(target: &str, link: &str) -> Value {
        json!({"op": "symlink", "target": target, "link": link})
    }

    #[tokio::test]
    async fn guest_created_symlink_leaving_its_mount_is_refused() {
        let layout = Layout::new();
        let host = layout.host(FilesystemSpec::default()).await;
        for (target, link) in [
            ("../secret.txt", "/data/up"),
            ("/etc/passwd", "/data/abs"),
            ("../../secret.txt", "/data/sub/up2"),
            ("sub/../../secret.txt", "/data/sneaky"),
        ] {
            let result = attempt(&host, symlink(target, link)).await;
            assert_refused(&result, "not permitted");
            let name = link.trim_start_matches("/data/");
            assert!(
                fs::symlink_metadata(layout.mount().join(name)).is_err(),
                "link {link} -> {target} was created"
            );
        }
        // Links that stay inside are fine, from the root and from below it.
        for (target, link) in [
            ("inside.txt", "/data/same"),
            ("../inside.txt", "/data/sub/parent"),
        ] {
            let result = attempt(&host, symlink(target, link)).await;
            assert_eq!(result["ok"], true, "{link} -> {target}: {result}");
        }
        let read = attempt(&host, json!({"op": "read", "path": "/data/sub/parent"})).await;
        assert_eq!(read["value"], "inside", "{read}");
        assert_host_still_serves(&host).await;
    }

    #[tokio::test]
    async fn symlink_creation_can_be_denied_altogether() {
        let layout = Layout::new();
        let spec = FilesystemSpec {
            symlinks: Some(SymlinkPolicy::Deny),
            ..FilesystemSpec::default()
        };
        let host = layout.host(spec).await;
        let result = attempt(&host, symlink("inside.txt", "/data/same")).await;
        assert_refused(&result, "not permitted");
        assert!(fs::symlink_metadata(layout.mount().join("same")).is_err());
    }

    #[test]
    fn symlink_policy_parses_from_toml() {
        let policy = ToolPolicy::from_toml(
            r#"
            [[mounts]]
            host = "out"
            guest = "/out"
            mode = "rw"
            [filesystem]
            symlinks = "deny"
            scratch_max_bytes = 1024
            max_write_bytes = { "/out" = 2048 }
            "#,
        )
        .expect("parses");
        assert_eq!(policy.filesystem.symlinks, Some(SymlinkPolicy::Deny));
        assert_eq!(policy.filesystem.scratch_max_bytes, Some(1024));
        assert_eq!(policy.filesystem.max_write_bytes["/out"], 2048);
        let error = ToolPolicy::from_toml("[filesystem]\nmax_write_bytes = { \"/nope\" = 1 }")
            .expect_err("no such mount");
        assert!(error.to_string().contains("`/nope`"), "{error}");
    }

    fn mkfifo(path: &Path) {
        let status = Command::new("mkfifo").arg(path).status().expect("mkfifo");
        assert!(status.success(), "mkfifo failed");
    }

    /// Opens the FIFO for reading and writing (never blocks on Linux), which
    /// releases any reader stuck opening it, so a failing test cannot hang.
    struct Unblock(PathBuf);

    impl Drop for Unblock {
        fn drop(&mut self) {
            let _ = fs::OpenOptions::new().read(true).write(true).open(&self.0);
        }
    }

    #[tokio::test]
    async fn fifo_or_socket_in_a_mount_is_refused_without_waiting() {
        let layout = Layout::new();
        let fifo = layout.mount().join("fifo");
        mkfifo(&fifo);
        let _unblock = Unblock(fifo.clone());
        let _socket =
            std::os::unix::net::UnixListener::bind(layout.mount().join("socket")).expect("bind");
        let limits = LimitsSpec {
            timeout_ms: Some(5_000),
            ..LimitsSpec::default()
        };
        let host = layout.host_with(FilesystemSpec::default(), limits).await;
        for path in ["/data/fifo", "/data/socket"] {
            let started = Instant::now();
            let read = attempt(&host, json!({"op": "read", "path": path})).await;
            assert_refused(&read, "not permitted");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{path} took {:?}",
                started.elapsed()
            );
        }
        let write = json!({"op": "write", "path": "/data/fifo", "contents": "x"});
        assert_refused(&attempt(&host, write).await, "not permitted");
        // A link inside the mount to the FIFO is no way around it.
        let linked = attempt(&host, symlink("fifo", "/data/to-fifo")).await;
        assert_eq!(linked["ok"], true, "{linked}");
        let read = attempt(&host, json!({"op": "read", "path": "/data/to-fifo"})).await;
        assert_refused(&read, "not permitted");
        assert_host_still_serves(&host).await;
    }

    #[test]
    fn cli_run_on_a_fifo_exits() {
        let layout = Layout::new();
        let fifo = layout.mount().join("fifo");
        mkfifo(&fifo);
        let _unblock = Unblock(fifo.clone());
        let data = tempfile::tempdir().expect("tempdir");
        let mount = format!("{}:/data", layout.mount().display());
        let mut child = Command::new(env!("CARGO_BIN_EXE_cofferdam"))
            .args(["run", artifacts::FS_ESCAPE, "--mount", &mount])
            .args([
                "--timeout",
                "2s",
                "--input",
                r#"{"op":"read","path":"/data/fifo"}"#,
            ])
            .arg("--data-dir")
            .arg(data.path())
            .env_remove("COFFERDAM_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runs cofferdam");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break Some(status);
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let output = child.wait_with_output().expect("output");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            status.is_some(),
            "cofferdam run did not exit; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("not permitted"), "{stdout}");
    }

    /// A write past a quota, as the guest sees it: wasi-libc reports a failed
    /// stream write as `EIO` without asking why; `set-size` and descriptor
    /// writes carry the `quota` code itself.
    fn assert_over_quota(result: &Value) {
        assert_eq!(result["ok"], false, "expected a refusal, got {result}");
        let error = result["error"].as_str().expect("an error message");
        let error = error.to_lowercase();
        assert!(
            error.contains("quota") || error.contains("i/o error"),
            "expected an I/O or quota error, got {result}"
        );
    }

    fn fill(path: &str, bytes: u64) -> Value {
        json!({"op": "fill", "path": path, "bytes": bytes})
    }

    fn scratch_policy(fs: FilesystemSpec) -> ToolPolicy {
        ToolPolicy {
            scratch: true,
            filesystem: fs,
            ..policy_with(LimitsSpec {
                timeout_ms: Some(60_000),
                ..LimitsSpec::default()
            })
        }
    }

    #[tokio::test]
    async fn scratch_is_limited_to_64_mib_by_default() {
        let host = common::host();
        load(
            &host,
            artifacts::FS_ESCAPE,
            scratch_policy(FilesystemSpec::default()),
        )
        .await;
        let fits = attempt(&host, fill("/scratch/big", 60 << 20)).await;
        assert_eq!(fits["ok"], true, "{fits}");
        let past = attempt(&host, fill("/scratch/big", 65 << 20)).await;
        assert_over_quota(&past);
        assert_host_still_serves(&host).await;
    }

    #[tokio::test]
    async fn scratch_limit_can_be_lowered_and_covers_truncation() {
        let host = common::host();
        let spec = FilesystemSpec {
            scratch_max_bytes: Some(1 << 20),
            ..FilesystemSpec::default()
        };
        load(&host, artifacts::FS_ESCAPE, scratch_policy(spec)).await;
        let past = attempt(&host, fill("/scratch/big", 2 << 20)).await;
        assert_over_quota(&past);
        let sparse = json!({"op": "set-size", "path": "/scratch/sparse", "size": 1u64 << 40});
        assert_refused(&attempt(&host, sparse).await, "quota");
        // Each call has its own scratch: the next one starts empty.
        let fits = attempt(&host, fill("/scratch/big", 1 << 20)).await;
        assert_eq!(fits["value"], 1 << 20, "{fits}");
        assert_host_still_serves(&host).await;
    }

    #[tokio::test]
    async fn rw_mount_write_quota_counts_each_call() {
        let layout = Layout::new();
        let spec = FilesystemSpec {
            max_write_bytes: [("/data".to_owned(), 300_000)].into(),
            ..FilesystemSpec::default()
        };
        let host = layout.host(spec).await;
        let past = attempt(&host, fill("/data/big", 400_000)).await;
        assert_over_quota(&past);
        let written = fs::metadata(layout.mount().join("big")).expect("big").len();
        assert!(written <= 300_000, "{written} bytes written");
        for name in ["a", "b"] {
            let fits = attempt(&host, fill(&format!("/data/{name}"), 200_000)).await;
            assert_eq!(fits["ok"], true, "{fits}");
        }
        assert_host_still_serves(&host).await;
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn scratch_dirs_are_private_and_stale_ones_are_swept_at_start() {
        let data = tempfile::tempdir().expect("tempdir");
        let stale = data.path().join("scratch/call-crashed");
        fs::create_dir_all(stale.join("deep")).expect("mkdir");
        fs::write(stale.join("deep/file"), "left behind").expect("write");

        let host = common::builder()
            .data_dir(data.path())
            .build()
            .expect("host");
        let scratch = data.path().join("scratch");
        assert!(!stale.exists(), "stale scratch dir survived the start");
        assert_eq!(mode(&scratch), 0o700);

        // A second host on the same data dir while the first is alive must
        // not sweep the first one's directories.
        let live = scratch.join("call-live");
        fs::create_dir(&live).expect("mkdir");
        let second = common::builder()
            .data_dir(data.path())
            .build()
            .expect("second host");
        assert!(live.exists(), "a live host's scratch dir was swept");
        drop(second);
        fs::remove_dir(&live).expect("rmdir");

        let policy = ToolPolicy {
            scratch: true,
            ..ToolPolicy::default()
        };
        load(&host, artifacts::SLEEPY, policy).await;
        let call = tokio::spawn({
            let host = host.clone();
            async move {
                host.call(CallRequest::new("sleepy", r#"{"millis":1500}"#))
                    .await
            }
        });
        let started = Instant::now();
        let call_dir = loop {
            let found = fs::read_dir(&scratch)
                .expect("scratch")
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("call-"))
                });
            if let Some(dir) = found {
                break dir;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no call dir");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(mode(&call_dir), 0o700, "{}", call_dir.display());
        call.await.expect("task").expect("call");
        assert!(!call_dir.exists(), "scratch dir kept after the call");
    }
}

/// Outputs up to the default 1 MiB limit succeed with the default limits,
/// with and without a budget: what an output costs in tokens is asked for
/// after the run, never taken from the fuel the tool ran with (a 100 KiB
/// greeting once failed as `budget-exhausted` after the tool had run).
#[tokio::test]
async fn large_outputs_fit_the_default_limits_and_a_budget() {
    use cofferdam::{BudgetCap, ScopeId, Tokens};
    let host = host();
    load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    let agent = ScopeId::Agent("reader".into());
    host.budgets()
        .set_cap(&agent, BudgetCap::new(Tokens(10_000_000)))
        .await
        .expect("cap");
    for kib in [70, 100, 300, 1000] {
        let name = "n".repeat(kib * 1024);
        let input = serde_json::json!({ "name": name }).to_string();
        for agent in [None, Some("reader".to_owned())] {
            let request = CallRequest {
                agent: agent.clone(),
                ..CallRequest::new("hello", input.clone())
            };
            let outcome = host
                .call(request)
                .await
                .unwrap_or_else(|e| panic!("{kib} KiB, agent {agent:?}: {e:?}"));
            assert_eq!(
                outcome.output_json()["greeting"].as_str().map(str::len),
                Some(name.len() + "Hello, !".len()),
                "{kib} KiB"
            );
        }
    }
    let status = host.budgets().get(&agent).expect("get").expect("capped");
    assert_eq!(status.reserved, Tokens(0));
    // Four outputs of 70-1000 KiB at 4 bytes a token were charged.
    assert!(status.spent.0 > (1470 * 1024) / 4, "{status:?}");
}
