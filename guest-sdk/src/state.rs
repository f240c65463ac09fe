//! Durable key-value state between calls, over `wasi:keyvalue`.
//!
//! ```ignore
//! fn run(ctx: &Context, input: Input) -> Result<Output, ToolError> {
//!     let state = ctx.state()?;
//!     let seen: Vec<String> = state.get("seen")?.unwrap_or_default();
//!     state.set("seen", &input.items)?;
//!     let runs = state.increment("runs", 1)?;
//!     // …
//! }
//! ```
//!
//! The host grants one bucket per tool (`[tools.NAME.state]` in its
//! config) and decides whose keys a call sees (per owner, per schedule or
//! per tool). Writes take effect when the call succeeds: a failed attempt's
//! writes are dropped, and a call replayed from the journal writes nothing.
//! Values are JSON; counters are decimal text.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ToolError;
use crate::bindings::wasi::keyvalue::{atomics, store};

/// The tool's state bucket; from [`crate::Context::state`].
pub struct State {
    bucket: store::Bucket,
}

fn error(e: store::Error) -> ToolError {
    match e {
        store::Error::NoSuchStore => {
            ToolError::permanent("no such state bucket: the tool's policy grants another")
        }
        store::Error::AccessDenied => ToolError::permanent(
            "no state is granted to this tool (or to this call's scope): add [tools.NAME.state] to the host's config",
        ),
        // The caller's scope is full: its fault, not the tool's, so it is
        // not retried and does not count against the tool's breaker.
        store::Error::Other(message)
            if message.starts_with("state-quota-exceeded")
                || message.starts_with("state-too-many-writes") =>
        {
            ToolError::invalid_input(message)
        }
        // Store failures and the rest, as the host says.
        store::Error::Other(message) => ToolError::permanent(message),
    }
}

impl State {
    /// Opens the bucket the host grants this tool.
    pub(crate) fn open() -> Result<Self, ToolError> {
        Ok(Self {
            bucket: store::open("").map_err(error)?,
        })
    }

    /// The value of `key`, or `None` when it is not set.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ToolError> {
        match self.bucket.get(key).map_err(error)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                ToolError::permanent(format!("state key `{key}` holds other data: {e}"))
            }),
        }
    }

    /// Sets `key` to `value` (as JSON). Fails when the bucket's quota would
    /// be exceeded (`state-quota-exceeded`), writing nothing.
    pub fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), ToolError> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| ToolError::permanent(format!("cannot encode state key `{key}`: {e}")))?;
        self.bucket.set(key, &bytes).map_err(error)
    }

    /// Removes `key` (removing an absent key is fine).
    pub fn delete(&self, key: &str) -> Result<(), ToolError> {
        self.bucket.delete(key).map_err(error)
    }

    /// Adds `delta` to the counter `key` (absent counts as 0) and returns
    /// its new value. Concurrent calls' increments all count.
    pub fn increment(&self, key: &str, delta: u64) -> Result<u64, ToolError> {
        atomics::increment(&self.bucket, key, delta).map_err(error)
    }

    /// Every key, in order.
    pub fn keys(&self) -> Result<Vec<String>, ToolError> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.bucket.list_keys(cursor).map_err(error)?;
            keys.extend(page.keys);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }
}
