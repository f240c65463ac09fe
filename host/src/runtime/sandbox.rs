//! The per-call WASI context: mounts, environment, captured stdio, scratch
//! directory, memory cap. Everything not granted here is denied.
//!
//! It does not decide *what* to grant (that is [`crate::ToolPolicy`]) and it
//! does not run the guest (that is [`crate::runtime::attempt`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime::ResourceLimiter;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::filesystem::WasiFilesystemCtxView;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::MountMode;
use crate::runtime::fs_guard::{self, FsGuard, FsRules, FsView, SCRATCH_GUEST_PATH};
use crate::runtime::host_api::{self, GuestServices};
use crate::runtime::lanes::CallLane;
use crate::runtime::net::{self, NetPolicy};

/// A mount after load-time resolution: canonical host path, checked guest
/// path, and the directory itself, pinned.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedMount {
    pub host: PathBuf,
    pub guest: String,
    pub mode: MountMode,
    pub pin: Arc<PinnedDir>,
}

/// A mount's directory opened once, at load, without following any symlink.
///
/// Every call's preopen is made from this handle, never from the path again:
/// a tool that can rename the mount's directory away and put a symlink in its
/// place (a writable parent mount, another process) cannot redirect later
/// calls. On Linux the preopen reopens the handle through
/// `/proc/self/fd/N`, which names the pinned inode whatever the path says
/// now; elsewhere the path is reopened and its identity checked against the
/// pin.
#[derive(Debug)]
pub(crate) struct PinnedDir {
    /// Held open for the tool's lifetime: `via_procfs` names this handle.
    #[expect(dead_code, reason = "kept open, read through /proc/self/fd")]
    fd: rustix::fd::OwnedFd,
    /// `(st_dev, st_ino)` at load.
    identity: (u64, u64),
    /// `/proc/self/fd/N` for the handle, checked once at load to name the
    /// pinned directory; `None` without procfs.
    via_procfs: Option<PathBuf>,
}

impl PinnedDir {
    /// Opens `canonical` (a path with no symlinks in it) refusing symlinks
    /// in every component, so what is pinned is what was checked.
    pub(crate) fn open(canonical: &Path) -> std::io::Result<Self> {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        #[cfg(target_os = "linux")]
        let fd = match rustix::fs::openat2(
            rustix::fs::CWD,
            canonical,
            flags,
            Mode::empty(),
            rustix::fs::ResolveFlags::NO_SYMLINKS,
        ) {
            // Kernels before 5.6: the canonical path was just resolved; the
            // last component at least is not followed.
            Err(rustix::io::Errno::NOSYS) => {
                rustix::fs::openat(rustix::fs::CWD, canonical, flags, Mode::empty())
            }
            other => other,
        }?;
        #[cfg(not(target_os = "linux"))]
        let fd = rustix::fs::openat(rustix::fs::CWD, canonical, flags, Mode::empty())?;
        let identity = identity_of(&fd)?;
        let via_procfs = procfs_path(&fd, identity);
        Ok(Self {
            fd,
            identity,
            via_procfs,
        })
    }

    /// Whether `path`, opened now without following symlinks, is still the
    /// pinned directory.
    pub(crate) fn still_at(&self, path: &Path) -> bool {
        Self::open(path).is_ok_and(|now| now.identity == self.identity)
    }

    /// The path a preopen is made from: no system call on the hot path
    /// when procfs names the handle.
    fn preopen_path<'a>(&'a self, host: &'a Path) -> std::io::Result<&'a Path> {
        if let Some(path) = &self.via_procfs {
            return Ok(path);
        }
        // No procfs: reopen by path and refuse anything but the pinned inode.
        if self.still_at(host) {
            Ok(host)
        } else {
            Err(std::io::Error::other(format!(
                "mount `{}` is no longer the directory checked at load",
                host.display()
            )))
        }
    }
}

/// `/proc/self/fd/N` for `fd`, if it opens the directory `identity` names.
fn procfs_path(fd: &rustix::fd::OwnedFd, identity: (u64, u64)) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let meta = std::fs::metadata(&path).ok()?;
    (cfg!(target_os = "linux") && (meta.dev(), meta.ino()) == identity).then_some(path)
}

fn identity_of(fd: &rustix::fd::OwnedFd) -> std::io::Result<(u64, u64)> {
    let stat = rustix::fs::fstat(fd)?;
    #[expect(
        clippy::useless_conversion,
        reason = "st_dev and st_ino are not u64 on every target"
    )]
    Ok((u64::from(stat.st_dev), u64::from(stat.st_ino)))
}

/// What a tool is granted; built once at load from its policy.
#[derive(Debug, Clone)]
pub(crate) struct Grants {
    pub mounts: Vec<ResolvedMount>,
    pub env: BTreeMap<String, String>,
    pub scratch: bool,
    pub net: Arc<NetPolicy>,
    /// Symlink policy and write quotas inside the mounts.
    pub fs: FsRules,
    /// The state bucket, its scope and quota (`[state]`).
    pub state: Option<crate::model::state::StateSpec>,
}

impl Default for Grants {
    fn default() -> Self {
        Self {
            mounts: Vec::new(),
            env: BTreeMap::new(),
            scratch: false,
            net: Arc::new(NetPolicy::deny_all()),
            fs: FsRules::default(),
            state: None,
        }
    }
}

/// The store data of one call.
pub(crate) struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    http_hooks: net::Hooks,
    pub memory: MemoryCap,
    pub services: GuestServices,
    /// The call's place in the CPU lanes.
    pub lane: CallLane,
    fs: FsGuard,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

impl CallState {
    /// Readies a warm instance's state for its next call: fresh guest
    /// services, the new deadline for outbound HTTP, and fresh HTTP counters
    /// (returned for the caller's [`Sandbox`]).
    pub(crate) fn renew(
        &mut self,
        services: GuestServices,
        deadline: std::time::Instant,
    ) -> Arc<net::HttpCounters> {
        let counters = Arc::new(net::HttpCounters::default());
        self.services = services;
        self.http_hooks.deadline = deadline;
        self.http_hooks.counters = Arc::clone(&counters);
        self.fs.renew();
        counters
    }

    /// What the guarded `wasi:filesystem` bindings see ([`crate::runtime::fs_guard`]).
    fn fs_view(&mut self) -> FsView<'_> {
        FsView {
            fs: WasiFilesystemCtxView {
                ctx: self.wasi.filesystem(),
                table: &mut self.table,
            },
            guard: &mut self.fs,
        }
    }
}

/// A call's sandbox, kept by the caller to read stdio and drop the scratch
/// directory after the call.
pub(crate) struct Sandbox {
    pub stdout: CapturedOutput,
    pub stderr: CapturedOutput,
    /// Removed from disk when dropped.
    pub scratch: Option<tempfile::TempDir>,
    /// What the call's outbound HTTP did.
    pub http: Arc<net::HttpCounters>,
}

/// Builds the store data and the sandbox handles for one call.
pub(crate) fn prepare(
    grants: &Grants,
    scratch_root: &Path,
    stdout_limit: usize,
    stderr_limit: usize,
    memory_limit: u64,
    services: GuestServices,
    deadline: std::time::Instant,
) -> std::io::Result<(CallState, Sandbox)> {
    let stdout = CapturedOutput::new(stdout_limit);
    let stderr = CapturedOutput::new(stderr_limit);
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false);
    for (key, value) in &grants.env {
        wasi.env(key, value);
    }
    for mount in &grants.mounts {
        let perms = match mount.mode {
            MountMode::ReadOnly => FsPerms::ReadOnly,
            MountMode::ReadWrite => FsPerms::ReadWrite,
        };
        let path = mount.pin.preopen_path(&mount.host)?;
        wasi.preopened_dir(path, &mount.guest, perms)
            .map_err(std::io::Error::other)?;
    }
    let scratch = if grants.scratch {
        private_dir_all(scratch_root)?;
        let dir = tempfile::Builder::new()
            .prefix(SCRATCH_PREFIX)
            .permissions(private_mode())
            .tempdir_in(scratch_root)?;
        wasi.preopened_dir(dir.path(), SCRATCH_GUEST_PATH, FsPerms::ReadWrite)
            .map_err(std::io::Error::other)?;
        Some(dir)
    } else {
        None
    };
    let http = Arc::new(net::HttpCounters::default());
    let state = CallState {
        wasi: wasi.build(),
        table: ResourceTable::new(),
        http: WasiHttpCtx::new(),
        http_hooks: net::Hooks {
            policy: Arc::clone(&grants.net),
            counters: Arc::clone(&http),
            deadline,
        },
        memory: MemoryCap::new(memory_limit),
        services,
        lane: CallLane::default(),
        fs: FsGuard::new(
            &grants.fs,
            grants.mounts.iter().map(|m| m.guest.as_str()),
            scratch.as_ref().map(tempfile::TempDir::path),
        ),
    };
    Ok((
        state,
        Sandbox {
            stdout,
            stderr,
            scratch,
            http,
        },
    ))
}

/// Name prefix of the per-call scratch directories.
const SCRATCH_PREFIX: &str = "call-";

/// Owner-only permissions for scratch directories.
fn private_mode() -> std::fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(0o700)
}

/// Creates `dir` (and missing parents) owner-only; an existing `dir` is
/// made owner-only.
fn private_dir_all(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    std::fs::set_permissions(dir, private_mode())?;
    Ok(())
}

/// The directory the per-call scratch directories are made in, held for the
/// host's lifetime.
///
/// Under a data dir it is `<data dir>/scratch`, owner-only. Every host using
/// it holds a shared lock on `<data dir>/scratch.lock`; a host that starts
/// and gets the lock exclusively knows no other host is alive, and removes
/// the `call-*` directories a crashed process left behind. Without a data dir it is a
/// fresh owner-only temporary directory (unpredictable name), removed when
/// the host is dropped.
#[derive(Debug)]
pub(crate) struct ScratchRoot {
    path: PathBuf,
    _hold: ScratchHold,
}

#[derive(Debug)]
enum ScratchHold {
    Shared(#[expect(dead_code, reason = "held for its lock")] std::fs::File),
    Private(#[expect(dead_code, reason = "removed on drop")] tempfile::TempDir),
}

impl ScratchRoot {
    /// `<data_dir>/scratch`, swept if no other host uses it; or a private
    /// temporary directory.
    pub(crate) fn open(data_dir: Option<&Path>) -> std::io::Result<Self> {
        let Some(data_dir) = data_dir else {
            let dir = tempfile::Builder::new()
                .prefix("cofferdam-scratch-")
                .permissions(private_mode())
                .tempdir()?;
            return Ok(Self {
                path: dir.path().to_owned(),
                _hold: ScratchHold::Private(dir),
            });
        };
        let path = data_dir.join("scratch");
        private_dir_all(&path)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(data_dir.join("scratch.lock"))?;
        if lock.try_lock().is_ok() {
            sweep(&path);
            lock.unlock()?;
        }
        lock.lock_shared()?;
        Ok(Self {
            path,
            _hold: ScratchHold::Shared(lock),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes the per-call directories left in `root` (no host is using it).
fn sweep(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .file_name()
            .to_string_lossy()
            .starts_with(SCRATCH_PREFIX)
            && entry.file_type().is_ok_and(|t| t.is_dir());
        if stale && let Err(e) = std::fs::remove_dir_all(entry.path()) {
            tracing::warn!(dir = %entry.path().display(), "cannot remove stale scratch dir: {e}");
        }
    }
}

/// Refuses memory growth past the tool's cap with a [`MemoryLimitHit`] trap,
/// so the failure is classified exactly instead of surfacing as a guest abort.
pub(crate) struct MemoryCap {
    limit: usize,
}

/// The trap raised when a guest grows memory past its cap.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes reached (asked for {desired})")]
pub(crate) struct MemoryLimitHit {
    pub limit: usize,
    pub desired: usize,
}

/// Table elements a tool may have; generous for real programs, bounded for hostile ones.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl MemoryCap {
    fn new(limit: u64) -> Self {
        Self {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            return Err(MemoryLimitHit {
                limit: self.limit,
                desired,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// A bounded in-memory stdout/stderr. Unlike wasmtime-wasi's
/// `MemoryOutputPipe`, a full buffer does not trap the guest: excess bytes are
/// dropped and counted, so a chatty tool still finishes its work.
#[derive(Clone)]
pub(crate) struct CapturedOutput(Arc<Mutex<Captured>>);

struct Captured {
    bytes: Vec<u8>,
    limit: usize,
    dropped: u64,
}

impl CapturedOutput {
    fn new(limit: usize) -> Self {
        Self(Arc::new(Mutex::new(Captured {
            bytes: Vec::new(),
            limit,
            dropped: 0,
        })))
    }

    fn append(&self, data: &[u8]) {
        let mut c = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let room = c.limit.saturating_sub(c.bytes.len());
        let kept = room.min(data.len());
        c.bytes.extend_from_slice(&data[..kept]);
        c.dropped += (data.len() - kept) as u64;
    }

    /// The captured bytes and how many were dropped past the limit; the
    /// capture starts empty again (a warm instance's next call).
    pub(crate) fn take(&self) -> (Vec<u8>, u64) {
        let mut c = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        (std::mem::take(&mut c.bytes), std::mem::take(&mut c.dropped))
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always writable: excess is dropped, not refused.
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Links everything a call's guest may import into `linker`: WASI p2, the
/// guarded filesystem over it, outbound HTTP, `wasi:keyvalue` (tool state)
/// and `cofferdam:tool/host`.
pub(crate) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    fs_guard::add_to_linker(linker, CallState::fs_view)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    {
        use crate::runtime::bindings::wasi::keyvalue::{atomics, store};
        use crate::runtime::state::{KeyValue, KeyValueData};
        fn view(state: &mut CallState) -> KeyValue<'_> {
            KeyValue {
                table: &mut state.table,
                state: state.services.state.as_mut(),
            }
        }
        store::add_to_linker::<CallState, KeyValueData>(linker, view)?;
        atomics::add_to_linker::<CallState, KeyValueData>(linker, view)?;
    }
    host_api::add_to_linker(linker, |state: &mut CallState| &mut state.services)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_output_keeps_the_first_bytes_and_counts_the_rest() {
        let out = CapturedOutput::new(5);
        out.append(b"abc");
        out.append(b"defgh");
        assert_eq!(out.take(), (b"abcde".to_vec(), 3));
    }
}
