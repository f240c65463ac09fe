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

pub mod bench;
mod budget;
mod host;
#[cfg(test)]
mod layering;
mod model;
mod orchestration;
mod policy;
mod resilience;
mod runtime;
mod store;
mod surfaces;

pub use budget::{BudgetError, Budgets};
pub use host::config::{
    ConfigError, ConfigProblem, HostConfig, McpTable, ReloadReport, ScheduleTable, StoreTable,
};
pub use host::{
    CallOutcome, CallRequest, FallbackUsed, Host, HostBuilder, ToolDescription, ToolFilter,
    ToolState, ToolStats,
};
pub use jiff::{Timestamp, ZonedDateTime};
pub use model::budget::{BudgetCap, BudgetStatus, InvalidScope, ScopeId};
pub use model::error::{
    BuildError, CallError, ErrorClass, JournalError, LoadError, StorageCause, ToolError,
};
pub use model::escalation::{
    Escalation, EscalationError, EscalationKey, EscalationReason, NewEscalation, Resolution,
    Resolved,
};
pub use model::journal::{AttemptRecord, HistoryQuery, JournalEntry, KeyState, StoredOutcome};
pub use model::limits::{Limits, LimitsSpec};
pub use model::money::{InvalidMoney, Money, PriceError, Prices};
pub use model::notify::{Delivery, Event as NotifyEvent, EventKind, OutboxEntry};
pub use model::policy::{BreakerState, Mount, MountMode, NetPolicyError, PolicyError};
pub use model::schedule::{
    CatchUp, NextRun, RunStatus, RunningSlot, Schedule, ScheduleConfig, ScheduleRun, ScheduleSpec,
    ScheduleStatus, ScheduleTarget,
};
pub use model::state::{
    DEFAULT_STATE_BYTES, DEFAULT_STATE_KEYS, StateScope, StateSpec, StateUsage,
};
pub use model::task::{
    CompensationSpec, StepRecord, StepSpec, StepStatus, TaskRecord, TaskSpec, TaskState,
};
pub use model::units::{
    Effect, Fuel, InvalidToolName, MAX_IDEMPOTENCY_KEY_LEN, TokenPrice, Tokens, ToolName,
};
pub use orchestration::cron::{Cron, CronError, CronField};
pub use orchestration::escalation::Escalations;
pub use orchestration::notify::{Deliveries, Notifier};
pub use orchestration::schedule::{Reconciled, Runner, ScheduleError, Schedules, Tick};
pub use orchestration::task::{TaskError, Tasks};
pub use policy::tool::{
    BreakerSpec, BudgetSpec, CpuSpec, DEFAULT_FALLBACK_ON, PoolSpec, RetrySpec, ToolPolicy,
    WarmSpec,
};
pub use resilience::breaker::{BreakerConfig, BreakerMode, BreakerSnapshot, Window};
pub use resilience::bulkhead::BulkheadConfig;
pub use resilience::clock::{
    Clock, Jitter, ManualClock, ManualWallClock, SystemClock, SystemWallClock, WallClock,
};
pub use resilience::retry::RetryConfig;
pub use runtime::component_cache::{ArtifactInfo, ArtifactSource};
pub use runtime::fs_guard::{DEFAULT_SCRATCH_MAX_BYTES, FilesystemSpec, SymlinkPolicy};
pub use runtime::host_api::{LogLevel, LogRecord, Progress, ProgressSink};
pub use runtime::lanes::LaneStats;
pub use runtime::net::{HttpSpec, HttpStats};
pub use runtime::warm::WarmStats;
pub use runtime::webhook::{SinkError, Webhook, webhook_signature};
pub use rust_decimal::Decimal;
pub use store::config::{PostgresConfig, StoreConfig};
pub use store::migrate::migrate_to_postgres;
pub use store::snapshot::{MigrateError, Migrated};
pub use surfaces::mcp::{
    ClientError, ClientSpec, Clients, Grant, HttpAccess, Identity, Manage, ManageError, McpServer,
    ServeError, StdioSpec, manage, new_token, token_digest,
};
pub use tokio_util::sync::CancellationToken;
