//! Per-tool counters and a latency histogram, rendered in the Prometheus
//! text format (version 0.0.4) by [`Host::metrics_text`](crate::Host::metrics_text).
//!
//! Counters are kept by tool name for the host's lifetime, so they survive a
//! tool being replaced or reloaded. Gauges (in flight, queued, breaker state)
//! are read from the loaded tools when rendered. It does not serve HTTP: the
//! CLI mounts the text on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::runtime::lanes::{LaneStats, LaneUsage};
use crate::{BreakerState, CallError, CallOutcome, ToolName, ToolStats};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0,
];

#[derive(Default, Clone)]
struct Counts {
    /// Finished calls by outcome: `ok` or the error class.
    calls: BTreeMap<&'static str, u64>,
    /// Cumulative counts per bucket (the last is `+Inf`).
    latency: [u64; BUCKETS.len() + 1],
    latency_sum: f64,
    attempts: u64,
    replayed: u64,
    fuel: u64,
    tokens: u64,
    /// Microseconds attempts spent in the interactive lane.
    interactive_us: u64,
    /// Microseconds attempts spent demoted to the batch lane.
    batch_us: u64,
    /// Microseconds demoted attempts spent parked for a permit.
    parked_us: u64,
    demotions: u64,
    permit_waits: u64,
}

/// One tool name's counters. A loaded tool holds its handle, so recording
/// takes only this tool's lock; a replaced version gets the same handle.
#[derive(Default)]
pub(crate) struct ToolMetrics {
    counts: Mutex<Counts>,
}

/// The host's metrics registry.
#[derive(Default)]
pub(crate) struct Metrics {
    tools: Mutex<BTreeMap<ToolName, Arc<ToolMetrics>>>,
}

impl ToolMetrics {
    fn with(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut self.counts.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// One finished call: `ok` or its error class, and how long it took.
    pub(crate) fn record(&self, result: &Result<CallOutcome, CallError>, took: Duration) {
        let (outcome, replayed) = match result {
            Ok(outcome) => ("ok", outcome.replayed),
            Err(error) => (error.class().as_str(), false),
        };
        self.call(outcome, took, replayed);
    }

    /// One finished call (replayed or run), by outcome.
    fn call(&self, outcome: &'static str, took: Duration, replayed: bool) {
        let seconds = took.as_secs_f64();
        self.with(|m| {
            *m.calls.entry(outcome).or_default() += 1;
            let first = BUCKETS
                .iter()
                .position(|le| seconds <= *le)
                .unwrap_or(BUCKETS.len());
            for bucket in &mut m.latency[first..] {
                *bucket += 1;
            }
            m.latency_sum += seconds;
            m.replayed += u64::from(replayed);
        });
    }

    /// One attempt that ran in a sandbox, and where its time went by CPU
    /// lane (one lock for all of it).
    pub(crate) fn attempt(&self, fuel: u64, tokens: u64, lane: &LaneUsage) {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.with(|m| {
            m.attempts += 1;
            m.fuel = m.fuel.saturating_add(fuel);
            m.tokens = m.tokens.saturating_add(tokens);
            m.interactive_us = m.interactive_us.saturating_add(us(lane.interactive));
            m.batch_us = m.batch_us.saturating_add(us(lane.batch));
            m.parked_us = m.parked_us.saturating_add(us(lane.parked));
            m.demotions += u64::from(lane.demoted);
            m.permit_waits += u64::from(lane.permit_waits);
        });
    }
}

impl Metrics {
    /// The counters of `tool`, created on first use.
    pub(crate) fn for_tool(&self, tool: &ToolName) -> Arc<ToolMetrics> {
        let mut tools = self.tools.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(tools.entry(tool.clone()).or_default())
    }

    /// The Prometheus text: counters of every tool seen, gauges of the loaded ones.
    pub(crate) fn render(&self, loaded: &[ToolStats]) -> String {
        let tools: Vec<(ToolName, Counts)> = {
            let tools = self.tools.lock().unwrap_or_else(|e| e.into_inner());
            tools
                .iter()
                .map(|(name, m)| {
                    let counts = m.counts.lock().unwrap_or_else(|e| e.into_inner());
                    (name.clone(), counts.clone())
                })
                .collect()
        };
        let mut out = String::new();
        header(
            &mut out,
            "cofferdam_calls_total",
            "counter",
            "Calls finished, by tool and outcome (ok or the error class).",
        );
        for (tool, m) in tools.iter() {
            for (outcome, n) in &m.calls {
                let _ = writeln!(
                    out,
                    "cofferdam_calls_total{{tool=\"{}\",outcome=\"{outcome}\"}} {n}",
                    label(tool.as_str())
                );
            }
        }
        header(
            &mut out,
            "cofferdam_call_duration_seconds",
            "histogram",
            "Wall-clock time of finished calls, retries and waits included.",
        );
        for (tool, m) in tools.iter() {
            let t = label(tool.as_str());
            for (le, n) in BUCKETS.iter().zip(&m.latency) {
                let _ = writeln!(
                    out,
                    "cofferdam_call_duration_seconds_bucket{{tool=\"{t}\",le=\"{le}\"}} {n}"
                );
            }
            let count = m.latency[BUCKETS.len()];
            let _ = writeln!(
                out,
                "cofferdam_call_duration_seconds_bucket{{tool=\"{t}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "cofferdam_call_duration_seconds_sum{{tool=\"{t}\"}} {}",
                m.latency_sum
            );
            let _ = writeln!(
                out,
                "cofferdam_call_duration_seconds_count{{tool=\"{t}\"}} {count}"
            );
        }
        let counters: [Family<Counts>; 6] = [
            (
                "cofferdam_attempts_total",
                "Attempts run in a sandbox.",
                |m| m.attempts,
            ),
            (
                "cofferdam_replayed_total",
                "Calls answered from the idempotency journal.",
                |m| m.replayed,
            ),
            (
                "cofferdam_fuel_consumed_total",
                "Fuel (wasm instructions) consumed by attempts.",
                |m| m.fuel,
            ),
            (
                "cofferdam_tokens_charged_total",
                "Tokens charged to budgets for attempts.",
                |m| m.tokens,
            ),
            (
                "cofferdam_tool_demotions_total",
                "Attempts demoted to the batch lane after computing past the quantum.",
                |m| m.demotions,
            ),
            (
                "cofferdam_tool_permit_waits_total",
                "Times a demoted attempt parked for a batch-lane permit.",
                |m| m.permit_waits,
            ),
        ];
        for (name, help, value) in counters {
            header(&mut out, name, "counter", help);
            for (tool, m) in tools.iter() {
                let _ = writeln!(
                    out,
                    "{name}{{tool=\"{}\"}} {}",
                    label(tool.as_str()),
                    value(m)
                );
            }
        }
        header(
            &mut out,
            "cofferdam_lane_seconds_total",
            "counter",
            "Time attempts spent in each CPU lane (batch: after demotion, parked time included).",
        );
        for (tool, m) in tools.iter() {
            let t = label(tool.as_str());
            for (lane, us) in [("interactive", m.interactive_us), ("batch", m.batch_us)] {
                let _ = writeln!(
                    out,
                    "cofferdam_lane_seconds_total{{tool=\"{t}\",lane=\"{lane}\"}} {}",
                    seconds(us)
                );
            }
        }
        header(
            &mut out,
            "cofferdam_lane_parked_seconds_total",
            "counter",
            "Time demoted attempts spent parked for a batch-lane permit.",
        );
        for (tool, m) in tools.iter() {
            let _ = writeln!(
                out,
                "cofferdam_lane_parked_seconds_total{{tool=\"{}\"}} {}",
                label(tool.as_str()),
                seconds(m.parked_us)
            );
        }
        let gauges: [Family<ToolStats>; 3] = [
            (
                "cofferdam_calls_in_flight",
                "Calls holding a bulkhead slot now.",
                |s| u64::from(s.in_flight),
            ),
            (
                "cofferdam_bulkhead_queue_depth",
                "Calls waiting for a bulkhead slot now.",
                |s| u64::from(s.queued),
            ),
            (
                "cofferdam_bulkhead_max_concurrent",
                "Bulkhead slots of the tool.",
                |s| u64::from(s.max_concurrent),
            ),
        ];
        for (name, help, value) in gauges {
            header(&mut out, name, "gauge", help);
            for stats in loaded {
                let _ = writeln!(
                    out,
                    "{name}{{tool=\"{}\"}} {}",
                    label(stats.name.as_str()),
                    value(stats)
                );
            }
        }
        header(
            &mut out,
            "cofferdam_breaker_state",
            "gauge",
            "Circuit breaker state: 1 for the current state, 0 for the others.",
        );
        for stats in loaded {
            let t = label(stats.name.as_str());
            for state in BreakerState::ALL {
                let on = u8::from(stats.breaker.state == state);
                let _ = writeln!(
                    out,
                    "cofferdam_breaker_state{{tool=\"{t}\",state=\"{}\"}} {on}",
                    state.as_str()
                );
            }
        }
        out
    }
}

/// Microseconds as seconds, for a Prometheus sample.
fn seconds(us: u64) -> f64 {
    Duration::from_micros(us).as_secs_f64()
}

/// A metric family: name, help, and how to read one tool's value.
type Family<T> = (&'static str, &'static str, fn(&T) -> u64);

/// The CPU lanes' gauges and counters, host-wide.
pub(crate) fn render_lanes(out: &mut String, lanes: &LaneStats) {
    for (name, kind, help, value) in [
        (
            "cofferdam_batch_lane_threads",
            "gauge",
            "Calls demoted to the batch lane that may compute at once.",
            u64::from(lanes.batch_threads),
        ),
        (
            "cofferdam_batch_lane_running",
            "gauge",
            "Demoted calls computing now.",
            u64::from(lanes.batch_running),
        ),
        (
            "cofferdam_batch_lane_waiting",
            "gauge",
            "Demoted calls parked for a batch-lane permit now.",
            lanes.batch_waiting,
        ),
        (
            "cofferdam_lane_demotions_total",
            "counter",
            "Calls demoted to the batch lane after computing past the quantum.",
            lanes.demotions,
        ),
        (
            "cofferdam_lane_permit_waits_total",
            "counter",
            "Times a demoted call parked for a batch-lane permit.",
            lanes.permit_waits,
        ),
    ] {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_counted() {
        let metrics = Metrics::default();
        let tool = metrics.for_tool(&ToolName::new("echo").expect("name"));
        tool.call("ok", Duration::from_micros(50), false);
        tool.call("ok", Duration::from_millis(3), true);
        tool.call("deadline-exceeded", Duration::from_secs(100), false);
        tool.attempt(1000, 2, &LaneUsage::default());
        let text = metrics.render(&[]);
        assert!(
            text.contains("cofferdam_calls_total{tool=\"echo\",outcome=\"ok\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("cofferdam_calls_total{tool=\"echo\",outcome=\"deadline-exceeded\"} 1")
        );
        assert!(
            text.contains("cofferdam_call_duration_seconds_bucket{tool=\"echo\",le=\"0.0001\"} 1")
        );
        assert!(
            text.contains("cofferdam_call_duration_seconds_bucket{tool=\"echo\",le=\"0.005\"} 2")
        );
        assert!(text.contains("cofferdam_call_duration_seconds_bucket{tool=\"echo\",le=\"60\"} 2"));
        assert!(
            text.contains("cofferdam_call_duration_seconds_bucket{tool=\"echo\",le=\"+Inf\"} 3")
        );
        assert!(text.contains("cofferdam_call_duration_seconds_count{tool=\"echo\"} 3"));
        assert!(text.contains("cofferdam_replayed_total{tool=\"echo\"} 1"));
        assert!(text.contains("cofferdam_fuel_consumed_total{tool=\"echo\"} 1000"));
        assert!(text.contains("cofferdam_tokens_charged_total{tool=\"echo\"} 2"));
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
