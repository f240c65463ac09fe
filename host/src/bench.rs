//! The DESIGN §8 comparisons, measured on this machine: each figure against
//! a baseline measured in the same run, so a user can check the numbers
//! (`cofferdam bench`) and the repository's benchmarks can reuse them.
//!
//! Per-call latencies are interleaved: every round times a batch of each
//! contender in turn, and the medians of the per-batch means are compared,
//! so machine noise hits every contender alike. Baselines are a minimal
//! plain-wasmtime embedding of the same component: a fresh pooled instance
//! per call (the floor for isolation) and one reused instance (the floor for
//! warm reuse).
//!
//! It does not measure the MCP transport; see the README.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::runtime::bindings::cofferdam::tool::{host as wit_host, types as wit_types};
use crate::runtime::bindings::{Tool, ToolPre};
use crate::{BreakerMode, CallRequest, Host, PoolSpec, ToolName, ToolPolicy, WarmSpec};

/// What to measure with.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// A trivial tool component (the `hello` example or alike).
    pub component: PathBuf,
    /// Its input.
    pub input: String,
    /// Interleaved rounds for per-call latencies.
    pub rounds: u32,
    /// Calls per contender per round.
    pub batch: u32,
    /// Calls for each throughput figure.
    pub calls: u32,
    /// Tools loaded from the artifact cache for the load figure.
    pub tools: u32,
}

impl BenchOptions {
    /// The full measurement (about a minute on a 2-core machine).
    pub fn full(component: impl Into<PathBuf>, input: impl Into<String>) -> Self {
        Self {
            component: component.into(),
            input: input.into(),
            rounds: 31,
            batch: 400,
            calls: 4000,
            tools: 100,
        }
    }

    /// A few iterations of everything: proves the benchmark works, measures
    /// nothing reliable.
    pub fn quick(component: impl Into<PathBuf>, input: impl Into<String>) -> Self {
        Self {
            rounds: 3,
            batch: 5,
            calls: 40,
            tools: 10,
            ..Self::full(component, input)
        }
    }
}

/// The unit of a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    /// Microseconds per call (lower is better).
    MicrosPerCall,
    /// Calls per second (higher is better).
    CallsPerSecond,
    /// Milliseconds (lower is better).
    Millis,
    /// A count.
    Count,
}

impl Unit {
    fn label(self) -> &'static str {
        match self {
            Self::MicrosPerCall => "µs/call",
            Self::CallsPerSecond => "calls/s",
            Self::Millis => "ms",
            Self::Count => "",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    /// The group it belongs to (the baseline's group).
    pub group: &'static str,
    /// What was measured.
    pub what: String,
    /// The median (or total, for counts and one-off times).
    pub value: f64,
    /// Its unit.
    pub unit: Unit,
    /// Against the group's baseline (1.0 for the baseline itself).
    pub ratio: Option<f64>,
    /// The DESIGN §8 target, when one applies.
    pub target: Option<&'static str>,
    /// Whether the target is met.
    pub met: Option<bool>,
}

/// Every figure of one run.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct BenchReport {
    /// The rows, grouped, baseline first in each group.
    pub rows: Vec<Row>,
}

impl BenchReport {
    fn push(
        &mut self,
        group: &'static str,
        what: &str,
        value: f64,
        unit: Unit,
        ratio: Option<f64>,
    ) {
        self.rows.push(Row {
            group,
            what: what.to_owned(),
            value,
            unit,
            ratio,
            target: None,
            met: None,
        });
    }

    fn target(&mut self, target: &'static str, met: bool) {
        if let Some(row) = self.rows.last_mut() {
            row.target = Some(target);
            row.met = Some(met);
        }
    }

    /// The report as an aligned text table: ratios first.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let mut group = "";
        for row in &self.rows {
            if row.group != group {
                group = row.group;
                let _ = writeln!(out, "{group}");
            }
            let ratio = row.ratio.map_or_else(String::new, |r| format!("{r:.2}x"));
            let value = match row.unit {
                Unit::MicrosPerCall if row.value < 10.0 => format!("{:.2}", row.value),
                Unit::MicrosPerCall | Unit::Millis => format!("{:.1}", row.value),
                Unit::CallsPerSecond | Unit::Count => format!("{:.0}", row.value),
            };
            let target = match (row.target, row.met) {
                (Some(t), Some(true)) => format!("  target {t}: met"),
                (Some(t), _) => format!("  target {t}: NOT met"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "  {:<44} {ratio:>8} {value:>10} {:<8}{target}",
                row.what,
                row.unit.label()
            );
        }
        out
    }
}

/// The benchmark could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The component could not be read or compiled by the plain baseline.
    #[error("cannot use component {path}: {message}")]
    Component {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The host failed.
    #[error("{0}")]
    Host(String),
}

fn host_error(e: impl std::fmt::Display) -> BenchError {
    BenchError::Host(e.to_string())
}

/// Runs every comparison; `progress` hears what is being measured.
/// Builds its own tokio runtimes: call it outside of one (or from
/// `spawn_blocking`).
pub fn run(
    options: &BenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<BenchReport, BenchError> {
    let bytes = std::fs::read(&options.component).map_err(|e| BenchError::Component {
        path: options.component.clone(),
        message: e.to_string(),
    })?;
    let mut report = BenchReport::default();
    let runtime = current_thread();
    progress("per-call latency: plain wasmtime vs cofferdam, fresh and reused instances");
    runtime.block_on(per_call(options, &bytes, &mut report))?;
    progress("durable keyed calls: one commit per write vs group commit");
    runtime.block_on(durable(options, &mut report))?;
    progress("throughput on 1 and 2 worker threads; 1,000 calls in flight");
    throughput(options, &mut report)?;
    progress("loading precompiled tools");
    runtime.block_on(loading(options, &mut report))?;
    Ok(report)
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Mean µs per call of `batch` calls of `f`.
async fn batch_us<F, Fut>(batch: u32, mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    for _ in 0..batch {
        f().await;
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(batch.max(1))
}

async fn per_call(
    options: &BenchOptions,
    bytes: &[u8],
    report: &mut BenchReport,
) -> Result<(), BenchError> {
    let component_error = |e: wasmtime::Error| BenchError::Component {
        path: options.component.clone(),
        message: format!("{e:#}"),
    };
    let fresh = PlainWasmtime::new(bytes, Pooling::SameAsCofferdam).map_err(component_error)?;
    let untuned = PlainWasmtime::new(bytes, Pooling::Default).map_err(component_error)?;
    let metered = PlainWasmtime::metered(bytes).map_err(component_error)?;
    let mut reused = fresh.reused().await.map_err(component_error)?;
    let input = options.input.as_str();

    let host = Host::builder().build().map_err(host_error)?;
    host.load_file(&options.component, ToolPolicy::default())
        .await
        .map_err(host_error)?;
    let name = only_tool(&host)?;
    let warm_name = ToolName::new("bench-warm").map_err(host_error)?;
    let warm = ToolPolicy {
        name: Some(warm_name.clone()),
        warm: WarmSpec {
            instances: Some(1),
            max_invocations: Some(u32::MAX),
            idle_ms: None,
        },
        ..ToolPolicy::default()
    };
    host.load_file(&options.component, warm)
        .await
        .map_err(host_error)?;
    let call = |tool: &str| {
        let request = CallRequest::new(tool, input);
        let host = host.clone();
        async move {
            black_box(host.call(request).await.expect("benchmark call succeeds"));
        }
    };
    let (mut plain_us, mut untuned_us, mut metered_us) = (Vec::new(), Vec::new(), Vec::new());
    let (mut reused_us, mut host_us, mut warm_us) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..options.rounds {
        plain_us.push(
            batch_us(options.batch, || async {
                black_box(fresh.call(input).await);
            })
            .await,
        );
        untuned_us.push(
            batch_us(options.batch, || async {
                black_box(untuned.call(input).await);
            })
            .await,
        );
        metered_us.push(
            batch_us(options.batch, || async {
                black_box(metered.call(input).await);
            })
            .await,
        );
        host_us.push(batch_us(options.batch, || call(&name)).await);
        let start = Instant::now();
        for _ in 0..options.batch {
            black_box(reused.call(input).await);
        }
        reused_us.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(options.batch.max(1)));
        warm_us.push(batch_us(options.batch, || call(warm_name.as_str())).await);
    }
    let metered = median(metered_us);
    let (plain, untuned, reused, ours, warm) = (
        median(plain_us),
        median(untuned_us),
        median(reused_us),
        median(host_us),
        median(warm_us),
    );
    let group = "per call, trivial tool (interleaved medians)";
    report.push(
        group,
        "plain wasmtime, fresh pooled instance (same pooling)",
        plain,
        Unit::MicrosPerCall,
        Some(1.0),
    );
    report.push(
        group,
        "plain wasmtime, default pooling (madvise)",
        untuned,
        Unit::MicrosPerCall,
        Some(untuned / plain),
    );
    report.push(
        group,
        "plain wasmtime + fuel and epoch checks",
        metered,
        Unit::MicrosPerCall,
        Some(metered / plain),
    );
    report.push(
        group,
        "cofferdam Host::call, fresh instance",
        ours,
        Unit::MicrosPerCall,
        Some(ours / plain),
    );
    report.target("<= 1.1x plain fresh", ours / plain <= 1.1);
    report.push(
        group,
        "plain wasmtime, one reused instance",
        reused,
        Unit::MicrosPerCall,
        Some(reused / plain),
    );
    report.push(
        group,
        "cofferdam Host::call, warm instance",
        warm,
        Unit::MicrosPerCall,
        Some(warm / plain),
    );
    report.target("<= 2 µs/call", warm <= 2.0);

    host.set_breaker_mode(&name, BreakerMode::ForcedOpen)
        .map_err(host_error)?;
    let mut refused = Vec::new();
    for _ in 0..options.rounds {
        refused.push(
            batch_us(options.batch, || async {
                let error = host.call(CallRequest::new(&name, input)).await;
                black_box(error.expect_err("the breaker is open"));
            })
            .await,
        );
    }
    let refused = median(refused);
    report.push(
        group,
        "cofferdam call refused by an open breaker",
        refused,
        Unit::MicrosPerCall,
        Some(refused / plain),
    );
    Ok(())
}

/// Loads the component behind the given bulkhead; returns the tool's name.
async fn load_pooled(
    host: &Host,
    options: &BenchOptions,
    pool: PoolSpec,
) -> Result<String, BenchError> {
    let policy = ToolPolicy {
        pool,
        ..ToolPolicy::default()
    };
    host.load_file(&options.component, policy)
        .await
        .map_err(host_error)?;
    only_tool(host)
}

/// The name of the only tool a host has loaded.
fn only_tool(host: &Host) -> Result<String, BenchError> {
    host.tools()
        .first()
        .map(|t| t.name.to_string())
        .ok_or_else(|| BenchError::Host("no tool loaded".into()))
}

async fn durable(options: &BenchOptions, report: &mut BenchReport) -> Result<(), BenchError> {
    let single = durable_calls_per_sec(options, false).await?;
    let grouped = durable_calls_per_sec(options, true).await?;
    let group = "durable keyed calls, 64 in flight (journal fsync'd before answering)";
    report.push(
        group,
        "one commit per write",
        single,
        Unit::CallsPerSecond,
        Some(1.0),
    );
    report.push(
        group,
        "group commit",
        grouped,
        Unit::CallsPerSecond,
        Some(grouped / single),
    );
    report.target(">= 10x", grouped / single >= 10.0);
    Ok(())
}

/// Throughput of keyed calls whose claims and results are committed to disk
/// before each caller hears back.
async fn durable_calls_per_sec(
    options: &BenchOptions,
    group_commit: bool,
) -> Result<f64, BenchError> {
    let data = tempfile::tempdir().map_err(host_error)?;
    let host = Host::builder()
        .data_dir(data.path())
        .group_commit(group_commit)
        .build()
        .map_err(host_error)?;
    let pool = PoolSpec {
        max_concurrent: Some(64),
        max_queue: Some(u32::MAX),
        max_wait_ms: Some(600_000),
    };
    let name = load_pooled(&host, options, pool).await?;
    let calls = (options.calls / 2).max(1);
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let start = Instant::now();
    let tasks: Vec<_> = (0..calls)
        .map(|i| {
            let (host, limit, name) = (host.clone(), Arc::clone(&limit), name.clone());
            let input = options.input.clone();
            tokio::spawn(async move {
                let _permit = limit.acquire().await.expect("semaphore");
                let request = CallRequest {
                    idempotency_key: Some(format!("key-{i}")),
                    ..CallRequest::new(&name, input)
                };
                host.call(request).await.map(drop)
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(host_error)?.map_err(host_error)?;
    }
    Ok(f64::from(calls) / start.elapsed().as_secs_f64())
}

fn throughput(options: &BenchOptions, report: &mut BenchReport) -> Result<(), BenchError> {
    let runtime = |workers| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .map_err(host_error)
    };
    let (single, double) = (runtime(1)?, runtime(2)?);
    let host = single.block_on(throughput_host(options))?;
    // Interleaved rounds, medians: both runtimes see the same machine noise.
    let (mut ones, mut twos) = (Vec::new(), Vec::new());
    for _ in 0..options.rounds.div_ceil(6) {
        ones.push(single.block_on(calls_per_sec(&host, options))?);
        twos.push(double.block_on(calls_per_sec(&host, options))?);
    }
    let (one, two) = (median(ones), median(twos));
    let group = "throughput, fresh instance per call, 16 callers (interleaved medians)";
    report.push(
        group,
        "1 worker thread",
        one,
        Unit::CallsPerSecond,
        Some(1.0),
    );
    report.push(
        group,
        "2 worker threads",
        two,
        Unit::CallsPerSecond,
        Some(two / one),
    );
    report.target(">= 1.8x", two / one >= 1.8);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(host_error)?;
    let (failed, millis) = runtime.block_on(in_flight(options, 1000))?;
    let group = "1,000 calls started at once on one host (bulkhead of 1,000)";
    report.push(group, "failed calls", failed as f64, Unit::Count, None);
    report.target("0", failed == 0);
    report.push(group, "time until all answered", millis, Unit::Millis, None);
    Ok(())
}

/// A host with the tool behind a bulkhead of 16.
async fn throughput_host(options: &BenchOptions) -> Result<Host, BenchError> {
    let host = Host::builder().build().map_err(host_error)?;
    let pool = PoolSpec {
        max_concurrent: Some(16),
        ..PoolSpec::default()
    };
    load_pooled(&host, options, pool).await?;
    Ok(host)
}

/// Calls per second of `Host::call` from 16 concurrent callers on the
/// current runtime.
async fn calls_per_sec(host: &Host, options: &BenchOptions) -> Result<f64, BenchError> {
    let name = only_tool(host)?;
    let per_caller = (options.calls / 16).max(1);
    // Warm up the code paths on this runtime.
    host.call(CallRequest::new(&name, options.input.as_str()))
        .await
        .map_err(host_error)?;
    let start = Instant::now();
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let (host, name, input) = (host.clone(), name.clone(), options.input.clone());
            tokio::spawn(async move {
                for _ in 0..per_caller {
                    host.call(CallRequest::new(&name, input.as_str())).await?;
                }
                Ok::<_, crate::CallError>(())
            })
        })
        .collect();
    for caller in callers {
        caller.await.map_err(host_error)?.map_err(host_error)?;
    }
    Ok(f64::from(per_caller * 16) / start.elapsed().as_secs_f64())
}

/// Starts `n` calls at once; how many failed and how long all took (ms).
async fn in_flight(options: &BenchOptions, n: u32) -> Result<(usize, f64), BenchError> {
    let host = Host::builder()
        .max_instances(n + 24)
        .build()
        .map_err(host_error)?;
    let pool = PoolSpec {
        max_concurrent: Some(n),
        ..PoolSpec::default()
    };
    let name = load_pooled(&host, options, pool).await?;
    let start = Instant::now();
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let (host, name, input) = (host.clone(), name.clone(), options.input.clone());
            tokio::spawn(async move { host.call(CallRequest::new(&name, input)).await })
        })
        .collect();
    let mut failed = 0;
    for call in calls {
        if !matches!(call.await, Ok(Ok(_))) {
            failed += 1;
        }
    }
    Ok((failed, start.elapsed().as_secs_f64() * 1e3))
}

async fn loading(options: &BenchOptions, report: &mut BenchReport) -> Result<(), BenchError> {
    let data = tempfile::tempdir().map_err(host_error)?;
    let build = || {
        Host::builder()
            .data_dir(data.path())
            .max_instances(options.tools * 4 + 16)
            .build()
    };
    let start = Instant::now();
    let host = build().map_err(host_error)?;
    host.load_file(&options.component, ToolPolicy::default())
        .await
        .map_err(host_error)?;
    let compiled = start.elapsed();
    drop(host);
    // A new host (as after a restart) loads the tool under many names from
    // the artifact the first one left.
    let host = build().map_err(host_error)?;
    let start = Instant::now();
    let mut first = Duration::ZERO;
    for i in 0..options.tools {
        let policy = ToolPolicy {
            name: Some(ToolName::new(&format!("tool-{i}")).map_err(host_error)?),
            pool: PoolSpec {
                max_concurrent: Some(1),
                ..PoolSpec::default()
            },
            ..ToolPolicy::default()
        };
        host.load_file(&options.component, policy)
            .await
            .map_err(host_error)?;
        if i == 0 {
            first = start.elapsed();
        }
    }
    let loaded = start.elapsed();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let group = "loading tools (a new host on the same data directory)";
    report.push(
        group,
        "compile one tool and cache its artifact",
        ms(compiled),
        Unit::Millis,
        Some(1.0),
    );
    // The first load reads the artifact, checks its tag and deserializes it;
    // the same bytes under other names share that native code.
    report.push(
        group,
        "load 1 precompiled tool (read, authenticate, deserialize)",
        ms(first),
        Unit::Millis,
        Some(ms(first) / ms(compiled)),
    );
    let what = format!("load {} precompiled tools", options.tools);
    report.push(
        group,
        &what,
        ms(loaded),
        Unit::Millis,
        Some(ms(loaded) / ms(compiled)),
    );
    report.target(
        "< 100 ms for 100",
        ms(loaded) * 100.0 / f64::from(options.tools.max(1)) < 100.0,
    );
    Ok(())
}

/// The store data of the plain baseline: WASI and nothing else.
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
    fn log(&mut self, _level: wit_types::Level, message: String) {
        black_box(message);
    }
    fn progress(&mut self, _done: u64, _total: Option<u64>, message: String) {
        black_box(message);
    }
    fn remaining_budget(&mut self) -> u64 {
        0
    }
}

fn plain_state() -> Plain {
    Plain {
        wasi: WasiCtx::builder().build(),
        table: ResourceTable::new(),
    }
}

fn plain_context() -> wit_types::CallContext {
    wit_types::CallContext {
        call_id: "c".into(),
        task_id: None,
        attempt: 1,
        deadline_ms: 1,
    }
}

/// The floor: a minimal wasmtime 48 embedding of a tool component, with the
/// pooling allocator and a fresh store and WASI context per call; no fuel,
/// no epochs, no limits. What any embedder would write first.
pub struct PlainWasmtime {
    engine: Engine,
    pre: ToolPre<Plain>,
    metered: bool,
}

/// How the plain baseline's pooling allocator resets slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// wasmtime's defaults (`madvise` per slot).
    Default,
    /// The settings cofferdam uses (`memset` of dirtied pages), so the
    /// comparison isolates cofferdam's own per-call work.
    SameAsCofferdam,
}

impl PlainWasmtime {
    /// Compiles `component` into a plain engine.
    pub fn new(component: &[u8], pooling: Pooling) -> wasmtime::Result<Self> {
        Self::build(component, pooling, false)
    }

    /// The same with fuel metering and epoch interruption compiled in, and
    /// fuel and a deadline set per call: what bounding a guest costs alone.
    pub fn metered(component: &[u8]) -> wasmtime::Result<Self> {
        Self::build(component, Pooling::SameAsCofferdam, true)
    }

    fn build(component: &[u8], pooling: Pooling, metered: bool) -> wasmtime::Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        if pooling == Pooling::SameAsCofferdam {
            crate::runtime::engine::tune_slot_reuse(&mut pool);
        }
        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .consume_fuel(metered)
            .epoch_interruption(metered);
        let engine = Engine::new(&config)?;
        let component = Component::new(&engine, component)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        Tool::add_to_linker::<_, HasSelf<Plain>>(&mut linker, |s| s)?;
        let pre = ToolPre::new(linker.instantiate_pre(&component)?)?;
        Ok(Self {
            engine,
            pre,
            metered,
        })
    }

    /// One call on a fresh instance; panics if the tool fails.
    pub async fn call(&self, input: &str) -> String {
        let mut store = Store::new(&self.engine, plain_state());
        if self.metered {
            store.set_fuel(2_000_000_000).expect("fuel");
            // No epoch ticker runs here: the check is paid, never hit.
            store.set_epoch_deadline(1);
        }
        let tool = self
            .pre
            .instantiate_async(&mut store)
            .await
            .expect("instantiate");
        tool.call_invoke(&mut store, &plain_context(), input)
            .await
            .expect("call")
            .expect("tool ok")
    }

    /// One instance kept for many calls.
    pub async fn reused(&self) -> wasmtime::Result<PlainReused> {
        let mut store = Store::new(&self.engine, plain_state());
        let tool = self.pre.instantiate_async(&mut store).await?;
        Ok(PlainReused { store, tool })
    }
}

/// The floor of warm reuse: one plain instance called again and again.
pub struct PlainReused {
    store: Store<Plain>,
    tool: Tool,
}

impl PlainReused {
    /// One call on the kept instance; panics if the tool fails.
    pub async fn call(&mut self, input: &str) -> String {
        self.tool
            .call_invoke(&mut self.store, &plain_context(), input)
            .await
            .expect("call")
            .expect("tool ok")
    }
}
