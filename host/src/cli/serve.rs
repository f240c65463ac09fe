//! `cofferdam serve`: the tools of a `cofferdam.toml` as an MCP server over
//! stdio or streamable HTTP, with `/metrics`, and the config reloaded on
//! SIGHUP or when the file (or a component it names) changes, and the
//! schedule runner firing background runs.
//!
//! Over HTTP it runs its own accept loop so a client cannot hold the server:
//! a cap on open connections, deadlines for a request's headers (which also
//! close idle keep-alive connections) and body, and `TCP_NODELAY` so an
//! event-stream answer written in two parts (the priming event, then the
//! result) is not held back by the client's delayed ACK.
//!
//! It does not daemonize or manage TLS: put it behind a process supervisor,
//! and behind a TLS-terminating proxy when it listens beyond loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use clap::Args;
use cofferdam::{CancellationToken, Host, HostConfig, HttpAccess, McpServer};

use super::{Dirs, chain, configured_host, parse_duration};

#[derive(Args)]
pub(super) struct ServeArgs {
    /// The host config (data dir, limits, `[tools.NAME]` tables).
    #[arg(long)]
    config: PathBuf,
    /// Serve streamable HTTP on this address (MCP at /mcp, metrics at
    /// /metrics) instead of stdio. Use 127.0.0.1:0 for any free port.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// With stdio, also serve /metrics on this address.
    #[arg(long, value_name = "ADDR", conflicts_with = "http")]
    metrics: Option<SocketAddr>,
    /// Accept this `Host` header value (besides localhost, 127.0.0.1 and ::1);
    /// needed when binding beyond loopback. Repeatable.
    #[arg(long = "allow-host", value_name = "HOST")]
    allow_hosts: Vec<String>,
    /// Accept browser requests from this origin (scheme://host[:port], `:*`
    /// for any port), besides the loopback origins. Repeatable.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,
    /// How often to look for changes of the config and its components.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    watch_every: Duration,
    /// How often the schedule runner looks for due runs (and for schedules
    /// changed from the CLI).
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    tick_every: Duration,
    /// With --http: connections open at once; more wait to be accepted.
    #[arg(long, value_name = "N", default_value_t = 512, requires = "http")]
    max_connections: usize,
    /// With --http: how long a client may take to send a request's headers,
    /// and how long a kept-alive connection may sit idle.
    #[arg(long, value_parser = parse_duration, default_value = "10s", requires = "http")]
    header_timeout: Duration,
    /// With --http: how long a client may take to send a request's body.
    #[arg(long, value_parser = parse_duration, default_value = "30s", requires = "http")]
    body_timeout: Duration,
    /// With --http: MCP sessions open at once (default 256); an initialize
    /// beyond them gets 503.
    #[arg(long, value_name = "N", requires = "http")]
    max_sessions: Option<usize>,
    /// With --http: MCP sessions one `[[clients]]` client may hold (default
    /// 32); beyond them its initialize gets 429.
    #[arg(long, value_name = "N", requires = "http")]
    max_sessions_per_client: Option<usize>,
    /// With --http: how long a new MCP session may wait for
    /// `notifications/initialized` (default 10s).
    #[arg(long, value_parser = parse_duration, requires = "http")]
    session_init_timeout: Option<Duration>,
    /// With --http: how long an MCP session with no call running and no
    /// stream open lives (default 120s).
    #[arg(long, value_parser = parse_duration, requires = "http")]
    session_idle_timeout: Option<Duration>,
}

pub(super) async fn serve(args: ServeArgs, dirs: &Dirs) -> Result<ExitCode> {
    let (config, host) = configured_host(&args.config, dirs).await?;
    let server = McpServer::new(host.clone());
    server
        .set_clients(&config.clients)
        .context("invalid [[clients]]")?;
    server.set_stdio_identity(config.stdio.as_ref());
    server.set_max_structured_bytes(config.mcp.max_structured_bytes);
    if let Some(addr) = args.http
        && !addr.ip().is_loopback()
        && config.clients.is_empty()
    {
        anyhow::bail!(
            "refusing to serve {addr} beyond loopback without [[clients]] tokens: \
             anyone who reaches it could call every tool as any agent \
             (make a token with `cofferdam token`)"
        );
    }
    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signal(stop.clone()));
    // The schedule runner: fires due runs until the server stops, then
    // cancels the runs going and waits for them to be recorded.
    let runner = host.schedules().runner();
    let runner = {
        let (stop, every) = (stop.clone(), args.tick_every);
        tokio::spawn(async move { runner.run(every, stop).await })
    };
    tokio::spawn(watch(
        args.config.clone(),
        config,
        server.clone(),
        stop.clone(),
        args.watch_every,
    ));
    let tools = host.tools().len();

    let mut access = HttpAccess::default();
    access.allowed_hosts.extend(args.allow_hosts);
    access.allowed_origins.extend(args.allow_origins);
    if let Some(max) = args.max_sessions {
        access.max_sessions = max;
    }
    if let Some(max) = args.max_sessions_per_client {
        access.max_sessions_per_client = max;
    }
    if let Some(timeout) = args.session_init_timeout {
        access.session_init_timeout = timeout;
    }
    if let Some(timeout) = args.session_idle_timeout {
        access.session_idle_timeout = timeout;
    }
    if let Some(addr) = args.http {
        let router = server
            .router(&access, stop.child_token())
            .merge(metrics_router(host, access.allowed_hosts.clone()));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        eprintln!("cofferdam: serving {tools} tool(s) at http://{local}/mcp (metrics at /metrics)");
        let limits = ConnectionLimits {
            max_connections: args.max_connections.max(1),
            header_timeout: args.header_timeout,
            body_timeout: args.body_timeout,
        };
        serve_http(listener, router, limits, stop.clone()).await;
    } else {
        if let Some(addr) = args.metrics {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            eprintln!(
                "cofferdam: metrics at http://{}/metrics",
                listener.local_addr()?
            );
            let shutdown = stop.clone().cancelled_owned();
            tokio::spawn(async move {
                let router = metrics_router(host, access.allowed_hosts.clone());
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown)
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "metrics server failed");
                }
            });
        }
        eprintln!("cofferdam: serving {tools} tool(s) over stdio");
        server.serve_stdio(stop.clone()).await?;
        stop.cancel();
    }
    stop.cancel();
    if runner.await.is_err() {
        tracing::error!("the schedule runner panicked");
    }
    Ok(ExitCode::SUCCESS)
}

/// What one client may hold of the HTTP listener.
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    max_connections: usize,
    header_timeout: Duration,
    body_timeout: Duration,
}

/// Serves `router` on `listener` until `stop`, then lets open connections
/// finish their requests (up to five seconds).
async fn serve_http(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let body_timeout = limits.body_timeout;
    let router = router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            read_body_within(body_timeout, request, next)
        },
    ));
    let service = hyper_util::service::TowerToHyperService::new(router);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        // At the cap, new connections wait in the listen backlog until a
        // slot frees; the header deadline bounds how long that takes.
        let slot = tokio::select! {
            () = stop.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let tcp = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: wait a little rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let connection = http.serve_connection(TokioIo::new(tcp), service.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "http connection ended");
            }
            drop(slot);
        });
    }
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(Duration::from_secs(5), slots.acquire_many(all)).await;
    if drained.is_err() {
        tracing::warn!("http connections still open at shutdown");
    }
}

/// The largest request body read, as rmcp's own limit: 4 MiB.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Reads the request's body before passing the request on, answering
/// `408` (and closing the connection) when it does not arrive within
/// `timeout`: a client trickling a body cannot hold a connection for long.
async fn read_body_within(
    timeout: Duration,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse as _;
    let (parts, body) = request.into_parts();
    let refuse = |status: StatusCode, why: &'static str| {
        (status, [(header::CONNECTION, "close")], why).into_response()
    };
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(bytes)) => {
            let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
            next.run(request).await
        }
        Err(_) => refuse(
            StatusCode::REQUEST_TIMEOUT,
            "Request Timeout: the body did not arrive in time",
        ),
        Ok(Err(e)) if is_length_limit(&e) => refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload Too Large: the body is over 4 MiB",
        ),
        Ok(Err(_)) => refuse(StatusCode::BAD_REQUEST, "Bad Request: cannot read the body"),
    }
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// `/metrics`, answered only to requests whose `Host` is allowed (the same
/// DNS-rebinding rule as `/mcp`).
fn metrics_router(host: Host, allowed_hosts: Vec<String>) -> axum::Router {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse as _;
    let allowed = std::sync::Arc::new(allowed_hosts);
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: HeaderMap| {
            let host = host.clone();
            let allowed = std::sync::Arc::clone(&allowed);
            async move {
                let name = headers.get(header::HOST).and_then(|v| v.to_str().ok());
                if !name.is_some_and(|name| host_allowed(name, &allowed)) {
                    return (
                        StatusCode::FORBIDDEN,
                        "Forbidden: Host header is not allowed",
                    )
                        .into_response();
                }
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    host.metrics_text(),
                )
                    .into_response()
            }
        }),
    )
}

/// Whether a `Host` header value (`name`, `name:port`, `[v6]:port`) names an
/// allowed host; an allowed entry with a port must match it exactly.
fn host_allowed(value: &str, allowed: &[String]) -> bool {
    let name = match value.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => value.split(':').next().unwrap_or(""),
    };
    allowed
        .iter()
        .any(|a| a.eq_ignore_ascii_case(name) || a.eq_ignore_ascii_case(value))
}

async fn stop_on_signal(stop: CancellationToken) {
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminated = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminated = std::future::pending::<()>();
    tokio::select! {
        () = interrupted => {}
        () = terminated => {}
        () = stop.cancelled() => return,
    }
    stop.cancel();
}

/// Reloads the config on SIGHUP, and when the file or a component it names
/// changes (checked every `every`), then tells clients the tool list changed.
async fn watch(
    path: PathBuf,
    mut current: HostConfig,
    server: McpServer,
    stop: CancellationToken,
    every: Duration,
) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut seen = stamp(&path, &current);
    loop {
        let hangup_received = async {
            #[cfg(unix)]
            if let Some(hangup) = &mut hangup {
                hangup.recv().await;
                return;
            }
            std::future::pending::<()>().await;
        };
        let forced = tokio::select! {
            () = stop.cancelled() => return,
            () = hangup_received => true,
            () = tokio::time::sleep(every) => false,
        };
        if !forced && stamp(&path, &current) == seen {
            continue;
        }
        let next = match HostConfig::from_file(&path) {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %chain(&e), "config not reloaded");
                seen = stamp(&path, &current);
                continue;
            }
        };
        let problems = next.check();
        if !problems.is_empty() {
            for problem in &problems {
                tracing::warn!(%problem, "config not reloaded");
            }
            seen = stamp(&path, &current);
            continue;
        }
        // Checked above: a token removed from the file is refused from now.
        if let Err(e) = server.set_clients(&next.clients) {
            tracing::warn!(error = %e, "clients not reloaded");
        }
        server.set_stdio_identity(next.stdio.as_ref());
        server.set_max_structured_bytes(next.mcp.max_structured_bytes);
        let report = next.reload(server.host(), &current).await;
        for (name, error) in &report.failed {
            tracing::warn!(tool = %name, error = %chain(error), "tool not reloaded");
        }
        for key in &report.needs_restart {
            tracing::warn!(key, "changed, takes effect on restart");
        }
        tracing::info!(added = ?report.added, updated = ?report.updated, removed = ?report.removed, "config reloaded");
        if report.tools_changed() {
            server.notify_tools_changed().await;
        }
        current = next;
        seen = stamp(&path, &current);
    }
}

/// `cofferdam token`: a new bearer token and the `[[clients]]` entry that
/// admits it (the token itself is not stored anywhere).
pub(super) fn token(name: &str, agent: Option<&str>) -> Result<ExitCode> {
    let (token, digest) = cofferdam::new_token().context("no randomness for a token")?;
    println!("token (give it to the client, as `Authorization: Bearer TOKEN`):");
    println!("  {token}");
    println!();
    println!("for cofferdam.toml:");
    println!("[[clients]]");
    println!("name = {}", toml_string(name));
    println!("token_sha256 = \"{digest}\"");
    println!("agent = {}", toml_string(agent.unwrap_or(name)));
    println!("# tools = [\"*\"]                                  # the tools it may call");
    println!("# manage = [\"schedules\", \"tasks\", \"escalations\"]  # what it may manage");
    Ok(ExitCode::SUCCESS)
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Modification time and size of the config file and every component it
/// names: what the watcher compares.
fn stamp(path: &Path, config: &HostConfig) -> Vec<Option<(SystemTime, u64)>> {
    std::iter::once(path.to_owned())
        .chain(config.tools.values().filter_map(|t| t.component.clone()))
        .map(|file| {
            let meta = std::fs::metadata(file).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn host_headers_are_matched_by_name_with_or_without_port() {
        let allowed: Vec<String> = ["localhost", "127.0.0.1", "::1", "agents.example:443"]
            .map(String::from)
            .into();
        for ok in [
            "localhost",
            "localhost:8765",
            "127.0.0.1:1",
            "[::1]:80",
            "agents.example:443",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for refused in [
            "evil.example",
            "localhost.evil.example",
            "agents.example:80",
            "[::2]:80",
            "",
        ] {
            assert!(!host_allowed(refused, &allowed), "{refused}");
        }
    }
}
