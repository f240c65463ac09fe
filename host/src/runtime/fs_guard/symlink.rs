//! The symlink check: whether a link created by `symlink-at` stays inside
//! its mount, judged lexically from the real depth of the link's directory.
//!
//! It does not resolve paths (wasmtime-wasi opens the link's directory) and
//! follows no link; whether links are allowed at all (`SymlinkPolicy`) is
//! decided by the caller.

use std::path::PathBuf;

use wasmtime::component::Resource;
use wasmtime_wasi::filesystem::Descriptor;
use wasmtime_wasi::p2::FsResult;
use wasmtime_wasi::p2::bindings::filesystem::types::HostDescriptor;

use super::{FsView, refused};

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

    pub(super) async fn checked_symlink(
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
}
