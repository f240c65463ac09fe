//! The sandbox boundary: files, environment, loading rules. A guest must not
//! read or write outside its mounts by any route, and a bad component or
//! policy must be refused at load with an error naming what is wrong.

use crate::common;

use std::fs;
use std::path::Path;

use cofferdam::{
    ArtifactSource, CallError, CallRequest, Effect, Host, LoadError, Mount, PolicyError, ToolError,
    ToolPolicy,
};
use cofferdam_test_artifacts as artifacts;
use common::{assert_host_still_serves, load};
use serde_json::{Value, json};

/// A root with `secret.txt` beside `mount/`, which holds `inside.txt`.
struct Layout {
    root: tempfile::TempDir,
}

impl Layout {
    fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        fs::create_dir(root.path().join("mount")).expect("mkdir");
        fs::write(root.path().join("mount/inside.txt"), "inside").expect("write");
        fs::write(root.path().join("secret.txt"), "SECRET").expect("write");
        Self { root }
    }

    fn mount(&self) -> std::path::PathBuf {
        self.root.path().join("mount")
    }

    fn secret(&self) -> std::path::PathBuf {
        self.root.path().join("secret.txt")
    }

    /// A host allowed to mount only `mount/`, with `fs-escape` mounted at /data.
    async fn host(&self, mode_rw: bool) -> Host {
        let host = common::builder()
            .allow_root(self.mount())
            .build()
            .expect("host");
        let mount = if mode_rw {
            Mount::read_write(self.mount(), "/data")
        } else {
            Mount::read_only(self.mount(), "/data")
        };
        load(
            &host,
            artifacts::FS_ESCAPE,
            ToolPolicy {
                mounts: vec![mount],
                ..Default::default()
            },
        )
        .await;
        host
    }
}

async fn attempt(host: &Host, input: Value) -> Value {
    let outcome = host
        .call(CallRequest::new("fs-escape", input.to_string()))
        .await
        .expect("the tool reports denials as output");
    outcome.output_json()
}

fn assert_denied(result: &Value) {
    assert_eq!(result["ok"], false, "expected a denial, got {result}");
    assert!(result["error"].is_string(), "{result}");
    assert!(
        !result.to_string().contains("SECRET"),
        "secret leaked: {result}"
    );
}

#[tokio::test]
async fn reading_inside_the_mount_works() {
    let layout = Layout::new();
    let host = layout.host(false).await;
    let result = attempt(&host, json!({"op": "read", "path": "/data/inside.txt"})).await;
    assert_eq!(
        result,
        json!({"ok": true, "value": "inside", "error": null})
    );
}

#[tokio::test]
async fn dotdot_traversal_is_denied() {
    let layout = Layout::new();
    let host = layout.host(true).await;
    for path in [
        "/data/../secret.txt",
        "/data/../../secret.txt",
        "../secret.txt",
    ] {
        assert_denied(&attempt(&host, json!({"op": "read", "path": path})).await);
    }
    assert_denied(&attempt(&host, json!({"op": "list", "path": "/data/.."})).await);
    let escape = json!({"op": "write", "path": "/data/../planted.txt", "contents": "x"});
    assert_denied(&attempt(&host, escape).await);
    assert!(!layout.root.path().join("planted.txt").exists());
    assert_host_still_serves(&host).await;
}

#[tokio::test]
async fn absolute_path_outside_the_mounts_is_denied() {
    let layout = Layout::new();
    let host = layout.host(true).await;
    let secret = layout.secret().display().to_string();
    assert_denied(&attempt(&host, json!({"op": "read", "path": secret})).await);
    assert_denied(&attempt(&host, json!({"op": "read", "path": "/etc/passwd"})).await);
    assert_denied(&attempt(&host, json!({"op": "list", "path": "/"})).await);
    let planted = layout.root.path().join("planted.txt").display().to_string();
    assert_denied(
        &attempt(
            &host,
            json!({"op": "write", "path": planted, "contents": "x"}),
        )
        .await,
    );
    assert!(!layout.root.path().join("planted.txt").exists());
}

#[tokio::test]
async fn symlink_planted_to_point_outside_the_mount_is_not_followed() {
    let layout = Layout::new();
    std::os::unix::fs::symlink(layout.secret(), layout.mount().join("abs-link")).expect("symlink");
    std::os::unix::fs::symlink("../secret.txt", layout.mount().join("rel-link")).expect("symlink");
    std::os::unix::fs::symlink(layout.root.path(), layout.mount().join("dir-link"))
        .expect("symlink");
    let host = layout.host(true).await;
    for path in [
        "/data/abs-link",
        "/data/rel-link",
        "/data/dir-link/secret.txt",
    ] {
        assert_denied(&attempt(&host, json!({"op": "read", "path": path})).await);
    }
    let through_link =
        json!({"op": "write", "path": "/data/dir-link/planted.txt", "contents": "x"});
    assert_denied(&attempt(&host, through_link).await);
    assert!(!layout.root.path().join("planted.txt").exists());
    assert_eq!(fs::read_to_string(layout.secret()).expect("read"), "SECRET");
    assert_host_still_serves(&host).await;
}

#[tokio::test]
async fn writing_to_a_read_only_mount_is_denied() {
    let layout = Layout::new();
    let host = layout.host(false).await;
    let create = json!({"op": "write", "path": "/data/new.txt", "contents": "x"});
    assert_denied(&attempt(&host, create).await);
    let overwrite = json!({"op": "write", "path": "/data/inside.txt", "contents": "x"});
    assert_denied(&attempt(&host, overwrite).await);
    assert!(!layout.mount().join("new.txt").exists());
    assert_eq!(
        fs::read_to_string(layout.mount().join("inside.txt")).expect("read"),
        "inside"
    );
}

#[tokio::test]
async fn read_write_mount_lets_a_side_effecting_tool_write_inside() {
    let layout = Layout::new();
    let host = common::builder()
        .allow_root(layout.mount())
        .build()
        .expect("host");
    let policy = ToolPolicy {
        mounts: vec![Mount::read_write(layout.mount(), "/notes")],
        ..Default::default()
    };
    let tool = host
        .load_file(artifacts::NOTES.as_ref(), policy)
        .await
        .expect("loads");
    assert_eq!(tool.effect, Effect::SideEffecting);
    let outcome = host
        .call(CallRequest::new(
            "notes",
            r#"{"title":"groceries","body":"eggs"}"#,
        ))
        .await
        .expect("writes");
    assert_eq!(outcome.output_json()["path"], "/notes/groceries.md");
    assert_eq!(
        fs::read_to_string(layout.mount().join("groceries.md")).expect("read"),
        "eggs\n"
    );
    let error = host
        .call(CallRequest::new(
            "notes",
            r#"{"title":"../escape","body":"x"}"#,
        ))
        .await
        .expect_err("bad title");
    assert!(
        matches!(
            error,
            CallError::Tool {
                error: ToolError::InvalidInput(_),
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn read_only_grep_example_finds_text_in_its_mount() {
    let layout = Layout::new();
    fs::create_dir(layout.mount().join("sub")).expect("mkdir");
    fs::write(layout.mount().join("sub/a.md"), "one\nneedle here\nthree").expect("write");
    let host = common::builder()
        .allow_root(layout.mount())
        .build()
        .expect("host");
    let policy = ToolPolicy {
        mounts: vec![Mount::read_only(layout.mount(), "/data")],
        ..Default::default()
    };
    load(&host, artifacts::GREP, policy).await;
    let outcome = host
        .call(CallRequest::new("grep", r#"{"pattern":"needle"}"#))
        .await
        .expect("searches");
    assert_eq!(
        outcome.output_json(),
        json!({"matches": [{"file": "/data/sub/a.md", "line": 2, "text": "needle here"}],
               "files_searched": 2, "truncated": false})
    );
}

#[tokio::test]
async fn mount_outside_the_allowed_roots_is_refused_at_load() {
    let layout = Layout::new();
    let host = common::builder()
        .allow_root(layout.mount())
        .build()
        .expect("host");
    let policy = ToolPolicy {
        mounts: vec![Mount::read_only(layout.root.path(), "/data")],
        ..Default::default()
    };
    let error = host
        .load_file(artifacts::FS_ESCAPE.as_ref(), policy)
        .await
        .expect_err("outside");
    assert!(
        matches!(
            error,
            LoadError::Policy(PolicyError::MountOutsideRoots { .. })
        ),
        "{error:?}"
    );
    assert!(host.tools().is_empty(), "nothing registered");

    let no_roots = common::host();
    let policy = ToolPolicy {
        mounts: vec![Mount::read_only(layout.mount(), "/data")],
        ..Default::default()
    };
    let error = no_roots
        .load_file(artifacts::FS_ESCAPE.as_ref(), policy)
        .await
        .expect_err("deny");
    assert!(error.to_string().contains("none configured"), "{error}");
}

#[tokio::test]
async fn environment_is_empty_unless_granted() {
    let host = common::host();
    load(&host, artifacts::FS_ESCAPE, ToolPolicy::default()).await;
    assert_eq!(
        attempt(&host, json!({"op": "env"})).await["value"],
        json!([])
    );

    let granted = common::host();
    let policy = ToolPolicy {
        env: [("GREETING".to_owned(), "hi".to_owned())].into(),
        ..Default::default()
    };
    load(&granted, artifacts::FS_ESCAPE, policy).await;
    assert_eq!(
        attempt(&granted, json!({"op": "env"})).await["value"],
        json!(["GREETING=hi"])
    );
}

#[tokio::test]
async fn scratch_dir_is_private_per_call_and_removed_afterwards() {
    let data = tempfile::tempdir().expect("tempdir");
    let host = Host::builder().data_dir(data.path()).build().expect("host");
    load(
        &host,
        artifacts::FS_ESCAPE,
        ToolPolicy {
            scratch: true,
            ..Default::default()
        },
    )
    .await;
    let write = json!({"op": "write", "path": "/scratch/work.txt", "contents": "temp"});
    assert_eq!(attempt(&host, write).await["ok"], true);
    let listed = attempt(&host, json!({"op": "list", "path": "/scratch"})).await;
    assert_eq!(
        listed["value"],
        json!([]),
        "a new call sees an empty scratch dir"
    );
    let leftovers: Vec<_> = fs::read_dir(data.path().join("scratch"))
        .expect("dir")
        .collect();
    assert!(
        leftovers.is_empty(),
        "scratch dirs left behind: {leftovers:?}"
    );
}

#[tokio::test]
async fn digest_pin_mismatch_is_refused_and_a_matching_pin_loads() {
    let host = common::host();
    let wrong = ToolPolicy {
        sha256: Some("0".repeat(64)),
        ..Default::default()
    };
    let error = host
        .load_file(artifacts::HELLO.as_ref(), wrong)
        .await
        .expect_err("pinned");
    let LoadError::DigestMismatch { actual, .. } = error else {
        panic!("expected a digest mismatch, got {error:?}");
    };
    let right = ToolPolicy {
        sha256: Some(actual.to_uppercase()),
        ..Default::default()
    };
    let tool = host
        .load_file(artifacts::HELLO.as_ref(), right)
        .await
        .expect("pin matches");
    assert_eq!(tool.digest, actual);
}

#[tokio::test]
async fn bytes_that_are_not_a_component_are_refused() {
    let host = common::host();
    let error = host
        .load_bytes(b"not wasm".to_vec(), ToolPolicy::default())
        .await
        .expect_err("bad");
    assert!(matches!(error, LoadError::Compile(_)), "{error:?}");
    let error = host
        .load_file(Path::new("/nonexistent/tool.wasm"), ToolPolicy::default())
        .await
        .expect_err("missing");
    assert!(matches!(error, LoadError::Read { .. }), "{error:?}");
    assert!(host.tools().is_empty());
}

#[tokio::test]
async fn a_second_host_loads_the_precompiled_artifact() {
    let data = tempfile::tempdir().expect("tempdir");
    let first = Host::builder().data_dir(data.path()).build().expect("host");
    let tool = first
        .load_file(artifacts::HELLO.as_ref(), ToolPolicy::default())
        .await
        .expect("loads");
    assert_eq!(tool.artifact.source, ArtifactSource::Compiled);
    drop(first);
    let second = Host::builder().data_dir(data.path()).build().expect("host");
    let tool = second
        .load_file(artifacts::HELLO.as_ref(), ToolPolicy::default())
        .await
        .expect("loads");
    assert_eq!(tool.artifact.source, ArtifactSource::Cached);
    assert_host_still_serves(&second).await;
}

#[tokio::test]
async fn tool_describes_itself_with_schema_and_effect() {
    let host = common::host();
    let tool = host
        .load_file(artifacts::HELLO.as_ref(), ToolPolicy::default())
        .await
        .expect("loads");
    assert_eq!(tool.name.as_str(), "hello");
    assert_eq!(tool.version, "0.1.0");
    assert_eq!(tool.description, "Greets someone by name");
    assert_eq!(tool.effect, Effect::Pure);
    assert_eq!(tool.input_schema["properties"]["name"]["type"], "string");
    assert_eq!(tool.input_schema["required"], json!(["name"]));
    assert!(
        tool.imports
            .iter()
            .any(|i| i.starts_with("cofferdam:tool/host@0.1.0")),
        "{:?}",
        tool.imports
    );

    let overridden = ToolPolicy {
        name: Some(cofferdam::ToolName::new("greeter").expect("valid")),
        effect: Some(Effect::Idempotent),
        ..Default::default()
    };
    let tool = host
        .load_file(artifacts::HELLO.as_ref(), overridden)
        .await
        .expect("loads");
    assert_eq!(
        (tool.name.as_str(), tool.effect, tool.declared_effect),
        ("greeter", Effect::Idempotent, Effect::Pure)
    );
    let error = host
        .load_file(artifacts::HELLO.as_ref(), ToolPolicy::default())
        .await
        .expect_err("dup");
    assert!(
        matches!(error, LoadError::AlreadyLoaded { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn bad_input_is_refused_with_the_right_class() {
    let host = common::host();
    load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    let error = host
        .call(CallRequest::new("hello", "{not json"))
        .await
        .expect_err("not JSON");
    assert!(matches!(error, CallError::InvalidInput { .. }), "{error:?}");
    let error = host
        .call(CallRequest::new("hello", r#"{"nmae":"x"}"#))
        .await
        .expect_err("schema");
    assert!(
        matches!(&error, CallError::Tool { error: ToolError::InvalidInput(m), .. } if m.contains("nmae")),
        "{error:?}"
    );
    let error = host
        .call(CallRequest::new("nope", "{}"))
        .await
        .expect_err("unknown");
    assert!(matches!(error, CallError::UnknownTool { .. }), "{error:?}");
    assert_host_still_serves(&host).await;
}

#[tokio::test]
async fn tool_reported_errors_keep_their_class() {
    let host = common::host();
    load(
        &host,
        artifacts::FLAKY,
        common::policy_with(Default::default()),
    )
    .await;
    let cases = [
        ("transient", cofferdam::ErrorClass::Transient),
        ("rate-limited", cofferdam::ErrorClass::RateLimited),
        ("permanent", cofferdam::ErrorClass::Permanent),
        ("invalid-input", cofferdam::ErrorClass::InvalidInput),
    ];
    for (failure, class) in cases {
        let input = json!({"fail_times": 1, "failure": failure}).to_string();
        let error = host
            .call(CallRequest::new("flaky", input))
            .await
            .expect_err("fails once");
        assert_eq!(error.class(), class, "{error:?}");
        assert!(error.is_tool_reported());
    }
    let error = host
        .call(CallRequest::new(
            "flaky",
            r#"{"fail_times":1,"failure":"rate-limited"}"#,
        ))
        .await
        .expect_err("fails");
    assert!(
        matches!(error, CallError::Tool { error: ToolError::RateLimited { retry_after }, .. }
            if retry_after == std::time::Duration::from_millis(25)),
        "{error:?}"
    );
    let ok = host
        .call(CallRequest::new(
            "flaky",
            r#"{"fail_times":0,"failure":"transient"}"#,
        ))
        .await
        .expect("succeeds when it fails zero times");
    assert_eq!(ok.output_json()["succeeded_on_attempt"], 1);
}

/// A host that may mount anything under `root`.
fn host_over(root: &Path) -> Host {
    common::builder().allow_root(root).build().expect("host")
}

fn fs_policy(name: &str, mounts: Vec<Mount>) -> ToolPolicy {
    ToolPolicy {
        name: Some(cofferdam::ToolName::new(name).expect("name")),
        mounts,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_mount_swapped_for_a_symlink_after_load_keeps_its_pinned_directory() {
    let layout = Layout::new();
    let docs = layout.mount();
    let host = host_over(layout.root.path());
    load(
        &host,
        artifacts::FS_ESCAPE,
        fs_policy("reader", vec![Mount::read_only(&docs, "/data")]),
    )
    .await;
    // Someone with write access to the parent (another tool's mount, another
    // process) renames the directory away and puts a symlink in its place.
    fs::rename(&docs, layout.root.path().join("moved")).expect("rename");
    std::os::unix::fs::symlink("..", &docs).expect("symlink");
    let call = |path: &str| {
        let input = json!({"op": "read", "path": path}).to_string();
        host.call(CallRequest::new("reader", input))
    };
    let outcome = call("/data/secret.txt").await.expect("runs");
    assert_denied(&outcome.output_json());
    let outcome = call("/data/inside.txt").await.expect("runs");
    assert_eq!(
        outcome.output_json()["value"],
        "inside",
        "the call still sees the directory checked at load"
    );
    // A reload names the change instead of following it.
    let error = host
        .verify_mounts("reader", &[Mount::read_only(&docs, "/data")])
        .expect_err("changed");
    assert!(matches!(error, PolicyError::MountChanged { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("changed since the tool was loaded"),
        "{error}"
    );
}

#[tokio::test]
async fn a_mount_overlapping_another_tools_writable_mount_is_refused() {
    let layout = Layout::new();
    let root = layout.root.path();
    let host = host_over(root);
    load(
        &host,
        artifacts::FS_ESCAPE,
        fs_policy("writer", vec![Mount::read_write(root, "/shared")]),
    )
    .await;
    let error = host
        .load_file(
            artifacts::FS_ESCAPE.as_ref(),
            fs_policy("reader", vec![Mount::read_only(layout.mount(), "/docs")]),
        )
        .await
        .expect_err("overlaps a writable mount");
    let LoadError::Policy(PolicyError::MountOverlap { owner, .. }) = &error else {
        panic!("expected an overlap, got {error:?}");
    };
    assert_eq!(owner, "tool `writer`");
    let text = error.to_string();
    assert!(text.contains("(rw)") && text.contains("(ro)"), "{text}");
    assert!(host.tool("reader").is_none());
}

#[tokio::test]
async fn a_read_only_mount_nested_in_a_writable_one_is_refused() {
    let layout = Layout::new();
    let root = layout.root.path();
    let host = host_over(root);
    let nested = fs_policy(
        "nested",
        vec![
            Mount::read_write(root, "/work"),
            Mount::read_only(layout.mount(), "/work/protected"),
        ],
    );
    let error = host
        .load_file(artifacts::FS_ESCAPE.as_ref(), nested)
        .await
        .expect_err("a write through /work/./protected would reach it");
    assert!(
        matches!(&error, LoadError::Policy(PolicyError::MountOverlap { owner, .. }) if owner == "this tool"),
        "{error:?}"
    );
    // Two read-only mounts may overlap.
    let both_ro = fs_policy(
        "both-ro",
        vec![
            Mount::read_only(root, "/work"),
            Mount::read_only(layout.mount(), "/protected"),
        ],
    );
    load(&host, artifacts::FS_ESCAPE, both_ro).await;
}

#[tokio::test]
async fn a_mount_that_contains_the_data_dir_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let host = Host::builder()
        .data_dir(root.path().join("data"))
        .allow_root(root.path())
        .build()
        .expect("host");
    let error = host
        .load_file(
            artifacts::HELLO.as_ref(),
            ToolPolicy {
                mounts: vec![Mount::read_only(root.path(), "/home")],
                ..Default::default()
            },
        )
        .await
        .expect_err("the journal and the artifacts would be in reach");
    assert!(
        matches!(
            &error,
            LoadError::Policy(PolicyError::MountOverlapsHostDir {
                what: "data dir",
                ..
            })
        ),
        "{error:?}"
    );
}

/// The `.cwasm` artifact of the component at `wasm` in `data`.
fn artifact_of(data: &Path, wasm: &str) -> std::path::PathBuf {
    use sha2::Digest as _;
    let digest = hex::encode(sha2::Sha256::digest(fs::read(wasm).expect("component")));
    fs::read_dir(data.join("artifacts"))
        .expect("artifact dir")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&digest) && n.ends_with(".cwasm"))
        })
        .expect("artifact written")
}

#[tokio::test]
async fn a_swapped_or_corrupted_artifact_is_recompiled_not_run() {
    let data = tempfile::tempdir().expect("tempdir");
    {
        let first = Host::builder().data_dir(data.path()).build().expect("host");
        load(&first, artifacts::HELLO, ToolPolicy::default()).await;
        load(&first, artifacts::COUNTER, ToolPolicy::default()).await;
    }
    let hello = artifact_of(data.path(), artifacts::HELLO);
    let counter = artifact_of(data.path(), artifacts::COUNTER);
    // Another tool's genuine artifact under hello's name: authentic bytes,
    // made for another component. The tag binds the two, so it is refused.
    fs::copy(&counter, &hello).expect("swap");
    let second = Host::builder().data_dir(data.path()).build().expect("host");
    let tool = second
        .load_file(artifacts::HELLO.as_ref(), ToolPolicy::default())
        .await
        .expect("loads");
    assert_eq!(
        tool.name.as_str(),
        "hello",
        "the swapped artifact did not run"
    );
    assert_host_still_serves(&second).await;
    drop(second);
    // A flipped byte fails authentication: compiled again, never mapped.
    let mut bytes = fs::read(&hello).expect("artifact");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    fs::write(&hello, &bytes).expect("corrupt");
    let third = Host::builder().data_dir(data.path()).build().expect("host");
    let tool = third
        .load_file(artifacts::HELLO.as_ref(), ToolPolicy::default())
        .await
        .expect("loads");
    assert_eq!(tool.artifact.source, ArtifactSource::Compiled);
    assert_host_still_serves(&third).await;
}
