//! The `cofferdam:tool/host` interface: what a guest may ask of the host
//! (log, progress, remaining budget), linked by hand (see [`crate::runtime::bindings`]).
//!
//! Everything here is bounded: log records are capped in number and size, and
//! the guest's strings are capped by the store's hostcall fuel.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use wasmtime::StoreContextMut;
use wasmtime::component::Linker;

use crate::runtime::bindings::cofferdam::tool::types::Level;
use crate::{Fuel, TokenPrice, ToolName};

/// Longest log message kept, in bytes; longer ones are cut at a char boundary.
const MAX_LOG_MESSAGE_BYTES: usize = 4096;

/// Severity of a guest log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
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

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        })
    }
}

/// One line the tool logged through the host interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogRecord {
    /// Severity.
    pub level: LogLevel,
    /// The message (at most 4 KiB).
    pub message: String,
}

/// A progress report from a running tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Units done so far.
    pub done: u64,
    /// Units in all, when known.
    pub total: Option<u64>,
    /// What the tool is doing.
    pub message: String,
}

/// Receives progress reports of one call, on the thread running the call;
/// it should be quick (send on a channel, not do I/O).
pub type ProgressSink = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Per-call state behind the host interface.
pub(crate) struct GuestServices {
    pub tool: ToolName,
    pub price: TokenPrice,
    pub logs: Vec<LogRecord>,
    pub max_logs: usize,
    pub logs_dropped: u64,
    pub progress: Option<ProgressSink>,
    /// The tool's state bucket for this attempt, when its policy grants one.
    pub state: Option<crate::runtime::state::StateView>,
}

impl GuestServices {
    fn log(&mut self, level: Level, mut message: String) {
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        if self.logs.len() >= self.max_logs {
            self.logs_dropped += 1;
            return;
        }
        truncate_at_char_boundary(&mut message, MAX_LOG_MESSAGE_BYTES);
        tracing::debug!(target: "cofferdam::guest", tool = %self.tool, %level, "{message}");
        self.logs.push(LogRecord { level, message });
    }

    fn progress(&self, done: u64, total: Option<u64>, mut message: String) {
        if let Some(sink) = &self.progress {
            truncate_at_char_boundary(&mut message, MAX_LOG_MESSAGE_BYTES);
            sink(&Progress {
                done,
                total,
                message,
            });
        }
    }
}

fn truncate_at_char_boundary(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// Adds `cofferdam:tool/host@0.1.0` to `linker`; `services` finds the
/// call's [`GuestServices`] in the store data (the wasmtime way: the
/// interface does not know the store's type).
pub(crate) fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    services: fn(&mut T) -> &mut GuestServices,
) -> wasmtime::Result<()> {
    // A types-only interface: nothing to provide, but the name must resolve.
    linker.instance("cofferdam:tool/types@0.1.0")?;
    let mut host = linker.instance("cofferdam:tool/host@0.1.0")?;
    host.func_wrap(
        "log",
        move |mut store: StoreContextMut<'_, T>, (level, message): (Level, String)| {
            services(store.data_mut()).log(level, message);
            Ok(())
        },
    )?;
    host.func_wrap(
        "progress",
        move |mut store: StoreContextMut<'_, T>,
              (done, total, message): (u64, Option<u64>, String)| {
            services(store.data_mut()).progress(done, total, message);
            Ok(())
        },
    )?;
    host.func_wrap(
        "remaining-budget",
        move |mut store: StoreContextMut<'_, T>, (): ()| {
            let fuel = Fuel(store.get_fuel()?);
            Ok((services(store.data_mut()).price.tokens_for(fuel).0,))
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let mut s = "é".repeat(3000); // 6000 bytes
        truncate_at_char_boundary(&mut s, MAX_LOG_MESSAGE_BYTES);
        assert_eq!(s.len(), MAX_LOG_MESSAGE_BYTES);
        let mut odd = format!("a{}", "é".repeat(3000));
        truncate_at_char_boundary(&mut odd, MAX_LOG_MESSAGE_BYTES);
        assert_eq!(odd.len(), MAX_LOG_MESSAGE_BYTES - 1);
    }
}
