//! What a schedule run's end reports beyond its outcome, for notifications:
//! the kinds of event, where a schedule's events go ([`Route`]) and the
//! run's cost and output ([`RunReport`]). A leaf, so the schedule rules can
//! carry a report without knowing the outbox (`notify.rs`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::money::Money;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// A run ended well.
    #[serde(rename = "run.succeeded")]
    RunSucceeded,
    /// A run failed, timed out, was refused or was interrupted.
    #[serde(rename = "run.failed")]
    RunFailed,
    /// A run's end paused its schedule (failures in a row, or a refusal).
    #[serde(rename = "schedule.paused")]
    SchedulePaused,
    /// A run's end raised an escalation for a human.
    #[serde(rename = "run.escalated")]
    RunEscalated,
}

impl EventKind {
    /// Every kind, in the order a run's end raises them.
    pub const ALL: [EventKind; 4] = [
        EventKind::RunSucceeded,
        EventKind::RunFailed,
        EventKind::SchedulePaused,
        EventKind::RunEscalated,
    ];

    /// The name on the wire: `run.succeeded`, `run.failed`,
    /// `schedule.paused`, `run.escalated`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RunSucceeded => "run.succeeded",
            EventKind::RunFailed => "run.failed",
            EventKind::SchedulePaused => "schedule.paused",
            EventKind::RunEscalated => "run.escalated",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a schedule's events go: a sink and the kinds it hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The sink's name (`[notify.NAME]`).
    pub sink: String,
    /// The kinds it hears.
    pub kinds: Vec<EventKind>,
}

/// What the runner knows of a run beyond its outcome: its cost, its output
/// and where its events go.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunReport {
    /// What the run cost.
    pub cost: Option<Money>,
    /// The tool's output, summarized.
    pub output: Option<Value>,
    /// The sinks of the schedule, with the kinds each hears.
    pub routes: Vec<Route>,
}

/// Largest output an event carries whole; larger ones are cut.
pub const MAX_OUTPUT_BYTES: usize = 4096;

/// A tool's JSON output as an event carries it: whole up to
/// [`MAX_OUTPUT_BYTES`], else its size and the start of its text.
pub fn summarize(output: &str) -> Value {
    // A NUL inside a string cannot be stored by every store (PostgreSQL's
    // jsonb refuses it): such an output is carried as text.
    if output.len() <= MAX_OUTPUT_BYTES
        && !output.contains("\\u0000")
        && let Ok(value) = serde_json::from_str::<Value>(output)
    {
        return value;
    }
    serde_json::json!({ "truncated": true, "bytes": output.len(), "head": bounded(output) })
}

/// `text` as an event carries it: at most [`MAX_OUTPUT_BYTES`] (cut at a
/// character boundary), without NUL characters.
pub fn bounded(text: &str) -> String {
    let mut end = text.len().min(MAX_OUTPUT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].replace('\0', "\u{fffd}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_carried_whole_or_cut_at_a_char_boundary() {
        assert_eq!(summarize(r#"{"a":1}"#), serde_json::json!({"a": 1}));
        let big = format!("\"{}\"", "é".repeat(MAX_OUTPUT_BYTES));
        let cut = summarize(&big);
        assert_eq!(cut["truncated"], true);
        assert_eq!(cut["bytes"], big.len());
        assert!(cut["head"].as_str().unwrap().len() <= MAX_OUTPUT_BYTES);
        // A NUL escaped in the JSON never becomes a NUL in the event.
        let nul = summarize(r#"{"a":"x\u0000y"}"#);
        assert_eq!(nul["truncated"], true);
        assert!(!nul.to_string().contains('\0'));
        assert_eq!(bounded("a\0b"), "a\u{fffd}b");
    }
}
