//! Write quotas: bytes a mount may still take in this call, the error a
//! write past them gets, and the output stream that counts what it writes.
//!
//! Quotas count bytes written and growth by `set-size`, not inodes, and
//! deleting a file gives nothing back within a call; which descriptor
//! belongs to which mount is the guard's business (`FsGuard`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode;
use wasmtime_wasi::p2::{
    DynOutputStream, FsError, FsResult, OutputStream, Pollable, StreamError, StreamResult,
};

use super::FsView;

/// A write that would pass a mount's quota: the guest sees the `quota` error
/// code, the host logs it once per call and mount, and keeps serving.
#[derive(Debug, thiserror::Error)]
#[error("writes to `{mount}` would pass its quota of {limit} bytes")]
pub(crate) struct QuotaExceeded {
    pub mount: String,
    pub limit: u64,
}

/// Bytes a mount may still take.
#[derive(Debug)]
pub(super) struct Quota {
    mount: String,
    limit: u64,
    used: AtomicU64,
    logged: AtomicBool,
}

impl Quota {
    pub(super) fn new(mount: &str, limit: u64) -> Arc<Self> {
        Arc::new(Self {
            mount: mount.to_owned(),
            limit,
            used: AtomicU64::new(0),
            logged: AtomicBool::new(false),
        })
    }

    fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used.load(Ordering::Relaxed))
    }

    pub(super) fn reserve(&self, bytes: u64) -> Result<(), QuotaExceeded> {
        let reserved = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            });
        match reserved {
            Ok(_) => Ok(()),
            Err(_) => Err(self.exceeded()),
        }
    }

    /// The error for a write past the limit, logged once per call.
    fn exceeded(&self) -> QuotaExceeded {
        let error = QuotaExceeded {
            mount: self.mount.clone(),
            limit: self.limit,
        };
        if !self.logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(mount = %self.mount, limit = self.limit, "{error}");
        }
        error
    }

    pub(super) fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    pub(super) fn reset(&self, used: u64) {
        self.used.store(used, Ordering::Relaxed);
        self.logged.store(false, Ordering::Relaxed);
    }
}

impl From<QuotaExceeded> for FsError {
    fn from(_: QuotaExceeded) -> Self {
        ErrorCode::Quota.into()
    }
}

impl FsView<'_> {
    pub(super) fn quota_stream(
        &mut self,
        stream: Resource<DynOutputStream>,
        quota: Arc<Quota>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let inner: DynOutputStream = self.fs.table.delete(stream)?;
        let wrapped: DynOutputStream = Box::new(QuotaStream { inner, quota });
        Ok(self.fs.table.push(wrapped)?)
    }
}

/// A file's output stream whose bytes count against its mount's quota: it
/// offers no more than the quota has left, and fails once it is spent.
struct QuotaStream {
    inner: DynOutputStream,
    quota: Arc<Quota>,
}

fn quota_failed(error: QuotaExceeded) -> StreamError {
    StreamError::LastOperationFailed(error.into())
}

#[wasmtime_wasi::async_trait]
impl OutputStream for QuotaStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let len = bytes.len() as u64;
        self.quota.reserve(len).map_err(quota_failed)?;
        self.inner
            .write(bytes)
            .inspect_err(|_| self.quota.release(len))
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        let ready = self.inner.check_write()?;
        match self.quota.remaining() {
            // Offering zero would make the guest wait for room that never
            // comes, and an error here would fail the flush of bytes that
            // fit: the next `write` reports the quota instead.
            0 => Ok(ready),
            left => Ok(ready.min(usize::try_from(left).unwrap_or(usize::MAX))),
        }
    }

    fn write_zeroes(&mut self, nelem: usize) -> StreamResult<()> {
        let len = nelem as u64;
        self.quota.reserve(len).map_err(quota_failed)?;
        self.inner
            .write_zeroes(nelem)
            .inspect_err(|_| self.quota.release(len))
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await;
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for QuotaStream {
    async fn ready(&mut self) {
        self.inner.ready().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_refuses_what_would_pass_the_limit_and_takes_back_failures() {
        let quota = Quota::new("/out", 10);
        assert!(quota.reserve(6).is_ok());
        assert!(quota.reserve(5).is_err());
        assert_eq!(quota.remaining(), 4);
        quota.release(6);
        assert!(quota.reserve(10).is_ok());
        assert_eq!(quota.remaining(), 0);
    }
}
