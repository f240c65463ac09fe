//! Per-call limits: what one call of a tool may consume before the host stops it.
//!
//! Engine-wide limits (wasm stack size, pool slot size) live in
//! [`crate::HostBuilder`]; these are the per-tool ones a policy may change.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Fuel;

/// Resolved limits for calls of one tool.
///
/// | limit | default | when exceeded |
/// |---|---|---|
/// | `fuel` | 2,000,000,000 (≈ 1–2 s of CPU) | [`CallError::OutOfFuel`](crate::CallError::OutOfFuel) |
/// | `timeout` | 30 s, wall clock, including time blocked in host calls | [`CallError::DeadlineExceeded`](crate::CallError::DeadlineExceeded) |
/// | `memory_bytes` | 128 MiB per linear memory | [`CallError::MemoryLimit`](crate::CallError::MemoryLimit) |
/// | `max_output_bytes` | 1 MiB | [`CallError::OutputTooLarge`](crate::CallError::OutputTooLarge) |
/// | `max_stdout_bytes`, `max_stderr_bytes` | 64 KiB each | excess is dropped, outcome marked truncated |
/// | `hostcall_bytes` | 1 MiB per host call | the call traps ([`CallError::Trap`](crate::CallError::Trap)) |
/// | `max_log_records` | 1,000 (4 KiB each) | excess is dropped and counted |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel each call starts with.
    pub fuel: Fuel,
    /// Wall-clock time for the whole call (instantiation included).
    pub timeout: Duration,
    /// Largest size any linear memory of the tool may grow to.
    pub memory_bytes: u64,
    /// Largest JSON output accepted from the tool.
    pub max_output_bytes: usize,
    /// Bytes of stdout kept per call.
    pub max_stdout_bytes: usize,
    /// Bytes of stderr kept per call.
    pub max_stderr_bytes: usize,
    /// Bytes the guest may pass to the host in one host call.
    pub hostcall_bytes: usize,
    /// Log records kept per call.
    pub max_log_records: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: Fuel(2_000_000_000),
            timeout: Duration::from_secs(30),
            memory_bytes: 128 << 20,
            max_output_bytes: 1 << 20,
            max_stdout_bytes: 64 << 10,
            max_stderr_bytes: 64 << 10,
            hostcall_bytes: 1 << 20,
            max_log_records: 1000,
        }
    }
}

/// Limits as written in a policy: each key optional, unknown keys rejected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Overrides [`Limits::fuel`].
    pub fuel: Option<u64>,
    /// Overrides [`Limits::timeout`], in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Overrides [`Limits::memory_bytes`], in MiB.
    pub memory_mib: Option<u64>,
    /// Overrides [`Limits::max_output_bytes`].
    pub max_output_bytes: Option<usize>,
    /// Overrides [`Limits::max_stdout_bytes`].
    pub max_stdout_bytes: Option<usize>,
    /// Overrides [`Limits::max_stderr_bytes`].
    pub max_stderr_bytes: Option<usize>,
    /// Overrides [`Limits::hostcall_bytes`].
    pub hostcall_bytes: Option<usize>,
    /// Overrides [`Limits::max_log_records`].
    pub max_log_records: Option<usize>,
}

impl LimitsSpec {
    /// Applies the keys that are set on top of `base`.
    pub fn apply(&self, base: Limits) -> Limits {
        Limits {
            fuel: self.fuel.map_or(base.fuel, Fuel),
            timeout: self.timeout_ms.map_or(base.timeout, Duration::from_millis),
            memory_bytes: self.memory_mib.map_or(base.memory_bytes, |m| m << 20),
            max_output_bytes: self.max_output_bytes.unwrap_or(base.max_output_bytes),
            max_stdout_bytes: self.max_stdout_bytes.unwrap_or(base.max_stdout_bytes),
            max_stderr_bytes: self.max_stderr_bytes.unwrap_or(base.max_stderr_bytes),
            hostcall_bytes: self.hostcall_bytes.unwrap_or(base.hostcall_bytes),
            max_log_records: self.max_log_records.unwrap_or(base.max_log_records),
        }
    }
}
