//! The host's own layer over `wasi:filesystem`: the symlink policy, the
//! refusal of special files, and write quotas, for every mount and `/scratch`.
//!
//! wasmtime-wasi implements `wasi:filesystem/types` and `preopens`; this module
//! links its own implementation of both over the top (shadowing them in the
//! linker), and every method delegates to wasmtime-wasi's. Only these are
//! intercepted:
//!
//! - `symlink-at`: refused (`not-permitted`) when the policy is
//!   [`SymlinkPolicy::Deny`], or when the link's target is absolute or climbs
//!   above the mount root from the directory the link is created in;
//! - `open-at`: the target is first `stat`ed the way the open will resolve it,
//!   and anything but a regular file or a directory (FIFOs, sockets, devices)
//!   is refused with `not-permitted`, so no open can block a host thread;
//! - `write`, `set-size`, `write-via-stream`, `append-via-stream`: bytes
//!   written (and growth by `set-size`) count against the mount's quota;
//!   past it `write` and `set-size` fail with the `quota` error code, and a
//!   stream write fails with `last-operation-failed`, for which
//!   `filesystem-error-code` answers `quota` (wasi-libc reports it as `EIO`
//!   without asking).
//!
//! It does **not** resolve paths: every path, including the parent of a new
//! link, is resolved by wasmtime-wasi (cap-std, `openat2(RESOLVE_BENEATH)`),
//! so its traversal protection is untouched. What it does not cover:
//!
//! - The link check is lexical against the real depth of the link's
//!   directory; a directory renamed to a shallower place carries its links
//!   along, and a host-side process may still follow them. The sandbox never
//!   follows a link out of a mount either way.
//! - The special-file check and the open are two steps: a FIFO renamed over a
//!   checked name in between (by another process, or another call of a tool
//!   with a writable mount holding a planted FIFO) is still opened.
//! - Quotas count bytes, not inodes: many empty files are not limited.
//!
//! Descriptors are tracked by resource rep, from the preopens down through
//! `open-at`, so each knows its mount.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView};
use wasmtime_wasi::p2::bindings::filesystem::preopens;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, DescriptorFlags, DescriptorType, ErrorCode, HostDescriptor, HostDirectoryEntryStream,
    OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::{
    DynOutputStream, FsError, FsResult, OutputStream, Pollable, StreamError, StreamResult,
};

use crate::policy::tool::{Mount, MountMode, PolicyError};
use crate::runtime::sandbox::{CallState, SCRATCH_GUEST_PATH};

/// Size limit of `/scratch` when `filesystem.scratch_max_bytes` is unset: 64 MiB.
pub const DEFAULT_SCRATCH_MAX_BYTES: u64 = 64 << 20;

/// `[filesystem]`: what a tool may do inside its mounts.
///
/// ```toml
/// [filesystem]
/// symlinks = "within-mount"        # or "deny" (default "within-mount")
/// scratch_max_bytes = 67108864     # size limit of /scratch (default 64 MiB)
///
/// [filesystem.max_write_bytes]     # per read-write mount, by guest path
/// "/out" = 1048576                 # bytes one call may write (default: no limit)
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemSpec {
    /// Which symbolic links the tool may create (default `within-mount`).
    pub symlinks: Option<SymlinkPolicy>,
    /// Bytes `/scratch` may hold (default [`DEFAULT_SCRATCH_MAX_BYTES`]): bytes
    /// written and growth by truncation, counted since the directory was
    /// created; deleting a file gives nothing back within a call.
    pub scratch_max_bytes: Option<u64>,
    /// Bytes one call may write into a read-write mount, keyed by the mount's
    /// guest path (default: no limit).
    #[serde(default)]
    pub max_write_bytes: BTreeMap<String, u64>,
}

/// Which symbolic links a tool may create with `symlink-at`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SymlinkPolicy {
    /// Relative links whose target stays inside the mount, judged lexically
    /// from the directory the link is created in; absolute targets and
    /// targets climbing above the mount root are refused.
    #[default]
    WithinMount,
    /// No links at all.
    Deny,
}

impl FilesystemSpec {
    /// Checks the keys against the tool's mounts: quotas name read-write
    /// mounts, and no limit is zero.
    pub(crate) fn validate(&self, mounts: &[Mount]) -> Result<(), PolicyError> {
        if self.scratch_max_bytes == Some(0) {
            return Err(PolicyError::ZeroSetting {
                key: "filesystem.scratch_max_bytes",
            });
        }
        for (guest, bytes) in &self.max_write_bytes {
            let rw = mounts.iter().any(|m| {
                m.guest.trim_end_matches('/') == guest.trim_end_matches('/')
                    && m.mode == MountMode::ReadWrite
            });
            if !rw {
                return Err(PolicyError::QuotaWithoutMount {
                    guest: guest.clone(),
                });
            }
            if *bytes == 0 {
                return Err(PolicyError::ZeroSetting {
                    key: "filesystem.max_write_bytes",
                });
            }
        }
        Ok(())
    }
}

/// The `[filesystem]` settings in force for a loaded tool.
#[derive(Debug, Clone)]
pub(crate) struct FsRules {
    symlinks: SymlinkPolicy,
    scratch_max_bytes: u64,
    max_write_bytes: BTreeMap<String, u64>,
}

impl Default for FsRules {
    fn default() -> Self {
        Self::from_spec(&FilesystemSpec::default())
    }
}

impl FsRules {
    pub(crate) fn from_spec(spec: &FilesystemSpec) -> Self {
        Self {
            symlinks: spec.symlinks.unwrap_or_default(),
            scratch_max_bytes: spec.scratch_max_bytes.unwrap_or(DEFAULT_SCRATCH_MAX_BYTES),
            max_write_bytes: spec
                .max_write_bytes
                .iter()
                .map(|(guest, bytes)| (guest.trim_end_matches('/').to_owned(), *bytes))
                .collect(),
        }
    }
}

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
struct Quota {
    mount: String,
    limit: u64,
    used: AtomicU64,
    logged: AtomicBool,
}

impl Quota {
    fn new(mount: &str, limit: u64) -> Arc<Self> {
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

    fn reserve(&self, bytes: u64) -> Result<(), QuotaExceeded> {
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

    fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    fn reset(&self, used: u64) {
        self.used.store(used, Ordering::Relaxed);
        self.logged.store(false, Ordering::Relaxed);
    }
}

/// One mount as the guard sees it.
struct GuardedMount {
    guest: String,
    /// The preopen's handle, captured when the guest asks for the preopens.
    root: Option<Arc<std::fs::File>>,
    quota: Option<Arc<Quota>>,
}

/// A call's filesystem guard: per-mount quotas and which mount each open
/// descriptor belongs to. Lives in the store data ([`CallState`]).
pub(crate) struct FsGuard {
    symlinks: SymlinkPolicy,
    mounts: Vec<GuardedMount>,
    /// Descriptor rep → index into `mounts`.
    descriptors: HashMap<u32, usize>,
    /// Host path of `/scratch` and its index in `mounts`, re-measured when a
    /// warm instance starts its next call.
    scratch: Option<(PathBuf, usize)>,
}

impl FsGuard {
    /// A guard for mounts at `guests` (in preopen order) and, if given, the
    /// scratch directory at `scratch`.
    pub(crate) fn new<'a>(
        rules: &FsRules,
        guests: impl IntoIterator<Item = &'a str>,
        scratch: Option<&Path>,
    ) -> Self {
        let mut mounts: Vec<GuardedMount> = guests
            .into_iter()
            .map(|guest| {
                let key = guest.trim_end_matches('/');
                GuardedMount {
                    guest: key.to_owned(),
                    root: None,
                    quota: rules
                        .max_write_bytes
                        .get(key)
                        .map(|limit| Quota::new(key, *limit)),
                }
            })
            .collect();
        let scratch = scratch.map(|path| {
            mounts.push(GuardedMount {
                guest: SCRATCH_GUEST_PATH.to_owned(),
                root: None,
                quota: Some(Quota::new(SCRATCH_GUEST_PATH, rules.scratch_max_bytes)),
            });
            (path.to_owned(), mounts.len() - 1)
        });
        Self {
            symlinks: rules.symlinks,
            mounts,
            descriptors: HashMap::new(),
            scratch,
        }
    }

    /// Readies the guard for a warm instance's next call: per-call quotas
    /// start again, and `/scratch` counts what it holds now.
    pub(crate) fn renew(&mut self) {
        for (i, mount) in self.mounts.iter().enumerate() {
            let Some(quota) = &mount.quota else { continue };
            match &self.scratch {
                Some((path, index)) if *index == i => quota.reset(bytes_under(path)),
                _ => quota.reset(0),
            }
        }
    }

    fn mount_of(&self, fd: u32) -> Option<usize> {
        self.descriptors.get(&fd).copied()
    }

    fn quota_of(&self, fd: u32) -> Option<Arc<Quota>> {
        let mount = self.mount_of(fd)?;
        self.mounts[mount].quota.clone()
    }
}

/// Bytes in the regular files below `dir` (symlinks not followed).
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// The store data's view for the shadowing `wasi:filesystem` bindings.
pub(crate) struct FsView<'a> {
    pub fs: WasiFilesystemCtxView<'a>,
    pub guard: &'a mut FsGuard,
}

struct GuardedFs;

impl HasData for GuardedFs {
    type Data<'a> = FsView<'a>;
}

/// Links `wasi:filesystem/types` and `wasi:filesystem/preopens` over the ones
/// [`wasmtime_wasi::p2::add_to_linker_async`] added (call it first).
pub(crate) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let linked = preopens::add_to_linker::<CallState, GuardedFs>(linker, CallState::fs_view)
        .and_then(|()| types::add_to_linker::<CallState, GuardedFs>(linker, CallState::fs_view));
    linker.allow_shadowing(false);
    linked
}

/// A second handle on the same resource, for a delegated call.
fn again<T: 'static>(resource: &Resource<T>) -> Resource<T> {
    Resource::new_borrow(resource.rep())
}

fn refused() -> FsError {
    ErrorCode::NotPermitted.into()
}

impl From<QuotaExceeded> for FsError {
    fn from(_: QuotaExceeded) -> Self {
        ErrorCode::Quota.into()
    }
}

/// The real path of an open directory (Linux: through `/proc/self/fd`).
fn real_path(dir: &std::fs::File) -> Option<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        None
    }
}

/// Whether a link with `target`, created in a directory `depth` levels below
/// the mount root, points inside the mount: relative, and its `..` parts all
/// lead (a `..` after a name could climb out of a linked directory) and are
/// no more than `depth`.
fn stays_within(target: &str, depth: usize) -> bool {
    if target.starts_with('/') {
        return false;
    }
    let mut climbs_left = depth;
    let mut seen_name = false;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." if seen_name || climbs_left == 0 => return false,
            ".." => climbs_left -= 1,
            _ => seen_name = true,
        }
    }
    true
}

impl FsView<'_> {
    fn dir_handle(&self, fd: &Resource<Descriptor>) -> Option<Arc<std::fs::File>> {
        match self.fs.table.get(fd).ok()? {
            Descriptor::Dir(d) => Some(Arc::clone(&d.dir)),
            Descriptor::File(_) => None,
        }
    }

    /// Levels between the mount root and the directory `dir`, as the host
    /// sees them now; 0 when that cannot be told (only links that stay at or
    /// below their own directory pass then).
    fn depth(&self, mount: usize, dir: &Resource<Descriptor>) -> usize {
        let root = self.guard.mounts[mount].root.as_deref().and_then(real_path);
        let here = self.dir_handle(dir).as_deref().and_then(real_path);
        match (root, here) {
            (Some(root), Some(here)) => here
                .strip_prefix(&root)
                .map_or(0, |rel| rel.components().count()),
            _ => 0,
        }
    }

    async fn checked_symlink(
        &mut self,
        mount: usize,
        dir: Resource<Descriptor>,
        target: String,
        name: String,
    ) -> FsResult<()> {
        if !stays_within(&target, self.depth(mount, &dir)) {
            tracing::debug!(mount = %self.guard.mounts[mount].guest, %target, "symlink leaving the mount refused");
            return Err(refused());
        }
        HostDescriptor::symlink_at(&mut self.fs, dir, target, name).await
    }

    fn quota_stream(
        &mut self,
        stream: Resource<DynOutputStream>,
        quota: Arc<Quota>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let inner: DynOutputStream = self.fs.table.delete(stream)?;
        let wrapped: DynOutputStream = Box::new(QuotaStream { inner, quota });
        Ok(self.fs.table.push(wrapped)?)
    }
}

impl preopens::Host for FsView<'_> {
    fn get_directories(&mut self) -> wasmtime::Result<Vec<(Resource<Descriptor>, String)>> {
        let dirs = preopens::Host::get_directories(&mut self.fs)?;
        for (fd, name) in &dirs {
            let key = name.trim_end_matches('/');
            let Some(index) = self.guard.mounts.iter().position(|m| m.guest == key) else {
                continue;
            };
            self.guard.descriptors.insert(fd.rep(), index);
            if self.guard.mounts[index].root.is_none() {
                self.guard.mounts[index].root = self.dir_handle(fd);
            }
        }
        Ok(dirs)
    }
}

impl types::Host for FsView<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        types::Host::convert_error_code(&mut self.fs, err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        if self
            .fs
            .table
            .get(&err)
            .is_ok_and(|e| e.downcast_ref::<QuotaExceeded>().is_some())
        {
            return Ok(Some(ErrorCode::Quota));
        }
        types::Host::filesystem_error_code(&mut self.fs, err)
    }
}

impl HostDescriptor for FsView<'_> {
    async fn advise(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
        len: types::Filesize,
        advice: types::Advice,
    ) -> FsResult<()> {
        HostDescriptor::advise(&mut self.fs, fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        HostDescriptor::sync_data(&mut self.fs, fd).await
    }

    async fn get_flags(&mut self, fd: Resource<Descriptor>) -> FsResult<DescriptorFlags> {
        HostDescriptor::get_flags(&mut self.fs, fd).await
    }

    async fn get_type(&mut self, fd: Resource<Descriptor>) -> FsResult<DescriptorType> {
        HostDescriptor::get_type(&mut self.fs, fd).await
    }

    /// Growth counts against the quota; shrinking gives nothing back.
    async fn set_size(&mut self, fd: Resource<Descriptor>, size: types::Filesize) -> FsResult<()> {
        let Some(quota) = self.guard.quota_of(fd.rep()) else {
            return HostDescriptor::set_size(&mut self.fs, fd, size).await;
        };
        let current = HostDescriptor::stat(&mut self.fs, again(&fd)).await?.size;
        let growth = size.saturating_sub(current);
        quota.reserve(growth)?;
        let result = HostDescriptor::set_size(&mut self.fs, fd, size).await;
        if result.is_err() {
            quota.release(growth);
        }
        result
    }

    async fn set_times(
        &mut self,
        fd: Resource<Descriptor>,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        HostDescriptor::set_times(&mut self.fs, fd, atim, mtim).await
    }

    async fn read(
        &mut self,
        fd: Resource<Descriptor>,
        len: types::Filesize,
        offset: types::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        HostDescriptor::read(&mut self.fs, fd, len, offset).await
    }

    async fn write(
        &mut self,
        fd: Resource<Descriptor>,
        buf: Vec<u8>,
        offset: types::Filesize,
    ) -> FsResult<types::Filesize> {
        let Some(quota) = self.guard.quota_of(fd.rep()) else {
            return HostDescriptor::write(&mut self.fs, fd, buf, offset).await;
        };
        let len = buf.len() as u64;
        quota.reserve(len)?;
        let result = HostDescriptor::write(&mut self.fs, fd, buf, offset).await;
        quota.release(match &result {
            Ok(written) => len.saturating_sub(*written),
            Err(_) => len,
        });
        result
    }

    async fn read_directory(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<types::DirectoryEntryStream>> {
        HostDescriptor::read_directory(&mut self.fs, fd).await
    }

    async fn sync(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        HostDescriptor::sync(&mut self.fs, fd).await
    }

    async fn create_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        HostDescriptor::create_directory_at(&mut self.fs, fd, path).await
    }

    async fn stat(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorStat> {
        HostDescriptor::stat(&mut self.fs, fd).await
    }

    async fn stat_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        HostDescriptor::stat_at(&mut self.fs, fd, path_flags, path).await
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        HostDescriptor::set_times_at(&mut self.fs, fd, path_flags, path, atim, mtim).await
    }

    async fn link_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path_flags: PathFlags,
        old_path: String,
        new_descriptor: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        HostDescriptor::link_at(
            &mut self.fs,
            fd,
            old_path_flags,
            old_path,
            new_descriptor,
            new_path,
        )
        .await
    }

    /// Refuses special files before wasmtime-wasi opens anything, so an open
    /// cannot block on a FIFO; the new descriptor joins its parent's mount.
    async fn open_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: PathFlags,
        path: String,
        oflags: OpenFlags,
        flags: DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        // Resolved exactly as the open will resolve it; a failed stat (no
        // such file yet, a path leaving the mount) is left to the open.
        if let Ok(stat) =
            HostDescriptor::stat_at(&mut self.fs, again(&fd), path_flags, path.clone()).await
            && !matches!(
                stat.type_,
                DescriptorType::RegularFile | DescriptorType::Directory
                    // Only without follow, where the open refuses it itself.
                    | DescriptorType::SymbolicLink
            )
        {
            tracing::debug!(%path, kind = ?stat.type_, "open of a special file refused");
            return Err(refused());
        }
        let mount = self.guard.mount_of(fd.rep());
        let opened =
            HostDescriptor::open_at(&mut self.fs, fd, path_flags, path, oflags, flags).await?;
        if let Some(mount) = mount {
            self.guard.descriptors.insert(opened.rep(), mount);
        }
        Ok(opened)
    }

    fn drop(&mut self, fd: Resource<Descriptor>) -> wasmtime::Result<()> {
        self.guard.descriptors.remove(&fd.rep());
        HostDescriptor::drop(&mut self.fs, fd)
    }

    async fn readlink_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<String> {
        HostDescriptor::readlink_at(&mut self.fs, fd, path).await
    }

    async fn remove_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        HostDescriptor::remove_directory_at(&mut self.fs, fd, path).await
    }

    async fn rename_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path: String,
        new_fd: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        HostDescriptor::rename_at(&mut self.fs, fd, old_path, new_fd, new_path).await
    }

    /// The link's directory is opened through wasmtime-wasi (never resolved
    /// here), measured, and the link created in that very directory.
    async fn symlink_at(
        &mut self,
        fd: Resource<Descriptor>,
        src_path: String,
        dest_path: String,
    ) -> FsResult<()> {
        let Some(mount) = self.guard.mount_of(fd.rep()) else {
            return Err(refused());
        };
        if self.guard.symlinks == SymlinkPolicy::Deny {
            return Err(refused());
        }
        let Some((parent, name)) = dest_path.rsplit_once('/') else {
            return self.checked_symlink(mount, fd, src_path, dest_path).await;
        };
        if matches!(name, "" | "." | "..") {
            return Err(ErrorCode::Invalid.into());
        }
        let dir = HostDescriptor::open_at(
            &mut self.fs,
            fd,
            PathFlags::SYMLINK_FOLLOW,
            parent.to_owned(),
            OpenFlags::DIRECTORY,
            DescriptorFlags::READ,
        )
        .await?;
        let result = self
            .checked_symlink(mount, again(&dir), src_path, name.to_owned())
            .await;
        HostDescriptor::drop(&mut self.fs, dir).map_err(FsError::trap)?;
        result
    }

    async fn unlink_file_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        HostDescriptor::unlink_file_at(&mut self.fs, fd, path).await
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<types::InputStream>> {
        HostDescriptor::read_via_stream(&mut self.fs, fd, offset)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        let quota = self.guard.quota_of(fd.rep());
        let stream = HostDescriptor::write_via_stream(&mut self.fs, fd, offset)?;
        match quota {
            Some(quota) => self.quota_stream(stream, quota),
            None => Ok(stream),
        }
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let quota = self.guard.quota_of(fd.rep());
        let stream = HostDescriptor::append_via_stream(&mut self.fs, fd)?;
        match quota {
            Some(quota) => self.quota_stream(stream, quota),
            None => Ok(stream),
        }
    }

    async fn is_same_object(
        &mut self,
        a: Resource<Descriptor>,
        b: Resource<Descriptor>,
    ) -> wasmtime::Result<bool> {
        HostDescriptor::is_same_object(&mut self.fs, a, b).await
    }

    async fn metadata_hash(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<types::MetadataHashValue> {
        HostDescriptor::metadata_hash(&mut self.fs, fd).await
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        HostDescriptor::metadata_hash_at(&mut self.fs, fd, path_flags, path).await
    }
}

impl HostDirectoryEntryStream for FsView<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<types::DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        HostDirectoryEntryStream::read_directory_entry(&mut self.fs, stream).await
    }

    fn drop(&mut self, stream: Resource<types::DirectoryEntryStream>) -> wasmtime::Result<()> {
        HostDirectoryEntryStream::drop(&mut self.fs, stream)
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
    fn link_targets_are_judged_from_the_link_depth() {
        assert!(stays_within("file", 0));
        assert!(stays_within("./a/b", 0));
        assert!(stays_within("../x", 1));
        assert!(stays_within("../../x", 2));
        assert!(!stays_within("../x", 0));
        assert!(!stays_within("../../x", 1));
        assert!(!stays_within("/etc/passwd", 5));
        assert!(!stays_within("a/../../x", 3), "`..` after a name");
        assert!(!stays_within("..", 0));
    }

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

    #[test]
    fn quotas_must_name_a_read_write_mount() {
        let spec = FilesystemSpec {
            max_write_bytes: BTreeMap::from([("/data".to_owned(), 10)]),
            ..FilesystemSpec::default()
        };
        let ro = [Mount::read_only("/srv", "/data")];
        let rw = [Mount::read_write("/srv", "/data")];
        assert!(matches!(
            spec.validate(&ro),
            Err(PolicyError::QuotaWithoutMount { guest }) if guest == "/data"
        ));
        assert!(spec.validate(&rw).is_ok());
        assert!(spec.validate(&[]).is_err());
    }
}
