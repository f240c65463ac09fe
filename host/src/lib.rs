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
//! What this crate does not do yet: retries, circuit breakers, bulkheads,
//! budgets across calls, the idempotency journal and MCP. Each call is one
//! attempt, and its [`CallError`] says precisely why it failed.

#![warn(missing_docs)]
#![deny(unsafe_code)] // `component_cache` alone opts out, with a SAFETY note.

mod attempt;
mod bindings;
mod component_cache;
mod engine;
mod error;
mod host;
mod host_api;
mod limits;
mod policy;
mod sandbox;
mod units;

pub use component_cache::{ArtifactInfo, ArtifactSource};
pub use error::{BuildError, CallError, ErrorClass, LoadError, ToolError};
pub use host::{CallOutcome, CallRequest, Host, HostBuilder, ToolDescription};
pub use host_api::{LogLevel, LogRecord, Progress, ProgressSink};
pub use limits::{Limits, LimitsSpec};
pub use policy::{Mount, MountMode, PolicyError, ToolPolicy};
pub use units::{Effect, Fuel, InvalidToolName, TokenPrice, Tokens, ToolName};
