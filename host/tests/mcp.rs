//! `cofferdam serve` driven by rmcp's own client, over stdio (a child
//! process) and over streamable HTTP on loopback: list, call, progress,
//! cancellation, typed errors from hostile tools, keyed replay, reloads and
//! metrics.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cofferdam_test_artifacts as artifacts;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, ClientRequest,
    ProgressNotificationParam, RequestMetaObject, RequestParamsMeta as _,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RunningService};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient, ServiceExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::mpsc;

/// What the client saw outside responses.
struct Events {
    progress: mpsc::UnboundedReceiver<ProgressNotificationParam>,
    changed: mpsc::UnboundedReceiver<()>,
}

struct Client {
    progress: mpsc::UnboundedSender<ProgressNotificationParam>,
    changed: mpsc::UnboundedSender<()>,
}

impl ClientHandler for Client {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.progress.send(params);
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.changed.send(());
    }
}

fn client() -> (Client, Events) {
    let (progress_tx, progress) = mpsc::unbounded_channel();
    let (changed_tx, changed) = mpsc::unbounded_channel();
    (
        Client {
            progress: progress_tx,
            changed: changed_tx,
        },
        Events { progress, changed },
    )
}

type Session = RunningService<RoleClient, Client>;

/// A config with well-behaved and hostile tools; `extra` is appended.
fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("cofferdam.toml");
    let text = format!(
        "data_dir = \"data\"\n\
         [tools.hello]\ncomponent = {hello:?}\n\
         [tools.introspect]\ncomponent = {introspect:?}\n\
         [tools.spin]\ncomponent = {spin:?}\n\
         [tools.spin.limits]\ntimeout_ms = 60000\nfuel = 1000000000000000\n\
         [tools.hog]\ncomponent = {hog:?}\n\
         [tools.hog.limits]\nmemory_mib = 8\n\
         [tools.hog.retry]\nmax_attempts = 1\n\
         {extra}",
        hello = artifacts::HELLO,
        introspect = artifacts::INTROSPECT,
        spin = artifacts::LOOP_FOREVER,
        hog = artifacts::ALLOC_FOREVER,
    );
    std::fs::write(&path, text).expect("config written");
    path
}

fn serve_command(config: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_cofferdam"));
    command
        .arg("serve")
        .arg("--config")
        .arg(config)
        .arg("--artifact-dir")
        .arg(common::shared_data_dir().join("artifacts"))
        .arg("--watch-every")
        .arg("50ms")
        .env_remove("COFFERDAM_LOG")
        .kill_on_drop(true);
    command
}

/// Reads the child's stderr until a line contains `marker`; returns the
/// text after it, and keeps draining stderr so the child never blocks.
async fn wait_for_line(
    stderr: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    marker: &str,
) -> String {
    let mut lines = BufReader::new(stderr).lines();
    let found = loop {
        let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .expect("server starts within two minutes")
            .expect("stderr readable")
            .expect("server is still running");
        if let Some(at) = line.find(marker) {
            break line[at + marker.len()..].to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    found
}

/// `GET path` with the given `Host` header; returns status and body.
async fn http_get(addr: &str, path: &str, host: &str, origin: Option<&str>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{origin}Accept: text/event-stream\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("sends");
    let mut response = String::new();
    let _ =
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response)).await;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// Polls the metrics until `line` appears (a condition, not a timed sleep).
async fn wait_for_metric(addr: &str, line: &str) -> String {
    for _ in 0..500 {
        let (_, body) = http_get(addr, "/metrics", "localhost", None).await;
        if body.lines().any(|l| l == line) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("metric `{line}` never appeared");
}

fn params(tool: &'static str, args: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool).with_arguments(args.as_object().cloned().unwrap_or_default())
}

fn with_meta(mut params: CallToolRequestParams, meta: Value) -> CallToolRequestParams {
    let mut object = RequestMetaObject::new();
    for (k, v) in meta.as_object().cloned().unwrap_or_default() {
        object.insert(k, v);
    }
    params.set_meta(object);
    params
}

fn error_class(result: &CallToolResult) -> String {
    assert_eq!(result.is_error, Some(true), "{result:?}");
    result
        .structured_content
        .as_ref()
        .expect("structured error")["error"]["class"]
        .as_str()
        .expect("class")
        .to_owned()
}

/// The checks both transports must pass.
async fn exercise(session: &Session, events: &mut Events, metrics: &str) {
    let tools = session.list_all_tools().await.expect("tools/list");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["hello", "hog", "introspect", "spin"]);
    let hello = &tools[0];
    assert_eq!(hello.input_schema["properties"]["name"]["type"], "string");
    assert_eq!(
        hello.annotations.as_ref().and_then(|a| a.read_only_hint),
        Some(true)
    );

    // A call through the whole pipeline.
    let result = session
        .call_tool(params("hello", json!({"name": "Ada"})))
        .await
        .expect("tools/call");
    assert_eq!(result.is_error, Some(false));
    assert_eq!(
        result.structured_content.as_ref().expect("structured")["greeting"],
        "Hello, Ada!"
    );
    let meta = result.meta.as_ref().expect("cost in _meta");
    assert!(meta.0["fuelUsed"].as_u64().expect("fuel") > 0);
    assert_eq!(meta.0["attempts"], 1);

    // Guest progress arrives as MCP progress notifications.
    let result = session
        .call_tool(params("introspect", json!({"progress": 3})))
        .await
        .expect("tools/call");
    assert_eq!(result.is_error, Some(false), "{result:?}");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let p = tokio::time::timeout(Duration::from_secs(10), events.progress.recv())
            .await
            .expect("progress arrives")
            .expect("channel open");
        seen.push((p.progress, p.total, p.message));
    }
    // The server sends them in order; rmcp's client may hand notifications
    // to the handler concurrently, so compare them by value.
    seen.sort_by(|a, b| a.0.total_cmp(&b.0));
    let working = Some("working".to_owned());
    assert_eq!(
        seen,
        [
            (1.0, Some(3.0), working.clone()),
            (2.0, Some(3.0), working.clone()),
            (3.0, Some(3.0), working)
        ]
    );

    // A keyed call runs once; the repeat is replayed from the journal.
    let keyed = || {
        with_meta(
            params("hello", json!({"name": "Key"})),
            json!({"idempotencyKey": "k-1", "agentId": "a1"}),
        )
    };
    let first = session.call_tool(keyed()).await.expect("first");
    let second = session.call_tool(keyed()).await.expect("second");
    assert_eq!(first.meta.as_ref().expect("meta").0["replayed"], false);
    assert_eq!(second.meta.as_ref().expect("meta").0["replayed"], true);
    assert_eq!(first.structured_content, second.structured_content);
    let mismatch = session
        .call_tool(with_meta(
            params("hello", json!({"name": "Other"})),
            json!({"idempotencyKey": "k-1", "agentId": "a1"}),
        ))
        .await
        .expect("tools/call");
    assert_eq!(error_class(&mismatch), "idempotency-mismatch");

    // A hostile tool gets a typed error; the server keeps serving.
    let hog = session
        .call_tool(params("hog", json!({})))
        .await
        .expect("tools/call");
    assert_eq!(error_class(&hog), "memory-limit");
    let unknown = session.call_tool(params("nope", json!({}))).await;
    assert!(unknown.is_err(), "unknown tool is a protocol error");
    let bad_meta = session
        .call_tool(with_meta(
            params("hello", json!({})),
            json!({"idempotencyKey": 7}),
        ))
        .await;
    assert!(
        format!("{:?}", bad_meta.expect_err("bad _meta")).contains("idempotencyKey"),
        "the error names the key"
    );

    // Cancelling a spinning call stops it in the host.
    let handle = session
        .send_cancellable_request(
            ClientRequest::CallToolRequest(CallToolRequest::new(params("spin", json!({})))),
            PeerRequestOptions::no_options(),
        )
        .await
        .expect("request sent");
    wait_for_metric(metrics, "cofferdam_calls_in_flight{tool=\"spin\"} 1").await;
    handle
        .cancel(Some("user pressed stop".into()))
        .await
        .expect("cancel sent");
    let text = wait_for_metric(
        metrics,
        "cofferdam_calls_total{tool=\"spin\",outcome=\"cancelled\"} 1",
    )
    .await;
    assert!(
        text.contains("cofferdam_calls_in_flight{tool=\"spin\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("cofferdam_calls_total{tool=\"hello\",outcome=\"ok\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("cofferdam_breaker_state{tool=\"hello\",state=\"closed\"} 1"),
        "{text}"
    );

    let after = session
        .call_tool(params("hello", json!({"name": "after"})))
        .await
        .expect("still serving");
    assert_eq!(after.is_error, Some(false));
}

/// Adds a tool to the config and waits for the list-changed notification.
async fn reload_adds_a_tool(session: &Session, events: &mut Events, dir: &Path) {
    let extra = format!("[tools.grep]\ncomponent = {:?}\n", artifacts::GREP);
    write_config(dir, &extra);
    tokio::time::timeout(Duration::from_secs(60), events.changed.recv())
        .await
        .expect("tools/list_changed arrives")
        .expect("channel open");
    let tools = session.list_all_tools().await.expect("tools/list");
    assert!(tools.iter().any(|t| t.name == "grep"), "{tools:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_client_uses_tools_over_stdio() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let mut command = serve_command(&config);
    command.arg("--metrics").arg("127.0.0.1:0");
    let (transport, stderr) = TokioChildProcess::builder(command)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let stderr = stderr.expect("stderr piped");
    let metrics = wait_for_line(stderr, "metrics at http://").await;
    let metrics = metrics.trim_end_matches("/metrics").to_owned();
    let (handler, mut events) = client();
    let session = handler.serve(transport).await.expect("initializes");
    exercise(&session, &mut events, &metrics).await;
    reload_adds_a_tool(&session, &mut events, dir.path()).await;
    session.cancel().await.expect("closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_client_uses_tools_over_http_and_foreign_hosts_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let mut command = serve_command(&config);
    command
        .arg("--http")
        .arg("127.0.0.1:0")
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawns");
    let stderr = child.stderr.take().expect("stderr piped");
    let line = wait_for_line(stderr, "at http://").await;
    let addr = line.split('/').next().expect("address").to_owned();

    // DNS rebinding: a page on evil.example resolving to 127.0.0.1.
    let (status, _) = http_get(&addr, "/mcp", "evil.example", None).await;
    assert_eq!(status, 403);
    let (status, _) = http_get(&addr, "/mcp", "localhost", Some("http://evil.example")).await;
    assert_eq!(status, 403);
    let (status, _) = http_get(&addr, "/metrics", "evil.example", None).await;
    assert_eq!(status, 403);
    let (status, body) = http_get(&addr, "/metrics", &addr, None).await;
    assert_eq!(status, 200, "127.0.0.1:PORT is a loopback host: {body}");

    let (handler, mut events) = client();
    let transport = StreamableHttpClientTransport::from_uri(format!("http://{addr}/mcp"));
    let session = handler.serve(transport).await.expect("initializes");
    exercise(&session, &mut events, &addr).await;
    reload_adds_a_tool(&session, &mut events, dir.path()).await;
    session.cancel().await.expect("closes");
    child.kill().await.expect("stops");
}
