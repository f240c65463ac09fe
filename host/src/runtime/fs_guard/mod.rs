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
//!
//! `quota` counts writes against a mount's limit, `symlink` judges where a
//! new link points, and `filesystem` is the guarded view that delegates
//! every `wasi:filesystem` method and intercepts the ones above.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView};
use wasmtime_wasi::p2::FsError;
use wasmtime_wasi::p2::bindings::filesystem::preopens;
use wasmtime_wasi::p2::bindings::filesystem::types::{self, ErrorCode};

use crate::model::policy::{Mount, MountMode, PolicyError};

mod filesystem;
mod quota;
mod symlink;

use quota::Quota;
pub(crate) use quota::QuotaExceeded;

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

/// One mount as the guard sees it.
struct GuardedMount {
    guest: String,
    /// The preopen's handle, captured when the guest asks for the preopens.
    root: Option<Arc<std::fs::File>>,
    quota: Option<Arc<Quota>>,
}

/// A call's filesystem guard: per-mount quotas and which mount each open
/// descriptor belongs to. Lives in the store data (the sandbox's `CallState`).
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

/// Where the scratch directory appears in the guest.
pub(crate) const SCRATCH_GUEST_PATH: &str = "/scratch";

/// Links `wasi:filesystem/types` and `wasi:filesystem/preopens` over the ones
/// [`wasmtime_wasi::p2::add_to_linker_async`] added (call it first); `view`
/// finds the guarded filesystem in the store data.
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> FsView<'_>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let linked = preopens::add_to_linker::<T, GuardedFs>(linker, view)
        .and_then(|()| types::add_to_linker::<T, GuardedFs>(linker, view));
    linker.allow_shadowing(false);
    linked
}

impl FsView<'_> {
    fn dir_handle(&self, fd: &Resource<Descriptor>) -> Option<Arc<std::fs::File>> {
        match self.fs.table.get(fd).ok()? {
            Descriptor::Dir(d) => Some(Arc::clone(&d.dir)),
            Descriptor::File(_) => None,
        }
    }
}

fn refused() -> FsError {
    ErrorCode::NotPermitted.into()
}

#[cfg(test)]
mod tests {
    use super::*;

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
