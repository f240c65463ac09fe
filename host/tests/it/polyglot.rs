//! Tools written in Python (componentize-py) and JavaScript (ComponentizeJS)
//! with the guest SDKs under `guest-sdk/python` and `guest-sdk/js`: each
//! example builds with its SDK's command, describes itself with the schema
//! its types imply, answers a call through the library and over MCP, and a
//! hostile guest in each language is contained like a Rust one: fuel and
//! the deadline stop a spin, the memory cap stops a hoard with its typed
//! error, a read outside the mount fails, every exception becomes its
//! mapped tool error, and the host goes on serving.
//!
//! Needs the SDKs' toolchains, which `.ci/run` installs:
//! `pip install componentize-py==0.25.1` and `npm ci --prefix guest-sdk/js`.
//! The components are built once per test run (in `CARGO_TARGET_TMPDIR`).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use cofferdam::{CallRequest, ErrorClass, Host, LimitsSpec, Mount, ToolPolicy};
use rmcp::ServiceExt as _;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_owned()
}

/// Builds `source` with the SDK command `command` into `name.wasm`.
fn build(command: &mut std::process::Command, name: &str, source: &str) -> PathBuf {
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("polyglot");
    std::fs::create_dir_all(&out_dir).expect("out dir");
    let out = out_dir.join(format!("{name}.wasm"));
    let result = command
        .arg("build")
        .arg(repo().join(source))
        .arg("-o")
        .arg(&out)
        .current_dir(repo())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run the build of {source}: {e}"));
    assert!(
        result.status.success(),
        "building {source} failed (install the SDK toolchains: \
         `python3 -m pip install componentize-py==0.25.1`, `npm ci --prefix guest-sdk/js`):\n{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    out
}

fn python(name: &str, source: &str) -> PathBuf {
    let mut command = std::process::Command::new("python3");
    command
        .args(["-m", "cofferdam_guest"])
        .env("PYTHONPATH", repo().join("guest-sdk/python/src"));
    build(&mut command, name, source)
}

fn javascript(name: &str, source: &str) -> PathBuf {
    let mut command = std::process::Command::new("node");
    command.arg(repo().join("guest-sdk/js/bin/cofferdam-js.mjs"));
    build(&mut command, name, source)
}

/// The example and the hostile tool of one language, built once.
struct Built {
    example: PathBuf,
    hostile: PathBuf,
}

async fn built(cell: &'static OnceCell<Built>, make: fn() -> Built) -> &'static Built {
    cell.get_or_init(|| async move {
        tokio::task::spawn_blocking(make)
            .await
            .expect("build thread")
    })
    .await
}

static PYTHON: OnceCell<Built> = OnceCell::const_new();
static JAVASCRIPT: OnceCell<Built> = OnceCell::const_new();

fn python_tools() -> Built {
    Built {
        example: python("csv_summary", "examples/csv-summary/csv_summary.py"),
        hostile: python("py-hostile", "tests/tools-py/hostile.py"),
    }
}

fn javascript_tools() -> Built {
    Built {
        example: javascript("json-transform", "examples/json-transform/tool.js"),
        hostile: javascript("js-hostile", "tests/tools-js/hostile.js"),
    }
}

/// Four futures run at once.
async fn futures_join4<T>(
    a: impl Future<Output = T>,
    b: impl Future<Output = T>,
    c: impl Future<Output = T>,
    d: impl Future<Output = T>,
) -> [T; 4] {
    let (a, b, c, d) = tokio::join!(a, b, c, d);
    [a, b, c, d]
}

/// One attempt and no breaker, so each case shows its own class rather
/// than the retry layer's or an open breaker's.
fn once(limits: LimitsSpec) -> ToolPolicy {
    ToolPolicy {
        breaker: cofferdam::BreakerSpec {
            mode: Some(cofferdam::BreakerMode::Disabled),
            ..cofferdam::BreakerSpec::default()
        },
        ..common::policy_with(limits)
    }
}

async fn call(host: &Host, tool: &str, input: Value) -> Result<Value, cofferdam::CallError> {
    host.call(CallRequest::new(tool, input.to_string()))
        .await
        .map(|outcome| outcome.output_json())
}

async fn class_of(host: &Host, tool: &str, input: Value) -> (ErrorClass, String) {
    let error = call(host, tool, input.clone())
        .await
        .expect_err(&format!("{tool} {input} must fail"));
    (error.class(), error.to_string())
}

/// Lists the tools of a `cofferdam serve` over stdio on `config` and calls
/// `tool` with `input`; returns its listed input schema and structured result.
async fn over_mcp(config: &Path, tool: &str, input: Value) -> (Value, Value) {
    let command = crate::mcp::serve_command(config);
    let (transport, _) = TokioChildProcess::builder(command)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawns");
    let session = ().serve(transport).await.expect("initializes");
    let tools = session.list_all_tools().await.expect("tools/list");
    let listed = tools
        .iter()
        .find(|t| t.name == tool)
        .unwrap_or_else(|| panic!("{tool} not listed: {tools:?}"));
    let schema = Value::Object((*listed.input_schema).clone());
    let result = session
        .call_tool(
            CallToolRequestParams::new(tool.to_owned())
                .with_arguments(input.as_object().expect("object").clone()),
        )
        .await
        .expect("tools/call");
    assert_ne!(result.is_error, Some(true), "{result:?}");
    // An object comes as structured content too; any output as text.
    let text = result.content[0].as_text().expect("text").text.clone();
    let output: Value = serde_json::from_str(&text).expect("JSON output");
    if let Some(structured) = &result.structured_content {
        assert_eq!(structured, &output);
    }
    session.cancel().await.expect("closes");
    (schema, output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_tool_describes_its_types_answers_and_is_contained_like_a_rust_one() {
    let tools = built(&PYTHON, python_tools).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, outside) = (dir.path().join("data"), dir.path().join("secret.txt"));
    std::fs::create_dir(&data).expect("data dir");
    std::fs::write(
        data.join("cities.csv"),
        "city,population\nLisbon,545923\nPorto,231800\n",
    )
    .expect("csv");
    std::fs::write(&outside, "top secret").expect("secret");
    let host = common::builder()
        .allow_root(dir.path())
        .build()
        .expect("host");

    // The example: its schema comes from the dataclass and its docstrings.
    let example = host
        .load_file(
            &tools.example,
            ToolPolicy {
                mounts: vec![Mount::read_only(&data, "/data")],
                ..ToolPolicy::default()
            },
        )
        .await
        .expect("loads");
    let schema = &example.input_schema;
    assert_eq!(example.name.as_str(), "csv_summary");
    assert_eq!(schema["required"], json!(["path"]), "{schema}");
    assert_eq!(schema["properties"]["path"]["type"], "string");
    assert_eq!(
        schema["properties"]["max_rows"]["type"],
        json!(["integer", "null"])
    );
    assert_eq!(schema["properties"]["delimiter"]["default"], ",");
    assert!(schema["properties"]["path"]["description"].is_string());
    assert_eq!(schema["additionalProperties"], false);
    let summary = call(&host, "csv_summary", json!({"path": "cities.csv"}))
        .await
        .expect("summarizes");
    assert_eq!(summary["rows"], 2, "{summary}");
    // Input that does not match the schema never reaches the function.
    let (class, _) = class_of(&host, "csv_summary", json!({"path": 7})).await;
    assert_eq!(class, ErrorClass::InvalidInput);

    // The hostile tool, under limits a test can reach quickly.
    let limits = LimitsSpec {
        fuel: Some(300_000_000),
        timeout_ms: Some(20_000),
        ..LimitsSpec::default()
    };
    let policy = ToolPolicy {
        mounts: vec![Mount::read_only(&data, "/data")],
        ..once(limits)
    };
    host.load_file(&tools.hostile, policy).await.expect("loads");
    let (class, _) = class_of(&host, "py-hostile", json!({"mode": "spin"})).await;
    assert_eq!(class, ErrorClass::OutOfFuel);
    let (class, why) = class_of(&host, "py-hostile", json!({"mode": "membomb"})).await;
    assert_eq!(class, ErrorClass::MemoryLimit, "{why}");
    for path in [
        "/data/../secret.txt",
        "../secret.txt",
        outside.to_str().unwrap(),
    ] {
        let (class, why) =
            class_of(&host, "py-hostile", json!({"mode": "escape", "path": path})).await;
        assert_eq!(class, ErrorClass::InvalidInput, "{path}: {why}");
        assert!(!why.contains("top secret"), "{why}");
    }
    for (kind, want) in [
        ("invalid-input", ErrorClass::InvalidInput),
        ("transient", ErrorClass::Transient),
        ("rate-limited", ErrorClass::RateLimited),
        ("permanent", ErrorClass::Permanent),
        ("value-error", ErrorClass::Permanent),
    ] {
        let (class, why) =
            class_of(&host, "py-hostile", json!({"mode": "raise", "kind": kind})).await;
        assert_eq!(class, want, "{kind}: {why}");
    }
    let (_, why) = class_of(
        &host,
        "py-hostile",
        json!({"mode": "raise", "kind": "value-error"}),
    )
    .await;
    assert!(why.contains("ValueError: as asked"), "{why}");

    // The deadline stops a spin that fuel would allow for long.
    let deadline = LimitsSpec {
        fuel: Some(1_000_000_000_000),
        timeout_ms: Some(1_000),
        ..LimitsSpec::default()
    };
    let slow = Host::builder()
        .artifact_dir(common::shared_data_dir().join("artifacts"))
        .build()
        .expect("host");
    slow.load_file(&tools.hostile, once(deadline))
        .await
        .expect("loads");
    let (class, _) = class_of(&slow, "py-hostile", json!({"mode": "spin"})).await;
    assert_eq!(class, ErrorClass::DeadlineExceeded);

    common::assert_host_still_serves(&host).await;
    let again = call(&host, "csv_summary", json!({"path": "cities.csv"})).await;
    assert!(again.is_ok(), "{again:?}");

    // A pool of 4 instances holds 4 Python instances at once (each has 14
    // core instances: the pool must have room for them, not just for Rust's 4).
    let small = common::builder()
        .max_instances(4)
        .allow_root(dir.path())
        .build()
        .expect("host");
    let four = cofferdam::PoolSpec {
        max_concurrent: Some(4),
        max_queue: Some(0),
        max_wait_ms: None,
    };
    small
        .load_file(
            &tools.example,
            ToolPolicy {
                mounts: vec![Mount::read_only(&data, "/data")],
                pool: four,
                ..ToolPolicy::default()
            },
        )
        .await
        .expect("loads");
    let at_once = futures_join4(
        call(&small, "csv_summary", json!({"path": "cities.csv"})),
        call(&small, "csv_summary", json!({"path": "cities.csv"})),
        call(&small, "csv_summary", json!({"path": "cities.csv"})),
        call(&small, "csv_summary", json!({"path": "cities.csv"})),
    )
    .await;
    for result in at_once {
        assert_eq!(result.expect("fits in the pool")["rows"], 2);
    }

    // Over MCP: listed with the same schema, answering a call.
    let config = dir.path().join("cofferdam.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"state\"\nallowed_roots = [{root:?}]\n\
             [tools.csv_summary]\ncomponent = {example:?}\n\
             [[tools.csv_summary.mounts]]\nhost = {data:?}\nguest = \"/data\"\n",
            root = dir.path(),
            example = tools.example,
            data = data,
        ),
    )
    .expect("config");
    let (listed, result) = over_mcp(&config, "csv_summary", json!({"path": "cities.csv"})).await;
    assert_eq!(listed["properties"], schema["properties"]);
    assert_eq!(result["rows"], 2, "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_tool_describes_its_schema_answers_and_is_contained_like_a_rust_one() {
    let tools = built(&JAVASCRIPT, javascript_tools).await;
    let host = common::host();
    let example = host
        .load_file(&tools.example, ToolPolicy::default())
        .await
        .expect("loads");
    let schema = &example.input_schema;
    assert_eq!(example.name.as_str(), "json-transform");
    assert_eq!(schema["required"], json!(["data"]), "{schema}");
    assert_eq!(schema["properties"]["select"]["type"], "string");
    assert_eq!(schema["properties"]["select"]["default"], ".");
    assert_eq!(schema["properties"]["pick"]["type"], "array");
    assert!(
        schema["properties"]["keyCase"]["enum"].is_array(),
        "{schema}"
    );
    let input = json!({
        "data": {"users": [{"first_name": "Ada", "id": 1}, {"first_name": "Grace", "id": 2}]},
        "select": ".users[*]",
        "pick": ["first_name"],
        "keyCase": "camel",
    });
    let output = call(&host, "json-transform", input.clone())
        .await
        .expect("transforms");
    let transformed = json!({"result": [{"firstName": "Ada"}, {"firstName": "Grace"}]});
    assert_eq!(output, transformed);
    let (class, _) = class_of(
        &host,
        "json-transform",
        json!({"data": 1, "keyCase": "shouty"}),
    )
    .await;
    assert_eq!(class, ErrorClass::InvalidInput);

    let limits = LimitsSpec {
        fuel: Some(300_000_000),
        timeout_ms: Some(20_000),
        ..LimitsSpec::default()
    };
    host.load_file(&tools.hostile, once(limits))
        .await
        .expect("loads");
    let (class, _) = class_of(&host, "js-hostile", json!({"mode": "spin"})).await;
    assert_eq!(class, ErrorClass::OutOfFuel);
    let (class, why) = class_of(&host, "js-hostile", json!({"mode": "membomb"})).await;
    assert_eq!(class, ErrorClass::MemoryLimit, "{why}");
    for (kind, want) in [
        ("invalid-input", ErrorClass::InvalidInput),
        ("transient", ErrorClass::Transient),
        ("rate-limited", ErrorClass::RateLimited),
        ("permanent", ErrorClass::Permanent),
        ("plain-error", ErrorClass::Permanent),
    ] {
        let (class, why) =
            class_of(&host, "js-hostile", json!({"mode": "throw", "kind": kind})).await;
        assert_eq!(class, want, "{kind}: {why}");
    }
    // `fetch` reports every wasi:http error alike, so a request the host
    // refuses looks like a network hiccup to the tool; the host knows better
    // and does not retry what its policy will refuse again.
    let (class, why) = class_of(&host, "js-hostile", json!({"mode": "fetch"})).await;
    assert_eq!(class, ErrorClass::Permanent, "{why}");
    assert!(
        why.contains("refused") && why.contains("169.254.169.254"),
        "{why}"
    );

    let deadline = LimitsSpec {
        fuel: Some(1_000_000_000_000),
        timeout_ms: Some(1_000),
        ..LimitsSpec::default()
    };
    let slow = common::host();
    slow.load_file(&tools.hostile, once(deadline))
        .await
        .expect("loads");
    let (class, _) = class_of(&slow, "js-hostile", json!({"mode": "spin"})).await;
    assert_eq!(class, ErrorClass::DeadlineExceeded);
    common::assert_host_still_serves(&host).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("cofferdam.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"state\"\n[tools.json-transform]\ncomponent = {:?}\n",
            tools.example
        ),
    )
    .expect("config");
    let (listed, result) = over_mcp(&config, "json-transform", input).await;
    assert_eq!(listed["properties"], schema["properties"]);
    assert_eq!(result, transformed, "{result}");
}
