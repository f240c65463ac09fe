//! CPU lanes: spinning tools are demoted to the batch lane, which never
//! holds every thread, so a short call still runs; a demoted call still
//! stops at its deadline or on cancel, and gives its permit back.

use std::time::Duration;

use cofferdam::{
    CallError, CallOutcome, CallRequest, CancellationToken, CpuSpec, Host, HostBuilder, LaneStats,
    LimitsSpec, ToolPolicy,
};
use cofferdam_test_artifacts as artifacts;

use crate::common::{self, load, policy_with};

/// A host whose batch lane has `batch_threads` threads, demoting after 2 ms
/// of guest time, with `loop-forever` (under `cpu`) and `hello` loaded.
async fn host_with_spinner(timeout_ms: u64, batch_threads: u32, cpu: CpuSpec) -> Host {
    let builder = common::builder().batch_threads(batch_threads);
    spinner_host(builder, timeout_ms, cpu).await
}

/// `builder`'s host demoting after 2 ms of guest time, with `loop-forever`
/// (under `cpu`) and `hello` loaded.
async fn spinner_host(builder: HostBuilder, timeout_ms: u64, cpu: CpuSpec) -> Host {
    let host = builder
        .epoch_tick(Duration::from_millis(2))
        .cpu_quantum(Duration::from_millis(2))
        .build()
        .expect("host");
    let policy = ToolPolicy {
        cpu,
        ..policy_with(LimitsSpec {
            timeout_ms: Some(timeout_ms),
            fuel: Some(u64::MAX / 4),
            ..LimitsSpec::default()
        })
    };
    load(&host, artifacts::LOOP_FOREVER, policy).await;
    load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    host
}

/// `n` concurrent calls of `loop-forever`.
fn spin(host: &Host, n: usize) -> Vec<tokio::task::JoinHandle<Result<CallOutcome, CallError>>> {
    (0..n)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move { host.call(CallRequest::new("loop-forever", "{}")).await })
        })
        .collect()
}

/// Waits (polling, bounded) until the lanes show what `ready` asks for.
async fn lanes_reach(host: &Host, ready: impl Fn(&LaneStats) -> bool) -> LaneStats {
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stats = host.lane_stats();
        if ready(&stats) {
            return stats;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "lanes never got there: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn assert_stopped_at_deadline(result: Result<CallOutcome, CallError>) {
    match result {
        Err(CallError::DeadlineExceeded { in_guest_code, .. }) => assert!(in_guest_code),
        other => panic!("expected deadline-exceeded, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_spinners_take_turns_in_the_batch_lane_and_a_short_call_still_runs() {
    let host = host_with_spinner(1_500, 1, CpuSpec::default()).await;
    let spinners = spin(&host, 2);
    // Both computed past the quantum: one holds the only permit, the other
    // is parked for it (never two computing at once).
    let stats = lanes_reach(&host, |s| s.demotions == 2 && s.batch_waiting == 1).await;
    assert_eq!(stats.batch_running, 1, "{stats:?}");
    // While both spin, a short call finds a thread.
    let outcome = host
        .call(CallRequest::new("hello", r#"{"name":"lanes"}"#))
        .await
        .expect("a short call runs next to two spinners");
    assert_eq!(outcome.output_json()["greeting"], "Hello, lanes!");
    assert!(host.lane_stats().batch_running <= 1);
    // Demoted calls still stop at their deadline, parked or computing.
    for spinner in spinners {
        assert_stopped_at_deadline(spinner.await.expect("joined"));
    }
    let stats = host.lane_stats();
    assert_eq!(
        (stats.batch_running, stats.batch_waiting),
        (0, 0),
        "permits returned: {stats:?}"
    );
    assert!(stats.permit_waits >= 1, "{stats:?}");
    let metrics = host.metrics_text();
    for line in [
        "cofferdam_batch_lane_running 0".to_owned(),
        format!("cofferdam_lane_demotions_total {}", stats.demotions),
        // Per tool: both spinners were demoted, one parked; hello was not.
        "cofferdam_tool_demotions_total{tool=\"loop-forever\"} 2".to_owned(),
        "cofferdam_tool_demotions_total{tool=\"hello\"} 0".to_owned(),
    ] {
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    let sample = |name: &str| -> f64 {
        let prefix = format!("{name} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    let tool = "{tool=\"loop-forever\"";
    let batch = sample(&format!(
        "cofferdam_lane_seconds_total{tool},lane=\"batch\"}}"
    ));
    let parked = sample(&format!("cofferdam_lane_parked_seconds_total{tool}}}"));
    let waits = sample(&format!("cofferdam_tool_permit_waits_total{tool}}}"));
    // Two calls of 1.5 s each, demoted after ~2 ms; the parked one waited
    // for the other to end, inside its batch time.
    assert!(batch > 2.0 && parked > 0.5 && parked < batch, "{metrics}");
    assert!(waits >= 1.0, "{metrics}");
}

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).expect("non-negative"),
        u32::try_from(t.tv_nsec).expect("below a second"),
    )
}

#[tokio::test(flavor = "current_thread")]
async fn with_compute_threads_spinners_leave_the_embedders_thread_free() {
    let builder = common::builder().compute_threads(1);
    let host = spinner_host(builder, 1_000, CpuSpec::default()).await;
    assert_eq!(host.compute_threads(), Some(1));
    assert_eq!(host.lane_stats().batch_threads, 1);
    let before = thread_cpu_time();
    let spinners = spin(&host, 2);
    // The embedder's only thread keeps answering while both spin (taking
    // turns on the one compute thread)…
    lanes_reach(&host, |s| s.demotions == 2 && s.batch_waiting == 1).await;
    let outcome = host
        .call(CallRequest::new("hello", r#"{"name":"pool"}"#))
        .await
        .expect("a short call runs next to two spinners");
    assert_eq!(outcome.output_json()["greeting"], "Hello, pool!");
    for spinner in spinners {
        assert_stopped_at_deadline(spinner.await.expect("joined"));
    }
    // …and computed none of it: the spinners kept the compute thread busy
    // for their whole second; the embedder's thread only polled and waited.
    // On the caller's runtime, that second would be this thread's.
    let used = thread_cpu_time() - before;
    assert!(
        used < Duration::from_millis(250),
        "the embedder's thread computed {used:?} while the spinners ran for 1 s"
    );
    let stats = host.lane_stats();
    assert_eq!((stats.batch_running, stats.batch_waiting), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_demoted_call_ends_promptly_on_cancel_and_frees_its_place() {
    let host = host_with_spinner(10_000, 1, CpuSpec::default()).await;
    let first = spin(&host, 1).remove(0);
    lanes_reach(&host, |s| s.batch_running == 1).await;
    let cancel = CancellationToken::new();
    let second = {
        let host = host.clone();
        let request = CallRequest {
            cancel: Some(cancel.clone()),
            ..CallRequest::new("loop-forever", "{}")
        };
        tokio::spawn(async move { host.call(request).await })
    };
    lanes_reach(&host, |s| s.batch_waiting == 1).await;
    let asked = tokio::time::Instant::now();
    cancel.cancel();
    let result = second.await.expect("joined");
    assert!(
        matches!(result, Err(CallError::Cancelled { .. })),
        "{result:?}"
    );
    assert!(asked.elapsed() < Duration::from_secs(2), "ended promptly");
    assert_eq!(host.lane_stats().batch_waiting, 0);
    // The running one keeps its permit until it ends; then it is free.
    first.abort();
    let _ = first.await;
    lanes_reach(&host, |s| s.batch_running == 0).await;
    common::assert_host_still_serves(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tools_cpu_limit_holds_its_long_calls_below_the_batch_lane() {
    let cpu = CpuSpec {
        max_threads: Some(1),
    };
    let host = host_with_spinner(1_000, 2, cpu).await;
    let spinners = spin(&host, 2);
    // The lane has room for both; the tool's own limit lets one compute.
    let stats = lanes_reach(&host, |s| s.demotions == 2 && s.batch_waiting == 1).await;
    assert_eq!(stats.batch_running, 1, "{stats:?}");
    for spinner in spinners {
        assert_stopped_at_deadline(spinner.await.expect("joined"));
    }
    let stats = host.lane_stats();
    assert_eq!(
        (stats.batch_running, stats.batch_waiting),
        (0, 0),
        "{stats:?}"
    );
}
