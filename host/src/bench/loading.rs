//! Loading precompiled tools: a new host on the same data directory loads
//! one tool, and then many, from the artifact the first host compiled and
//! cached.
//!
//! It does not measure calls.

use std::time::{Duration, Instant};

use super::{BenchError, BenchOptions, BenchReport, Unit, host_error};
use crate::{PoolSpec, ToolName, ToolPolicy};

pub(super) async fn loading(
    options: &BenchOptions,
    report: &mut BenchReport,
) -> Result<(), BenchError> {
    let data = tempfile::tempdir().map_err(host_error)?;
    let build = || {
        options
            .builder()
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
