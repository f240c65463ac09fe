//! Tool errors, and the conversions that make `?` pick the right case.

use std::fmt;

use crate::bindings::cofferdam::tool::types;

/// An error the tool reports to the host. The case, not the message, decides
/// what the host does next: `InvalidInput` is never retried, `Transient` and
/// `RateLimited` may be, `Permanent` is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolError {
    /// The caller's fault (bad arguments, a path that does not exist).
    InvalidInput(String),
    /// An upstream hiccup worth retrying.
    Transient(String),
    /// Upstream asked to slow down; retry after this many milliseconds.
    RateLimited {
        /// Milliseconds to wait before the next attempt.
        retry_after_ms: u32,
    },
    /// Will not succeed on retry.
    Permanent(String),
}

impl ToolError {
    /// The caller's input is wrong.
    pub fn invalid_input(message: impl fmt::Display) -> Self {
        Self::InvalidInput(message.to_string())
    }

    /// A temporary failure; a retry may succeed.
    pub fn transient(message: impl fmt::Display) -> Self {
        Self::Transient(message.to_string())
    }

    /// Upstream rate limit; retry after `retry_after_ms`.
    pub fn rate_limited(retry_after_ms: u32) -> Self {
        Self::RateLimited { retry_after_ms }
    }

    /// A failure that a retry will not fix.
    pub fn permanent(message: impl fmt::Display) -> Self {
        Self::Permanent(message.to_string())
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Self::Transient(m) => write!(f, "transient failure: {m}"),
            Self::RateLimited { retry_after_ms } => {
                write!(f, "rate limited, retry after {retry_after_ms} ms")
            }
            Self::Permanent(m) => write!(f, "permanent failure: {m}"),
        }
    }
}

impl std::error::Error for ToolError {}

impl From<ToolError> for types::ToolError {
    fn from(error: ToolError) -> Self {
        match error {
            ToolError::InvalidInput(m) => types::ToolError::InvalidInput(m),
            ToolError::Transient(m) => types::ToolError::Transient(m),
            ToolError::RateLimited { retry_after_ms } => {
                types::ToolError::RateLimited(retry_after_ms)
            }
            ToolError::Permanent(m) => types::ToolError::Permanent(m),
        }
    }
}

/// I/O errors map by kind: a missing or forbidden path is the caller's
/// fault, interruptions and timeouts are transient, the rest permanent.
impl From<std::io::Error> for ToolError {
    fn from(error: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        match error.kind() {
            NotFound | PermissionDenied | InvalidInput | AlreadyExists | IsADirectory
            | NotADirectory | InvalidFilename => Self::InvalidInput(error.to_string()),
            Interrupted | TimedOut | WouldBlock | ConnectionReset | ConnectionAborted
            | ConnectionRefused | BrokenPipe => Self::Transient(error.to_string()),
            _ => Self::Permanent(error.to_string()),
        }
    }
}

/// A JSON error inside the tool is a bug or bad data, not the caller's input
/// (input parsing is done before the handler runs and reports `InvalidInput`).
impl From<serde_json::Error> for ToolError {
    fn from(error: serde_json::Error) -> Self {
        Self::Permanent(error.to_string())
    }
}

/// Attaches a [`ToolError`] case to any error, for use with `?`.
pub trait ResultExt<T> {
    /// Maps the error to [`ToolError::InvalidInput`], prefixed with `context`.
    fn invalid_input(self, context: &str) -> Result<T, ToolError>;
    /// Maps the error to [`ToolError::Transient`], prefixed with `context`.
    fn transient(self, context: &str) -> Result<T, ToolError>;
    /// Maps the error to [`ToolError::Permanent`], prefixed with `context`.
    fn permanent(self, context: &str) -> Result<T, ToolError>;
}

impl<T, E: fmt::Display> ResultExt<T> for Result<T, E> {
    fn invalid_input(self, context: &str) -> Result<T, ToolError> {
        self.map_err(|e| ToolError::InvalidInput(format!("{context}: {e}")))
    }
    fn transient(self, context: &str) -> Result<T, ToolError> {
        self.map_err(|e| ToolError::Transient(format!("{context}: {e}")))
    }
    fn permanent(self, context: &str) -> Result<T, ToolError> {
        self.map_err(|e| ToolError::Permanent(format!("{context}: {e}")))
    }
}
