//! The call context a handler receives, and the host functions behind it.

use crate::bindings::cofferdam::tool::{host, types};

/// What calling a tool does to the world; the host retries and journals by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// No side effects: safe to retry and to run twice.
    Pure,
    /// Side effects that are safe to repeat with the same input.
    Idempotent,
    /// Side effects that must happen at most once.
    SideEffecting,
}

impl From<Effect> for types::Effect {
    fn from(effect: Effect) -> Self {
        match effect {
            Effect::Pure => types::Effect::Pure,
            Effect::Idempotent => types::Effect::Idempotent,
            Effect::SideEffecting => types::Effect::SideEffecting,
        }
    }
}

/// Severity of a log record sent to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected the tool recovered from.
    Warn,
    /// Something failed.
    Error,
}

impl From<Level> for types::Level {
    fn from(level: Level) -> Self {
        match level {
            Level::Trace => types::Level::Trace,
            Level::Debug => types::Level::Debug,
            Level::Info => types::Level::Info,
            Level::Warn => types::Level::Warn,
            Level::Error => types::Level::Error,
        }
    }
}

/// The call in progress: its identity, and the host services a tool may use.
#[derive(Debug)]
pub struct Context {
    call_id: String,
    task_id: Option<String>,
    attempt: u32,
    deadline_ms: u64,
}

impl Context {
    pub(crate) fn new(ctx: types::CallContext) -> Self {
        Self {
            call_id: ctx.call_id,
            task_id: ctx.task_id,
            attempt: ctx.attempt,
            deadline_ms: ctx.deadline_ms,
        }
    }

    /// The tool's durable key-value state (the bucket its policy grants);
    /// see [`crate::State`].
    pub fn state(&self) -> Result<crate::State, crate::ToolError> {
        crate::State::open()
    }

    /// Unique id of this call, the same for every attempt.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// The task this call is a step of, if any.
    pub fn task_id(&self) -> Option<&str> {
        self.task_id.as_deref()
    }

    /// Attempt number, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Milliseconds the host allowed for this call when it started.
    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }

    /// Records a log line on the call's outcome. The host bounds how many it keeps.
    pub fn log(&self, level: Level, message: &str) {
        host::log(level.into(), message);
    }

    /// Shorthand for [`Context::log`] at [`Level::Info`].
    pub fn log_info(&self, message: &str) {
        self.log(Level::Info, message);
    }

    /// Reports progress of a long call; the host forwards it (for example as
    /// MCP progress notifications).
    pub fn progress(&self, done: u64, total: Option<u64>, message: &str) {
        host::progress(done, total, message);
    }

    /// Tokens this call may still spend, derived from the fuel it has left.
    pub fn remaining_budget(&self) -> u64 {
        host::remaining_budget()
    }
}
