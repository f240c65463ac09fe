//! `cofferdam-embed CONFIG [ADDR]`: serves the tools of a cofferdam.toml
//! over the example HTTP API (default address 127.0.0.1:8080).

use std::net::SocketAddr;

use anyhow::{Context as _, Result, bail};
use axum::serve::ListenerExt as _;
use cofferdam::HostConfig;

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COFFERDAM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let Some(config) = args.next() else {
        bail!("usage: cofferdam-embed CONFIG [ADDR]");
    };
    let addr: SocketAddr = args
        .next()
        .as_deref()
        .unwrap_or("127.0.0.1:8080")
        .parse()
        .context("ADDR must be an address such as 127.0.0.1:8080")?;
    let config = HostConfig::from_file(config.as_ref())?;
    let host = config.builder().build()?;
    for (name, result) in config.load(&host).await {
        result.with_context(|| format!("tools.{name}"))?;
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    // Answers go out as soon as they are written, not when the client
    // acknowledges the previous segment (its delayed ACK adds ~40 ms).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let clients = cofferdam::Clients::default();
    clients.replace(&config.clients).context("[[clients]]")?;
    eprintln!("serving {} tool(s) at http://{local}", host.tools().len());
    axum::serve(listener, cofferdam_embed::app_with_clients(host, clients))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
