//! Shared helpers for the integration tests: hosts over a shared artifact
//! cache, and the normal call that proves a host still serves.

#![allow(dead_code, reason = "helpers kept for the tests that need them")]

use std::path::{Path, PathBuf};

use cofferdam::{CallRequest, Host, HostBuilder, LimitsSpec, RetrySpec, ToolPolicy};
use cofferdam_test_artifacts as artifacts;

/// Artifacts shared by all tests, so each component compiles once per run.
pub fn shared_data_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("cofferdam-test-data")
}

/// A host sharing the artifact cache, with its own in-memory journal.
pub fn builder() -> HostBuilder {
    Host::builder().artifact_dir(shared_data_dir().join("artifacts"))
}

pub fn host() -> Host {
    builder().build().expect("host builds")
}

/// A policy with these limits and a single attempt, so a limit test sees the
/// limit's own error rather than the retry layer's.
pub fn policy_with(limits: LimitsSpec) -> ToolPolicy {
    ToolPolicy {
        limits,
        retry: RetrySpec {
            max_attempts: Some(1),
            ..RetrySpec::default()
        },
        ..ToolPolicy::default()
    }
}

pub async fn load(host: &Host, component: &str, policy: ToolPolicy) {
    host.load_file(Path::new(component), policy)
        .await
        .expect("tool loads");
}

/// Loads `hello` (if needed) and checks that a normal call succeeds.
pub async fn assert_host_still_serves(host: &Host) {
    if host.tool("hello").is_none() {
        load(host, artifacts::HELLO, ToolPolicy::default()).await;
    }
    let outcome = host
        .call(CallRequest::new("hello", r#"{"name":"after"}"#))
        .await
        .expect("a normal call succeeds after a hostile one");
    assert_eq!(outcome.output_json()["greeting"], "Hello, after!");
}

/// A host with `sleepy` loaded as side-effecting, a 200 ms deadline, and a
/// read-write `/out` on the returned directory (for its `mark` side effect).
pub async fn side_effecting_sleepy() -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = builder().allow_root(dir.path()).build().expect("host");
    let policy = ToolPolicy {
        effect: Some(cofferdam::Effect::SideEffecting),
        mounts: vec![cofferdam::Mount::read_write(dir.path(), "/out")],
        limits: LimitsSpec {
            timeout_ms: Some(200),
            ..LimitsSpec::default()
        },
        ..ToolPolicy::default()
    };
    load(&host, artifacts::SLEEPY, policy).await;
    (host, dir)
}
