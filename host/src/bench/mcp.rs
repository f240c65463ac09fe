//! The fairness scenario through `cofferdam serve` over stdio: a minimal
//! MCP client (newline-delimited JSON-RPC, as the stdio transport is) that
//! starts the server with the component and the spinner loaded, and times
//! sequential `tools/call`s while four spinning calls are in flight.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::fairness::{SPINNER, p50_p99};
use super::{BenchError, BenchOptions, host_error};

/// `cofferdam serve` on stdio, spoken to line by line.
struct Server {
    _child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    next_id: u64,
}

impl Server {
    async fn start(exe: &Path, config: &Path) -> Result<Self, BenchError> {
        let mut child = tokio::process::Command::new(exe)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env_remove("COFFERDAM_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::Host(format!("cannot start {}: {e}", exe.display())))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(BenchError::Host("serve has no stdio".into()));
        };
        let mut server = Self {
            _child: child,
            stdin,
            stdout: BufReader::new(stdout).lines(),
            next_id: 1,
        };
        let init = json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "cofferdam-bench", "version": env!("CARGO_PKG_VERSION")}
        });
        let id = server.send("initialize", init).await?;
        server.reply(id).await?;
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        server.write(&initialized).await?;
        Ok(server)
    }

    async fn write(&mut self, message: &Value) -> Result<(), BenchError> {
        let mut line = serde_json::to_vec(message).map_err(host_error)?;
        line.push(b'\n');
        self.stdin.write_all(&line).await.map_err(host_error)?;
        self.stdin.flush().await.map_err(host_error)
    }

    /// Sends a request; its id.
    async fn send(&mut self, method: &str, params: Value) -> Result<u64, BenchError> {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.write(&request).await?;
        Ok(id)
    }

    /// Reads until the response to `id` (skipping notifications and other
    /// responses); its `result`.
    async fn reply(&mut self, id: u64) -> Result<Value, BenchError> {
        loop {
            let line = self
                .stdout
                .next_line()
                .await
                .map_err(host_error)?
                .ok_or_else(|| BenchError::Host("serve closed its stdout".into()))?;
            let mut message: Value = serde_json::from_str(&line).map_err(host_error)?;
            if message["id"] != json!(id) {
                continue;
            }
            if let Some(error) = message.get("error") {
                return Err(BenchError::Host(format!("MCP error: {error}")));
            }
            return Ok(message["result"].take());
        }
    }

    async fn call(&mut self, tool: &str, arguments: &Value) -> Result<u64, BenchError> {
        let params = json!({"name": tool, "arguments": arguments});
        self.send("tools/call", params).await
    }
}

/// p50 and p99 (µs) of the component over stdio alone, then next to four
/// spinning calls.
pub(super) async fn fairness(
    exe: &Path,
    options: &BenchOptions,
    spinner: &Path,
    calls: u32,
) -> Result<((f64, f64), (f64, f64)), BenchError> {
    let dir = tempfile::tempdir().map_err(host_error)?;
    let config = dir.path().join("cofferdam.toml");
    // The config lives in a temporary directory, where paths given relative
    // to the working directory would name nothing.
    let component = std::path::absolute(&options.component).map_err(host_error)?;
    let spinner = std::path::absolute(spinner).map_err(host_error)?;
    let text = format!(
        "data_dir = \"data\"\n\
         [tools.tool]\ncomponent = {component:?}\n\
         [tools.{SPINNER}]\ncomponent = {spinner:?}\n\
         [tools.{SPINNER}.limits]\nfuel = {fuel}\ntimeout_ms = 600000\n\
         [tools.{SPINNER}.breaker]\nmode = \"disabled\"\n",
        fuel = u64::MAX / 4,
    );
    std::fs::write(&config, text).map_err(host_error)?;
    let mut server = Server::start(exe, &config).await?;
    let input: Value = serde_json::from_str(&options.input).map_err(host_error)?;
    let warm_up = calls / 10 + 1;
    let alone = timed(&mut server, &input, warm_up, calls).await?;
    for _ in 0..4 {
        // Never answered: they spin until the server is stopped.
        server.call(SPINNER, &json!({})).await?;
    }
    // Let them compute past the quantum and into the batch lane.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let next_to = timed(&mut server, &input, warm_up, calls).await?;
    Ok((alone, next_to))
}

async fn timed(
    server: &mut Server,
    input: &Value,
    warm_up: u32,
    calls: u32,
) -> Result<(f64, f64), BenchError> {
    let mut samples = Vec::with_capacity(calls as usize);
    for i in 0..warm_up + calls {
        let start = Instant::now();
        let id = server.call("tool", input).await?;
        let result = server.reply(id).await?;
        let elapsed = start.elapsed().as_secs_f64() * 1e6;
        if result["isError"] == json!(true) {
            return Err(BenchError::Host(format!("tools/call failed: {result}")));
        }
        if i >= warm_up {
            samples.push(elapsed);
        }
    }
    Ok(p50_p99(samples))
}
