//! Per-call latency of a trivial tool (`hello`), divan-timed, next to its
//! plain-wasmtime baselines in the same run:
//!
//! - `plain_fresh`: a minimal wasmtime embedding, fresh pooled instance per
//!   call, with cofferdam's pooling settings (the floor for isolation);
//! - `plain_metered`: the same with fuel and epoch checks (what bounding a
//!   guest costs);
//! - `host_fresh`: `Host::call` with the whole policy stack, fresh instance;
//! - `plain_reused`: one plain instance called again and again (the floor
//!   for warm reuse);
//! - `host_warm`: `Host::call` of a tool that opted into warm reuse;
//! - `host_refused`: a call refused by an open breaker (fail fast).
//!
//! `cargo bench -p cofferdam --bench calls`; `cargo test` runs each once.
//! `cofferdam bench` prints the same comparisons as ratios.

use std::path::Path;
use std::sync::LazyLock;

use cofferdam::bench::{PlainWasmtime, Pooling};
use cofferdam::{BreakerMode, CallRequest, Host, ToolName, ToolPolicy, WarmSpec};
use cofferdam_test_artifacts as artifacts;
use divan::Bencher;
use tokio::runtime::Runtime;

const INPUT: &str = r#"{"name":"bench"}"#;

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
});

fn component() -> Vec<u8> {
    std::fs::read(artifacts::HELLO).expect("hello component")
}

/// A host with `hello`, and `hello` again as `warm` with warm reuse.
fn host() -> Host {
    RUNTIME.block_on(async {
        let host = Host::builder().build().expect("host");
        let hello = Path::new(artifacts::HELLO);
        host.load_file(hello, ToolPolicy::default())
            .await
            .expect("load");
        let warm = ToolPolicy {
            name: Some(ToolName::new("warm").expect("name")),
            warm: WarmSpec {
                instances: Some(1),
                max_invocations: Some(u32::MAX),
                idle_ms: None,
            },
            ..ToolPolicy::default()
        };
        host.load_file(hello, warm).await.expect("load");
        host
    })
}

fn main() {
    divan::main();
}

#[divan::bench]
fn plain_fresh(bencher: Bencher<'_, '_>) {
    let plain = PlainWasmtime::new(&component(), Pooling::SameAsCofferdam).expect("plain");
    bencher.bench_local(|| RUNTIME.block_on(plain.call(INPUT)));
}

#[divan::bench]
fn plain_metered(bencher: Bencher<'_, '_>) {
    let plain = PlainWasmtime::metered(&component()).expect("plain");
    bencher.bench_local(|| RUNTIME.block_on(plain.call(INPUT)));
}

#[divan::bench]
fn host_fresh(bencher: Bencher<'_, '_>) {
    let host = host();
    bencher.bench_local(|| {
        RUNTIME
            .block_on(host.call(CallRequest::new("hello", INPUT)))
            .expect("call")
    });
}

#[divan::bench]
fn plain_reused(bencher: Bencher<'_, '_>) {
    let plain = PlainWasmtime::new(&component(), Pooling::SameAsCofferdam).expect("plain");
    let mut reused = RUNTIME.block_on(plain.reused()).expect("instance");
    bencher.bench_local(|| RUNTIME.block_on(reused.call(INPUT)));
}

#[divan::bench]
fn host_warm(bencher: Bencher<'_, '_>) {
    let host = host();
    bencher.bench_local(|| {
        RUNTIME
            .block_on(host.call(CallRequest::new("warm", INPUT)))
            .expect("call")
    });
}

#[divan::bench]
fn host_refused(bencher: Bencher<'_, '_>) {
    let host = host();
    host.set_breaker_mode("hello", BreakerMode::ForcedOpen)
        .expect("hello");
    bencher.bench_local(|| {
        RUNTIME
            .block_on(host.call(CallRequest::new("hello", INPUT)))
            .expect_err("open")
    });
}
