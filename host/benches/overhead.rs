//! The repository's benchmark: `cofferdam bench`'s comparisons (each
//! against a plain-wasmtime baseline in the same run; see
//! [`cofferdam::bench`]) over the `hello` example, plus scenarios that need
//! the test tools: a neighbour's bulkhead hung in a host call or spinning on
//! the CPU, a broken upstream API next to a healthy one, and the memory each
//! in-flight call holds.
//!
//! `cargo bench -p cofferdam --bench overhead` measures; `cargo test -p
//! cofferdam --bench overhead` (part of `cargo test`, so of CI) runs a few
//! iterations of everything, so the benchmark cannot rot.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cofferdam::bench::{self, BenchOptions};
use cofferdam::{CallRequest, Host, HttpSpec, LimitsSpec, PoolSpec, ToolPolicy};
use cofferdam_test_artifacts as artifacts;
use cofferdam_test_artifacts::upstream::{Reply, Upstream};

const INPUT: &str = r#"{"name":"bench"}"#;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let options = BenchOptions {
        spinner: Some(artifacts::LOOP_FOREVER.into()),
        serve_exe: Some(env!("CARGO_BIN_EXE_cofferdam").into()),
        ..if full {
            BenchOptions::full(artifacts::HELLO, INPUT)
        } else {
            BenchOptions::quick(artifacts::HELLO, INPUT)
        }
    };
    let report = bench::run(&options, &mut |step| eprintln!("measuring {step}…")).expect("bench");
    print!("{}", report.table());

    let (rounds, batch) = (options.rounds, options.batch);
    // A server's runtime: a worker per core, so the CPU lanes can keep one
    // free for short calls while neighbours spin.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("rt");
    runtime.block_on(async {
        let host = Host::builder().build().expect("host");
        host.load_file(Path::new(artifacts::HELLO), ToolPolicy::default())
            .await
            .expect("load");
        let calls = rounds * batch;
        let alone = hello_percentiles(&host, calls).await;
        let hung = with_neighbours(
            &host,
            artifacts::SLEEPY,
            r#"{"millis":600000}"#,
            calls,
        )
        .await;
        println!("hello next to a neighbour with its whole bulkhead (4 calls) hung in a host call (p50 / p99 per call)");
        let row = |what: &str, (p50, p99): (f64, f64), (base50, base99): (f64, f64)| {
            println!(
                "  {what:<46} {:>5.2}x / {:>5.2}x {p50:>8.1} / {p99:>8.1} µs",
                p50 / base50,
                p99 / base99
            );
        };
        row("alone", alone, alone);
        row("neighbour hung in a host call", hung, alone);
        let (solo, outage, weather_requests) = cascade(rounds, batch / 4 + 1).await;
        println!("flights (HTTP to a local API) while weather's API answers 503 to everything");
        println!("  flights alone                                    1.00x {solo:>10.1} µs/call");
        println!(
            "  flights during the outage                       {:>5.2}x {outage:>10.1} µs/call",
            outage / solo
        );
        println!("  requests that reached the broken weather API: {weather_requests}");
        let (p50, p99, calls) = mcp_latency(if full { 3000 } else { 20 }).await;
        println!("MCP tools/call of hello over stdio: `cofferdam serve` driven by rmcp's client, {calls} calls");
        println!("  p50                                              {p50:>10.0} µs   target <= 175 µs: {}", if p50 <= 175.0 { "met" } else { "NOT met" });
        println!("  p99                                              {p99:>10.0} µs");
        let in_flight = if full { 1000 } else { 20 };
        let memory = memory_per_call(in_flight).await;
        println!("{in_flight} calls in flight at once (sleepy, each holding its instance)");
        println!("  resident memory per in-flight call (RSS)         {:>10.0} KiB", memory.rss);
        println!("  the same, shared pages divided among sharers (PSS) {:>8.0} KiB", memory.pss);
        println!("  still resident per call once all have ended (PSS) {:>8.0} KiB", memory.kept);
        println!("  failed calls                                     {:>10}", memory.failed);
    });
}

/// p50 and p99 (µs) of sequential `tools/call`s of `hello` through
/// `cofferdam serve` over stdio, driven by rmcp's Rust client, after a
/// warm-up of a tenth as many calls.
async fn mcp_latency(calls: usize) -> (f64, f64, usize) {
    use rmcp::ServiceExt as _;
    use rmcp::model::CallToolRequestParams;
    use rmcp::transport::TokioChildProcess;

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("cofferdam.toml");
    let text = format!(
        "data_dir = \"data\"\n[tools.hello]\ncomponent = {:?}\n",
        artifacts::HELLO
    );
    std::fs::write(&config, text).expect("config");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_cofferdam"));
    command
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env_remove("COFFERDAM_LOG")
        .kill_on_drop(true);
    let transport = TokioChildProcess::new(command).expect("serve starts");
    let session = ().serve(transport).await.expect("initializes");
    let arguments = serde_json::json!({"name": "bench"});
    let params = CallToolRequestParams::new("hello")
        .with_arguments(arguments.as_object().cloned().unwrap_or_default());
    let mut samples = Vec::with_capacity(calls);
    for i in 0..calls + calls / 10 {
        let start = Instant::now();
        let result = session.call_tool(params.clone()).await.expect("tools/call");
        let elapsed = start.elapsed().as_secs_f64() * 1e6;
        assert_eq!(result.is_error, Some(false));
        if i >= calls / 10 {
            samples.push(elapsed);
        }
    }
    let _ = session.cancel().await;
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99), calls)
}

/// What `n` calls of `sleepy` holding their instances at once cost in
/// memory, per call (KiB).
struct MemoryPerCall {
    /// Resident set growth. It counts each page of a tool's memory image
    /// (mapped copy-on-write, shared by every instance) once per instance.
    rss: f64,
    /// Proportional set growth: a shared page counts once in all.
    pss: f64,
    /// Proportional set still above the start after every call ended.
    kept: f64,
    /// Calls that did not succeed.
    failed: usize,
}

async fn memory_per_call(n: u32) -> MemoryPerCall {
    let host = Host::builder().max_instances(n + 8).build().expect("host");
    let policy = ToolPolicy {
        pool: PoolSpec {
            max_concurrent: Some(n),
            ..PoolSpec::default()
        },
        ..ToolPolicy::default()
    };
    host.load_file(Path::new(artifacts::SLEEPY), policy)
        .await
        .expect("load");
    // One call first, so code and pool set-up are not counted per call.
    host.call(CallRequest::new("sleepy", r#"{"millis":1}"#))
        .await
        .expect("warm-up");
    let before = memory_kib();
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move {
                host.call(CallRequest::new("sleepy", r#"{"millis":1000}"#))
                    .await
            })
        })
        .collect();
    // Until all are in flight (or, should some fail, all have ended).
    while host.stats("sleepy").expect("stats").in_flight < n
        && calls.iter().any(|call| !call.is_finished())
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let during = memory_kib();
    let mut failed = 0;
    for call in calls {
        if !matches!(call.await, Ok(Ok(_))) {
            failed += 1;
        }
    }
    let after = memory_kib();
    let per_call = |to: f64, from: f64| (to - from).max(0.0) / f64::from(n);
    MemoryPerCall {
        rss: per_call(during.0, before.0),
        pss: per_call(during.1, before.1),
        kept: per_call(after.1, before.1),
        failed,
    }
}

/// The process's resident and proportional set sizes (KiB).
fn memory_kib() -> (f64, f64) {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    let field = |name: &str| {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0)
    };
    (field("Rss:"), field("Pss:"))
}

/// `hello`'s p50 and p99 latency (µs) over `calls` sequential calls, each
/// spawned onto the runtime.
async fn hello_percentiles(host: &Host, calls: u32) -> (f64, f64) {
    let mut samples: Vec<f64> = (0..calls.max(1)).map(|_| 0.0).collect();
    for sample in &mut samples {
        // Each call is a task on the runtime's workers, as a server's
        // requests are, competing with the neighbours for the threads.
        let host = host.clone();
        let start = Instant::now();
        let call = tokio::spawn(async move { host.call(CallRequest::new("hello", INPUT)).await });
        black_box(call.await.expect("joined").expect("call"));
        *sample = start.elapsed().as_secs_f64() * 1e6;
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}

/// `hello`'s latency while four calls of `neighbour` occupy its bulkhead.
async fn with_neighbours(
    host: &Host,
    neighbour: &str,
    input: &'static str,
    calls: u32,
) -> (f64, f64) {
    let policy = ToolPolicy {
        limits: LimitsSpec {
            fuel: Some(u64::MAX / 2),
            timeout_ms: Some(600_000),
            ..Default::default()
        },
        pool: PoolSpec {
            max_concurrent: Some(4),
            ..Default::default()
        },
        ..Default::default()
    };
    let tool = host
        .load_file(Path::new(neighbour), policy)
        .await
        .expect("load");
    let name = tool.name.to_string();
    let busy: Vec<_> = (0..4)
        .map(|_| {
            let (host, name) = (host.clone(), name.clone());
            tokio::spawn(async move { host.call(CallRequest::new(&name, input)).await })
        })
        .collect();
    while host.stats(&name).expect("stats").in_flight < 4 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let refused = host
        .call(CallRequest::new(&name, input))
        .await
        .expect_err("bulkhead full");
    assert_eq!(refused.class(), cofferdam::ErrorClass::BulkheadFull);
    let latency = hello_percentiles(host, calls).await;
    for call in &busy {
        call.abort();
    }
    for call in busy {
        let _ = call.await;
    }
    host.unload(&name);
    latency
}

fn api_policy(env: &str, origin: &str) -> ToolPolicy {
    ToolPolicy {
        env: [(env.to_owned(), origin.to_owned())].into(),
        http: HttpSpec {
            allow: vec![origin.to_owned()],
            allow_private: vec!["127.0.0.1/32".into()],
            ..HttpSpec::default()
        },
        ..ToolPolicy::default()
    }
}

/// `flights` latency alone, then while `weather` is called in a loop against
/// an API that answers 503; and how many requests the broken API received.
async fn cascade(rounds: u32, batch: u32) -> (f64, f64, usize) {
    let weather_api = Upstream::start(|_, _| Reply::status(503));
    let flights_api = Upstream::start(|_, _| {
        Reply::json(
            serde_json::json!([{"number": "TP1940", "departs": "08:10", "price_eur": 49.0}]),
        )
    });
    let host = Host::builder().build().expect("host");
    let (w, f) = (weather_api.origin(), flights_api.origin());
    host.load_file(
        Path::new(artifacts::WEATHER),
        api_policy("WEATHER_BASE_URL", &w),
    )
    .await
    .expect("load");
    host.load_file(
        Path::new(artifacts::FLIGHTS),
        api_policy("FLIGHTS_BASE_URL", &f),
    )
    .await
    .expect("load");
    let flights = |host: Host| async move {
        let mut samples = Vec::new();
        for _ in 0..rounds {
            let start = Instant::now();
            for _ in 0..batch {
                let request = CallRequest::new("flights", r#"{"from":"LIS","to":"OPO"}"#);
                black_box(host.call(request).await.expect("flights stay healthy"));
            }
            samples.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(batch));
        }
        median(samples)
    };
    let solo = flights(host.clone()).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noise = tokio::spawn({
        let (host, stop) = (host.clone(), Arc::clone(&stop));
        async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = host
                    .call(CallRequest::new("weather", r#"{"city":"Faro"}"#))
                    .await;
                tokio::task::yield_now().await;
            }
        }
    });
    let outage = flights(host.clone()).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    noise.await.expect("weather loop");
    (solo, outage, weather_api.requests())
}
