//! Durable keyed calls: the journal commits each call's claim and result
//! before the caller hears back, one commit per write against group commit,
//! on redb and (with `--store URL`) on PostgreSQL.
//!
//! It measures the journal through `Host::call`, not the store on its own.

use std::sync::Arc;
use std::time::Instant;

use super::{BenchError, BenchOptions, BenchReport, Unit, host_error, load_pooled};
use crate::{CallRequest, PoolSpec};

pub(super) async fn durable(
    options: &BenchOptions,
    report: &mut BenchReport,
) -> Result<(), BenchError> {
    let single = durable_calls_per_sec(options, Journal::OneCommitPerWrite).await?;
    let grouped = durable_calls_per_sec(options, Journal::GroupCommit).await?;
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
    if let Some(url) = &options.store_url {
        let batched =
            durable_calls_per_sec(options, Journal::Shared { url, grouped: true }).await?;
        let alone = durable_calls_per_sec(
            options,
            Journal::Shared {
                url,
                grouped: false,
            },
        )
        .await?;
        report.push(
            group,
            "PostgreSQL store, group commit",
            batched,
            Unit::CallsPerSecond,
            Some(batched / single),
        );
        report.push(
            group,
            "PostgreSQL store, a transaction per operation",
            alone,
            Unit::CallsPerSecond,
            Some(alone / single),
        );
    }
    Ok(())
}

/// Where the keys are journaled.
#[derive(Clone, Copy)]
enum Journal<'a> {
    /// The data dir's redb file, one fsync'd commit per write.
    OneCommitPerWrite,
    /// The same, writes of concurrent calls committed together.
    GroupCommit,
    /// A shared database, keyed-call writes of concurrent calls in one
    /// transaction (`grouped`) or each in its own.
    Shared { url: &'a str, grouped: bool },
}

/// Throughput of keyed calls whose claims and results are committed to disk
/// before each caller hears back.
async fn durable_calls_per_sec(
    options: &BenchOptions,
    journal: Journal<'_>,
) -> Result<f64, BenchError> {
    let data = tempfile::tempdir().map_err(host_error)?;
    let builder = options.builder().data_dir(data.path());
    let builder = match journal {
        Journal::OneCommitPerWrite => builder.group_commit(false),
        Journal::GroupCommit => builder.group_commit(true),
        Journal::Shared { url, grouped } => builder.store_url(url).group_commit(grouped),
    };
    let host = builder.build().map_err(host_error)?;
    // Keys no earlier run of the benchmark used (a shared store keeps them).
    let run = crate::model::units::unix_millis();
    let pool = PoolSpec {
        max_concurrent: Some(64),
        max_queue: Some(u32::MAX),
        max_wait_ms: Some(600_000),
    };
    let name = load_pooled(&host, options, pool).await?;
    // Fsync'd one at a time, a tenth of the throughput figure's calls take
    // seconds already.
    let calls = (options.calls / 10).max(1);
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let start = Instant::now();
    let tasks: Vec<_> = (0..calls)
        .map(|i| {
            let (host, limit, name) = (host.clone(), Arc::clone(&limit), name.clone());
            let input = options.input.clone();
            tokio::spawn(async move {
                let _permit = limit.acquire().await.expect("semaphore");
                let request = CallRequest {
                    idempotency_key: Some(format!("bench-{run}-{i}")),
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
