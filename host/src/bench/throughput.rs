//! Throughput: calls per second from 16 callers with the whole process
//! pinned to one core and to two (interleaved medians), and 1,000 calls
//! started at once on one host.
//!
//! Every call runs on a fresh instance; warm reuse is measured per call in
//! `calls`.

use std::time::Instant;

use rustix::process::Pid;
use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

use super::{
    BenchError, BenchOptions, BenchReport, Unit, host_error, load_pooled, median, only_tool,
};
use crate::{CallRequest, Host, PoolSpec};

pub(super) fn throughput(
    options: &BenchOptions,
    report: &mut BenchReport,
) -> Result<(), BenchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(host_error)?;
    let group = "throughput, fresh instance per call, 16 callers, the whole process pinned (interleaved medians)";
    let allowed = sched_getaffinity(None).map_err(host_error)?;
    let cpus: Vec<usize> = (0..CpuSet::MAX_CPU)
        .filter(|&c| allowed.is_set(c))
        .collect();
    if cpus.len() < 2 {
        report.push(
            group,
            "needs 2 cores; this process may use",
            cpus.len() as f64,
            Unit::Count,
            None,
        );
        return Ok(());
    }
    let (mut one_core, mut two_cores) = (CpuSet::new(), CpuSet::new());
    one_core.set(cpus[0]);
    two_cores.set(cpus[0]);
    two_cores.set(cpus[1]);
    let host = runtime.block_on(throughput_host(options))?;
    // Interleaved rounds, medians: both see the same machine noise. Every
    // thread is pinned (workers, the journal writer, the epoch ticker,
    // blocking threads), so "one core" hides no work on another.
    let (mut ones, mut twos) = (Vec::new(), Vec::new());
    let measured = (|| {
        for _ in 0..options.rounds.div_ceil(6) {
            pin_process(&one_core)?;
            ones.push(runtime.block_on(calls_per_sec(&host, options))?);
            pin_process(&two_cores)?;
            twos.push(runtime.block_on(calls_per_sec(&host, options))?);
        }
        Ok::<_, BenchError>(())
    })();
    pin_process(&allowed)?;
    measured?;
    let (one, two) = (median(ones), median(twos));
    report.push(group, "1 core", one, Unit::CallsPerSecond, Some(1.0));
    report.push(group, "2 cores", two, Unit::CallsPerSecond, Some(two / one));
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

/// Pins every thread of this process to `cpus` (threads started later
/// inherit their creator's mask; a second pass catches threads started
/// during the first).
fn pin_process(cpus: &CpuSet) -> Result<(), BenchError> {
    for _ in 0..2 {
        for entry in std::fs::read_dir("/proc/self/task").map_err(host_error)? {
            let tid = entry
                .map_err(host_error)?
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok());
            if let Some(pid) = tid.and_then(Pid::from_raw) {
                // A thread may have ended since the listing.
                let _ = sched_setaffinity(Some(pid), cpus);
            }
        }
    }
    Ok(())
}

/// A host with the tool behind a bulkhead of 16.
async fn throughput_host(options: &BenchOptions) -> Result<Host, BenchError> {
    let host = options.builder().build().map_err(host_error)?;
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
    let host = options
        .builder()
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
