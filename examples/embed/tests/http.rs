//! The example service over real HTTP on loopback: every status code of the
//! Idempotency-Key semantics, budgets, health and cancellation on hang-up.

use std::path::Path;
use std::time::Duration;

use cofferdam::{BreakerMode, Effect, Host, HostBuilder, LimitsSpec, Mount, ToolPolicy};
use cofferdam_test_artifacts as artifacts;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Two agents that may manage schedules and tasks, by token.
fn clients() -> cofferdam::Clients {
    let client = |name: &str| cofferdam::ClientSpec {
        name: name.into(),
        token_sha256: cofferdam::token_digest(&format!("token-{name}"))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        agent: format!("agent-{name}"),
        tenant: None,
        grant: cofferdam::Grant {
            tools: vec!["hello".into()],
            manage: [cofferdam::Manage::Schedules, cofferdam::Manage::Tasks].into(),
            resolve_escalations: false,
        },
    };
    let clients = cofferdam::Clients::default();
    clients
        .replace(&[client("a"), client("b")])
        .expect("clients");
    clients
}

struct Service {
    url: String,
    host: Host,
    notes: tempfile::TempDir,
    http: reqwest::Client,
}

async fn service() -> Service {
    service_on(Host::builder()).await
}

/// The service with [`clients`] configured: every request needs a token.
async fn managed() -> Service {
    service_with(Host::builder(), Some(clients())).await
}

/// The service around a host from `builder`.
async fn service_on(builder: HostBuilder) -> Service {
    service_with(builder, None).await
}

/// The service around a host from `builder`, with `clients` if given.
async fn service_with(builder: HostBuilder, clients: Option<cofferdam::Clients>) -> Service {
    let notes = tempfile::tempdir().expect("tempdir");
    let host = builder
        .artifact_dir(Path::new(env!("CARGO_TARGET_TMPDIR")).join("cofferdam-test-data/artifacts"))
        .allow_root(notes.path())
        .build()
        .expect("host");
    let load = |path: &str, policy: ToolPolicy| {
        let host = host.clone();
        let path = path.to_owned();
        async move { host.load_file(path.as_ref(), policy).await.expect("loads") }
    };
    load(artifacts::HELLO, ToolPolicy::default()).await;
    load(
        artifacts::NOTES,
        ToolPolicy {
            mounts: vec![Mount::read_write(notes.path(), "/notes")],
            ..ToolPolicy::default()
        },
    )
    .await;
    load(
        artifacts::SLEEPY,
        ToolPolicy {
            effect: Some(Effect::SideEffecting),
            ..ToolPolicy::default()
        },
    )
    .await;
    load(
        artifacts::LOOP_FOREVER,
        ToolPolicy {
            limits: LimitsSpec {
                timeout_ms: Some(60_000),
                fuel: Some(u64::MAX / 4),
                ..LimitsSpec::default()
            },
            ..ToolPolicy::default()
        },
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = match clients {
        Some(clients) => cofferdam_embed::app_with_clients(host.clone(), clients),
        None => cofferdam_embed::app(host.clone()),
    };
    tokio::spawn(async move { axum::serve(listener, app).await });
    Service {
        url,
        host,
        notes,
        http: reqwest::Client::new(),
    }
}

impl Service {
    async fn call(&self, tool: &str, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/tools/{tool}/call", self.url))
            .body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("request completes")
    }

    async fn health(&self) -> reqwest::Response {
        self.http
            .get(format!("{}/health", self.url))
            .send()
            .await
            .expect("health")
    }

    async fn with_budget(&self, tokens: &str) -> reqwest::Response {
        self.call(
            "hello",
            json!({"name": "Ada"}),
            &[("X-Budget-Tokens", tokens)],
        )
        .await
    }

    /// Waits (on a condition, not a timer) until `tool` has `n` calls in flight.
    async fn wait_in_flight(&self, tool: &str, n: u32) {
        for _ in 0..1000 {
            if self.host.stats(tool).expect("loaded").in_flight == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{tool} never had {n} call(s) in flight");
    }
}

async fn class(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("JSON body");
    body["error"]["class"].as_str().expect("class").to_owned()
}

#[tokio::test]
async fn a_call_returns_the_output_and_its_cost() {
    let s = service().await;
    let response = s.call("hello", json!({"name": "Ada"}), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("idempotent-replayed").is_none());
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["output"]["greeting"], "Hello, Ada!");
    assert!(body["fuel_used"].as_u64().expect("fuel") > 0);
    assert_eq!(body["attempts"], 1);

    let response = s.call("nope", json!({}), &[]).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = s.call("hello", json!({"name": ""}), &[]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(class(response).await, "invalid-input");

    // A stored tool error, replayed, says so like a stored success does.
    let key = [("Idempotency-Key", "empty-name")];
    let first = s.call("hello", json!({"name": ""}), &key).await;
    assert_eq!(first.status(), StatusCode::BAD_REQUEST);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let repeat = s.call("hello", json!({"name": ""}), &key).await;
    assert_eq!(repeat.status(), StatusCode::BAD_REQUEST);
    assert_eq!(repeat.headers()["idempotent-replayed"], "true");
    assert_eq!(class(repeat).await, "invalid-input");
}

#[tokio::test]
async fn side_effects_need_a_key_and_happen_once() {
    let s = service().await;
    let note = json!({"title": "todo", "body": "inspect the dam"});
    let response = s.call("notes", note.clone(), &[]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(class(response).await, "idempotency-key-missing");
    assert!(!s.notes.path().join("todo.md").exists(), "nothing ran");

    let key = [("Idempotency-Key", "order-1")];
    let first = s.call("notes", note.clone(), &key).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.expect("JSON");
    let repeat = s.call("notes", note.clone(), &key).await;
    assert_eq!(repeat.status(), StatusCode::OK);
    assert_eq!(repeat.headers()["idempotent-replayed"], "true");
    let repeat: Value = repeat.json().await.expect("JSON");
    assert_eq!(repeat["output"], first["output"]);
    assert_eq!(repeat["tokens"], 0, "a replay costs nothing");
    let written = std::fs::read_to_string(s.notes.path().join("todo.md")).expect("note");
    assert_eq!(written.matches("inspect the dam").count(), 1, "{written}");

    let other = json!({"title": "todo", "body": "something else"});
    let mismatch = s.call("notes", other, &key).await;
    assert_eq!(mismatch.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(class(mismatch).await, "idempotency-mismatch");
}

#[tokio::test]
async fn a_key_still_running_is_a_conflict_with_retry_after() {
    let s = service().await;
    let key = [("Idempotency-Key", "slow-1")];
    let body = json!({"millis": 400});
    let first = {
        let url = s.url.clone();
        let http = s.http.clone();
        let body = body.to_string();
        tokio::spawn(async move {
            http.post(format!("{url}/tools/sleepy/call"))
                .header("Idempotency-Key", "slow-1")
                .body(body)
                .send()
                .await
                .expect("completes")
        })
    };
    s.wait_in_flight("sleepy", 1).await;
    let second = s.call("sleepy", body.clone(), &key).await;
    assert_eq!(second.status(), StatusCode::CONFLICT);
    assert!(second.headers().contains_key("retry-after"));
    assert_eq!(class(second).await, "in-progress");
    let first = first.await.expect("first request");
    assert_eq!(first.status(), StatusCode::OK);
    let third = s.call("sleepy", body, &key).await;
    assert_eq!(third.status(), StatusCode::OK);
    assert_eq!(third.headers()["idempotent-replayed"], "true");
}

#[tokio::test]
async fn per_request_budgets_and_bad_headers() {
    let s = service().await;
    let response = s
        .call("hello", json!({"name": "Ada"}), &[("X-Budget-Tokens", "0")])
        .await;
    assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(class(response).await, "budget-exhausted");
    let response = s.with_budget("lots").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("JSON");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("x-budget-tokens"),
        "{body}"
    );
    let response = s.with_budget("100000").await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn health_shows_breakers_and_open_breakers_refuse_with_503() {
    let s = service().await;
    let health = s.health().await;
    assert_eq!(health.status(), StatusCode::OK);
    let body: Value = health.json().await.expect("JSON");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["tools"][0]["name"], "hello");
    assert_eq!(body["tools"][0]["breaker"], "closed");

    s.host
        .set_breaker_mode("hello", BreakerMode::ForcedOpen)
        .expect("set");
    let refused = s.call("hello", json!({"name": "Ada"}), &[]).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(class(refused).await, "circuit-open");
    let body: Value = s.health().await.json().await.expect("JSON");
    assert_eq!(body["status"], "degraded");

    for tool in ["loop-forever", "notes", "sleepy"] {
        s.host
            .set_breaker_mode(tool, BreakerMode::ForcedOpen)
            .expect("set");
    }
    assert_eq!(s.health().await.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_client_hanging_up_cancels_its_call() {
    let s = service().await;
    let url = s.url.clone();
    let http = s.http.clone();
    let request = tokio::spawn(async move {
        http.post(format!("{url}/tools/loop-forever/call"))
            .body("{}")
            .send()
            .await
    });
    s.wait_in_flight("loop-forever", 1).await;
    request.abort();
    s.wait_in_flight("loop-forever", 0).await;
    let metrics = s.host.metrics_text();
    assert!(
        metrics.contains("cofferdam_calls_total{tool=\"loop-forever\",outcome=\"cancelled\"} 1"),
        "{metrics}"
    );
}

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).expect("non-negative"),
        u32::try_from(t.tv_nsec).expect("below a second"),
    )
}

#[tokio::test(flavor = "current_thread")]
async fn health_answers_while_every_compute_thread_spins() {
    // The service's runtime has one thread; guests have one of their own.
    let s = service_on(Host::builder().compute_threads(1)).await;
    let before = thread_cpu_time();
    let spinning: Vec<_> = (0..2)
        .map(|_| {
            let (http, url) = (s.http.clone(), s.url.clone());
            tokio::spawn(async move {
                let request = http.post(format!("{url}/tools/loop-forever/call"));
                request.body("{}").send().await
            })
        })
        .collect();
    s.wait_in_flight("loop-forever", 2).await;
    // The compute thread is taken (one spinner computes, the other is
    // parked for it); the service answers at once, and then idles while
    // they spin on.
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let health = tokio::time::timeout(Duration::from_secs(2), s.health())
            .await
            .expect("health answers while guests spin");
        assert!(
            [StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE].contains(&health.status()),
            "{}",
            health.status()
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The spinners computed all along, on the compute thread; the service's
    // thread only served requests.
    let used = thread_cpu_time() - before;
    assert!(
        used < Duration::from_millis(250),
        "the service's thread computed {used:?} of {:?} while guests spun",
        started.elapsed()
    );
    // Hanging up cancels them.
    for call in spinning {
        call.abort();
    }
    s.wait_in_flight("loop-forever", 0).await;
}

impl Service {
    async fn manage(
        &self,
        operation: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(format!("{}/manage/{operation}", self.url))
            .body(body.to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("answers");
        let status = response.status();
        (status, response.json().await.expect("json"))
    }
}

#[tokio::test]
async fn management_acts_as_the_tokens_agent_under_the_same_rules() {
    let service = managed().await;
    let daily = json!({
        "name": "digest", "cron": "0 9 * * *", "timezone": "Europe/Berlin",
        "tool": "hello", "input": {"name": "digest"}, "budget_tokens": 1000,
    });
    let (status, body) = service.manage("schedule_create", None, daily.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = service
        .manage("schedule_create", Some("token-a"), daily.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["owner"], "agent-a");

    let (status, body) = service
        .manage("schedule_pause", Some("token-b"), json!({"name": "digest"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["rule"], "not-yours");
    let (_, listed) = service
        .manage("schedule_list", Some("token-b"), json!({}))
        .await;
    assert_eq!(listed["schedules"], json!([]));

    let mut often = daily.clone();
    often["name"] = json!("often");
    often["cron"] = json!("*/5 * * * *");
    let (status, body) = service
        .manage("schedule_create", Some("token-a"), often)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["rule"], "too-frequent");
    let (status, body) = service
        .manage("escalation_list", Some("token-a"), json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["rule"], "not-granted");
    let (status, _) = service
        .manage("schedule_list", Some("token-c"), json!({}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn with_clients_a_tool_call_needs_a_token_whose_agent_replaces_the_headers() {
    let service = managed().await;
    let hello = json!({"name": "Ada"});
    let refused = service
        .call("hello", hello.clone(), &[("x-agent-id", "agent-b")])
        .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let response = service
        .http
        .post(format!("{}/tools/hello/call", service.url))
        .bearer_auth("token-a")
        .header("x-agent-id", "agent-b")
        .body(hello.to_string())
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), StatusCode::OK);
    // Charged to the token's agent, not the header's.
    let mut attempts = Vec::new();
    for _ in 0..400 {
        attempts = service
            .host
            .history(&cofferdam::HistoryQuery::default())
            .expect("history");
        if !attempts.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        attempts[0].agent.as_deref(),
        Some("agent-a"),
        "{attempts:?}"
    );
    // A tool outside the grant is not there for the client.
    let response = service
        .http
        .post(format!("{}/tools/sleepy/call", service.url))
        .bearer_auth("token-a")
        .header("idempotency-key", "k")
        .body(json!({"millis": 1}).to_string())
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}
