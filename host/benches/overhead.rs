//! Per-call overhead of cofferdam against plain wasmtime, side by side.
//!
//! `cargo bench -p cofferdam --bench overhead` measures; `cargo test -p
//! cofferdam --bench overhead` runs a few iterations only, so the benchmark
//! cannot rot. Batches of both contenders are interleaved and the medians of
//! the per-batch means are compared, so machine noise hits both alike.
//!
//! Contenders, all calling `invoke` of the `hello` example:
//! - plain wasmtime 48: pooling allocator, `InstancePre`, a fresh store and
//!   WASI context per call, no fuel, no epochs (the floor);
//! - cofferdam `Host::call`: the same plus fuel, epoch deadline, memory cap,
//!   captured stdio, input and output checks.
//!
//! It also times loading the component: compiling it versus mapping the
//! precompiled artifact a previous process left on disk; a call refused by an
//! open breaker (fail-fast latency); and `hello` while a neighbouring tool has
//! its whole bulkhead hung in a host call, or spinning on the CPU, compared
//! with `hello` alone (these phases run one after the other, not interleaved).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use cofferdam::{BreakerMode, CallRequest, Host, HttpSpec, LimitsSpec, PoolSpec, ToolPolicy};
use cofferdam_test_artifacts as artifacts;
use cofferdam_test_artifacts::upstream::{Reply, Upstream};
use std::sync::Arc;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The plain embedding generates its own bindings, as any wasmtime user would.
mod plain {
    wasmtime::component::bindgen!({
        world: "tool",
        path: "../wit",
        exports: { default: async },
    });
}

use plain::cofferdam::tool::{host as wit_host, types as wit_types};
use plain::{Tool, ToolPre};
use wit_types::{CallContext, Level};

struct Plain {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Plain {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit_types::Host for Plain {}

impl wit_host::Host for Plain {
    fn log(&mut self, _level: Level, message: String) {
        black_box(message);
    }
    fn progress(&mut self, _done: u64, _total: Option<u64>, message: String) {
        black_box(message);
    }
    fn remaining_budget(&mut self) -> u64 {
        0
    }
}

struct PlainWasmtime {
    engine: Engine,
    pre: ToolPre<Plain>,
    metered: bool,
}

impl PlainWasmtime {
    /// `metered`: compile with fuel and epoch checks and give each store fuel
    /// and a deadline, as any embedding that bounds guests must.
    fn new(component: &[u8], metered: bool) -> Self {
        let mut config = Config::new();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(
            PoolingAllocationConfig::new(),
        ));
        config.consume_fuel(metered).epoch_interruption(metered);
        let engine = Engine::new(&config).expect("engine");
        let component = Component::new(&engine, component).expect("component");
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("wasi");
        Tool::add_to_linker::<_, HasSelf<Plain>>(&mut linker, |s| s).expect("host");
        let pre = ToolPre::new(linker.instantiate_pre(&component).expect("pre")).expect("tool");
        Self {
            engine,
            pre,
            metered,
        }
    }

    async fn call(&self, input: &str) -> String {
        let state = Plain {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(&self.engine, state);
        if self.metered {
            store.set_fuel(1_000_000_000).expect("fuel");
            store.set_epoch_deadline(1_000);
        }
        let tool = self
            .pre
            .instantiate_async(&mut store)
            .await
            .expect("instantiate");
        let ctx = CallContext {
            call_id: "c".into(),
            task_id: None,
            attempt: 1,
            deadline_ms: 1,
        };
        tool.call_invoke(&mut store, &ctx, input)
            .await
            .expect("call")
            .expect("tool ok")
    }
}

const INPUT: &str = r#"{"name":"bench"}"#;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, batch) = if full { (31, 400) } else { (3, 5) };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    runtime.block_on(async {
        let bytes = std::fs::read(artifacts::HELLO).expect("hello component");

        let data = tempfile::tempdir().expect("tempdir");
        let start = Instant::now();
        let host = Host::builder().data_dir(data.path()).build().expect("host");
        host.load_file(Path::new(artifacts::HELLO), ToolPolicy::default())
            .await
            .expect("load");
        let compiled = start.elapsed();
        drop(host);
        let start = Instant::now();
        let host = Host::builder().data_dir(data.path()).build().expect("host");
        let tool = host
            .load_file(Path::new(artifacts::HELLO), ToolPolicy::default())
            .await
            .expect("load");
        let cached = start.elapsed();
        assert_eq!(tool.artifact.source, cofferdam::ArtifactSource::Cached);

        let plain = PlainWasmtime::new(&bytes, false);
        let metered = PlainWasmtime::new(&bytes, true);
        let (mut plain_us, mut metered_us, mut host_us) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let start = Instant::now();
            for _ in 0..batch {
                black_box(plain.call(INPUT).await);
            }
            plain_us.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(batch));
            let start = Instant::now();
            for _ in 0..batch {
                black_box(metered.call(INPUT).await);
            }
            metered_us.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(batch));
            let start = Instant::now();
            for _ in 0..batch {
                let outcome = host
                    .call(CallRequest::new("hello", INPUT))
                    .await
                    .expect("call");
                black_box(outcome);
            }
            host_us.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(batch));
        }
        let (plain, metered, ours) = (median(plain_us), median(metered_us), median(host_us));
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!("hello, fresh instance per call ({rounds} rounds x {batch} calls, medians)");
        println!("  plain wasmtime 48          {plain:>9.1} µs/call   1.00x");
        println!(
            "  plain + fuel + epochs      {metered:>9.1} µs/call   {:.2}x",
            metered / plain
        );
        println!(
            "  cofferdam Host::call       {ours:>9.1} µs/call   {:.2}x",
            ours / plain
        );
        let fail_fast = fail_fast_us(&host, rounds, batch).await;
        println!(
            "  breaker open: refused call {fail_fast:>9.2} µs/call   {:.3}x",
            fail_fast / plain
        );
        let alone = hello_us(&host, rounds, batch).await;
        let hung = with_neighbours(
            &host,
            artifacts::SLEEPY,
            r#"{"millis":600000}"#,
            rounds,
            batch,
        )
        .await;
        let spinning = with_neighbours(&host, artifacts::LOOP_FOREVER, "{}", rounds, batch).await;
        println!("hello next to a neighbour with its whole bulkhead (4 calls) busy");
        println!("  alone                      {alone:>9.1} µs/call   1.00x");
        println!(
            "  neighbour hung in host call {hung:>8.1} µs/call   {:.2}x",
            hung / alone
        );
        println!(
            "  neighbour spinning on CPU  {spinning:>9.1} µs/call   {:.2}x",
            spinning / alone
        );
        let (solo, outage, weather_requests) = cascade(rounds, batch / 4 + 1).await;
        println!("flights (HTTP to a local API) while weather's API answers 503 to everything");
        println!("  flights alone              {solo:>9.1} µs/call   1.00x");
        println!(
            "  flights during the outage  {outage:>9.1} µs/call   {:.2}x",
            outage / solo
        );
        println!("  requests that reached the broken weather API: {weather_requests}");
        let calls = if full { 2000 } else { 40 };
        let grouped = durable_calls_per_sec(true, calls).await;
        let single = durable_calls_per_sec(false, calls).await;
        println!("durable keyed calls of hello, {calls} calls, 64 at a time (journal on disk)");
        println!("  one commit per write       {single:>9.0} calls/s   1.00x");
        println!(
            "  group commit               {grouped:>9.0} calls/s   {:.1}x",
            grouped / single
        );
        println!("load hello (host build + load)");
        println!("  compile and cache          {:>9.1} ms", ms(compiled));
        println!(
            "  map cached artifact        {:>9.1} ms   {:.0}x faster",
            ms(cached),
            ms(compiled) / ms(cached)
        );
    });
}

async fn hello_us(host: &Host, rounds: u32, batch: u32) -> f64 {
    let mut samples = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..batch {
            black_box(
                host.call(CallRequest::new("hello", INPUT))
                    .await
                    .expect("call"),
            );
        }
        samples.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(batch));
    }
    median(samples)
}

async fn fail_fast_us(host: &Host, rounds: u32, batch: u32) -> f64 {
    host.set_breaker_mode("hello", BreakerMode::ForcedOpen)
        .expect("hello");
    let mut samples = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..batch {
            let refused = host
                .call(CallRequest::new("hello", INPUT))
                .await
                .expect_err("open");
            black_box(refused);
        }
        samples.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(batch));
    }
    host.set_breaker_mode("hello", BreakerMode::Normal)
        .expect("hello");
    median(samples)
}

/// `hello`'s latency while four calls of `neighbour` occupy its bulkhead.
async fn with_neighbours(
    host: &Host,
    neighbour: &str,
    input: &'static str,
    rounds: u32,
    batch: u32,
) -> f64 {
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
    let latency = hello_us(host, rounds, batch).await;
    for call in &busy {
        call.abort();
    }
    for call in busy {
        let _ = call.await;
    }
    host.unload(&name);
    latency
}

/// Throughput of keyed calls whose claims and results are committed to disk
/// before each caller hears back.
async fn durable_calls_per_sec(group_commit: bool, calls: u32) -> f64 {
    let data = tempfile::tempdir().expect("tempdir");
    let host = Host::builder()
        .data_dir(data.path())
        .group_commit(group_commit)
        .build()
        .expect("host");
    let pool = PoolSpec {
        max_concurrent: Some(64),
        max_queue: Some(100_000),
        max_wait_ms: Some(600_000),
    };
    host.load_file(
        Path::new(artifacts::HELLO),
        ToolPolicy {
            pool,
            ..Default::default()
        },
    )
    .await
    .expect("load");
    let host = Arc::new(host);
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let start = Instant::now();
    let tasks: Vec<_> = (0..calls)
        .map(|i| {
            let (host, limit) = (Arc::clone(&host), Arc::clone(&limit));
            tokio::spawn(async move {
                let _permit = limit.acquire().await.expect("semaphore");
                let request = CallRequest {
                    idempotency_key: Some(format!("key-{i}")),
                    ..CallRequest::new("hello", INPUT)
                };
                host.call(request).await.expect("durable call");
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    f64::from(calls) / start.elapsed().as_secs_f64()
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
