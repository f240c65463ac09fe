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
//! It does not offer MCP resources, prompts or sampling: cofferdam hosts
//! tools. Protocol-level errors are kept for requests the host cannot
//! understand (an unknown tool, malformed `_meta`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, MetaObject, PaginatedRequestParams, ProgressNotificationParam,
    ProgressToken, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{CallError, CallOutcome, CallRequest, Effect, Host, Progress, Tokens, ToolDescription};

/// Progress reports queued per call before new ones are dropped: a tool
/// reporting faster than the client reads loses reports, never memory.
const PROGRESS_QUEUE: usize = 64;

/// An MCP server over one [`Host`]. Cheap to clone: every clone (one per
/// HTTP session) shares the host and the list of connected clients.
#[derive(Clone)]
pub struct McpServer {
    host: Host,
    peers: Arc<Mutex<Vec<Peer<RoleServer>>>>,
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

/// Who may reach `cofferdam serve --http`: the `Host` header values accepted
/// (DNS-rebinding protection) and the browser origins accepted.
#[derive(Debug, Clone)]
pub struct HttpAccess {
    /// Host names (optionally `name:port`) a request's `Host` may carry.
    /// Defaults to `localhost`, `127.0.0.1` and `::1`.
    pub allowed_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`, `:*` for any port) a request with an
    /// `Origin` header may come from; requests without one (non-browser
    /// clients) pass. Defaults to the loopback origins on any port.
    pub allowed_origins: Vec<String>,
}

impl Default for HttpAccess {
    fn default() -> Self {
        Self {
            allowed_hosts: ["localhost", "127.0.0.1", "::1"].map(String::from).into(),
            allowed_origins: ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"]
                .map(String::from)
                .into(),
        }
    }
}

impl McpServer {
    /// A server offering the tools loaded in `host` (now and later).
    pub fn new(host: Host) -> Self {
        Self {
            host,
            peers: Arc::default(),
        }
    }

    /// The host behind the server.
    pub fn host(&self) -> &Host {
        &self.host
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
    pub async fn serve_stdio(self, stop: CancellationToken) -> Result<(), ServeError> {
        let running = self
            .serve_with_ct(rmcp::transport::stdio(), stop)
            .await
            .map_err(|e| ServeError::Start(e.to_string()))?;
        let reason = running.waiting().await;
        tracing::info!(?reason, "mcp stdio session ended");
        Ok(())
    }

    /// An axum router serving MCP (streamable HTTP) under `/mcp`, with
    /// `access` checked on every request. Sessions end when `stop` is
    /// cancelled.
    pub fn router(&self, access: &HttpAccess, stop: CancellationToken) -> axum::Router {
        let server = self.clone();
        let config = StreamableHttpServerConfig::default()
            .with_allowed_hosts(access.allowed_hosts.clone())
            .with_allowed_origins(access.allowed_origins.clone())
            .with_cancellation_token(stop);
        let service = StreamableHttpService::new(
            move || Ok(server.clone()),
            Arc::new(LocalSessionManager::default()),
            config,
        );
        axum::Router::new().nest_service("/mcp", service)
    }

    async fn call(
        &self,
        params: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let mut request = CallRequest::new(
            &params.name,
            Value::Object(params.arguments.unwrap_or_default()).to_string(),
        );
        read_meta(&context.meta, &mut request)?;
        request.cancel = Some(context.ct.clone());
        let forwarder = context
            .meta
            .get_progress_token()
            .map(|token| forward_progress(context.peer.clone(), token, &mut request));
        let result = self.host.call(request).await;
        // Every queued report reaches the client before the result does.
        if let Some(forwarder) = forwarder {
            let _ = forwarder.await;
        }
        match result {
            Ok(outcome) => Ok(success(outcome)),
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
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = self.host.tools().iter().map(mcp_tool).collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.host.tool(name).as_ref().map(mcp_tool)
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

/// Sends the call's progress reports to the client, in order, on a bounded
/// queue. The returned task ends once the call (holding the sender) is done.
fn forward_progress(
    peer: Peer<RoleServer>,
    token: ProgressToken,
    request: &mut CallRequest,
) -> tokio::task::JoinHandle<()> {
    let (tx, mut rx) = mpsc::channel::<Progress>(PROGRESS_QUEUE);
    request.progress = Some(Arc::new(move |progress: &Progress| {
        let _ = tx.try_send(progress.clone());
    }));
    tokio::spawn(async move {
        while let Some(progress) = rx.recv().await {
            #[expect(clippy::cast_precision_loss, reason = "progress is approximate")]
            let mut param = ProgressNotificationParam::new(token.clone(), progress.done as f64);
            if let Some(total) = progress.total {
                #[expect(clippy::cast_precision_loss, reason = "progress is approximate")]
                let total = total as f64;
                param = param.with_total(total);
            }
            if !progress.message.is_empty() {
                param = param.with_message(progress.message);
            }
            if peer.notify_progress(param).await.is_err() {
                break;
            }
        }
    })
}

/// A successful call: the output as text, and as structured content when it
/// is a JSON object; the cost and attempts in `_meta`.
fn success(outcome: CallOutcome) -> CallToolResult {
    let structured = outcome.output_json();
    let mut result = CallToolResult::success(vec![ContentBlock::text(outcome.output.clone())]);
    if structured.is_object() {
        result.structured_content = Some(structured);
    }
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
    result.meta = Some(meta);
    result
}

/// A failed call as an MCP tool error the model can read and a client can
/// act on: `structuredContent.error = {class, message, retryAfterMs}`.
fn failure(error: &CallError) -> CallToolResult {
    let retry_after = error
        .retry_after()
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut result = CallToolResult::error(vec![ContentBlock::text(error.to_string())]);
    result.structured_content = Some(json!({
        "error": {
            "class": error.class().as_str(),
            "message": error.to_string(),
            "retryAfterMs": retry_after,
        }
    }));
    result
}
