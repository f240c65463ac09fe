//! The MCP server: every loaded tool is an MCP tool, and every `tools/call`
//! goes through the host's whole pipeline (journal, breaker, bulkhead,
//! retries, budgets, audit), over stdio or streamable HTTP.
//!
//! Request `_meta` carries what MCP itself has no field for:
//! `idempotencyKey`, `taskId`, `agentId`, `tenantId` (strings) and
//! `maxTokens` (a number). Guest progress becomes `notifications/progress`
//! when the client sent a progress token; `notifications/cancelled` stops the
//! call. A failed call is an MCP tool error (`isError: true`) whose
//! `structuredContent.error` holds the machine-readable class, the message
//! and `retryAfterMs`.
//!
//! Under load and abuse: progress reports are coalesced (a slow client sees
//! fewer reports, always the latest one); stdio applies backpressure and
//! answers oversized or malformed lines ([`stdio`]); HTTP sessions are
//! capped and closed once unused ([`sessions`]). Connection limits and
//! read timeouts belong to whoever owns the listener (`cofferdam serve`).
//!
//! Identities ([`identity`]): with `[[clients]]` configured, every HTTP
//! request needs a bearer token, and the agent and tenant it stands for
//! replace `_meta.agentId`/`tenantId`; a client sees and calls only the
//! tools its grant names, plus the management tools ([`manage`]) it is
//! allowed: its own schedules, tasks and escalations. Without clients, HTTP
//! is anonymous (`_meta` says who calls) and offers no management.
//!
//! It does not offer MCP prompts or sampling: cofferdam hosts tools.
//! Protocol-level errors are kept for requests the host cannot understand
//! (an unknown tool, malformed `_meta` or params).

mod call_line;
mod catalog;
mod http;
mod identity;
mod manage;
mod progress;
mod resources;
mod sessions;
mod stdio;

pub use identity::{
    ClientError, ClientSpec, Clients, Grant, Identity, Manage, StdioSpec, new_token, token_digest,
};
pub use manage::{ManageError, manage};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, CustomRequest,
    CustomResult, Implementation, JsonObject, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, MetaObject, PaginatedRequestParams, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
    ServerCapabilities, ServerConfig, SubscribeRequestParams, Tool, ToolAnnotations,
    UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext, ServerInitializeError};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use self::call_line::RawArguments;
use crate::{CallError, CallOutcome, CallRequest, Effect, Host, Tokens, ToolDescription};

/// An MCP server over one [`Host`]. Cheap to clone: every clone (one per
/// HTTP session) shares the host and the list of connected clients.
#[derive(Clone)]
pub struct McpServer {
    host: Host,
    peers: Arc<Mutex<Vec<Peer<RoleServer>>>>,
    /// The HTTP clients, by token (none: HTTP is anonymous).
    clients: Clients,
    /// Who the stdio client is (none: its `_meta` says).
    local: Arc<RwLock<Option<Arc<Identity>>>>,
    /// Resources clients subscribed to.
    watches: resources::Watches,
    /// Cancelled when the client's input ends (stdio): calls still running
    /// are cancelled with it.
    input_closed: CancellationToken,
    /// The largest output also sent as `structuredContent`, in bytes.
    max_structured: Arc<AtomicU64>,
}

/// Failure to run the MCP server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The MCP session could not start (the client never initialized).
    #[error("mcp session failed to start: {0}")]
    Start(String),
    /// The HTTP listener failed.
    #[error("cannot serve http on {addr}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Who may reach `cofferdam serve --http` — the `Host` header values accepted
/// (DNS-rebinding protection) and the browser origins accepted — and how
/// many MCP sessions they may hold open, for how long.
#[derive(Debug, Clone)]
pub struct HttpAccess {
    /// Host names (optionally `name:port`) a request's `Host` may carry.
    /// Defaults to `localhost`, `127.0.0.1` and `::1`.
    pub allowed_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`, `:*` for any port) a request with an
    /// `Origin` header may come from; requests without one (non-browser
    /// clients) pass. Defaults to the loopback origins on any port.
    pub allowed_origins: Vec<String>,
    /// MCP sessions open at once; an `initialize` beyond them is answered
    /// `503 Service Unavailable` with `Retry-After` (default 256).
    pub max_sessions: usize,
    /// MCP sessions one `[[clients]]` client may hold open, so one token
    /// cannot take every session; beyond them `429` (default 32).
    pub max_sessions_per_client: usize,
    /// How long a new session may go without `notifications/initialized`
    /// (default 10 s).
    pub session_init_timeout: Duration,
    /// How long a session may go unused (no call running, no stream open,
    /// no message) before it is closed; the client's next request gets
    /// `404` and it initializes again (default 120 s).
    pub session_idle_timeout: Duration,
}

impl Default for HttpAccess {
    fn default() -> Self {
        Self {
            allowed_hosts: ["localhost", "127.0.0.1", "::1"].map(String::from).into(),
            allowed_origins: ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"]
                .map(String::from)
                .into(),
            max_sessions: 256,
            max_sessions_per_client: 32,
            session_init_timeout: Duration::from_secs(10),
            session_idle_timeout: Duration::from_secs(120),
        }
    }
}

impl McpServer {
    /// A server offering the tools loaded in `host` (now and later).
    pub fn new(host: Host) -> Self {
        Self {
            host,
            peers: Arc::default(),
            clients: Clients::default(),
            local: Arc::default(),
            watches: resources::Watches::default(),
            input_closed: CancellationToken::new(),
            max_structured: Arc::new(AtomicU64::new(u64::MAX)),
        }
    }

    /// Sets the largest output, in bytes, a successful call also returns as
    /// `structuredContent` (`None`: no limit). A larger output comes as text
    /// content only, with `_meta.structuredOmitted = true`, so a large reply
    /// carries it once instead of twice.
    pub fn set_max_structured_bytes(&self, max: Option<u64>) {
        self.max_structured
            .store(max.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The host behind the server.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Makes `clients` the ones allowed over HTTP, at once for every
    /// session (a token no longer listed is refused on its next request).
    /// Never configured, HTTP is anonymous; once configured, tokens stay
    /// required even when a reload empties the list (it then admits
    /// nobody). Nothing changes when one is invalid.
    pub fn set_clients(&self, clients: &[ClientSpec]) -> Result<(), ClientError> {
        self.clients.replace(clients)
    }

    /// Sets who the stdio client is (`None`: whoever its `_meta` says,
    /// with no management tools).
    pub fn set_stdio_identity(&self, spec: Option<&StdioSpec>) {
        *self.local.write().unwrap_or_else(|e| e.into_inner()) =
            spec.map(|spec| Arc::new(Identity::from(spec)));
    }

    /// Who sent a request: the identity its bearer token proved (HTTP with
    /// clients configured), the stdio identity, or nobody in particular.
    /// The caller, for requests only an identified client may make.
    fn identified(&self, context: &RequestContext<RoleServer>) -> Result<Arc<Identity>, ErrorData> {
        self.caller(context).ok_or_else(|| {
            ErrorData::invalid_request(
                "resources are per agent: configure [[clients]] tokens (HTTP) or [stdio] agent",
                None,
            )
        })
    }

    /// What identifies the caller's session to the resource watcher.
    fn session_key(context: &RequestContext<RoleServer>) -> String {
        context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.headers.get("mcp-session-id"))
            .and_then(|id| id.to_str().ok())
            .map_or_else(|| "stdio".to_owned(), |id| format!("http:{id}"))
    }

    fn caller(&self, context: &RequestContext<RoleServer>) -> Option<Arc<Identity>> {
        match context.extensions.get::<axum::http::request::Parts>() {
            Some(parts) => parts.extensions.get::<Arc<Identity>>().cloned(),
            None => self.local.read().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    /// Tells every connected client that the tool list changed
    /// (`notifications/tools/list_changed`); call it after loading,
    /// replacing or unloading tools. Disconnected clients are forgotten.
    pub async fn notify_tools_changed(&self) {
        let peers: Vec<_> = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            peers.retain(|p| !p.is_transport_closed());
            peers.clone()
        };
        for peer in peers {
            if let Err(e) = peer.notify_tool_list_changed().await {
                tracing::debug!(error = %e, "cannot notify a client of the new tool list");
            }
        }
    }

    /// Serves one client over stdin/stdout until it disconnects or `stop`
    /// is cancelled. Logs must go to stderr: stdout carries the protocol.
    ///
    /// When stdin ends, calls still running are cancelled and their answers
    /// written before this returns. A client that leaves before
    /// initializing is not an error.
    pub async fn serve_stdio(self, stop: CancellationToken) -> Result<(), ServeError> {
        let input_closed = CancellationToken::new();
        // Put back when the session ends (this function returns).
        let flags = stdio::RestoreFlags::save();
        let transport = stdio::StdioTransport::new(
            stdio::stdin(&flags),
            stdio::stdout(&flags),
            input_closed.clone(),
        );
        let server = Self {
            input_closed,
            ..self
        };
        let running = match server.serve_with_ct(transport, stop).await {
            Ok(running) => running,
            Err(ServerInitializeError::ConnectionClosed(_) | ServerInitializeError::Cancelled) => {
                tracing::info!("mcp stdio client left before initializing");
                return Ok(());
            }
            Err(e) => return Err(ServeError::Start(e.to_string())),
        };
        let reason = running.waiting().await;
        tracing::info!(?reason, "mcp stdio session ended");
        Ok(())
    }

    /// An axum router serving MCP (streamable HTTP) under `/mcp`, with
    /// `access` checked on every request and its session limits kept.
    /// Sessions end when `stop` is cancelled. Must be called inside a Tokio
    /// runtime.
    pub fn router(&self, access: &HttpAccess, stop: CancellationToken) -> axum::Router {
        let server = self.clone();
        let config = StreamableHttpServerConfig::default()
            .with_allowed_hosts(access.allowed_hosts.clone())
            .with_allowed_origins(access.allowed_origins.clone())
            .with_cancellation_token(stop.clone());
        let sessions = sessions::Sessions::new(
            sessions::SessionLimits {
                max: access.max_sessions,
                init_timeout: access.session_init_timeout,
                idle_timeout: access.session_idle_timeout,
            },
            stop,
        );
        let service = StreamableHttpService::new(
            move || Ok(server.clone()),
            Arc::new(sessions::Manager(Arc::clone(&sessions))),
            config,
        );
        let retry_after = access.session_init_timeout.as_secs().max(1);
        let clients = self.clients.clone();
        let bound = Arc::clone(&sessions);
        let per_client = access.max_sessions_per_client.max(1);
        axum::Router::new()
            .nest_service("/mcp", service)
            .layer(axum::middleware::from_fn(move |request, next| {
                http::refuse_beyond_session_cap(Arc::clone(&sessions), retry_after, request, next)
            }))
            // Outermost: nobody without a token opens or uses a session.
            .layer(axum::middleware::from_fn(move |request, next| {
                http::authenticate(
                    clients.clone(),
                    Arc::clone(&bound),
                    per_client,
                    request,
                    next,
                )
            }))
    }

    async fn call(
        &self,
        params: CallToolRequestParams,
        mut context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        // Over stdio the arguments come as the client's own JSON text,
        // checked by the transport's parse (`call_line`).
        let raw = context
            .extensions
            .remove::<RawArguments>()
            .map(|RawArguments(raw)| raw);
        let caller = self.caller(&context);
        if let Some(identity) = &caller {
            if manage::offers(identity, &params.name) {
                let arguments = match raw {
                    Some(raw) => serde_json::from_str(&raw)
                        .map_err(|e| ErrorData::invalid_params(e.to_string(), None))?,
                    None => params.arguments.unwrap_or_default(),
                };
                return Ok(manage::call(&self.host, identity, &params.name, arguments).await);
            }
            if !identity.grant.may_call(&params.name) || manage::is_reserved(&params.name) {
                return Err(ErrorData::invalid_params(
                    format!(
                        "no tool named `{}` is available to client `{}`",
                        params.name, identity.client
                    ),
                    Some(json!({ "class": "unknown-tool" })),
                ));
            }
        }
        let input = match raw {
            Some(raw) => raw,
            None => Value::Object(params.arguments.unwrap_or_default()).to_string(),
        };
        let mut request = CallRequest::new(&params.name, input);
        read_meta(&context.meta, &mut request)?;
        if let Some(identity) = caller {
            // Who the token proved, whatever `_meta` claims; a task id is
            // the agent's own (`AGENT/ID`), so it cannot name another's
            // task or schedule run and spend its budget.
            if let Some(task) = request.task_id.take() {
                request.task_id = Some(format!("{}/{task}", identity.agent));
            }
            request.agent = Some(identity.agent.clone());
            request.tenant = identity.tenant.clone();
            // Only a grant that names its tools limits fallbacks.
            if !identity.grant.may_call_any() {
                request.allowed = Some(Arc::new(move |tool: &str| {
                    identity.grant.may_call(tool) && !manage::is_reserved(tool)
                }));
            }
        }
        // Cancelled by the client (`notifications/cancelled`, a closed HTTP
        // stream) or by the end of its input.
        let cancel = self.input_closed.child_token();
        request.cancel = Some(cancel.clone());
        let forwarder = context
            .meta
            .get_progress_token()
            .map(|token| progress::forward(context.peer.clone(), token, &mut request));
        // The arguments were parsed by the transport (and serialized here,
        // unless they are the client's text): the host need not check again
        // that they are JSON.
        let result = until_cancelled(
            &context.ct,
            &cancel,
            self.host.call_with_json_input(request),
        )
        .await;
        // Every queued report reaches the client before the result does.
        if let Some(forwarder) = forwarder {
            let _ = forwarder.await;
        }
        match result {
            Ok(outcome) => Ok(success(
                outcome,
                self.max_structured.load(Ordering::Relaxed),
            )),
            Err(CallError::UnknownTool { tool }) => Err(ErrorData::invalid_params(
                format!("no tool named `{tool}` is loaded"),
                Some(json!({ "class": "unknown-tool" })),
            )),
            Err(error) => Ok(failure(&error)),
        }
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_resources()
                .enable_resources_subscribe()
                .build(),
        )
        .with_server_info(Implementation::new("cofferdam", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Tools run as sandboxed WebAssembly components under fuel, deadline and memory \
             limits. Put `idempotencyKey` in a call's _meta to make a side effect happen once; \
             a failed call's structuredContent.error.class says whether retrying can help.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let loaded = self.host.tools();
        let tools = match self.caller(&context) {
            None => loaded.iter().map(mcp_tool).collect(),
            Some(identity) => loaded
                .iter()
                .filter(|t| {
                    identity.grant.may_call(t.name.as_str())
                        && !manage::is_reserved(t.name.as_str())
                })
                .map(mcp_tool)
                .chain(manage::offered(&identity))
                .collect(),
        };
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let Some(identity) = self.caller(&context) else {
            return Ok(ListResourcesResult::with_all_items(Vec::new()));
        };
        let entries = resources::resources(&self.host, &identity)
            .map_err(|r| ErrorData::internal_error(r.message().to_owned(), None))?;
        let resources = entries
            .into_iter()
            .map(|e| {
                Resource::new(e.uri, e.name)
                    .with_description(e.description)
                    .with_mime_type("application/json")
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let Some(identity) = self.caller(&context) else {
            return Ok(ListResourceTemplatesResult::with_all_items(Vec::new()));
        };
        let templates = resources::TEMPLATES
            .iter()
            .filter(|(_, _, _, needs)| identity.grant.may_manage(*needs))
            .map(|(uri, name, description, _)| {
                ResourceTemplate::new(*uri, *name)
                    .with_description(*description)
                    .with_mime_type("application/json")
            })
            .collect();
        Ok(ListResourceTemplatesResult::with_all_items(templates))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let identity = self.identified(&context)?;
        let value = resources::read(&self.host, &identity, &request.uri)
            .map_err(|r| resource_error(&request.uri, &r))?;
        let contents = ResourceContents::text(value.to_string(), request.uri)
            .with_mime_type("application/json");
        Ok(ReadResourceResult::new(vec![contents]).into())
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let identity = self.identified(&context)?;
        let session = Self::session_key(&context);
        self.watches
            .subscribe(
                &self.host,
                identity,
                session,
                context.peer.clone(),
                request.uri.clone(),
            )
            .map_err(|e| match e {
                resources::SubscribeError::Refused(r) => resource_error(&request.uri, &r),
                resources::SubscribeError::TooMany => ErrorData::invalid_request(
                    format!(
                        "too many watched resources: at most {} per session and {} in all",
                        resources::MAX_PER_SESSION,
                        resources::MAX_WATCHES
                    ),
                    None,
                ),
            })
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.watches
            .unsubscribe(&Self::session_key(&context), &request.uri);
        Ok(())
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.host
            .tool(name)
            .as_ref()
            .map(mcp_tool)
            .or_else(|| manage::definition(name))
    }

    /// A request rmcp could not read as any MCP request. When the method is
    /// one MCP defines, its params were wrong: `-32602 Invalid params` with
    /// what was wrong, not `-32601 Method not found`.
    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, ErrorData> {
        let method = request.method.as_str();
        if method == "tools/call" {
            let why = match request.params_as::<CallToolRequestParams>() {
                Ok(None) => "tools/call needs params".to_owned(),
                Ok(Some(_)) => "tools/call params are not valid".to_owned(),
                Err(e) => format!("tools/call params: {e}"),
            };
            return Err(ErrorData::invalid_params(why, None));
        }
        if MCP_REQUESTS.contains(&method) {
            return Err(ErrorData::invalid_params(
                format!("{method} params are not valid"),
                None,
            ));
        }
        Err(ErrorData::new(
            rmcp::model::ErrorCode::METHOD_NOT_FOUND,
            method.to_owned(),
            None,
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.call(request, context).await.map(Into::into)
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.retain(|p| !p.is_transport_closed());
        peers.push(context.peer);
    }
}

/// A resource that cannot be read: `-32002` when it is not there for the
/// caller (missing, or someone else's), with the rule in `data`.
fn resource_error(uri: &str, refusal: &manage::Refused) -> ErrorData {
    let data = Some(json!({ "uri": uri, "rule": refusal.rule() }));
    if resources::is_missing(refusal) {
        ErrorData::resource_not_found(refusal.message().to_owned(), data)
    } else {
        ErrorData::invalid_params(refusal.message().to_owned(), data)
    }
}

/// The MCP view of a loaded tool; the effect becomes the standard hints.
fn mcp_tool(tool: &ToolDescription) -> Tool {
    let schema: JsonObject = match &tool.input_schema {
        Value::Object(map) => map.clone(),
        _ => JsonObject::from_iter([("type".to_owned(), json!("object"))]),
    };
    let annotations = match tool.effect {
        Effect::Pure => ToolAnnotations::new()
            .read_only(true)
            .idempotent(true)
            .destructive(false),
        Effect::Idempotent => ToolAnnotations::new().read_only(false).idempotent(true),
        Effect::SideEffecting => ToolAnnotations::new().read_only(false).idempotent(false),
    };
    let mut meta = MetaObject::new();
    meta.0.insert("version".into(), json!(tool.version));
    meta.0.insert("digest".into(), json!(tool.digest));
    meta.0
        .insert("effect".into(), json!(tool.effect.to_string()));
    Tool::new(
        tool.name.to_string(),
        tool.description.clone(),
        Arc::new(schema),
    )
    .with_annotations(annotations)
    .with_meta(meta)
}

/// Copies the cofferdam keys of a request's `_meta` into the call.
fn read_meta(meta: &JsonObject, request: &mut CallRequest) -> Result<(), ErrorData> {
    let text = |key: &str| -> Result<Option<String>, ErrorData> {
        match meta.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ErrorData::invalid_params(
                format!("_meta.{key} must be a string"),
                None,
            )),
        }
    };
    request.idempotency_key = text("idempotencyKey")?;
    request.task_id = text("taskId")?;
    request.agent = text("agentId")?;
    request.tenant = text("tenantId")?;
    request.max_tokens = match meta.get("maxTokens") {
        None | Some(Value::Null) => None,
        Some(value) => Some(Tokens(value.as_u64().ok_or_else(|| {
            ErrorData::invalid_params("_meta.maxTokens must be a non-negative integer", None)
        })?)),
    };
    Ok(())
}

/// The MCP requests a client may send (a method not listed is unknown).
const MCP_REQUESTS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "completion/complete",
    "logging/setLevel",
];

/// Runs `call` to its end, cancelling `cancel` if `client` (the request's
/// own token: `notifications/cancelled`, a closed HTTP stream) is cancelled
/// first. Polled in the handler's own task: a task per call to pass the
/// cancel on would wake another worker thread on every call.
async fn until_cancelled<F: Future>(
    client: &CancellationToken,
    cancel: &CancellationToken,
    call: F,
) -> F::Output {
    let mut call = std::pin::pin!(call);
    tokio::select! {
        biased;
        output = &mut call => output,
        () = client.cancelled() => {
            cancel.cancel();
            call.await
        }
    }
}

/// A successful call: the output as text, and as structured content when it
/// is a JSON object of at most `max_structured` bytes; the cost and attempts
/// in `_meta`.
fn success(outcome: CallOutcome, max_structured: u64) -> CallToolResult {
    // Only an object is structured content, so only an object is parsed;
    // the text is the output itself, moved, not copied.
    let object = outcome.output.trim_start().starts_with('{');
    let omitted =
        object && u64::try_from(outcome.output.len()).unwrap_or(u64::MAX) > max_structured;
    let structured = (object && !omitted)
        .then(|| outcome.output_json())
        .filter(Value::is_object);
    let mut meta = MetaObject::new();
    for (key, value) in [
        ("callId", json!(outcome.call_id)),
        ("fuelUsed", json!(outcome.fuel_used.0)),
        ("tokens", json!(outcome.tokens.0)),
        ("attempts", json!(outcome.attempts)),
        ("replayed", json!(outcome.replayed)),
        (
            "durationMs",
            json!(u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX)),
        ),
        ("breaker", json!(outcome.breaker.as_str())),
        ("tool", json!(outcome.tool)),
        ("fallbackUsed", json!(outcome.fallback_used)),
    ] {
        meta.0.insert(key.into(), value);
    }
    if omitted {
        meta.0.insert("structuredOmitted".into(), json!(true));
    }
    let mut result = CallToolResult::success(vec![ContentBlock::text(outcome.output)]);
    result.structured_content = structured;
    result.meta = Some(meta);
    result
}

/// An error and its causes on one line (a journal failure names what the
/// store said).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A failed call as an MCP tool error the model can read and a client can
/// act on: `structuredContent.error = {class, message, retryAfterMs}`.
fn failure(error: &CallError) -> CallToolResult {
    let retry_after = error
        .retry_after()
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let message = with_causes(error);
    let mut result = CallToolResult::error(vec![ContentBlock::text(message.clone())]);
    result.structured_content = Some(json!({
        "error": {
            "class": error.class().as_str(),
            // Why the last attempt failed (`deadline-exceeded` under
            // `retries-exhausted`), so a client need not parse the message.
            "cause": error.cause_class().as_str(),
            "message": message,
            "retryAfterMs": retry_after,
        }
    }));
    // Like a success, a failure says whether it is a stored outcome.
    let mut meta = MetaObject::new();
    meta.0.insert("replayed".into(), json!(error.is_replayed()));
    result.meta = Some(meta);
    result
}
