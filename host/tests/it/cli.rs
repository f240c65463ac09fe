//! The `cofferdam` binary as a user runs it: output, exit codes, errors.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use cofferdam_test_artifacts as artifacts;

fn cofferdam(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cofferdam"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("COFFERDAM_LOG")
        .output()
        .expect("runs cofferdam")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn run_prints_the_output_and_second_run_uses_the_cached_artifact() {
    let data = tempfile::tempdir().expect("tempdir");
    let first = cofferdam(
        data.path(),
        &["run", artifacts::HELLO, "--input", r#"{"name":"Ada"}"#],
    );
    assert!(first.status.success(), "{}", text(&first.stderr));
    let out: serde_json::Value = serde_json::from_slice(&first.stdout).expect("JSON output");
    assert_eq!(out["greeting"], "Hello, Ada!");
    assert!(
        text(&first.stderr).contains("artifact Compiled"),
        "{}",
        text(&first.stderr)
    );
    assert!(
        text(&first.stderr).contains("[info] greeting Ada"),
        "{}",
        text(&first.stderr)
    );

    let second = cofferdam(
        data.path(),
        &["run", artifacts::HELLO, "--input", r#"{"name":"Bo"}"#],
    );
    assert!(second.status.success());
    assert!(
        text(&second.stderr).contains("artifact Cached"),
        "{}",
        text(&second.stderr)
    );
}

#[test]
fn exit_codes_tell_tool_errors_from_limits_and_bad_usage() {
    let data = common::shared_data_dir();
    let tool_error = cofferdam(
        &data,
        &["run", artifacts::HELLO, "--input", r#"{"name":""}"#],
    );
    assert_eq!(tool_error.status.code(), Some(1));
    assert!(
        text(&tool_error.stderr).contains("error [invalid-input]"),
        "{}",
        text(&tool_error.stderr)
    );

    let limit = cofferdam(
        &data,
        &[
            "run",
            artifacts::LOOP_FOREVER,
            "--fuel",
            "1000000",
            "--json",
        ],
    );
    assert_eq!(limit.status.code(), Some(3));
    let out: serde_json::Value = serde_json::from_slice(&limit.stdout).expect("JSON error");
    assert_eq!(out["ok"], false);
    assert_eq!(out["error"]["class"], "out-of-fuel");

    let deadline = cofferdam(
        &data,
        &[
            "run",
            artifacts::SLEEPY,
            "--input",
            r#"{"millis":60000}"#,
            "--timeout",
            "100ms",
            "--attempts",
            "1",
        ],
    );
    assert_eq!(deadline.status.code(), Some(3));
    assert!(
        text(&deadline.stderr).contains("exceeded its 100 ms deadline"),
        "{}",
        text(&deadline.stderr)
    );

    let missing = cofferdam(&data, &["run", "/nonexistent.wasm"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("cannot read component /nonexistent.wasm"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn run_with_a_manifest_and_mount_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).expect("mkdir");
    std::fs::write(docs.join("a.txt"), "cofferdam holds\n").expect("write");
    let manifest = dir.path().join("grep.toml");
    std::fs::write(
        &manifest,
        format!(
            "component = {:?}\n[[mounts]]\nhost = \"docs\"\nguest = \"/data\"\n[limits]\ntimeout_ms = 5000\n",
            artifacts::GREP
        ),
    )
    .expect("write");
    let data = common::shared_data_dir();
    let manifest_arg = manifest.display().to_string();
    let run = cofferdam(
        &data,
        &[
            "run",
            "--manifest",
            &manifest_arg,
            "--input",
            r#"{"pattern":"holds"}"#,
        ],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    let out: serde_json::Value = serde_json::from_slice(&run.stdout).expect("JSON");
    assert_eq!(out["matches"][0]["text"], "cofferdam holds");

    let mount = format!("{}:/data", docs.display());
    let run = cofferdam(
        &data,
        &[
            "run",
            artifacts::GREP,
            "--mount",
            &mount,
            "--input",
            r#"{"pattern":"holds"}"#,
        ],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));

    std::fs::write(&manifest, "componet = \"x.wasm\"\n").expect("write");
    let bad = cofferdam(&data, &["run", "--manifest", &manifest_arg]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("componet"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn inspect_shows_description_schema_and_imports() {
    let data = common::shared_data_dir();
    let human = cofferdam(&data, &["inspect", artifacts::GREP]);
    assert!(human.status.success(), "{}", text(&human.stderr));
    let stdout = text(&human.stdout);
    for expected in [
        "name         grep",
        "effect       pure",
        "cofferdam:tool/host@0.1.0",
        "\"pattern\"",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    let json = cofferdam(&data, &["inspect", artifacts::NOTES, "--json"]);
    let out: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(out["name"], "notes");
    assert_eq!(out["effect"], "side-effecting");
    assert_eq!(
        out["input_schema"]["required"],
        serde_json::json!(["title", "body"])
    );
}

#[test]
fn breakers_set_from_the_cli_stop_later_runs() {
    let data = tempfile::tempdir().expect("tempdir");
    let set = cofferdam(data.path(), &["breakers", "set", "hello", "forced-open"]);
    assert!(set.status.success(), "{}", text(&set.stderr));
    let list = cofferdam(data.path(), &["breakers", "list"]);
    assert!(
        text(&list.stdout).contains("hello"),
        "{}",
        text(&list.stdout)
    );
    assert!(
        text(&list.stdout).contains("forced-open"),
        "{}",
        text(&list.stdout)
    );

    let refused = cofferdam(
        data.path(),
        &[
            "run",
            artifacts::HELLO,
            "--input",
            r#"{"name":"x"}"#,
            "--json",
        ],
    );
    assert_eq!(refused.status.code(), Some(5), "{}", text(&refused.stderr));
    let out: serde_json::Value = serde_json::from_slice(&refused.stdout).expect("JSON");
    assert_eq!(out["error"]["class"], "circuit-open");

    let reset = cofferdam(data.path(), &["breakers", "set", "hello", "normal"]);
    assert!(reset.status.success());
    let ok = cofferdam(
        data.path(),
        &["run", artifacts::HELLO, "--input", r#"{"name":"x"}"#],
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));

    let bad = cofferdam(data.path(), &["breakers", "set", "hello", "ajar"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn run_retries_a_flaky_tool_and_says_so() {
    let data = common::shared_data_dir();
    let run = cofferdam(
        &data,
        &[
            "run",
            artifacts::FLAKY,
            "--input",
            r#"{"fail_times":2,"failure":"transient"}"#,
        ],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(
        text(&run.stderr).contains("attempt 3 after transient, transient"),
        "{}",
        text(&run.stderr)
    );
    let once = cofferdam(
        &data,
        &[
            "run",
            artifacts::FLAKY,
            "--attempts",
            "1",
            "--input",
            r#"{"fail_times":2,"failure":"transient"}"#,
        ],
    );
    assert_eq!(once.status.code(), Some(1));
}

#[test]
fn a_run_lands_in_the_history_and_a_keyed_run_replays() {
    let data = tempfile::tempdir().expect("tempdir");
    let artifacts_dir = common::shared_data_dir().join("artifacts");
    let dir = artifacts_dir.display().to_string();
    let args = |extra: &[&str]| {
        let mut all = vec!["--artifact-dir", dir.as_str()];
        all.extend_from_slice(extra);
        all.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = [
        "run",
        artifacts::HELLO,
        "--input",
        r#"{"name":"Ada"}"#,
        "--key",
        "k1",
        "--agent",
        "a1",
    ];
    let first = cofferdam(
        data.path(),
        &args(&run).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(first.status.success(), "{}", text(&first.stderr));
    let second = cofferdam(
        data.path(),
        &args(&run).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(
        text(&second.stderr).contains("replayed from the journal"),
        "{}",
        text(&second.stderr)
    );

    let history = cofferdam(data.path(), &["history", "--agent", "a1", "--json"]);
    let records: serde_json::Value = serde_json::from_slice(&history.stdout).expect("JSON");
    let records = records.as_array().expect("array");
    assert_eq!(records.len(), 2, "the run and its replay: {records:?}");
    assert!(records.iter().any(|r| r["replayed"] == true));
    assert!(
        records
            .iter()
            .any(|r| r["replayed"] == false && r["status"] == "ok")
    );

    let journal = cofferdam(data.path(), &["journal", "show", "k1"]);
    assert!(
        text(&journal.stdout).contains("\"completed\""),
        "{}",
        text(&journal.stdout)
    );
}

#[test]
fn check_validates_a_config_and_names_every_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("docs")).expect("mkdir");
    let good = dir.path().join("cofferdam.toml");
    std::fs::write(
        &good,
        format!(
            "data_dir = \"data\"\nallowed_roots = [\"docs\"]\n[tools.greeter]\ncomponent = {:?}\n\
             [tools.search]\ncomponent = {:?}\n[[tools.search.mounts]]\nhost = \"docs\"\nguest = \"/data\"\n",
            artifacts::HELLO,
            artifacts::GREP
        ),
    )
    .expect("write");
    let data = common::shared_data_dir();
    let ok = cofferdam(&data, &["check", &good.display().to_string()]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(
        text(&ok.stdout).contains("ok  tools.greeter: greeter"),
        "{}",
        text(&ok.stdout)
    );
    assert!(
        text(&ok.stdout).contains("ok, 2 tool(s)"),
        "{}",
        text(&ok.stdout)
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[tools.x]\ncomponent = \"nope.wasm\"\n[tools.y]\ncomponent = \"nope2.wasm\"\nsha256 = \"12\"\n",
    )
    .expect("write");
    let failed = cofferdam(&data, &["check", &bad.display().to_string()]);
    assert_eq!(failed.status.code(), Some(2));
    let stderr = text(&failed.stderr);
    assert!(stderr.contains("tools.x: component"), "{stderr}");
    assert!(stderr.contains("tools.y: `sha256`"), "{stderr}");
    assert!(stderr.contains("3 problem(s)"), "{stderr}");

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[tools.x]\ncomponnet = \"a.wasm\"\n").expect("write");
    let failed = cofferdam(&data, &["check", &typo.display().to_string()]);
    assert_eq!(failed.status.code(), Some(2));
    assert!(
        text(&failed.stderr).contains("componnet"),
        "{}",
        text(&failed.stderr)
    );
}

#[test]
fn token_makes_a_client_entry_that_check_accepts_and_bad_entries_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = common::shared_data_dir();
    let made = cofferdam(&data, &["token", "--name", "digest-agent"]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let stdout = text(&made.stdout);
    let token = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("cfd_"))
        .map(|rest| format!("cfd_{rest}"))
        .expect("a token line");
    let entry = &stdout[stdout.find("[[clients]]").expect("an entry")..];
    assert!(entry.contains("agent = \"digest-agent\""), "{entry}");
    assert!(
        !entry.contains(&token),
        "the entry holds the digest, not the token"
    );
    let config = dir.path().join("cofferdam.toml");
    std::fs::write(&config, format!("data_dir = \"data\"\n{entry}")).expect("write");
    let checked = cofferdam(&data, &["check", &config.display().to_string()]);
    assert!(checked.status.success(), "{}", text(&checked.stderr));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[[clients]]\nname = \"x\"\ntoken_sha256 = \"abc\"\nagent = \"x\"\n\
             [tools.schedule_create]\ncomponent = {:?}\n",
            artifacts::HELLO
        ),
    )
    .expect("write");
    let failed = cofferdam(&data, &["check", &bad.display().to_string()]);
    assert_eq!(failed.status.code(), Some(2));
    let stderr = text(&failed.stderr);
    assert!(
        stderr.contains("clients: client `x`: token_sha256"),
        "{stderr}"
    );
    assert!(
        stderr.contains("tools.schedule_create: is the name of an MCP management tool"),
        "{stderr}"
    );
}

#[test]
fn state_written_by_a_run_is_listed_read_and_deleted_by_an_operator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let manifest = dir.path().join("writer.toml");
    std::fs::write(
        &manifest,
        format!(
            "component = {:?}\n[state]\nbucket = \"notes\"\nscope = \"owner\"\n",
            artifacts::STATE_WRITER
        ),
    )
    .expect("write");
    let manifest_arg = manifest.display().to_string();
    let artifacts_dir = common::shared_data_dir().join("artifacts");
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_cofferdam"))
            .arg("--data-dir")
            .arg(&data)
            .arg("--artifact-dir")
            .arg(&artifacts_dir)
            .args(args)
            .output()
            .expect("runs");
        (
            output.status.code(),
            text(&output.stdout),
            text(&output.stderr),
        )
    };
    let (code, _, stderr) = cli(&[
        "run",
        "--manifest",
        &manifest_arg,
        "--agent",
        "ada",
        "--input",
        r#"{"set":{"greeting":"hello"}}"#,
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stdout, stderr) = cli(&["state", "list", "notes"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("owner:ada") && stdout.contains("1 keys"),
        "{stdout}"
    );
    let (_, stdout, _) = cli(&["state", "list", "notes", "--scope", "owner:ada"]);
    assert_eq!(stdout.trim(), "greeting");
    let (code, stdout, _) = cli(&["state", "get", "notes", "greeting", "--scope", "owner:ada"]);
    assert_eq!((code, stdout.trim()), (Some(0), "\"hello\""));
    let (code, stdout, _) = cli(&[
        "state",
        "delete",
        "notes",
        "greeting",
        "--scope",
        "owner:ada",
    ]);
    assert_eq!((code, stdout.trim()), (Some(0), "deleted"));
    let (code, _, stderr) = cli(&["state", "get", "notes", "greeting", "--scope", "owner:ada"]);
    assert_eq!(code, Some(1), "{stderr}");
    let (code, _, stderr) = cli(&["state", "get", "notes", "greeting", "--scope", "ada"]);
    assert_eq!(code, Some(2), "a usage error: {stderr}");
    assert!(stderr.contains("--scope must be"), "{stderr}");
}

#[test]
fn a_budget_capped_in_money_becomes_tokens_at_the_default_price_and_shows_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("cofferdam.toml");
    std::fs::write(
        &config,
        "data_dir = \"data\"\n[prices]\ndefault = \"0.002 USD\"\n[prices.tools]\nhello = \"0.01 USD\"\n",
    )
    .expect("write");
    let config = config.display().to_string();
    let data = common::shared_data_dir();
    let set = cofferdam(
        &data,
        &[
            "budget",
            "set",
            "agent:ada",
            "--cap-money",
            "2.00 USD",
            "--config",
            &config,
        ],
    );
    assert!(set.status.success(), "{}", text(&set.stderr));
    assert!(
        text(&set.stdout).contains("capped at 1000000 tokens (2.00 USD at the default price)"),
        "{}",
        text(&set.stdout)
    );
    let show = cofferdam(&data, &["budget", "show", "--config", &config]);
    assert!(
        text(&show.stdout).contains("0.00 USD / 2.00 USD"),
        "{}",
        text(&show.stdout)
    );
    let euros = cofferdam(
        &data,
        &[
            "budget",
            "set",
            "agent:ada",
            "--cap-money",
            "2.00 EUR",
            "--config",
            &config,
        ],
    );
    assert!(!euros.status.success());
    assert!(
        text(&euros.stderr).contains("not in the host's currency"),
        "{}",
        text(&euros.stderr)
    );
}

#[test]
fn operator_commands_use_the_data_dir_of_a_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("cofferdam.toml");
    std::fs::write(&config, "data_dir = \"state\"\n").expect("write");
    let config_arg = config.display().to_string();
    // --data-dir points elsewhere: the config's data_dir wins, as for `serve`.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let with_config = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--config", config_arg.as_str()]);
        cofferdam(elsewhere.path(), &all)
    };

    let set = with_config(&["budget", "set", "agent:planner", "--cap", "8"]);
    assert!(set.status.success(), "{}", text(&set.stderr));
    let breaker = with_config(&["breakers", "set", "hello", "forced-open"]);
    assert!(breaker.status.success(), "{}", text(&breaker.stderr));

    // A host built from the config sees the cap and the breaker mode.
    let parsed = cofferdam::HostConfig::from_file(&config).expect("config");
    let host = parsed.builder().build().expect("host");
    let caps = host.budgets().list().expect("budgets");
    assert_eq!(caps.len(), 1, "{caps:?}");
    assert_eq!(
        (caps[0].scope.to_string().as_str(), caps[0].cap.hard.0),
        ("agent:planner", 8)
    );
    drop(host);
    let modes = cofferdam::Host::remembered_breaker_modes(&dir.path().join("state"));
    assert_eq!(
        modes.get("hello").copied(),
        Some(cofferdam::BreakerMode::ForcedOpen)
    );

    let shown = with_config(&["budget", "show"]);
    assert!(
        text(&shown.stdout).contains("agent:planner"),
        "{}",
        text(&shown.stdout)
    );
    let not_there = cofferdam(elsewhere.path(), &["budget", "show"]);
    assert!(
        text(&not_there.stdout).contains("no budget caps set"),
        "--data-dir alone is another store: {}",
        text(&not_there.stdout)
    );
    for args in [
        &["journal", "list"][..],
        &["history"],
        &["escalations", "list"],
        &["tasks", "list"],
        &["schedules", "list"],
    ] {
        let out = with_config(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    }

    let help = cofferdam(elsewhere.path(), &["--help"]);
    assert!(
        text(&help.stdout).contains("Where the journal lives"),
        "{}",
        text(&help.stdout)
    );
}

#[test]
fn a_bad_idempotency_key_is_reported_as_a_bad_key() {
    let data = common::shared_data_dir();
    let long = "k".repeat(256);
    for (key, length) in [("", 0), (long.as_str(), 256)] {
        let run = cofferdam(
            &data,
            &[
                "run",
                artifacts::HELLO,
                "--input",
                r#"{"name":"Ada"}"#,
                "--key",
                key,
            ],
        );
        let stderr = text(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "an idempotency key must be 1 to 255 bytes, not {length}"
            )),
            "{stderr}"
        );
        assert!(!stderr.contains("JSON"), "{stderr}");
    }
}

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let data = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_cofferdam"))
        .args(["budget", "show", "--data-dir"])
        .arg(data.path())
        .env("COFFERDAM_LOG", "debug")
        .env_remove("NO_COLOR")
        .output()
        .expect("runs cofferdam");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("DEBUG"), "some logs: {stderr}");
    assert!(!stderr.contains('\x1b'), "ANSI escapes in: {stderr:?}");
}

#[test]
fn help_states_each_default_once() {
    let data = tempfile::tempdir().expect("tempdir");
    let help = cofferdam(data.path(), &["budget", "set", "--help"]);
    let stdout = text(&help.stdout);
    assert_eq!(stdout.matches("[default: 80]").count(), 1, "{stdout}");
    let help = cofferdam(data.path(), &["journal", "reap", "--help"]);
    let stdout = text(&help.stdout);
    assert_eq!(
        stdout.matches("24h").count(),
        2,
        "example and default: {stdout}"
    );
}

/// `examples/cofferdam.toml`, unchanged, in a copy of the layout it expects:
/// the example tools where `examples/demo.sh` builds them (the artifacts
/// crate builds the same crates with the same release settings), and the
/// directories it mounts.
fn example_layout() -> (tempfile::TempDir, std::path::PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().expect("tempdir");
    let examples = dir.path().join("examples");
    std::fs::create_dir_all(examples.join("trip")).expect("mkdir");
    let config = examples.join("cofferdam.toml");
    std::fs::copy(root.join("examples/cofferdam.toml"), &config).expect("copy the example");
    for entry in std::fs::read_dir(root.join("examples/trip")).expect("examples/trip") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), examples.join("trip").join(entry.file_name())).expect("copy");
    }
    let tools = dir.path().join("target/wasm32-wasip2/release");
    std::fs::create_dir_all(&tools).expect("mkdir");
    for (name, built) in [("hello", artifacts::HELLO), ("grep", artifacts::GREP)] {
        std::fs::copy(built, tools.join(format!("{name}.wasm"))).expect("copy a tool");
    }
    (dir, config)
}

#[test]
fn the_example_config_passes_check_and_serves() {
    let (dir, config) = example_layout();
    let config_arg = config.display().to_string();
    let data = common::shared_data_dir();
    let check = cofferdam(&data, &["check", &config_arg]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    let stdout = text(&check.stdout);
    for line in [
        "ok  tools.grep: grep",
        "ok  tools.hello: hello",
        "ok, 2 tool(s)",
    ] {
        assert!(stdout.contains(line), "{stdout}");
    }
    assert!(
        dir.path().join("target/cofferdam-example").is_dir(),
        "data_dir is relative to the file"
    );

    // `serve --config` runs it as is: an MCP client lists both tools and
    // greps the example task files.
    let mut serve = Command::new(env!("CARGO_BIN_EXE_cofferdam"))
        .args(["serve", "--config", &config_arg])
        .env_remove("COFFERDAM_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("serve starts");
    let requests = [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"cli-test","version":"1"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"grep","arguments":{"pattern":"trip-42"}}}"#,
    ];
    let mut stdin = serve.stdin.take().expect("stdin");
    let stdout = std::io::BufReader::new(serve.stdout.take().expect("stdout"));
    let mut lines = std::io::BufRead::lines(stdout);
    let mut answer = |request: &str| -> Option<serde_json::Value> {
        std::io::Write::write_all(&mut stdin, format!("{request}\n").as_bytes()).expect("write");
        if !request.contains(r#""id""#) {
            return None;
        }
        let line = lines.next().expect("an answer").expect("a line");
        Some(serde_json::from_str(&line).expect("JSON-RPC"))
    };
    let replies: Vec<_> = requests.iter().filter_map(|r| answer(r)).collect();
    drop(stdin); // end of input: the server stops
    let status = serve.wait().expect("serve exits");
    assert!(status.success(), "serve ends with its input");
    let mut names: Vec<&str> = replies[1]["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["grep", "hello"], "{}", replies[1]);
    assert_eq!(replies[2]["result"]["isError"], false, "{}", replies[2]);
    let found = &replies[2]["result"]["structuredContent"]["matches"];
    assert!(
        found
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["text"] == "id = \"trip-42\"")),
        "{}",
        replies[2]
    );
}

#[test]
fn a_mount_swapped_for_a_symlink_between_runs_is_refused_not_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let docs = dir.path().join("docs");
    let secret = dir.path().join("secret");
    std::fs::create_dir(&docs).expect("mkdir");
    std::fs::create_dir(&secret).expect("mkdir");
    std::fs::write(docs.join("doc.txt"), "public").expect("write");
    std::fs::write(secret.join("passwd"), "SECRET").expect("write");
    let data = common::shared_data_dir();
    let mount = format!("{}:/data", docs.display());
    let read = |path: &str| {
        let input = format!(r#"{{"op":"read","path":"{path}"}}"#);
        cofferdam(
            &data,
            &[
                "run",
                artifacts::FS_ESCAPE,
                "--mount",
                &mount,
                "--input",
                &input,
            ],
        )
    };
    let first = read("/data/doc.txt");
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(text(&first.stdout).contains("public"));
    // Between two runs, something with write access to the parent (another
    // tool's rw mount) swaps the mounted directory for a symlink.
    std::fs::rename(&docs, dir.path().join("old-docs")).expect("rename");
    std::os::unix::fs::symlink("secret", &docs).expect("symlink");
    let second = read("/data/passwd");
    assert_eq!(second.status.code(), Some(2), "{}", text(&second.stderr));
    assert!(
        text(&second.stderr).contains("goes through a symlink"),
        "{}",
        text(&second.stderr)
    );
    assert!(!text(&second.stdout).contains("SECRET"));
}

#[test]
fn bench_only_measures_the_scenarios_named_and_refuses_unknown_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = cofferdam(
        dir.path(),
        &[
            "bench",
            "--quick",
            "--json",
            "--only",
            "loading",
            "--tool",
            artifacts::HELLO,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    let groups: Vec<&str> = report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|row| row["group"].as_str())
        .collect();
    assert!(!groups.is_empty());
    assert!(
        groups.iter().all(|g| g.starts_with("loading tools")),
        "{groups:?}"
    );
    let out = cofferdam(dir.path(), &["bench", "--only", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("possible values: calls, sizes"));
    // Asked for by name, the input-size scenario needs a string to pad.
    let out = cofferdam(
        dir.path(),
        &[
            "bench",
            "--quick",
            "--only",
            "sizes",
            "--input",
            r#"{"n":1}"#,
            "--tool",
            artifacts::HELLO,
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("has none"),
        "{}",
        text(&out.stderr)
    );
    // Asked for by name, fairness needs a spinner; it does not pass silently.
    let out = cofferdam(
        dir.path(),
        &[
            "bench",
            "--quick",
            "--only",
            "fairness",
            "--tool",
            artifacts::HELLO,
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--spinner"),
        "{}",
        text(&out.stderr)
    );
}

/// Tool paths relative to the working directory work for every scenario,
/// including the one that starts `cofferdam serve` with a config of its own
/// in a temporary directory.
#[test]
fn bench_takes_tool_paths_relative_to_the_working_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(artifacts::HELLO, dir.path().join("hello.wasm")).expect("copy hello");
    std::fs::copy(artifacts::LOOP_FOREVER, dir.path().join("spin.wasm")).expect("copy spinner");
    let out = Command::new(env!("CARGO_BIN_EXE_cofferdam"))
        .args(["bench", "--quick", "--json", "--only", "fairness"])
        .args(["--tool", "hello.wasm", "--spinner", "spin.wasm"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .current_dir(dir.path())
        .env_remove("COFFERDAM_LOG")
        .output()
        .expect("runs cofferdam");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    let rows = report["rows"].as_array().expect("rows");
    assert!(
        rows.iter()
            .any(|row| row["group"].as_str().is_some_and(|g| g.contains("stdio"))),
        "{rows:?}"
    );
}
