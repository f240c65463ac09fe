//! cofferdam runs AI-agent tools as sandboxed WebAssembly components.
//!
//! A tool is a `wasm32-wasip2` component exporting the `cofferdam:tool` world
//! (see `wit/tool.wit`; write one with the `cofferdam-guest` crate). A
//! [`Host`] loads tools under a [`ToolPolicy`] and runs every call in a fresh
//! instance from a pooling allocator, with fuel, a wall-clock deadline, a
//! memory cap, bounded stdio and output, and only the directories the policy
//! mounts.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cofferdam::{CallRequest, Host, Mount, ToolPolicy};
//!
//! let host = Host::builder()
//!     .data_dir("/var/lib/cofferdam") // precompiled artifacts live here
//!     .allow_root("/srv/shared")      // mounts must lie below an allowed root
//!     .build()?;
//! let policy = ToolPolicy {
//!     mounts: vec![Mount::read_only("/srv/shared/docs", "/data")],
//!     ..ToolPolicy::default()
//! };
//! host.load_file("grep.wasm".as_ref(), policy).await?;
//! let outcome = host.call(CallRequest::new("grep", r#"{"pattern":"TODO"}"#)).await?;
//! println!("{}", outcome.output);
//! # Ok(()) }
//! ```
//!
//! Around every call sit a circuit breaker, a bulkhead and a retry loop per
//! tool; whether a failure is retried or counted against the breaker is
//! decided by one fixed error-class table. A [`CallError`] says precisely why a
//! call failed, and [`CallError::retry_after`] when to come back.
//!
//! Calls with an idempotency key run once: a redb journal (group-committed)
//! stores their outcome and replays it. Budget scopes (tenant, agent, task)
//! cap what calls spend in tokens, derived from fuel and output size, and
//! every attempt lands in an audit history.
//!
//! [`McpServer`] offers the loaded tools to MCP clients over stdio or
//! streamable HTTP (`cofferdam serve`), and [`HostConfig`] reads a whole
//! host from `cofferdam.toml` and reloads it.
//!
//! [`Host::tasks`] runs durable multi-step tasks with saga compensation, and
//! [`Host::escalations`] holds what needs a human.
//!
//! [`Host::schedules`] runs tool calls and tasks in the background on a cron
//! in an IANA time zone, each run under its own budget and timeout.
//!
//! A tool may opt into warm reuse (`[warm]` in its policy): idle instances
//! are kept and reused by later calls, retired after a number of calls, on
//! any trap or timeout, and when idle.

#![warn(missing_docs)]
#![deny(unsafe_code)] // `component_cache` alone opts out, with a SAFETY note.

mod attempt;
pub mod bench;
mod bindings;
mod breaker;
mod budget;
mod bulkhead;
mod classify;
mod clock;
mod component_cache;
mod config;
mod cron;
mod engine;
mod error;
mod escalation;
mod fs_guard;
mod host;
mod host_api;
mod journal;
mod limits;
mod mcp;
mod metrics;
mod net;
mod owner;
mod policy;
mod retry;
mod sandbox;
mod schedule;
mod task;
mod units;
mod warm;

pub use breaker::{BreakerConfig, BreakerMode, BreakerSnapshot, BreakerState, Window};
pub use budget::{BudgetCap, BudgetError, BudgetStatus, Budgets, InvalidScope, ScopeId};
pub use bulkhead::BulkheadConfig;
pub use clock::{
    Clock, Jitter, ManualClock, ManualWallClock, SystemClock, SystemWallClock, WallClock,
};
pub use component_cache::{ArtifactInfo, ArtifactSource};
pub use config::{ConfigError, ConfigProblem, HostConfig, ReloadReport, ScheduleTable};
pub use cron::{Cron, CronError, CronField};
pub use error::{BuildError, CallError, ErrorClass, LoadError, ToolError};
pub use escalation::{
    Escalation, EscalationError, EscalationKey, EscalationReason, Escalations, NewEscalation,
    Resolution, Resolved,
};
pub use fs_guard::{DEFAULT_SCRATCH_MAX_BYTES, FilesystemSpec, SymlinkPolicy};
pub use host::{
    CallOutcome, CallRequest, FallbackUsed, Host, HostBuilder, MAX_IDEMPOTENCY_KEY_LEN,
    ToolDescription, ToolStats,
};
pub use host_api::{LogLevel, LogRecord, Progress, ProgressSink};
pub use jiff::{Timestamp, ZonedDateTime};
pub use journal::{
    AttemptRecord, HistoryQuery, JournalEntry, JournalError, KeyState, StoredOutcome,
};
pub use limits::{Limits, LimitsSpec};
pub use mcp::{HttpAccess, McpServer, ServeError};
pub use net::{HttpSpec, HttpStats, NetPolicyError};
pub use policy::{
    BreakerSpec, BudgetSpec, DEFAULT_FALLBACK_ON, Mount, MountMode, PolicyError, PoolSpec,
    RetrySpec, ToolPolicy, WarmSpec,
};
pub use retry::RetryConfig;
pub use schedule::{
    CatchUp, NextRun, Reconciled, RunStatus, Runner, RunningSlot, Schedule, ScheduleConfig,
    ScheduleError, ScheduleRun, ScheduleSpec, ScheduleStatus, ScheduleTarget, Schedules, Tick,
};
pub use task::{
    CompensationSpec, StepRecord, StepSpec, StepStatus, TaskError, TaskRecord, TaskSpec, TaskState,
    Tasks,
};
pub use tokio_util::sync::CancellationToken;
pub use units::{Effect, Fuel, InvalidToolName, TokenPrice, Tokens, ToolName};
pub use warm::WarmStats;
