//! Per-call latency of a trivial tool, interleaved: plain wasmtime (fresh
//! pooled instance, default pooling, with fuel and epochs, one reused
//! instance) against `Host::call` on a fresh and on a warm instance, and a
//! call refused by an open breaker.
//!
//! It does not measure throughput or durable calls; see the sibling modules.

use std::hint::black_box;
use std::time::Instant;

use super::plain::{PlainWasmtime, Pooling};
use super::{BenchError, BenchOptions, BenchReport, Unit, batch_us, host_error, median, only_tool};
use crate::{BreakerMode, CallRequest, ToolName, ToolPolicy, WarmSpec};

pub(super) async fn per_call(
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

    let host = options.builder().build().map_err(host_error)?;
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
    report.target("<= 1.5x plain reused", warm / reused <= 1.5);

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
