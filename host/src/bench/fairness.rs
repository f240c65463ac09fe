//! CPU fairness: the component's latency (p50, p99) alone and next to four
//! calls of a spinning tool, on a runtime with a worker per core, as a
//! server runs it: with the CPU lanes, with the lanes unlimited (as before
//! them), and with guests on compute threads of their own. Then the
//! spinners' own work rate against the batch lane's share of the cores,
//! and the same latencies through `cofferdam serve` over stdio.
//!
//! The spinners' work is the fuel they used (their tool's metrics counter)
//! between their start and their cancel.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{BenchError, BenchOptions, BenchReport, Unit, host_error, mcp};
use crate::{
    BreakerMode, BreakerSpec, CallError, CallOutcome, CallRequest, CancellationToken, ErrorClass,
    Host, HostBuilder, LimitsSpec, PoolSpec, ToolPolicy,
};

/// The name the spinner is loaded under.
pub(super) const SPINNER: &str = "spinner";

/// The spinner's policy: four at once, no breaker, fuel and a deadline
/// that outlast the measurement.
fn spinner_policy() -> ToolPolicy {
    ToolPolicy {
        name: Some(crate::ToolName::new(SPINNER).expect("a valid name")),
        limits: LimitsSpec {
            fuel: Some(u64::MAX / 4),
            timeout_ms: Some(600_000),
            ..LimitsSpec::default()
        },
        pool: PoolSpec {
            max_concurrent: Some(4),
            ..PoolSpec::default()
        },
        breaker: BreakerSpec {
            mode: Some(BreakerMode::Disabled),
            ..BreakerSpec::default()
        },
        ..ToolPolicy::default()
    }
}

pub(super) fn fairness(
    options: &BenchOptions,
    spinner: &Path,
    report: &mut BenchReport,
) -> Result<(), BenchError> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .map_err(host_error)?;
    let calls = options.rounds * options.batch / 4 + 1;
    let setups: [(&'static str, HostBuilder); 3] = [
        (
            "cpu lanes (default): hello p50 / p99, next to 4 spinning calls",
            options.builder(),
        ),
        (
            "batch lane unlimited (as before the lanes)",
            options.builder().batch_threads(1024),
        ),
        (
            "guests on compute threads of their own (compute_threads = cores)",
            options.builder().compute_threads(cores),
        ),
    ];
    for (group, builder) in setups {
        let host = runtime.block_on(load(builder, options, spinner))?;
        let alone = runtime.block_on(percentiles(&host, options, calls))?;
        let work = Spinners::start(&host, &runtime);
        runtime.block_on(work.contending(&host));
        let next_to = runtime.block_on(percentiles(&host, options, calls))?;
        let done = runtime.block_on(work.stop(&host))?;
        row_pair(report, group, "alone", alone, None);
        row_pair(report, group, "next to 4 spinners", next_to, Some(alone));
        if group.starts_with("cpu lanes") {
            // The batch lane's share: its threads at one spinner's solo rate.
            let solo = runtime.block_on(solo_rate(&host))?;
            let share = solo * f64::from(host.lane_stats().batch_threads);
            report.push(
                group,
                &format!(
                    "spinners' work, vs {} thread(s) at the solo rate",
                    host.lane_stats().batch_threads
                ),
                done / 1e6,
                Unit::MegaFuelPerSecond,
                Some(done / share),
            );
            report.target(">= 0.8x", done / share >= 0.8);
        }
    }
    if let Some(exe) = &options.serve_exe {
        let group = "MCP tools/call over stdio (`cofferdam serve`): hello p50 / p99";
        let (alone, next_to) = runtime.block_on(mcp::fairness(exe, options, spinner, calls))?;
        row_pair(report, group, "alone", alone, None);
        row_pair(
            report,
            group,
            "next to 4 spinning calls",
            next_to,
            Some(alone),
        );
    }
    Ok(())
}

/// Two rows: p50 and p99, against `base` (targets ≤ 1.5× and ≤ 3×).
fn row_pair(
    report: &mut BenchReport,
    group: &'static str,
    what: &str,
    (p50, p99): (f64, f64),
    base: Option<(f64, f64)>,
) {
    report.push(
        group,
        &format!("p50, {what}"),
        p50,
        Unit::MicrosPerCall,
        Some(base.map_or(1.0, |b| p50 / b.0)),
    );
    if let Some(b) = base {
        report.target("<= 1.5x", p50 / b.0 <= 1.5);
    }
    report.push(
        group,
        &format!("p99, {what}"),
        p99,
        Unit::MicrosPerCall,
        Some(base.map_or(1.0, |b| p99 / b.1)),
    );
    if let Some(b) = base {
        report.target("<= 3x", p99 / b.1 <= 3.0);
    }
}

async fn load(
    builder: HostBuilder,
    options: &BenchOptions,
    spinner: &Path,
) -> Result<Host, BenchError> {
    let host = builder.build().map_err(host_error)?;
    host.load_file(&options.component, ToolPolicy::default())
        .await
        .map_err(host_error)?;
    host.load_file(spinner, spinner_policy())
        .await
        .map_err(host_error)?;
    Ok(host)
}

/// p50 and p99 (µs) of `calls` sequential calls of the component, each a
/// task on the runtime's workers, as a server's requests are.
async fn percentiles(
    host: &Host,
    options: &BenchOptions,
    calls: u32,
) -> Result<(f64, f64), BenchError> {
    let tool = host
        .tools()
        .into_iter()
        .map(|t| t.name.to_string())
        .find(|name| name != SPINNER)
        .ok_or_else(|| BenchError::Host("no tool loaded".into()))?;
    let mut samples = Vec::with_capacity(calls as usize);
    for _ in 0..calls.max(1) {
        let (host, request) = (host.clone(), CallRequest::new(&tool, &options.input));
        let start = Instant::now();
        let call = tokio::spawn(async move { host.call(request).await });
        call.await.map_err(host_error)?.map_err(host_error)?;
        samples.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(p50_p99(samples))
}

pub(super) fn p50_p99(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((samples.len().saturating_sub(1)) as f64 * q).round() as usize;
        samples.get(i).copied().unwrap_or(f64::NAN)
    };
    (at(0.50), at(0.99))
}

/// Fuel the spinner has used since the host started (its metrics counter).
fn spinner_fuel(host: &Host) -> f64 {
    let prefix = format!("cofferdam_fuel_consumed_total{{tool=\"{SPINNER}\"}} ");
    host.metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Fuel per second of one spinner alone, over a fixed deadline.
async fn solo_rate(host: &Host) -> Result<f64, BenchError> {
    let (before, start) = (spinner_fuel(host), Instant::now());
    let request = CallRequest {
        timeout: Some(Duration::from_millis(500)),
        ..CallRequest::new(SPINNER, "{}")
    };
    match host.call(request).await {
        Err(e) if e.class() == ErrorClass::DeadlineExceeded => {}
        other => {
            return Err(BenchError::Host(format!(
                "the spinner did not spin: {other:?}"
            )));
        }
    }
    Ok((spinner_fuel(host) - before) / start.elapsed().as_secs_f64())
}

/// Four calls of the spinner, computing until cancelled.
struct Spinners {
    cancel: CancellationToken,
    fuel_before: f64,
    started: Instant,
    calls: Vec<tokio::task::JoinHandle<Result<CallOutcome, CallError>>>,
}

impl Spinners {
    fn start(host: &Host, runtime: &tokio::runtime::Runtime) -> Self {
        let cancel = CancellationToken::new();
        let (fuel_before, started) = (spinner_fuel(host), Instant::now());
        let calls = (0..4)
            .map(|_| {
                let host = host.clone();
                let request = CallRequest {
                    cancel: Some(cancel.clone()),
                    ..CallRequest::new(SPINNER, "{}")
                };
                runtime.spawn(async move { host.call(request).await })
            })
            .collect();
        Self {
            cancel,
            fuel_before,
            started,
            calls,
        }
    }

    /// Waits until the spinners compete for the batch lane (bounded).
    async fn contending(&self, host: &Host) {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            let lanes = host.lane_stats();
            if lanes.demotions >= 4 && lanes.batch_running > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Cancels the spinners; their work rate (fuel/s) while they ran.
    async fn stop(self, host: &Host) -> Result<f64, BenchError> {
        self.cancel.cancel();
        for call in self.calls {
            match call.await.map_err(host_error)? {
                Err(e) if e.class() == ErrorClass::Cancelled => {}
                other => {
                    return Err(BenchError::Host(format!(
                        "a spinner ended otherwise: {other:?}"
                    )));
                }
            }
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        Ok((spinner_fuel(host) - self.fuel_before) / elapsed)
    }
}
