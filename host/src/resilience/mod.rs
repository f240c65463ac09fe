//! The error-class table, circuit breaker, bulkhead, retry and the injected clock: policy
//! that wraps a call, with no knowledge of wasm or storage.

pub(crate) mod breaker;
pub(crate) mod bulkhead;
pub(crate) mod classify;
pub(crate) mod clock;
pub(crate) mod retry;
