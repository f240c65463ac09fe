//! The errors an embedder sees: one enum per operation, each variant saying
//! what happened and what to do about it.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::policy::{BreakerState, PolicyError};
use crate::model::units::{Fuel, Tokens, ToolName};

fn retry_hint(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) if d.as_secs() >= 1 => format!("; retry after {} s", d.as_secs()),
        Some(d) => format!("; retry after {} ms", d.as_millis().max(1)),
        None => String::new(),
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Building a [`crate::Host`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The wasmtime engine rejected the configuration.
    #[error("cannot configure the wasm engine")]
    Engine(#[source] BoxError),
    /// The data directory cannot be created.
    #[error("cannot create data directory {path}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The journal (idempotency, budgets, audit) cannot be opened.
    #[error(transparent)]
    Journal(#[from] crate::JournalError),
    /// An allowed root does not exist.
    #[error("allowed root {path} does not exist")]
    AllowedRoot {
        /// The root as given.
        path: PathBuf,
        /// Why it could not be canonicalized.
        #[source]
        source: std::io::Error,
    },
    /// The compute threads could not be started.
    #[error("cannot start the compute threads")]
    ComputePool(#[source] std::io::Error),
    /// The prices are not all in one currency.
    #[error("invalid [prices]")]
    Prices(#[source] crate::model::money::PriceError),
    /// A notification sink cannot be used.
    #[error("notification sink `{sink}`: {reason}")]
    Notify {
        /// The sink's name.
        sink: String,
        /// What is wrong.
        reason: String,
    },
}

/// Loading a tool failed; nothing was registered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The component file could not be read.
    #[error("cannot read component {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The policy is invalid (bad key, path, digest, mount outside the roots…).
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A policy loaded from a manifest names no component.
    #[error("manifest names no `component`")]
    NoComponent,
    /// The component's SHA-256 differs from the policy's `sha256` pin.
    #[error("component digest is {actual}, but the policy pins {expected}")]
    DigestMismatch {
        /// The pinned digest.
        expected: String,
        /// The digest of the bytes given.
        actual: String,
    },
    /// The bytes are not a valid WebAssembly component.
    #[error("not a valid WebAssembly component")]
    Compile(#[source] BoxError),
    /// The component imports something this host does not grant.
    #[error("component needs an import this host does not provide")]
    Link(#[source] BoxError),
    /// The component does not export the `cofferdam:tool` world.
    #[error(
        "component is not a cofferdam tool (it must export `describe` and `invoke` of cofferdam:tool@0.1.0)"
    )]
    NotATool(#[source] BoxError),
    /// Calling `describe` failed.
    #[error("tool failed to describe itself")]
    Describe(#[source] Box<CallError>),
    /// `describe` returned something unusable.
    #[error("tool describes itself badly: {reason}")]
    BadToolInfo {
        /// What is wrong.
        reason: String,
    },
    /// The tool's bulkhead would overcommit the host's instance pool.
    #[error(
        "tool needs {needed} instance slots but only {free} of the host's {total} are unreserved; raise `HostBuilder::max_instances` or lower `pool.max_concurrent`"
    )]
    PoolExhausted {
        /// Slots the tool asks for (`pool.max_concurrent`).
        needed: u32,
        /// Slots not reserved by other tools.
        free: u32,
        /// The pool's size.
        total: u32,
    },
    /// A tool of that name is loaded already.
    #[error("a tool named `{name}` is already loaded")]
    AlreadyLoaded {
        /// The name.
        name: ToolName,
    },
}

/// How a failed call is classified: the machine-readable reason an agent or
/// retry layer acts on (DESIGN §6). Serialized in kebab-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorClass {
    /// No tool of that name.
    UnknownTool,
    /// The input was wrong; fix it before calling again.
    InvalidInput,
    /// The tool reported an upstream hiccup.
    Transient,
    /// The tool reported an upstream rate limit.
    RateLimited,
    /// The tool reported a failure a retry will not fix.
    Permanent,
    /// The call used all its fuel.
    OutOfFuel,
    /// The call ran past its wall-clock deadline.
    DeadlineExceeded,
    /// The tool tried to grow memory past its cap.
    MemoryLimit,
    /// The tool overflowed its stack.
    StackOverflow,
    /// The tool panicked.
    Panic,
    /// The tool trapped for another reason.
    Trap,
    /// The tool returned more output than allowed.
    OutputTooLarge,
    /// The tool returned output that is not JSON.
    InvalidOutput,
    /// The tool passed more data to the host at once than allowed.
    DataLimit,
    /// The tool's circuit breaker refused the call: the tool is failing.
    CircuitOpen,
    /// The tool is at its concurrency limit.
    BulkheadFull,
    /// A side-effecting tool was interrupted; it may or may not have acted.
    UnknownOutcome,
    /// Every allowed attempt failed.
    RetriesExhausted,
    /// A budget scope cannot pay for the call.
    BudgetExhausted,
    /// The idempotency key was used before with a different input.
    IdempotencyMismatch,
    /// Another call with the same idempotency key is running.
    InProgress,
    /// The journal could not record the call.
    Journal,
    /// The shared store (PostgreSQL) did not answer; nothing was decided,
    /// so the same call (with its idempotency key) may be made again later.
    StoreUnavailable,
    /// The host could not set up or run the call.
    Host,
    /// The caller cancelled the call.
    Cancelled,
}

impl ErrorClass {
    /// The kebab-case name, as in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownTool => "unknown-tool",
            Self::InvalidInput => "invalid-input",
            Self::Transient => "transient",
            Self::RateLimited => "rate-limited",
            Self::Permanent => "permanent",
            Self::OutOfFuel => "out-of-fuel",
            Self::DeadlineExceeded => "deadline-exceeded",
            Self::MemoryLimit => "memory-limit",
            Self::StackOverflow => "stack-overflow",
            Self::Panic => "panic",
            Self::Trap => "trap",
            Self::OutputTooLarge => "output-too-large",
            Self::InvalidOutput => "invalid-output",
            Self::DataLimit => "data-limit",
            Self::CircuitOpen => "circuit-open",
            Self::BulkheadFull => "bulkhead-full",
            Self::UnknownOutcome => "unknown-outcome",
            Self::RetriesExhausted => "retries-exhausted",
            Self::BudgetExhausted => "budget-exhausted",
            Self::IdempotencyMismatch => "idempotency-mismatch",
            Self::InProgress => "in-progress",
            Self::Journal => "journal",
            Self::StoreUnavailable => "store-unavailable",
            Self::Host => "host",
            Self::Cancelled => "cancelled",
        }
    }
}

/// An error a tool reported through the WIT `tool-error` variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "case", content = "detail", rename_all = "kebab-case")]
pub enum ToolError {
    /// The caller's input was wrong.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// An upstream hiccup; a retry may succeed.
    #[error("transient failure: {0}")]
    Transient(String),
    /// Upstream rate limit.
    #[error("rate limited, retry after {} ms", .retry_after.as_millis())]
    RateLimited {
        /// How long the tool asked the caller to wait.
        retry_after: Duration,
    },
    /// A failure a retry will not fix.
    #[error("permanent failure: {0}")]
    Permanent(String),
}

/// A call failed. The variant says why; [`CallError::class`] gives the
/// machine-readable class.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No tool of that name is loaded.
    #[error("no tool named `{tool}` is loaded")]
    UnknownTool {
        /// The name asked for.
        tool: String,
    },
    /// The input is not valid JSON (checked before the tool runs).
    #[error("input for tool `{tool}` is not valid JSON: {reason}")]
    InvalidInput {
        /// The tool.
        tool: ToolName,
        /// The parser's message.
        reason: String,
    },
    /// The idempotency key breaks the key rule (1 to
    /// [`MAX_IDEMPOTENCY_KEY_LEN`](crate::MAX_IDEMPOTENCY_KEY_LEN) bytes);
    /// class `invalid-input`. Nothing ran.
    #[error("idempotency key for tool `{tool}` must be 1 to {max} bytes, not {len}", max = crate::MAX_IDEMPOTENCY_KEY_LEN)]
    InvalidKey {
        /// The tool.
        tool: ToolName,
        /// The key's length in bytes.
        len: usize,
    },
    /// The tool ran and reported an error.
    #[error("tool `{tool}` failed: {error}")]
    Tool {
        /// The tool.
        tool: ToolName,
        /// What it reported.
        error: ToolError,
    },
    /// The call used all its fuel; raise `limits.fuel` or the budget if the
    /// tool is expected to work this long.
    #[error("tool `{tool}` ran out of fuel after {fuel}")]
    OutOfFuel {
        /// The tool.
        tool: ToolName,
        /// The fuel it was given.
        fuel: Fuel,
    },
    /// The call ran past its wall-clock deadline and was stopped.
    #[error("tool `{tool}` exceeded its {} ms deadline", .timeout.as_millis())]
    DeadlineExceeded {
        /// The tool.
        tool: ToolName,
        /// The deadline it had.
        timeout: Duration,
        /// The guest was running its own code when stopped (a loop), not
        /// waiting in a host call (I/O). Such a deadline is not retried: the
        /// same input would spin as long again.
        in_guest_code: bool,
    },
    /// The tool tried to grow a memory past its cap.
    #[error("tool `{tool}` tried to use more than its {} MiB memory limit", .limit_bytes >> 20)]
    MemoryLimit {
        /// The tool.
        tool: ToolName,
        /// The cap.
        limit_bytes: u64,
    },
    /// The tool overflowed the wasm stack (usually unbounded recursion).
    #[error("tool `{tool}` overflowed its stack")]
    StackOverflow {
        /// The tool.
        tool: ToolName,
    },
    /// The tool panicked.
    #[error("tool `{tool}` panicked: {message}")]
    Panic {
        /// The tool.
        tool: ToolName,
        /// The panic message from the tool's stderr.
        message: String,
    },
    /// The tool trapped (invalid memory access, unreachable, host call refused…).
    #[error("tool `{tool}` trapped: {reason}")]
    Trap {
        /// The tool.
        tool: ToolName,
        /// The trap description.
        reason: String,
    },
    /// The output is larger than `limits.max_output_bytes`.
    #[error("tool `{tool}` returned {size} bytes, more than its {limit}-byte output limit")]
    OutputTooLarge {
        /// The tool.
        tool: ToolName,
        /// Bytes returned.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The output is not valid JSON.
    #[error("tool `{tool}` returned output that is not JSON: {reason}")]
    InvalidOutput {
        /// The tool.
        tool: ToolName,
        /// The parser's message.
        reason: String,
    },
    /// The tool passed more bytes to the host in one transfer (a host-call
    /// argument, or its output) than `limits.hostcall_bytes` allows.
    #[error("tool `{tool}` passed more than {limit} bytes to the host at once")]
    DataLimit {
        /// The tool.
        tool: ToolName,
        /// Bytes allowed per transfer.
        limit: usize,
    },
    /// The tool's circuit breaker refused the call: recent calls failed, so
    /// the host fails fast instead of adding load. Do not retry before
    /// `retry_after`.
    #[error("tool `{tool}` is unavailable: its circuit breaker is {}{}", .state.as_str(), retry_hint(.retry_after))]
    CircuitOpen {
        /// The tool.
        tool: ToolName,
        /// `open`, `half-open` (probes in flight) or `forced-open` (an operator).
        state: BreakerState,
        /// When a call may be admitted again; `None` while an operator holds it open.
        retry_after: Option<Duration>,
        /// Attempts made before the breaker refused (0: refused up front).
        attempts: u32,
    },
    /// The tool is running as many calls as its bulkhead allows and its queue
    /// is full (or the wait ran out).
    #[error("tool `{tool}` is at its concurrency limit{}", retry_hint(&Some(*.retry_after)))]
    BulkheadFull {
        /// The tool.
        tool: ToolName,
        /// About when a slot frees up.
        retry_after: Duration,
    },
    /// A side-effecting tool was stopped or its result lost after it may have
    /// acted; it was not retried. Check the world before calling again.
    #[error(
        "tool `{tool}` may or may not have acted (it is side-effecting and {cause}); not retried"
    )]
    UnknownOutcome {
        /// The tool.
        tool: ToolName,
        /// What interrupted it.
        cause: Box<CallError>,
    },
    /// Every attempt the retry policy allowed failed.
    #[error("tool `{tool}` failed {attempts} attempts; last: {last}")]
    RetriesExhausted {
        /// The tool.
        tool: ToolName,
        /// Attempts made.
        attempts: u32,
        /// Class of each failed attempt, in order.
        classes: Vec<ErrorClass>,
        /// The last attempt's error.
        last: Box<CallError>,
    },
    /// A budget scope cannot pay for the call (never retried).
    #[error("tool `{tool}`: budget `{scope}` cannot pay for the call (asked {} tokens, {} left)", .asked.0, .left.0)]
    BudgetExhausted {
        /// The tool.
        tool: ToolName,
        /// The scope that ran out (`agent:a1`, or `call` for the request's own cap).
        scope: String,
        /// Tokens the attempt needed.
        asked: Tokens,
        /// Tokens the scope had left.
        left: Tokens,
    },
    /// The tool finished, but its output costs more tokens than the budget
    /// had left: the output is withheld (class `budget-exhausted`). The tool
    /// ran and may have acted, so a keyed call keeps its outcome: repeating
    /// the call with the same key returns the stored output and never runs
    /// the tool again.
    #[error(
        "tool `{tool}` finished, but its output costs {} tokens and budget `{scope}` had {} left: the output is withheld{}",
        .cost.0,
        .left.0,
        if *.stored { "; the call's outcome is stored under its idempotency key, and repeating the call returns it without running the tool again" } else { "" }
    )]
    OutputOverBudget {
        /// The tool.
        tool: ToolName,
        /// The scope that could not pay (`call` for the request's own cap).
        scope: String,
        /// What the attempt cost with its output.
        cost: Tokens,
        /// What the scope could pay (and was charged).
        left: Tokens,
        /// Whether the outcome is stored under the call's idempotency key.
        stored: bool,
        /// The withheld output. Not for the model: the budget did not pay for
        /// it; an embedder may log or store it.
        output: String,
    },
    /// The idempotency key was used before with a different input (HTTP 422).
    #[error("idempotency key `{key}` of tool `{tool}` was used before with a different input")]
    IdempotencyMismatch {
        /// The tool.
        tool: ToolName,
        /// The key.
        key: String,
    },
    /// A call with this idempotency key is still running (HTTP 409).
    #[error("a call of tool `{tool}` with idempotency key `{key}` is still running{}", retry_hint(&Some(*.retry_after)))]
    InProgress {
        /// The tool.
        tool: ToolName,
        /// The key.
        key: String,
        /// When its lease lapses.
        retry_after: Duration,
    },
    /// An earlier call with this key was interrupted after it may have acted;
    /// it is never re-run automatically.
    #[error(
        "the call of tool `{tool}` with idempotency key `{key}` has an unknown outcome ({reason}); check the world, then resolve it"
    )]
    KeyUnknown {
        /// The tool.
        tool: ToolName,
        /// The key.
        key: String,
        /// What happened.
        reason: String,
    },
    /// The stored terminal error of an earlier call with the same key.
    #[error("{message} (replayed)")]
    Replayed {
        /// The tool.
        tool: ToolName,
        /// The stored error's class.
        class: ErrorClass,
        /// The stored error's message.
        message: String,
        /// The stored error when the tool itself reported it.
        tool_error: Option<ToolError>,
    },
    /// The journal could not record the call; its outcome was not reported.
    #[error("journal failed for tool `{tool}`")]
    Journal {
        /// The tool.
        tool: ToolName,
        /// What failed.
        #[source]
        source: JournalError,
    },
    /// The caller cancelled the call (an MCP `notifications/cancelled`, a
    /// dropped HTTP request, [`CallRequest::cancel`](crate::CallRequest::cancel)).
    /// A side-effecting tool cancelled while it ran ends in `UnknownOutcome`.
    #[error("call of tool `{tool}` was cancelled by the caller")]
    Cancelled {
        /// The tool.
        tool: ToolName,
    },
    /// The host could not set up or run the call (not the tool's fault).
    #[error("host failed to run tool `{tool}`: {reason}")]
    Host {
        /// The tool.
        tool: ToolName,
        /// What failed.
        reason: String,
    },
}

impl CallError {
    /// The machine-readable class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::UnknownTool { .. } => ErrorClass::UnknownTool,
            Self::InvalidInput { .. } | Self::InvalidKey { .. } => ErrorClass::InvalidInput,
            Self::Tool { error, .. } => match error {
                ToolError::InvalidInput(_) => ErrorClass::InvalidInput,
                ToolError::Transient(_) => ErrorClass::Transient,
                ToolError::RateLimited { .. } => ErrorClass::RateLimited,
                ToolError::Permanent(_) => ErrorClass::Permanent,
            },
            Self::OutOfFuel { .. } => ErrorClass::OutOfFuel,
            Self::DeadlineExceeded { .. } => ErrorClass::DeadlineExceeded,
            Self::MemoryLimit { .. } => ErrorClass::MemoryLimit,
            Self::StackOverflow { .. } => ErrorClass::StackOverflow,
            Self::Panic { .. } => ErrorClass::Panic,
            Self::Trap { .. } => ErrorClass::Trap,
            Self::OutputTooLarge { .. } => ErrorClass::OutputTooLarge,
            Self::InvalidOutput { .. } => ErrorClass::InvalidOutput,
            Self::DataLimit { .. } => ErrorClass::DataLimit,
            Self::CircuitOpen { .. } => ErrorClass::CircuitOpen,
            Self::BulkheadFull { .. } => ErrorClass::BulkheadFull,
            Self::UnknownOutcome { .. } => ErrorClass::UnknownOutcome,
            Self::RetriesExhausted { .. } => ErrorClass::RetriesExhausted,
            Self::BudgetExhausted { .. } | Self::OutputOverBudget { .. } => {
                ErrorClass::BudgetExhausted
            }
            Self::IdempotencyMismatch { .. } => ErrorClass::IdempotencyMismatch,
            Self::InProgress { .. } => ErrorClass::InProgress,
            Self::KeyUnknown { .. } => ErrorClass::UnknownOutcome,
            Self::Replayed { class, .. } => *class,
            Self::Journal {
                source: JournalError::Unavailable { .. },
                ..
            } => ErrorClass::StoreUnavailable,
            Self::Journal { .. } => ErrorClass::Journal,
            Self::Host { .. } => ErrorClass::Host,
            Self::Cancelled { .. } => ErrorClass::Cancelled,
        }
    }

    /// How long the caller should wait before calling again, when known:
    /// an open breaker, a full bulkhead, or a rate-limited tool.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::CircuitOpen { retry_after, .. } => *retry_after,
            Self::BulkheadFull { retry_after, .. } => Some(*retry_after),
            Self::Tool {
                error: ToolError::RateLimited { retry_after },
                ..
            } => Some(*retry_after),
            Self::RetriesExhausted { last, .. } => last.retry_after(),
            Self::InProgress { retry_after, .. } => Some(*retry_after),
            Self::Replayed {
                tool_error: Some(ToolError::RateLimited { retry_after }),
                ..
            } => Some(*retry_after),
            _ => None,
        }
    }

    /// The loaded tool the error is about (`None` for an unknown tool).
    pub fn tool(&self) -> Option<&ToolName> {
        match self {
            Self::UnknownTool { .. } => None,
            Self::InvalidInput { tool, .. }
            | Self::InvalidKey { tool, .. }
            | Self::Tool { tool, .. }
            | Self::OutOfFuel { tool, .. }
            | Self::DeadlineExceeded { tool, .. }
            | Self::MemoryLimit { tool, .. }
            | Self::StackOverflow { tool }
            | Self::Panic { tool, .. }
            | Self::Trap { tool, .. }
            | Self::OutputTooLarge { tool, .. }
            | Self::InvalidOutput { tool, .. }
            | Self::DataLimit { tool, .. }
            | Self::CircuitOpen { tool, .. }
            | Self::BulkheadFull { tool, .. }
            | Self::UnknownOutcome { tool, .. }
            | Self::RetriesExhausted { tool, .. }
            | Self::BudgetExhausted { tool, .. }
            | Self::OutputOverBudget { tool, .. }
            | Self::IdempotencyMismatch { tool, .. }
            | Self::InProgress { tool, .. }
            | Self::KeyUnknown { tool, .. }
            | Self::Replayed { tool, .. }
            | Self::Journal { tool, .. }
            | Self::Cancelled { tool }
            | Self::Host { tool, .. } => Some(tool),
        }
    }

    /// The error of the last attempt: the cause inside `RetriesExhausted`,
    /// otherwise this error itself.
    pub fn last_attempt_error(&self) -> &CallError {
        match self {
            Self::RetriesExhausted { last, .. } => last,
            other => other,
        }
    }

    /// Whether the tool itself reported this error (as opposed to the host
    /// stopping it or refusing the call), now or in the replayed call.
    pub fn is_tool_reported(&self) -> bool {
        matches!(
            self,
            Self::Tool { .. }
                | Self::Replayed {
                    tool_error: Some(_),
                    ..
                }
        )
    }

    /// Whether this is the stored outcome of an earlier call with the same
    /// idempotency key, answered without running the tool.
    pub fn is_replayed(&self) -> bool {
        matches!(self, Self::Replayed { .. })
    }

    /// The class of the last attempt's error: for `RetriesExhausted`, why the
    /// attempts failed (`deadline-exceeded`, `transient`, …), so a client
    /// need not parse the message; otherwise [`class`](Self::class).
    pub fn cause_class(&self) -> ErrorClass {
        self.last_attempt_error().class()
    }
}

/// The journal could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The file could not be opened: unreadable, corrupt, or locked in an
    /// incompatible way. It is left as it is.
    #[error("cannot open journal {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What the filesystem or the database said.
        #[source]
        source: StorageCause,
    },
    /// The file was written by a newer cofferdam.
    #[error(
        "journal {path} has schema version {found}, newer than the {supported} this build reads; upgrade cofferdam"
    )]
    NewerVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u64,
        /// The version this build supports.
        supported: u64,
    },
    /// A read or write failed.
    #[error("journal storage failed")]
    Storage(#[source] StorageCause),
    /// A stored record could not be decoded.
    #[error("journal record `{key}` is unreadable")]
    BadRecord {
        /// The record's key.
        key: String,
        /// Why it cannot be decoded.
        #[source]
        source: serde_json::Error,
    },
    /// A record the operation needs is not there (the key was reaped, or
    /// another process removed it).
    #[error("journal record `{key}` is missing")]
    Missing {
        /// The record's key.
        key: String,
    },
    /// The writer thread is gone (the host is shutting down).
    #[error("journal writer has stopped")]
    Stopped,
    /// A shared store (PostgreSQL) did not answer: refused, lost or timed
    /// out. Nothing is known to have changed; retry once it is back.
    #[error("store {store} is unavailable")]
    Unavailable {
        /// The store, as its URL without a password.
        store: String,
        /// What the driver or the pool said.
        #[source]
        source: StorageCause,
    },
    /// A store URL that does not name a usable database.
    #[error("invalid store url `{url}`: {reason}")]
    BadUrl {
        /// The URL as given, without its password.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The shared store's schema was migrated by a newer cofferdam.
    #[error(
        "store {store} has schema version {found}, newer than the {supported} this build knows; upgrade cofferdam"
    )]
    NewerSchema {
        /// The store, as its URL without a password.
        store: String,
        /// Its version.
        found: u64,
        /// The latest version this build knows.
        supported: u64,
    },
}

impl JournalError {
    /// Whether the store did not answer ([`JournalError::Unavailable`]):
    /// nothing is known to have changed, and trying later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// What a storage backend reported, shared by every caller of a failed
/// batch (the redb store answers a whole group commit with one error).
pub type StorageCause = std::sync::Arc<dyn std::error::Error + Send + Sync>;

/// A backend's error as a [`JournalError::Storage`], its chain kept.
pub(crate) fn storage(e: impl std::error::Error + Send + Sync + 'static) -> JournalError {
    JournalError::Storage(std::sync::Arc::new(e))
}
