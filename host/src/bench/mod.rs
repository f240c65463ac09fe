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
//! The MCP transport is measured only in the fairness scenario (given the
//! `cofferdam` binary); see the README for the rest.
//!
//! One file per scenario group: `calls` (per-call latency, fresh and warm),
//! `durable` (keyed calls through the journal), `throughput`, `loading` and
//! `fairness` (next to spinning calls, in process and over stdio via `mcp`),
//! `sizes` (the fresh call as the input grows to 1 MiB);
//! `plain` holds the plain-wasmtime baselines.

use std::path::PathBuf;
use std::time::Instant;

use crate::{Host, PoolSpec, ToolPolicy};

mod calls;
mod durable;
mod fairness;
mod loading;
mod mcp;
mod plain;
mod sizes;
mod throughput;

pub use plain::{PlainReused, PlainWasmtime, Pooling};

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
    /// Calls for each throughput figure (a tenth of them for each durable
    /// figure).
    pub calls: u32,
    /// Tools loaded from the artifact cache for the load figure.
    pub tools: u32,
    /// A tool that computes forever (the `loop-forever` test tool): with it,
    /// the CPU-fairness scenario runs too.
    pub spinner: Option<PathBuf>,
    /// The `cofferdam` binary: with it (and a spinner), the fairness
    /// scenario also runs through `cofferdam serve` over stdio.
    pub serve_exe: Option<PathBuf>,
    /// The hosts' epoch tick (default: the host's, 10 ms).
    pub epoch_tick: Option<std::time::Duration>,
    /// A shared store (`postgres://…`): the durable scenario also measures
    /// keyed calls on it. It leaves its keys behind: give it a scratch
    /// database.
    pub store_url: Option<String>,
    /// Only these scenarios (all when empty).
    pub only: Vec<Scenario>,
}

/// A group of comparisons `cofferdam bench --only` can pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Per-call latency, fresh and warm, against plain wasmtime.
    Calls,
    /// The fresh call at 16 B, 1 KiB, 64 KiB and 1 MiB of input.
    Sizes,
    /// Keyed calls through the journal.
    Durable,
    /// Calls per second pinned to 1 and 2 cores; 1,000 calls at once.
    Throughput,
    /// Loading precompiled tools.
    Loading,
    /// Latency next to spinning calls (needs a spinner).
    Fairness,
}

impl Scenario {
    /// Every scenario, in the order they run.
    pub const ALL: [Self; 6] = [
        Self::Calls,
        Self::Sizes,
        Self::Durable,
        Self::Throughput,
        Self::Loading,
        Self::Fairness,
    ];

    /// Its name, as `cofferdam bench --only` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Calls => "calls",
            Self::Sizes => "sizes",
            Self::Durable => "durable",
            Self::Throughput => "throughput",
            Self::Loading => "loading",
            Self::Fairness => "fairness",
        }
    }

    /// The scenario named `name`, if any.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl BenchOptions {
    /// The full measurement (about a minute on a 2-core machine).
    pub fn full(component: impl Into<PathBuf>, input: impl Into<String>) -> Self {
        Self {
            component: component.into(),
            input: input.into(),
            rounds: 31,
            batch: 400,
            // A third of a second or more per figure: 4,000 calls (~70 ms)
            // let thread migration after pinning and wake-ups swing the
            // 2-core ratio between 1.2x and 1.9x from run to run.
            calls: 20_000,
            tools: 100,
            spinner: None,
            serve_exe: None,
            epoch_tick: None,
            store_url: None,
            only: Vec::new(),
        }
    }

    /// Whether `scenario` is measured.
    fn runs(&self, scenario: Scenario) -> bool {
        self.only.is_empty() || self.only.contains(&scenario)
    }

    /// A builder for the hosts it measures.
    fn builder(&self) -> crate::HostBuilder {
        let builder = Host::builder();
        match self.epoch_tick {
            Some(tick) => builder.epoch_tick(tick),
            None => builder,
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
    /// Millions of wasm instructions (fuel) per second (higher is better).
    MegaFuelPerSecond,
}

impl Unit {
    fn label(self) -> &'static str {
        match self {
            Self::MicrosPerCall => "µs/call",
            Self::CallsPerSecond => "calls/s",
            Self::Millis => "ms",
            Self::Count => "",
            Self::MegaFuelPerSecond => "Minstr/s",
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
                Unit::CallsPerSecond | Unit::Count | Unit::MegaFuelPerSecond => {
                    format!("{:.0}", row.value)
                }
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
    /// The options ask for a measurement without giving what it needs (the
    /// message names the option).
    #[error("{0}")]
    Options(String),
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
    if options.spinner.is_none() && options.only.contains(&Scenario::Fairness) {
        return Err(BenchError::Options(
            "the fairness scenario needs a spinning tool (--spinner)".into(),
        ));
    }
    let bytes = std::fs::read(&options.component).map_err(|e| BenchError::Component {
        path: options.component.clone(),
        message: e.to_string(),
    })?;
    let mut report = BenchReport::default();
    let runtime = current_thread();
    if options.runs(Scenario::Calls) {
        progress("per-call latency: plain wasmtime vs cofferdam, fresh and reused instances");
        runtime.block_on(calls::per_call(options, &bytes, &mut report))?;
    }
    if options.runs(Scenario::Sizes) {
        progress("fresh calls by input size: plain wasmtime vs cofferdam");
        runtime.block_on(sizes::sizes(options, &bytes, &mut report))?;
    }
    if options.runs(Scenario::Durable) {
        progress("durable keyed calls: one commit per write vs group commit");
        runtime.block_on(durable::durable(options, &mut report))?;
    }
    if options.runs(Scenario::Throughput) {
        progress("throughput with the process pinned to 1 and to 2 cores; 1,000 calls in flight");
        throughput::throughput(options, &mut report)?;
    }
    if options.runs(Scenario::Loading) {
        progress("loading precompiled tools");
        runtime.block_on(loading::loading(options, &mut report))?;
    }
    match &options.spinner {
        Some(spinner) if options.runs(Scenario::Fairness) => {
            progress("CPU fairness: latency next to 4 spinning calls, the spinners' share");
            fairness::fairness(options, spinner, &mut report)?;
        }
        _ => {}
    }
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

#[cfg(test)]
mod tests {
    use super::{BenchOptions, Scenario};

    #[test]
    fn scenarios_are_named_and_picked() {
        for scenario in Scenario::ALL {
            assert_eq!(Scenario::named(scenario.as_str()), Some(scenario));
        }
        assert_eq!(Scenario::named("nope"), None);
        let mut options = BenchOptions::quick("x.wasm", "{}");
        assert!(Scenario::ALL.into_iter().all(|s| options.runs(s)));
        options.only = vec![Scenario::Sizes];
        assert!(options.runs(Scenario::Sizes));
        assert!(!options.runs(Scenario::Calls));
    }
}
