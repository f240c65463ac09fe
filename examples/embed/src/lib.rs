//! An HTTP service that embeds a cofferdam [`Host`]: what a team writes to
//! put sandboxed tools behind their own API.
//!
//! - `POST /tools/{name}/call` with the JSON input as body. Headers:
//!   `Idempotency-Key` (the IETF httpapi draft's semantics: required for
//!   side-effecting tools, 400 without it; 409 while the first request with
//!   the key runs; 422 when the key comes back with another payload; the
//!   stored response on a repeat, marked `Idempotent-Replayed: true`),
//!   `X-Budget-Tokens` (what this request may spend at most), and
//!   `X-Agent-Id` / `X-Tenant-Id` / `X-Task-Id` (budget and idempotency scopes).
//!   With `[[clients]]` configured, a bearer token is required and its agent
//!   and tenant replace those headers (the task id becomes `AGENT/ID`); a
//!   tool outside the client's grant is not found.
//! - `GET /health`: each tool's breaker state and bulkhead load; `503` when
//!   every tool's breaker refuses calls.
//! - `GET /tools`: the loaded tools.
//! - `POST /manage/{operation}` with a JSON object as body: the MCP
//!   management operations (`schedule_create`, `schedule_list`,
//!   `task_start`, `task_status`, `escalation_list`, …) for services that
//!   are not MCP clients, as the agent of the `Authorization: Bearer` token
//!   (`[[clients]]` in the config), under the same rules
//!   ([`cofferdam::manage`]). `401` without a known token; a refusal is
//!   `403` (not the caller's, or not granted), `404`, `409` (quota), `503`
//!   (store unavailable) or `422`, with the rule in `error.rule`.
//!
//! A client that hangs up cancels its call: the host stops the tool and
//! settles the journal and budgets (a side-effecting tool stopped mid-run is
//! recorded as an unknown outcome, never re-run).
//!
//! Errors are JSON `{"error": {"class", "message", "retry_after_ms"}}` with a
//! status chosen by class, and `Retry-After` where the host knows when.

use axum::Json;
use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cofferdam::{
    BreakerState, CallError, CallRequest, CancellationToken, Clients, Effect, ErrorClass, Host,
    Tokens,
};
use serde_json::{Value, json};

/// The header marking a response replayed from the journal.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The service's routes over `host`, without management (no clients).
pub fn app(host: Host) -> axum::Router {
    app_with_clients(host, Clients::default())
}

/// The service's routes over `host`; `clients` may use `/manage`.
pub fn app_with_clients(host: Host, clients: Clients) -> axum::Router {
    axum::Router::new()
        .route("/tools/{name}/call", post(call))
        .route("/tools", get(tools))
        .route("/health", get(health))
        .route("/manage/{operation}", post(manage))
        .with_state(Service { host, clients })
}

/// What the handlers share.
#[derive(Clone)]
struct Service {
    host: Host,
    clients: Clients,
}

impl FromRef<Service> for Host {
    fn from_ref(service: &Service) -> Self {
        service.host.clone()
    }
}

/// The client whose bearer token the request carries.
fn bearer(headers: &HeaderMap, clients: &Clients) -> Option<cofferdam::Identity> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| clients.identify(token.trim()))
}

fn unauthorized() -> Response {
    let mut response = problem(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "send a client's token: Authorization: Bearer TOKEN",
        None,
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Bearer realm="cofferdam""#),
    );
    response
}

async fn manage(
    State(service): State<Service>,
    Path(operation): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let Some(identity) = bearer(&headers, &service.clients) else {
        return unauthorized();
    };
    let arguments = if body.trim().is_empty() {
        serde_json::Map::new()
    } else {
        match serde_json::from_str(&body) {
            Ok(Value::Object(map)) => map,
            _ => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "invalid-input",
                    "the body must be a JSON object",
                    None,
                );
            }
        }
    };
    match cofferdam::manage(&service.host, &identity, &operation, arguments).await {
        Ok(value) => Json(value).into_response(),
        Err(e) => {
            let status = match (e.class(), e.rule()) {
                ("store-unavailable", _) => StatusCode::SERVICE_UNAVAILABLE,
                ("permanent", _) => StatusCode::INTERNAL_SERVER_ERROR,
                (_, "not-yours" | "not-granted" | "tool-not-allowed") => StatusCode::FORBIDDEN,
                (_, "not-found" | "unknown-operation") => StatusCode::NOT_FOUND,
                (_, "quota-exceeded" | "name-taken" | "exists" | "already-running") => {
                    StatusCode::CONFLICT
                }
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let body = json!({"error": {
                "class": e.class(),
                "rule": e.rule(),
                "message": e.message(),
            }});
            (status, Json(body)).into_response()
        }
    }
}

async fn call(
    State(service): State<Service>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let host = service.host;
    // With clients configured, the token says who calls (and what it may).
    let identity = if service.clients.required() {
        match bearer(&headers, &service.clients) {
            Some(identity) => Some(identity),
            None => return unauthorized(),
        }
    } else {
        None
    };
    let tool = host
        .tool(&name)
        .filter(|_| identity.as_ref().is_none_or(|i| i.grant.may_call(&name)));
    let Some(tool) = tool else {
        return problem(
            StatusCode::NOT_FOUND,
            "unknown-tool",
            &format!("no tool named `{name}`"),
            None,
        );
    };
    let mut request = CallRequest::new(&name, body);
    if let Err((name, why)) = read_headers(&headers, &mut request) {
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid-header",
            &format!("header `{name}` {why}"),
            None,
        );
    }
    if let Some(identity) = identity {
        if let Some(task) = request.task_id.take() {
            request.task_id = Some(format!("{}/{task}", identity.agent));
        }
        request.agent = Some(identity.agent);
        request.tenant = identity.tenant;
        let grant = identity.grant;
        request.allowed = Some(std::sync::Arc::new(move |t: &str| grant.may_call(t)));
    }
    if tool.effect == Effect::SideEffecting && request.idempotency_key.is_none() {
        return problem(
            StatusCode::BAD_REQUEST,
            "idempotency-key-missing",
            &format!("tool `{name}` has side effects: send an Idempotency-Key header"),
            None,
        );
    }
    // The call runs in its own task: when the client hangs up, this handler
    // is dropped, the guard cancels the call, and the task still settles
    // the journal and budgets.
    let cancel = CancellationToken::new();
    request.cancel = Some(cancel.clone());
    let _cancel_on_drop = cancel.drop_guard();
    let result = match tokio::spawn(async move { host.call(request).await }).await {
        Ok(result) => result,
        Err(e) => {
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "host",
                &e.to_string(),
                None,
            );
        }
    };
    match result {
        Ok(outcome) => {
            let body = json!({
                "output": outcome.output_json(),
                "call_id": outcome.call_id,
                "fuel_used": outcome.fuel_used.0,
                "tokens": outcome.tokens.0,
                "attempts": outcome.attempts,
                "replayed": outcome.replayed,
            });
            let mut response = Json(body).into_response();
            if outcome.replayed {
                response
                    .headers_mut()
                    .insert(REPLAYED, HeaderValue::from_static("true"));
            }
            response
        }
        Err(error) => {
            let mut response = error_response(&error);
            // Stored errors too: a replayed tool error is still a replay.
            if error.is_replayed() {
                response
                    .headers_mut()
                    .insert(REPLAYED, HeaderValue::from_static("true"));
            }
            response
        }
    }
}

/// A header that cannot be used: its name and what is wrong with it.
type BadHeader = (&'static str, &'static str);

/// Copies the scope, key and budget headers into the call.
fn read_headers(headers: &HeaderMap, request: &mut CallRequest) -> Result<(), BadHeader> {
    let text = |key: &'static str| -> Result<Option<String>, BadHeader> {
        match headers.get(key).map(HeaderValue::to_str) {
            None => Ok(None),
            Some(Ok(value)) => Ok(Some(value.to_owned())),
            Some(Err(_)) => Err((key, "is not visible ASCII")),
        }
    };
    request.idempotency_key = text("idempotency-key")?;
    request.agent = text("x-agent-id")?;
    request.tenant = text("x-tenant-id")?;
    request.task_id = text("x-task-id")?;
    if let Some(budget) = text("x-budget-tokens")? {
        let tokens = budget
            .parse()
            .map_err(|_| ("x-budget-tokens", "must be a whole number of tokens"))?;
        request.max_tokens = Some(Tokens(tokens));
    }
    Ok(())
}

/// The status for each error class, and the problem body.
fn error_response(error: &CallError) -> Response {
    use ErrorClass::*;
    let class = error.class();
    let status = match class {
        UnknownTool => StatusCode::NOT_FOUND,
        InvalidInput => StatusCode::BAD_REQUEST,
        IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
        // Still running, or an earlier run's outcome is unknown: either way
        // the key is taken and this request must not run it again.
        InProgress | UnknownOutcome => StatusCode::CONFLICT,
        BudgetExhausted => StatusCode::PAYMENT_REQUIRED,
        RateLimited => StatusCode::TOO_MANY_REQUESTS,
        CircuitOpen | BulkheadFull | Transient => StatusCode::SERVICE_UNAVAILABLE,
        DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Permanent => StatusCode::UNPROCESSABLE_ENTITY,
        // The tool broke (a limit, a trap, bad output): an upstream failure.
        OutOfFuel | MemoryLimit | StackOverflow | Panic | Trap | OutputTooLarge | InvalidOutput
        | DataLimit | RetriesExhausted => StatusCode::BAD_GATEWAY,
        Cancelled | Journal | Host => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    problem(
        status,
        class.as_str(),
        &error.to_string(),
        error.retry_after(),
    )
}

fn problem(
    status: StatusCode,
    class: &str,
    message: &str,
    retry_after: Option<std::time::Duration>,
) -> Response {
    let retry_ms = retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let body = json!({"error": {"class": class, "message": message, "retry_after_ms": retry_ms}});
    let mut response = (status, Json(body)).into_response();
    if let Some(after) = retry_after {
        // Whole seconds, rounded up, as RFC 9110 asks.
        let seconds = after.as_millis().div_ceil(1000).max(1);
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

async fn tools(State(host): State<Host>) -> Json<Value> {
    Json(json!(host.tools()))
}

async fn health(State(host): State<Host>) -> Response {
    let stats: Vec<_> = host
        .tools()
        .iter()
        .filter_map(|t| host.stats(t.name.as_str()))
        .collect();
    let refusing = |state: BreakerState| {
        matches!(
            state,
            BreakerState::Open | BreakerState::ForcedOpen | BreakerState::HalfOpen
        )
    };
    let down = !stats.is_empty() && stats.iter().all(|s| refusing(s.breaker.state));
    let tools: Vec<Value> = stats
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "breaker": s.breaker.state.as_str(),
                "in_flight": s.in_flight,
                "queued": s.queued,
                "max_concurrent": s.max_concurrent,
            })
        })
        .collect();
    let degraded = stats.iter().any(|s| refusing(s.breaker.state));
    let status = if down {
        "down"
    } else if degraded {
        "degraded"
    } else {
        "ok"
    };
    let code = if down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(json!({"status": status, "tools": tools}))).into_response()
}
