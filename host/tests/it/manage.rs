//! Agents over MCP as who they are: bearer tokens on the HTTP transport,
//! and management tools (schedules, tasks, escalations) that act as the
//! token's agent within the CLI's rules. Driven by rmcp's client against
//! the server's router on loopback, on a simulated calendar clock.

use crate::common;
use crate::mcp::{params, with_meta};

use std::sync::Arc;

use cofferdam::{
    CancellationToken, ClientSpec, EscalationReason, Grant, HistoryQuery, Host, HttpAccess, Manage,
    ManualWallClock, McpServer, NewEscalation, ScheduleConfig, Timestamp, ToolPolicy, token_digest,
};
use cofferdam_test_artifacts as artifacts;
use rmcp::model::CallToolResult;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const TOKEN_A: &str = "token-of-agent-a";
const TOKEN_B: &str = "token-of-agent-b";
const TOKEN_PLAIN: &str = "token-of-a-tool-only-client";

fn client(name: &str, token: &str, agent: &str, grant: Grant) -> ClientSpec {
    ClientSpec {
        name: name.into(),
        token_sha256: hex(token),
        agent: agent.into(),
        tenant: Some(format!("tenant-of-{agent}")),
        grant,
    }
}

fn hex(token: &str) -> String {
    token_digest(token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn managing() -> Grant {
    Grant {
        tools: vec!["hello".into(), "sleepy".into(), "trap".into()],
        manage: [Manage::Schedules, Manage::Tasks, Manage::Escalations].into(),
        resolve_escalations: false,
    }
}

fn clients() -> Vec<ClientSpec> {
    vec![
        client("a", TOKEN_A, "agent-a", managing()),
        client("b", TOKEN_B, "agent-b", managing()),
        client(
            "plain",
            TOKEN_PLAIN,
            "agent-plain",
            Grant {
                tools: vec!["hello".into()],
                ..Grant::default()
            },
        ),
    ]
}

/// The server under test: a host on a manual clock at 07:00 UTC (08:00 in
/// Berlin) with `hello`, `sleepy` and `trap` (sensitive), a quota of two
/// schedules per owner, served on loopback.
struct Served {
    host: Host,
    server: McpServer,
    clock: Arc<ManualWallClock>,
    addr: String,
    stop: CancellationToken,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn served() -> Served {
    let clock = Arc::new(ManualWallClock::new(at("2026-11-30T07:00:00Z")));
    let host = common::builder()
        .wall_clock(clock.clone())
        .schedule_config(ScheduleConfig {
            quota_per_owner: 2,
            ..ScheduleConfig::default()
        })
        .build()
        .expect("host");
    common::load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    common::load(&host, artifacts::SLEEPY, ToolPolicy::default()).await;
    let sensitive = ToolPolicy {
        sensitive: true,
        ..ToolPolicy::default()
    };
    common::load(&host, artifacts::TRAP, sensitive).await;
    serve(host, clock).await
}

/// `host` served on loopback to [`clients`].
async fn serve(host: Host, clock: Arc<ManualWallClock>) -> Served {
    serve_with(host, clock, &HttpAccess::default()).await
}

async fn serve_with(host: Host, clock: Arc<ManualWallClock>, access: &HttpAccess) -> Served {
    let server = McpServer::new(host.clone());
    server.set_clients(&clients()).expect("clients");
    let stop = CancellationToken::new();
    let router = server.router(access, stop.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let shutdown = stop.clone().cancelled_owned();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
    });
    Served {
        host,
        server,
        clock,
        addr,
        stop,
    }
}

fn at(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

type Session = RunningService<RoleClient, ()>;

async fn connect(addr: &str, token: &str) -> Session {
    let config = StreamableHttpClientTransportConfig::with_uri(format!("http://{addr}/mcp"))
        .auth_header(token);
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("initializes with a valid token")
}

async fn call(session: &Session, tool: &'static str, args: Value) -> CallToolResult {
    session
        .call_tool(params(tool, args))
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

/// A management call that must succeed: its structured content.
async fn ok(session: &Session, tool: &'static str, args: Value) -> Value {
    let result = call(session, tool, args).await;
    assert_ne!(result.is_error, Some(true), "{tool}: {result:?}");
    result.structured_content.expect("structured content")
}

/// A management call that must be refused: the rule it names.
async fn refused(session: &Session, tool: &'static str, args: Value) -> String {
    let result = call(session, tool, args).await;
    assert_eq!(
        result.is_error,
        Some(true),
        "{tool} must be refused: {result:?}"
    );
    let error = &result.structured_content.expect("structured error")["error"];
    error["rule"].as_str().expect("rule").to_owned()
}

/// The audit records `query` selects once there are `count` (they are
/// written asynchronously, in order).
async fn audited(host: &Host, query: HistoryQuery, count: usize) -> Vec<cofferdam::AttemptRecord> {
    for _ in 0..400 {
        let records = host.history(&query).expect("history");
        if records.len() >= count {
            assert_eq!(records.len(), count, "{records:?}");
            return records;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("fewer than {count} audit records for {query:?}");
}

async fn tool_names(session: &Session) -> Vec<String> {
    let mut names: Vec<String> = session
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    names
}

fn daily(name: &str) -> Value {
    json!({
        "name": name,
        "cron": "0 9 * * *",
        "timezone": "Europe/Berlin",
        "tool": "hello",
        "input": {"name": name},
        "budget_tokens": 5000,
        "timeout_ms": 60000,
    })
}

/// Status line and headers of a raw `POST /mcp` initialize.
async fn raw_initialize(addr: &str, authorization: Option<&str>) -> (u16, String) {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "0"}},
    });
    raw_post(addr, authorization, None, &body).await
}

/// Status line and headers (lowercase) of a raw `POST /mcp`.
async fn raw_post(
    addr: &str,
    authorization: Option<&str>,
    session: Option<&str>,
    body: &Value,
) -> (u16, String) {
    let body = body.to_string();
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let session = session.map_or(String::new(), |s| format!("Mcp-Session-Id: {s}\r\n"));
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\n{auth}{session}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.expect("read") == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head.to_ascii_lowercase())
}

#[tokio::test]
async fn http_needs_a_known_token_and_a_reload_revokes_one() {
    let served = served().await;
    let addr = &served.addr;

    let (status, head) = raw_initialize(addr, None).await;
    assert_eq!(status, 401, "{head}");
    assert!(
        head.contains("www-authenticate: bearer realm=\"cofferdam\""),
        "{head}"
    );
    let (status, head) = raw_initialize(addr, Some("Bearer not-a-known-token")).await;
    assert_eq!(status, 401, "{head}");
    assert!(head.contains("error=\"invalid_token\""), "{head}");
    let (status, _) = raw_initialize(addr, Some(&format!("Basic {TOKEN_A}"))).await;
    assert_eq!(status, 401, "only bearer tokens count");
    let (status, head) = raw_initialize(addr, Some(&format!("Bearer {TOKEN_A}"))).await;
    assert_eq!(status, 200, "{head}");
    // A's session is A's: B's token cannot ride on it.
    let session = head
        .lines()
        .find_map(|l| l.strip_prefix("mcp-session-id: "))
        .expect("a session id")
        .trim()
        .to_owned();
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let (status, _) = raw_post(
        addr,
        Some(&format!("Bearer {TOKEN_B}")),
        Some(&session),
        &list,
    )
    .await;
    assert_eq!(status, 403, "another client's session");

    // Nothing ran for the refused requests, and a session opened with a
    // token that is then reloaded away is refused on its next request.
    let session = connect(addr, TOKEN_B).await;
    ok(&session, "schedule_list", json!({})).await;
    let without_b: Vec<ClientSpec> = clients().into_iter().filter(|c| c.name != "b").collect();
    served.server.set_clients(&without_b).expect("reload");
    let after = session
        .call_tool(params("hello", json!({"name": "x"})))
        .await;
    assert!(after.is_err(), "a revoked token is refused: {after:?}");
    assert_eq!(
        served.host.stats("hello").unwrap().invocations,
        0,
        "no call ran for a refused request"
    );
    let (status, _) = raw_initialize(addr, Some(&format!("Bearer {TOKEN_B}"))).await;
    assert_eq!(status, 401);
    // A reload that empties the list does not turn authentication off.
    served.server.set_clients(&[]).expect("reload");
    assert_eq!(raw_initialize(addr, None).await.0, 401);
    assert_eq!(
        raw_initialize(addr, Some(&format!("Bearer {TOKEN_A}")))
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn a_fallback_outside_the_grant_is_not_run_for_the_client() {
    let clock = Arc::new(ManualWallClock::new(at("2026-11-30T07:00:00Z")));
    let host = common::builder().build().expect("host");
    let primary = ToolPolicy {
        fallbacks: vec![cofferdam::ToolName::new("strong").expect("name")],
        ..ToolPolicy::default()
    };
    common::load(&host, artifacts::HELLO, primary).await;
    let strong = ToolPolicy {
        name: Some(cofferdam::ToolName::new("strong").expect("name")),
        ..ToolPolicy::default()
    };
    common::load(&host, artifacts::HELLO, strong).await;
    host.set_breaker_mode("hello", cofferdam::BreakerMode::ForcedOpen)
        .expect("set");
    let served = serve(host, clock).await;
    // `plain` may call hello only: the open breaker is its answer.
    let plain = connect(&served.addr, TOKEN_PLAIN).await;
    let result = call(&plain, "hello", json!({"name": "x"})).await;
    assert_eq!(crate::mcp::error_class(&result), "circuit-open");
    // A client granted every tool gets the fallback's answer.
    let mut everything = clients();
    everything[2].grant.tools = vec!["*".into()];
    served.server.set_clients(&everything).expect("reload");
    let result = call(&plain, "hello", json!({"name": "x"})).await;
    assert_ne!(result.is_error, Some(true), "{result:?}");
    assert_eq!(result.meta.as_ref().unwrap().0["tool"], "strong");
}

#[tokio::test]
async fn a_token_decides_who_calls_whatever_meta_says() {
    let served = served().await;
    let session = connect(&served.addr, TOKEN_A).await;
    let spoofed = with_meta(
        params("hello", json!({"name": "spoof"})),
        json!({"agentId": "agent-b", "tenantId": "tenant-of-agent-b"}),
    );
    let result = session.call_tool(spoofed).await.expect("call");
    assert_ne!(result.is_error, Some(true), "{result:?}");
    let attempts = audited(&served.host, HistoryQuery::default(), 1).await;
    assert_eq!(attempts[0].agent.as_deref(), Some("agent-a"));
    // A task id is the caller's own: it cannot name another's run.
    let named = with_meta(
        params("hello", json!({"name": "t"})),
        json!({"taskId": "news-digest-20261130T0800Z"}),
    );
    session.call_tool(named).await.expect("call");
    let query = HistoryQuery {
        task: Some("agent-a/news-digest-20261130T0800Z".into()),
        ..HistoryQuery::default()
    };
    audited(&served.host, query, 1).await;
    assert_eq!(attempts[0].tenant.as_deref(), Some("tenant-of-agent-a"));

    // A client sees and calls only the tools its grant names, and no
    // management tools unless granted.
    let plain = connect(&served.addr, TOKEN_PLAIN).await;
    assert_eq!(tool_names(&plain).await, ["hello"]);
    for tool in ["sleepy", "schedule_list"] {
        let refused = plain.call_tool(params(tool, json!({}))).await;
        assert!(refused.is_err(), "{tool} is not offered: {refused:?}");
    }
    let names = tool_names(&session).await;
    for expected in ["hello", "schedule_create", "task_status", "escalation_list"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n == "escalation_resolve"),
        "resolving is a human decision, not offered without the grant: {names:?}"
    );
    let resolve = session
        .call_tool(params(
            "escalation_resolve",
            json!({"id": 1, "resolution": "abort"}),
        ))
        .await;
    assert!(resolve.is_err(), "{resolve:?}");
}

#[tokio::test]
async fn a_daily_schedule_made_over_mcp_runs_under_its_budget_and_reports_its_cost() {
    let served = served().await;
    let session = connect(&served.addr, TOKEN_A).await;
    let created = ok(&session, "schedule_create", daily("news-digest")).await;
    assert_eq!(created["owner"], "agent-a");
    assert_eq!(created["budget_tokens"], 5000);
    assert_eq!(created["next_run"]["utc"], "2026-11-30T08:00:00Z");
    // Creating it again is harmless.
    ok(&session, "schedule_create", daily("news-digest")).await;

    let runner = served.host.schedules().runner();
    served.clock.set(at("2026-11-30T07:59:00Z"));
    assert!(runner.tick().await.unwrap().fired.is_empty());
    served.clock.set(at("2026-11-30T08:00:00Z"));
    let runs = runner.tick().await.unwrap().finished().await;
    assert_eq!(runs.len(), 1, "{runs:?}");

    let history = ok(&session, "schedule_history", json!({"name": "news-digest"})).await;
    let run = &history["runs"][0];
    assert_eq!(run["status"], "succeeded", "{history}");
    let tokens = run["tokens"].as_u64().expect("tokens");
    assert!((1..=5000).contains(&tokens), "{history}");
    assert_eq!(history["total_tokens"], tokens);
    let query = HistoryQuery {
        agent: Some("agent-a".into()),
        ..HistoryQuery::default()
    };
    let runs = audited(&served.host, query, 1).await;
    assert_eq!(
        runs[0].tenant.as_deref(),
        Some("tenant-of-agent-a"),
        "the run is charged to the creator's tenant too"
    );

    let shown = ok(&session, "schedule_show", json!({"name": "news-digest"})).await;
    assert_eq!(shown["runs"], 1);
    assert_eq!(shown["next_run"]["utc"], "2026-12-01T08:00:00Z");
    let paused = ok(
        &session,
        "schedule_pause",
        json!({"name": "news-digest", "reason": "on holiday"}),
    )
    .await;
    assert_eq!(paused["status"]["state"], "paused");
    ok(&session, "schedule_pause", json!({"name": "news-digest"})).await;
    let resumed = ok(&session, "schedule_resume", json!({"name": "news-digest"})).await;
    assert_eq!(resumed["status"]["state"], "active");
    let deleted = ok(&session, "schedule_delete", json!({"name": "news-digest"})).await;
    assert_eq!(deleted["deleted"], true);
    let again = ok(&session, "schedule_delete", json!({"name": "news-digest"})).await;
    assert_eq!(again["deleted"], false, "deleting twice is harmless");
}

#[tokio::test]
async fn every_refusal_names_its_rule() {
    let served = served().await;
    let session = connect(&served.addr, TOKEN_A).await;
    let with = |changes: Value| {
        let mut spec = daily("rules");
        for (k, v) in changes.as_object().unwrap() {
            spec[k] = v.clone();
        }
        spec
    };
    let cases = [
        (with(json!({"cron": "*/5 * * * *"})), "too-frequent"),
        (with(json!({"budget_tokens": 1_000_000})), "budget-too-high"),
        (with(json!({"tool": "trap"})), "sensitive-tool"),
        (with(json!({"tool": "nonesuch"})), "tool-not-allowed"),
        (with(json!({"cron": "0 25 * * *"})), "invalid-cron"),
        (
            with(json!({"timezone": "Mars/Olympus"})),
            "unknown-time-zone",
        ),
        (with(json!({"timeout_ms": 0})), "bad-timeout"),
        (with(json!({"name": "no spaces"})), "invalid-name"),
        (with(json!({"colour": "red"})), "invalid-arguments"),
        (with(json!({"notify": ["pager"]})), "unknown-sink"),
    ];
    for (spec, rule) in cases {
        assert_eq!(
            refused(&session, "schedule_create", spec.clone()).await,
            rule,
            "{spec}"
        );
    }
    // A tool loaded but outside the grant of the caller is refused as such;
    // one in the grant but not loaded is the library's unknown tool.
    let grant = Grant {
        tools: vec!["*".into()],
        ..managing()
    };
    let mut everything = clients();
    everything[0].grant = grant;
    served.server.set_clients(&everything).unwrap();
    assert_eq!(
        refused(
            &session,
            "schedule_create",
            with(json!({"tool": "nonesuch"}))
        )
        .await,
        "unknown-tool"
    );

    ok(&session, "schedule_create", daily("first")).await;
    ok(&session, "schedule_create", daily("second")).await;
    assert_eq!(
        refused(&session, "schedule_create", daily("third")).await,
        "quota-exceeded"
    );
    assert_eq!(
        refused(&session, "schedule_show", json!({"name": "nonesuch"})).await,
        "not-found"
    );
}

#[tokio::test]
async fn agents_cannot_see_or_change_each_others_work() {
    let served = served().await;
    let a = connect(&served.addr, TOKEN_A).await;
    let b = connect(&served.addr, TOKEN_B).await;
    ok(&a, "schedule_create", daily("a-digest")).await;

    let listed = ok(&b, "schedule_list", json!({})).await;
    assert_eq!(listed["schedules"], json!([]));
    for tool in [
        "schedule_show",
        "schedule_pause",
        "schedule_resume",
        "schedule_delete",
        "schedule_history",
    ] {
        assert_eq!(
            refused(&b, tool, json!({"name": "a-digest"})).await,
            "not-yours",
            "{tool}"
        );
    }
    assert_eq!(
        refused(&b, "schedule_create", daily("a-digest")).await,
        "name-taken"
    );
    let listed = ok(&a, "schedule_list", json!({})).await;
    assert_eq!(listed["schedules"].as_array().unwrap().len(), 1);
    assert_eq!(listed["schedules"][0]["status"]["state"], "active");

    // Tasks: A's task is A's; B can neither follow, cancel nor restart it.
    let task = json!({"id": "a-task", "steps": [
        {"name": "greet", "tool": "hello", "input": {"name": "task"}},
    ]});
    let started = ok(&a, "task_start", task.clone()).await;
    assert_eq!(started["id"], "a-task");
    assert_eq!(started["steps_total"], 1);
    for tool in ["task_status", "task_cancel"] {
        assert_eq!(
            refused(&b, tool, json!({"id": "a-task"})).await,
            "not-yours"
        );
    }
    assert_eq!(refused(&b, "task_start", task).await, "not-yours");
    assert_eq!(ok(&b, "task_list", json!({})).await["tasks"], json!([]));

    // Escalations: each agent sees its own.
    let escalations = served.host.escalations();
    for agent in ["agent-a", "agent-b"] {
        escalations
            .raise(NewEscalation {
                reason: Some(EscalationReason::RequiresHuman),
                agent: Some(agent.into()),
                error: format!("{agent} needs a human"),
                ..NewEscalation::default()
            })
            .await
            .unwrap();
    }
    let mine = ok(&a, "escalation_list", json!({})).await;
    let mine = mine["escalations"].as_array().unwrap();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["agent"], "agent-a");
    let theirs = ok(&b, "escalation_list", json!({})).await["escalations"][0]["id"].clone();
    assert_eq!(
        refused(&a, "escalation_show", json!({"id": theirs})).await,
        "not-yours"
    );
}

#[tokio::test]
async fn an_agent_follows_its_task_to_the_end_with_its_cost() {
    let served = served().await;
    let a = connect(&served.addr, TOKEN_A).await;
    let task = json!({"id": "two-steps", "steps": [
        {"name": "first", "tool": "hello", "input": {"name": "one"}},
        {"name": "second", "tool": "hello", "input": {"name": "two"}},
    ]});
    let started = ok(&a, "task_start", task).await;
    assert_eq!(started["state"], "running");
    let mut status = Value::Null;
    for _ in 0..400 {
        status = ok(&a, "task_status", json!({"id": "two-steps"})).await;
        if status["state"] != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(status["steps_done"], 2);
    assert_eq!(status["current_step"], Value::Null);
    assert!(status["tokens_spent"].as_u64().unwrap() >= 2, "{status}");
    let listed = ok(&a, "task_list", json!({})).await;
    assert_eq!(listed["tasks"][0]["id"], "two-steps");
    let record = served.host.tasks().status("two-steps").unwrap();
    assert_eq!(record.spec.agent.as_deref(), Some("agent-a"));
    assert_eq!(record.spec.tenant.as_deref(), Some("tenant-of-agent-a"));
    // Cancelling a finished task leaves it as it is.
    let cancelled = ok(&a, "task_cancel", json!({"id": "two-steps"})).await;
    assert_eq!(cancelled["state"], "completed");
}

/// A client that hears which resources changed.
struct Listener(tokio::sync::mpsc::UnboundedSender<String>);

impl rmcp::ClientHandler for Listener {
    async fn on_resource_updated(
        &self,
        params: rmcp::model::ResourceUpdatedNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        let _ = self.0.send(params.uri);
    }
}

/// The next resource update `updates` hears (within a generous bound: the
/// watcher reads every quarter second).
async fn next_update(updates: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(20), updates.recv())
        .await
        .expect("a resource update within 20 s")
        .expect("client alive")
}

#[tokio::test]
#[expect(
    deprecated,
    reason = "resources/subscribe is how 2025-11-25 clients subscribe"
)]
async fn a_subscribed_agent_hears_when_a_run_ends_and_when_an_escalation_opens() {
    use rmcp::model::{ReadResourceRequestParams, ResourceContents, SubscribeRequestParams};
    let served = served().await;
    let a = connect(&served.addr, TOKEN_A).await;
    let b = connect(&served.addr, TOKEN_B).await;
    ok(&a, "schedule_create", daily("watched")).await;

    let (tx, mut updates) = tokio::sync::mpsc::unbounded_channel();
    let config =
        StreamableHttpClientTransportConfig::with_uri(format!("http://{}/mcp", served.addr))
            .auth_header(TOKEN_A);
    let listener = Listener(tx)
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("initializes");
    let uris: Vec<String> = listener
        .list_all_resources()
        .await
        .expect("resources/list")
        .into_iter()
        .map(|r| r.uri.clone())
        .collect();
    for uri in [
        "cofferdam://schedules",
        "cofferdam://schedules/watched",
        "cofferdam://schedules/watched/history",
        "cofferdam://escalations",
    ] {
        assert!(uris.iter().any(|u| u == uri), "{uri} in {uris:?}");
    }
    let history = "cofferdam://schedules/watched/history";
    listener
        .subscribe(SubscribeRequestParams::new(history))
        .await
        .expect("subscribe");
    listener
        .subscribe(SubscribeRequestParams::new("cofferdam://escalations"))
        .await
        .expect("subscribe");
    // Someone else's schedule is not there for B, to read or to watch.
    let theirs = b
        .read_resource(ReadResourceRequestParams::new(history))
        .await;
    assert!(theirs.is_err(), "{theirs:?}");
    assert!(
        b.subscribe(SubscribeRequestParams::new(history))
            .await
            .is_err()
    );

    served.clock.set(at("2026-11-30T08:00:00Z"));
    let runner = served.host.schedules().runner();
    runner.tick().await.unwrap().finished().await;
    assert_eq!(next_update(&mut updates).await, history);
    let read = listener
        .read_resource(ReadResourceRequestParams::new(history))
        .await
        .expect("read");
    let ResourceContents::TextResourceContents { text, .. } = &read.contents[0] else {
        panic!("text contents: {read:?}");
    };
    let value: Value = serde_json::from_str(text).expect("json");
    assert_eq!(value["runs"][0]["status"], "succeeded", "{value}");

    served
        .host
        .escalations()
        .raise(NewEscalation {
            reason: Some(EscalationReason::RequiresHuman),
            agent: Some("agent-a".into()),
            error: "a human must look".into(),
            ..NewEscalation::default()
        })
        .await
        .unwrap();
    assert_eq!(next_update(&mut updates).await, "cofferdam://escalations");
}

/// `cofferdam serve` with identities in its config: tokens over HTTP
/// (revoked by editing the file), the `[stdio]` identity over stdio, and
/// no anonymous listener beyond loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_identities_from_its_config() {
    use crate::mcp::{serve_command, start_http, write_config};
    let dir = tempfile::tempdir().expect("tempdir");
    let client_entry = format!(
        "[[clients]]\nname = \"a\"\ntoken_sha256 = \"{}\"\nagent = \"agent-a\"\n\
         manage = [\"schedules\"]\n",
        hex(TOKEN_A)
    );
    let stdio = "[stdio]\nagent = \"local\"\nmanage = [\"schedules\"]\n";
    let config = write_config(dir.path(), &format!("{client_entry}{stdio}"));

    let (mut child, addr) = start_http(&config, &[]).await;
    assert_eq!(raw_initialize(&addr, None).await.0, 401);
    let a = connect(&addr, TOKEN_A).await;
    let created = ok(&a, "schedule_create", daily("http-digest")).await;
    assert_eq!(created["owner"], "agent-a");
    a.cancel().await.expect("closes");
    // Editing the token away revokes it (the server watches the file).
    let only_b = format!(
        "[[clients]]\nname = \"b\"\ntoken_sha256 = \"{}\"\nagent = \"agent-b\"\n",
        hex(TOKEN_B)
    );
    write_config(dir.path(), &format!("{only_b}{stdio}"));
    let mut status = 0;
    for _ in 0..200 {
        status = raw_initialize(&addr, Some(&format!("Bearer {TOKEN_A}")))
            .await
            .0;
        if status != 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(status, 401, "a token edited out of the config is refused");
    assert_eq!(
        raw_initialize(&addr, Some(&format!("Bearer {TOKEN_B}")))
            .await
            .0,
        200
    );
    child.kill().await.expect("stops");
    child.wait().await.expect("reaped");

    let transport = rmcp::transport::TokioChildProcess::builder(serve_command(&config))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawns")
        .0;
    let local = ().serve(transport).await.expect("initializes");
    let created = ok(&local, "schedule_create", daily("local-digest")).await;
    assert_eq!(created["owner"], "local");
    let listed = ok(&local, "schedule_list", json!({})).await;
    let names: Vec<&str> = listed["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["local-digest"], "agent-a's schedule is not listed");
    local.cancel().await.expect("closes");

    let anonymous = write_config(dir.path(), "");
    let output = serve_command(&anonymous)
        .args(["--http", "0.0.0.0:0"])
        .output()
        .await
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("beyond loopback without [[clients]]"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_agent_cannot_flood_the_host_with_background_tasks() {
    let served = served().await;
    let a = connect(&served.addr, TOKEN_A).await;
    let step = json!({"name": "wait", "tool": "sleepy", "input": {"millis": 5000}});
    let too_long: Vec<Value> = (0..65)
        .map(|i| json!({"name": format!("s{i}"), "tool": "hello", "input": {"name": "x"}}))
        .collect();
    assert_eq!(
        refused(&a, "task_start", json!({"id": "long", "steps": too_long})).await,
        "too-many-steps"
    );
    for i in 0..16 {
        ok(
            &a,
            "task_start",
            json!({"id": format!("t{i}"), "steps": [step.clone()]}),
        )
        .await;
    }
    assert_eq!(
        refused(
            &a,
            "task_start",
            json!({"id": "t16", "steps": [step.clone()]})
        )
        .await,
        "quota-exceeded"
    );
    // Another agent is not held back by A's tasks.
    let b = connect(&served.addr, TOKEN_B).await;
    ok(
        &b,
        "task_start",
        json!({"id": "b0", "steps": [step.clone()]}),
    )
    .await;
    for i in 0..16 {
        ok(&a, "task_cancel", json!({"id": format!("t{i}")})).await;
    }
    ok(&b, "task_cancel", json!({"id": "b0"})).await;
}

#[tokio::test]
async fn one_client_cannot_take_every_session() {
    let clock = Arc::new(ManualWallClock::new(at("2026-11-30T07:00:00Z")));
    let host = common::builder().build().expect("host");
    let access = HttpAccess {
        max_sessions_per_client: 2,
        ..HttpAccess::default()
    };
    let served = serve_with(host, clock, &access).await;
    let a = format!("Bearer {TOKEN_A}");
    // Two sessions, initialized and in use, are A's share.
    let first = connect(&served.addr, TOKEN_A).await;
    let second = connect(&served.addr, TOKEN_A).await;
    let (status, head) = raw_initialize(&served.addr, Some(&a)).await;
    assert_eq!(status, 429, "{head}");
    // Another client still gets in.
    assert_eq!(
        raw_initialize(&served.addr, Some(&format!("Bearer {TOKEN_B}")))
            .await
            .0,
        200
    );
    // A closed session frees A's share.
    first.cancel().await.expect("closes");
    let mut status = 0;
    for _ in 0..200 {
        status = raw_initialize(&served.addr, Some(&a)).await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(status, 200);
    drop(second);
}
