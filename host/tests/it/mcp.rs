//! `cofferdam serve` driven by rmcp's own client, over stdio (a child
//! process) and over streamable HTTP on loopback: list, call, progress,
//! cancellation, typed errors from hostile tools, keyed replay, reloads and
//! metrics.

use crate::common;

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
pub(crate) fn write_config(dir: &Path, extra: &str) -> PathBuf {
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

pub(crate) fn serve_command(config: &Path) -> tokio::process::Command {
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
pub(crate) async fn wait_for_line(
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

pub(crate) fn params(tool: &'static str, args: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool).with_arguments(args.as_object().cloned().unwrap_or_default())
}

pub(crate) fn with_meta(mut params: CallToolRequestParams, meta: Value) -> CallToolRequestParams {
    let mut object = RequestMetaObject::new();
    for (k, v) in meta.as_object().cloned().unwrap_or_default() {
        object.insert(k, v);
    }
    params.set_meta(object);
    params
}

pub(crate) fn error_class(result: &CallToolResult) -> String {
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
    // A stored tool error is marked as a replay too.
    let keyed_error = || {
        with_meta(
            params("hello", json!({"name": ""})),
            json!({"idempotencyKey": "k-empty", "agentId": "a1"}),
        )
    };
    let first = session.call_tool(keyed_error()).await.expect("first");
    let second = session.call_tool(keyed_error()).await.expect("second");
    assert_eq!(error_class(&first), "invalid-input");
    assert_eq!(error_class(&second), "invalid-input");
    assert_eq!(first.meta.as_ref().expect("meta").0["replayed"], false);
    assert_eq!(second.meta.as_ref().expect("meta").0["replayed"], true);

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
    // Its slot is freed as the call unwinds, a moment after its outcome is
    // counted: wait for it rather than race it.
    wait_for_metric(metrics, "cofferdam_calls_in_flight{tool=\"spin\"} 0").await;
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

// ---------------------------------------------------------------------------
// The server under abuse: raw JSON-RPC over stdio and raw HTTP/1.1 on
// loopback, so each test controls exactly what the client does wrong.

/// `cofferdam serve` over stdio driven line by line.
struct RawStdio {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    /// The `/metrics` address, when started with one.
    metrics: Option<String>,
}

impl RawStdio {
    /// Calls `hello` for Ada as request `id` and checks the greeting: the
    /// session still serves calls. Returns the answer.
    async fn greets(&mut self, id: u64) -> Value {
        self.send(&call_request(id, "hello", json!({"name": "Ada"})))
            .await;
        let answer = self.answer(&json!(id)).await;
        assert_eq!(
            answer["result"]["structuredContent"]["greeting"], "Hello, Ada!",
            "{answer}"
        );
        answer
    }

    /// A server on a fresh config (`write_config` with `extra`), initialized.
    /// The directory must outlive the server.
    async fn initialized(extra: &str, with_metrics: bool) -> (tempfile::TempDir, Self) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_config(dir.path(), extra);
        let mut server = Self::start(&config, with_metrics).await;
        server.initialize().await;
        (dir, server)
    }

    async fn start(config: &Path, with_metrics: bool) -> Self {
        let mut command = serve_command(config);
        if with_metrics {
            command.arg("--metrics").arg("127.0.0.1:0");
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawns");
        let stderr = child.stderr.take().expect("stderr piped");
        let metrics = if with_metrics {
            let line = wait_for_line(stderr, "metrics at http://").await;
            Some(line.trim_end_matches("/metrics").to_owned())
        } else {
            wait_for_line(stderr, "over stdio").await;
            None
        };
        Self {
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().expect("stdout piped")).lines(),
            child,
            metrics,
        }
    }

    async fn send(&mut self, message: &Value) {
        self.send_raw(format!("{message}\n").as_bytes()).await;
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).await.expect("writes");
        stdin.flush().await.expect("flushes");
    }

    /// The next line on stdout, as JSON; `None` once stdout ends.
    async fn next(&mut self) -> Option<Value> {
        let line = tokio::time::timeout(Duration::from_secs(60), self.stdout.next_line())
            .await
            .expect("the server answers within a minute")
            .expect("stdout readable")?;
        Some(serde_json::from_str(&line).expect("stdout carries JSON only"))
    }

    /// The answer to request `id`, skipping notifications.
    async fn answer(&mut self, id: &Value) -> Value {
        loop {
            let message = self.next().await.expect("answered before stdout ends");
            if message.get("id") == Some(id) && message.get("method").is_none() {
                return message;
            }
        }
    }

    async fn initialize(&mut self) {
        self.send(&initialize_request(0)).await;
        let answer = self.answer(&json!(0)).await;
        assert_eq!(
            answer["result"]["serverInfo"]["name"], "cofferdam",
            "{answer}"
        );
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
    }
}

fn initialize_request(id: u64) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"},
        },
    })
}

fn call_request(id: u64, tool: &str, arguments: Value) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    })
}

/// Starts `cofferdam serve --http 127.0.0.1:0` with `args`; returns the
/// child and its address.
pub(crate) async fn start_http(config: &Path, args: &[&str]) -> (tokio::process::Child, String) {
    let mut command = serve_command(config);
    command
        .arg("--http")
        .arg("127.0.0.1:0")
        .args(args)
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawns");
    let stderr = child.stderr.take().expect("stderr piped");
    let line = wait_for_line(stderr, "at http://").await;
    let addr = line.split('/').next().expect("address").to_owned();
    (child, addr)
}

/// One HTTP/1.1 response: status, headers (names lowercase), body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The JSON-RPC messages in an event-stream or JSON body.
    fn messages(&self) -> Vec<Value> {
        if self.header("content-type") == Some("application/json") {
            return vec![serde_json::from_str(&self.body).expect("json body")];
        }
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| serde_json::from_str(d).expect("json event"))
            .collect()
    }
}

/// A kept-alive HTTP/1.1 connection speaking MCP by hand.
struct RawHttp {
    stream: BufReader<tokio::net::TcpStream>,
}

impl RawHttp {
    async fn connect(addr: &str) -> Self {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        Self {
            stream: BufReader::new(stream),
        }
    }

    /// POSTs `body` to /mcp in one write and reads the whole response.
    async fn post(&mut self, session: Option<&str>, body: &str) -> Response {
        let session = session
            .map(|s| format!("Mcp-Session-Id: {s}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "POST /mcp HTTP/1.1\r\nHost: localhost\r\nAccept: application/json, text/event-stream\r\n\
             Content-Type: application/json\r\n{session}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .expect("sends");
        tokio::time::timeout(Duration::from_secs(60), self.response())
            .await
            .expect("answered within a minute")
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        self.stream.read_line(&mut line).await.expect("reads");
        line.trim_end_matches(['\r', '\n']).to_owned()
    }

    async fn response(&mut self) -> Response {
        let status_line = self.line().await;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a status line: {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header");
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v): &(String, String)| v.clone())
        };
        let mut body = Vec::new();
        if find("transfer-encoding").as_deref() == Some("chunked") {
            loop {
                let size = usize::from_str_radix(&self.line().await, 16).expect("chunk size");
                let mut chunk = vec![0; size + 2];
                self.stream.read_exact(&mut chunk).await.expect("chunk");
                body.extend_from_slice(&chunk[..size]);
                if size == 0 {
                    break;
                }
            }
        } else if let Some(length) = find("content-length") {
            let mut chunk = vec![0; length.parse().expect("length")];
            self.stream.read_exact(&mut chunk).await.expect("body");
            body = chunk;
        }
        Response {
            status,
            headers,
            body: String::from_utf8(body).expect("utf-8 body"),
        }
    }

    /// Initializes a session; returns its id.
    async fn initialize(&mut self, initialized: bool) -> String {
        let response = self.post(None, &initialize_request(0).to_string()).await;
        assert_eq!(response.status, 200, "{}", response.body);
        let session = response
            .header("mcp-session-id")
            .expect("a session id")
            .to_owned();
        if initialized {
            let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
            let response = self.post(Some(&session), &note.to_string()).await;
            assert_eq!(response.status, 202, "{}", response.body);
        }
        session
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_calls_on_a_kept_alive_connection_do_not_wait_for_delayed_acks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let (mut child, addr) = start_http(&config, &[]).await;
    let mut http = RawHttp::connect(&addr).await;
    let session = http.initialize(true).await;
    let mut samples = Vec::new();
    for id in 1..=21 {
        let call = call_request(id, "hello", json!({"name": "Ada"})).to_string();
        let started = std::time::Instant::now();
        let response = http.post(Some(&session), &call).await;
        let took = started.elapsed();
        let messages = response.messages();
        assert_eq!(
            messages.last().expect("an answer")["result"]["structuredContent"]["greeting"],
            "Hello, Ada!"
        );
        // The first call warms the tool up.
        if id > 1 {
            samples.push(took);
        }
    }
    let median = median(samples);
    eprintln!("median of 20 kept-alive calls: {median:?}");
    // A delayed ACK holds a write back for at least 40 ms on Linux.
    assert!(median < Duration::from_millis(25), "median {median:?}");
    child.kill().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sessions_are_capped_and_unused_ones_closed_but_not_mid_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = format!("[tools.sleepy]\ncomponent = {:?}\n", artifacts::SLEEPY);
    let config = write_config(dir.path(), &extra);
    let (mut child, addr) = start_http(
        &config,
        &[
            "--max-sessions",
            "2",
            "--session-init-timeout",
            "1s",
            "--session-idle-timeout",
            "2s",
        ],
    )
    .await;
    let mut http = RawHttp::connect(&addr).await;
    let busy = http.initialize(true).await;
    // A client that initializes and never says `initialized`.
    let _abandoned = http.initialize(false).await;

    // The cap: a third session is refused, with a hint when to retry.
    let refused = http.post(None, &initialize_request(0).to_string()).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.header("retry-after").is_some());
    assert!(
        refused.body.contains("too many MCP sessions"),
        "{}",
        refused.body
    );

    // A call longer than the idle timeout keeps its session alive.
    let call = tokio::spawn({
        let (addr, busy) = (addr.clone(), busy.clone());
        async move {
            let mut http = RawHttp::connect(&addr).await;
            let call = call_request(1, "sleepy", json!({"millis": 3000})).to_string();
            http.post(Some(&busy), &call).await
        }
    });
    // The abandoned session is closed after the init timeout: room again.
    let mut fresh = None;
    for _ in 0..300 {
        let response = http.post(None, &initialize_request(0).to_string()).await;
        if response.status == 200 {
            fresh = response.header("mcp-session-id").map(str::to_owned);
            break;
        }
        assert_eq!(response.status, 503, "{}", response.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fresh = fresh.expect("the abandoned session is closed within 30 s");
    let answer = call.await.expect("call task");
    assert_eq!(answer.status, 200);
    let result = answer.messages().pop().expect("an answer")["result"].clone();
    assert_eq!(
        result["isError"], false,
        "the session lived through the call: {result}"
    );
    let ping = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}).to_string();
    assert_eq!(http.post(Some(&busy), &ping).await.status, 200);

    // Unused for the idle timeout, a session is closed: 404, initialize again.
    let mut closed = false;
    for _ in 0..300 {
        let status = http.post(Some(&fresh), &ping).await.status;
        if status == 404 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed, "an idle session is closed within 30 s");
    child.kill().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_http_clients_are_cut_off_and_cannot_lock_others_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let (mut child, addr) = start_http(
        &config,
        &[
            "--max-connections",
            "4",
            "--header-timeout",
            "1s",
            "--body-timeout",
            "1s",
        ],
    )
    .await;
    // Every connection allowed, each sending half its headers.
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connects");
        stream
            .write_all(b"POST /mcp HTTP/1.1\r\nHost: localhost\r\n")
            .await
            .expect("sends");
        slow.push(stream);
    }
    // Another client is served once a slow one is cut off.
    let (status, _) = tokio::time::timeout(
        Duration::from_secs(30),
        http_get(&addr, "/metrics", "localhost", None),
    )
    .await
    .expect("served within 30 s");
    assert_eq!(status, 200);
    let cut_off = |stream: &tokio::net::TcpStream| {
        let mut byte = [0; 1];
        !matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    };
    assert!(
        slow.iter().any(cut_off),
        "it was served because a slow connection was closed, not beside them"
    );
    for mut stream in slow {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut rest))
            .await
            .expect("every slow connection is closed")
            .ok();
    }

    // A body that never arrives in full is cut off too.
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connects");
    stream
        .write_all(
            b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nAccept: application/json, text/event-stream\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\":",
        )
        .await
        .expect("sends");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .expect("a trickled body is cut off")
        .ok();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    child.kill().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_stops_reading_a_client_that_does_not_read_its_answers() {
    let (_dir, mut server) = RawStdio::initialized("", false).await;
    const REQUESTS: u64 = 50_000;
    let mut stdin = server.stdin.take().expect("stdin");
    let mut writer = tokio::spawn(async move {
        for id in 1..=REQUESTS {
            let ping = format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"ping\"}}\n");
            stdin.write_all(ping.as_bytes()).await.expect("writes");
        }
        stdin
    });
    // Nobody reads stdout: the server must stop reading stdin, so the
    // client's writes block instead of the server buffering 50,000 answers.
    let finished = tokio::time::timeout(Duration::from_secs(3), &mut writer).await;
    assert!(finished.is_err(), "all {REQUESTS} requests were taken in");
    // Reading resumes the flow; every request is answered once.
    let mut seen = std::collections::HashSet::new();
    while (seen.len() as u64) < REQUESTS {
        let answer = server.next().await.expect("answers");
        assert!(answer["result"].is_object(), "{answer}");
        assert!(seen.insert(answer["id"].as_u64().expect("id")), "{answer}");
    }
    server.stdin = Some(writer.await.expect("writer"));
}

/// A stdio server with metrics, initialized, whose request 1 (`spin`, which
/// computes until its 60 s deadline unless stopped) is running; and its
/// metrics address.
async fn spinning_over_stdio() -> (tempfile::TempDir, RawStdio, String) {
    let (dir, mut server) = RawStdio::initialized("", true).await;
    server.send(&call_request(1, "spin", json!({}))).await;
    let metrics = server.metrics.clone().expect("metrics");
    wait_for_metric(&metrics, "cofferdam_calls_in_flight{tool=\"spin\"} 1").await;
    (dir, server, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_end_of_input_cancels_running_calls() {
    let (_dir, mut server, _) = spinning_over_stdio().await;
    // The client hangs up its end of stdin mid-call.
    drop(server.stdin.take());
    let answer = server.answer(&json!(1)).await;
    assert_eq!(
        answer["result"]["structuredContent"]["error"]["class"], "cancelled",
        "{answer}"
    );
    let status = tokio::time::timeout(Duration::from_secs(30), server.child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cancel_stops_its_running_call_and_the_session_goes_on() {
    let (_dir, mut server, metrics) = spinning_over_stdio().await;
    server
        .send(
            &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                      "params": {"requestId": 1, "reason": "the user gave up"}}),
        )
        .await;
    wait_for_metric(
        &metrics,
        "cofferdam_calls_total{tool=\"spin\",outcome=\"cancelled\"} 1",
    )
    .await;
    wait_for_metric(&metrics, "cofferdam_calls_in_flight{tool=\"spin\"} 0").await;
    server.greets(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_above_max_structured_bytes_comes_once_as_text() {
    let (_dir, mut server) =
        RawStdio::initialized("[mcp]\nmax_structured_bytes = 1024\n", false).await;
    let long = "é".repeat(1000); // 2,000 bytes of UTF-8
    server
        .send(&call_request(1, "hello", json!({"name": long})))
        .await;
    let large = server.answer(&json!(1)).await;
    let result = &large["result"];
    assert_eq!(result["isError"], false, "{large}");
    assert!(result.get("structuredContent").is_none(), "{large}");
    assert_eq!(result["_meta"]["structuredOmitted"], true, "{large}");
    let text = result["content"][0]["text"].as_str().expect("text");
    let output: Value = serde_json::from_str(text).expect("the text is the output");
    assert_eq!(output["greeting"], format!("Hello, {long}!"));
    let small = server.greets(2).await;
    assert!(
        small["result"]["_meta"].get("structuredOmitted").is_none(),
        "{small}"
    );
}

/// Over stdio a call's arguments reach the tool as the client wrote them
/// (escapes, spacing, key order); a keyed call is still recognized by what
/// its arguments mean, not by how they are spelt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_call_spelt_differently_is_replayed_over_stdio() {
    let (_dir, mut server) = RawStdio::initialized("", false).await;
    let keyed = |id: u64, arguments: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"_meta":{{"idempotencyKey":"k-spelt","agentId":"a1"}},"name":"hello","arguments":{arguments}}}}}"#
        )
    };
    let spellings = [r#"{"name":"Zo\u00eb"}"#, r#"{ "name" :  "Zoë" }"#];
    let mut answers = Vec::new();
    for (id, arguments) in (1..).zip(spellings) {
        server
            .send_raw(format!("{}\n", keyed(id, arguments)).as_bytes())
            .await;
        answers.push(server.answer(&json!(id)).await);
    }
    for answer in &answers {
        assert_eq!(
            answer["result"]["structuredContent"]["greeting"], "Hello, Zoë!",
            "{answer}"
        );
    }
    assert_eq!(answers[0]["result"]["_meta"]["replayed"], false);
    assert_eq!(answers[1]["result"]["_meta"]["replayed"], true);
    // Other arguments under the same key are refused.
    server
        .send_raw(format!("{}\n", keyed(3, r#"{"name" : "Zoe"}"#)).as_bytes())
        .await;
    let other = server.answer(&json!(3)).await;
    assert_eq!(
        other["result"]["structuredContent"]["error"]["class"], "idempotency-mismatch",
        "{other}"
    );
    // Unkeyed, the spaced spelling reaches the tool itself.
    let unkeyed = format!(
        r#"{{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{{"name":"hello","arguments":{}}}}}"#,
        spellings[1]
    );
    server.send_raw(format!("{unkeyed}\n").as_bytes()).await;
    let answer = server.answer(&json!(4)).await;
    assert_eq!(
        answer["result"]["structuredContent"]["greeting"], "Hello, Zoë!",
        "{answer}"
    );
    // A repeated key reaches the tool as sent, and the Rust SDK refuses it.
    let repeated = unkeyed
        .replace("4", "5")
        .replace(spellings[1], r#"{"name":"a","name":"b"}"#);
    server.send_raw(format!("{repeated}\n").as_bytes()).await;
    let answer = server.answer(&json!(5)).await;
    let error = &answer["result"]["structuredContent"]["error"];
    assert_eq!(error["class"], "invalid-input", "{answer}");
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("duplicate field `name`")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_before_initialize_do_not_end_the_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let mut server = RawStdio::start(&config, false).await;
    server
        .send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    server
        .send(&json!({"jsonrpc": "2.0", "id": "x", "result": {}}))
        .await;
    server
        .send(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}}))
        .await;
    server.initialize().await;
    server.greets(1).await;

    // Over HTTP a stray notification is refused and changes nothing.
    let (mut child, addr) = start_http(&config, &[]).await;
    let mut http = RawHttp::connect(&addr).await;
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let response = http.post(None, &note.to_string()).await;
    assert!((400..500).contains(&response.status), "{}", response.status);
    let session = http.initialize(true).await;
    let call = call_request(1, "hello", json!({"name": "Ada"})).to_string();
    let response = http.post(Some(&session), &call).await;
    assert_eq!(response.status, 200);
    child.kill().await.expect("stops");
}

/// `tools/call` requests whose params have the wrong types.
fn mistyped_calls() -> [Value; 3] {
    [
        json!({"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": {"name": 5}}),
        json!({"jsonrpc": "2.0", "id": 12, "method": "tools/call",
               "params": {"name": "hello", "arguments": "Ada"}}),
        json!({"jsonrpc": "2.0", "id": 13, "method": "tools/call"}),
    ]
}

/// A large argument crosses many reads of stdin, and a small request sent in
/// the same write behind it is still read; the answer carries the output
/// once as text and once as structured content, and the two agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mebibyte_argument_and_a_request_behind_it_are_answered_over_stdio() {
    let (_dir, mut server) =
        RawStdio::initialized("[tools.hello.limits]\nmax_output_bytes = 4194304\n", false).await;
    let name = "é".repeat(512 * 1024);
    let call = |id: u64, name: &str| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": "hello", "arguments": {"name": name}}})
    };
    let both = format!("{}\n{}\n", call(51, &name), call(52, "Ada"));
    server.send_raw(both.as_bytes()).await;
    // The small call may well be answered first.
    let (mut large, mut small) = (None, None);
    while large.is_none() || small.is_none() {
        let message = server.next().await.expect("answered before stdout ends");
        match message.get("id").and_then(Value::as_u64) {
            Some(51) => large = Some(message),
            Some(52) => small = Some(message),
            _ => {}
        }
    }
    let (large, small) = (large.expect("answer 51"), small.expect("answer 52"));
    for (answer, name) in [(&large, name.as_str()), (&small, "Ada")] {
        let result = &answer["result"];
        assert_eq!(result["isError"], false, "{}", result["content"][0]["text"]);
        let greeting = format!("Hello, {name}!");
        assert_eq!(result["structuredContent"]["greeting"], greeting.as_str());
        let text: Value =
            serde_json::from_str(result["content"][0]["text"].as_str().expect("text content"))
                .expect("the text is the output's JSON");
        assert_eq!(text, result["structuredContent"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_error_answers_over_stdio() {
    let (_dir, mut server) = RawStdio::initialized("", false).await;
    for request in mistyped_calls() {
        server.send(&request).await;
        let answer = server.answer(&request["id"]).await;
        assert_eq!(answer["error"]["code"], -32602, "{answer}");
    }
    // Too large to read.
    let mut line = br#"{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{"name":"hello","arguments":{"name":""#.to_vec();
    line.resize(line.len() + 17 * 1024 * 1024, b'a');
    line.extend_from_slice(b"\"}}}\n");
    server.send_raw(&line).await;
    let answer = server.answer(&json!(41)).await;
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .expect("message")
            .contains("longer than")
    );
    // Too deep to parse.
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{{"name":"hello","arguments":{{"x":{}{}}}}}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    server.send_raw(format!("{deep}\n").as_bytes()).await;
    let answer = server.answer(&json!(42)).await;
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .expect("message")
            .contains("nested")
    );
    // And the session goes on.
    server.greets(43).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistyped_tool_calls_are_invalid_params_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let (mut child, addr) = start_http(&config, &[]).await;
    let mut http = RawHttp::connect(&addr).await;
    let session = http.initialize(true).await;
    for request in mistyped_calls() {
        let response = http.post(Some(&session), &request.to_string()).await;
        let answer = response.messages().pop().expect("an answer");
        assert_eq!(answer["error"]["code"], -32602, "{answer}");
        assert_eq!(answer["id"], request["id"]);
    }
    child.kill().await.expect("stops");
}

/// Calls `introspect` reporting progress 2,000 times and checks the last
/// report arrives.
async fn final_progress_arrives(session: &Session, events: &mut Events) {
    let result = session
        .call_tool(params("introspect", json!({"progress": 2000})))
        .await
        .expect("tools/call");
    assert_eq!(result.is_error, Some(false), "{result:?}");
    let mut seen = 0;
    loop {
        let p = tokio::time::timeout(Duration::from_secs(30), events.progress.recv())
            .await
            .expect("the final report arrives")
            .expect("channel open");
        seen += 1;
        assert!(seen <= 2000);
        if p.progress == 2000.0 {
            assert_eq!(p.total, Some(2000.0));
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_floods_are_coalesced_keeping_the_latest_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");

    let (transport, _) = TokioChildProcess::builder(serve_command(&config))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawns");
    let (handler, mut events) = client();
    let session = handler.serve(transport).await.expect("initializes");
    final_progress_arrives(&session, &mut events).await;
    session.cancel().await.expect("closes");

    let (mut child, addr) = start_http(&config, &[]).await;
    let (handler, mut events) = client();
    let transport = StreamableHttpClientTransport::from_uri(format!("http://{addr}/mcp"));
    let session = handler.serve(transport).await.expect("initializes");
    final_progress_arrives(&session, &mut events).await;
    session.cancel().await.expect("closes");
    child.kill().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_reads_its_pipe_without_blocking_and_leaves_it_as_it_found_it() {
    use std::io::{BufRead as _, Write as _};
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    // The server's stdin is a pipe whose read end this test shares (the same
    // open file description), so it sees the flags the server sets on it.
    let (reader, mut writer) = std::io::pipe().expect("pipe");
    let shared = reader.try_clone().expect("dup");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cofferdam"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--artifact-dir")
        .arg(common::shared_data_dir().join("artifacts"))
        .env_remove("COFFERDAM_LOG")
        .stdin(reader)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawns");
    let initialize = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}});
    writeln!(writer, "{initialize}").expect("write");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("answer");
    assert!(line.contains("\"result\""), "{line}");
    let nonblocking = |fd: &std::io::PipeReader| {
        rustix::fs::fcntl_getfl(fd)
            .expect("flags")
            .contains(rustix::fs::OFlags::NONBLOCK)
    };
    assert!(
        nonblocking(&shared),
        "read as a non-blocking pipe while serving"
    );
    drop(writer);
    let status = child.wait().expect("exits");
    assert!(status.success(), "{status:?}");
    assert!(
        !nonblocking(&shared),
        "the pipe is blocking again after the server left"
    );
}
