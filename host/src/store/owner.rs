//! Who holds a lease: a process identity that outlives PID reuse.
//!
//! Each process that opens a data directory takes an exclusive file lock
//! (`File::try_lock`, `flock` on Linux) on `<data>/owners/<id>.lock`, where `id` is random per process, and holds it
//! until it exits: the kernel releases the lock when the process dies, however
//! it dies. Records that a process owns (idempotency claims, budget
//! reservations, running schedule slots) carry its id, and another process
//! asks "is that owner alive?" by trying the same lock. Unlike a PID check,
//! a reused PID (a container restart, a busy host) never looks like the dead
//! owner, and it works on every OS with file locks.
//!
//! It does not do leases with expiry across machines: a shared PostgreSQL
//! store needs heartbeats, since a file lock only speaks for one file system.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

/// This process's owner id: 32 hex digits, random.
pub(crate) fn me() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            // No entropy source: the pid and the clock still make a fresh id.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            bytes = (nanos ^ (u128::from(std::process::id()) << 96)).to_le_bytes();
        }
        hex::encode(bytes)
    })
}

/// Lock files this process holds, by owners directory.
static HELD: Mutex<Option<HashMap<PathBuf, File>>> = Mutex::new(None);

/// How a store answers "is this owner alive?".
#[derive(Debug, Clone)]
pub(crate) struct Liveness {
    /// `<data>/owners`; `None` for a store in memory, which no other process
    /// can share.
    dir: Option<PathBuf>,
}

impl Liveness {
    /// A store in memory: only this process can own its records.
    pub(crate) fn in_memory() -> Self {
        Self { dir: None }
    }

    /// Registers this process as an owner under `data_dir` (idempotent) and
    /// sweeps lock files of dead owners.
    pub(crate) fn register(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("owners");
        std::fs::create_dir_all(&dir)?;
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        let held = held.get_or_insert_with(HashMap::new);
        if !held.contains_key(&dir) {
            let file = lock_own_file(&dir)?;
            held.insert(dir.clone(), file);
            sweep(&dir);
        }
        Ok(Self { dir: Some(dir) })
    }

    /// Whether the owner of a record is alive. `pid` is the record's process
    /// id, used only for records written before owners had ids.
    pub(crate) fn alive(&self, owner: Option<&str>, pid: u32) -> bool {
        match owner {
            Some(owner) if owner == me() => true,
            Some(owner) => self.dir.as_deref().is_some_and(|dir| lock_held(dir, owner)),
            None => legacy_pid_alive(pid),
        }
    }
}

/// Creates and locks this process's lock file in `dir`. Another process's
/// sweep may remove the file between its creation and the lock (it looked
/// unheld then): the lock is only good if the path still names the locked
/// file, so check, and start again if not.
fn lock_own_file(dir: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::MetadataExt;
    let path = dir.join(format!("{}.lock", me()));
    for _ in 0..8 {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        file.try_lock().map_err(std::io::Error::from)?;
        let locked = file.metadata()?;
        match std::fs::metadata(&path) {
            Ok(now) if now.ino() == locked.ino() && now.dev() == locked.dev() => return Ok(file),
            _ => continue,
        }
    }
    Err(std::io::Error::other(format!(
        "cannot keep a lock file at {}: it keeps disappearing",
        path.display()
    )))
}

/// Whether another process holds `owner`'s lock in `dir`.
fn lock_held(dir: &Path, owner: &str) -> bool {
    // Owner ids are hex; anything else names no lock file.
    if owner.is_empty() || !owner.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    let Ok(file) = File::open(dir.join(format!("{owner}.lock"))) else {
        return false;
    };
    match file.try_lock_shared() {
        // Nobody holds it: its owner is gone.
        Ok(()) => false,
        Err(TryLockError::WouldBlock) => true,
        // Cannot tell: assume alive, so nothing is reclaimed from under a
        // live owner (an expired lease still ends its hold).
        Err(TryLockError::Error(_)) => true,
    }
}

/// Removes lock files no process holds.
fn sweep(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(owner) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".lock"))
        else {
            continue;
        };
        if owner != me() && !lock_held(dir, owner) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Records from before owner ids: the PID check they were written for.
fn legacy_pid_alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_an_unregistered_owner_is_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let live = Liveness::register(dir.path()).expect("register");
        assert!(live.alive(Some(me()), 0));
        // A live PID (ours) with an owner id that holds no lock: dead. This
        // is the PID-reuse case a PID check gets wrong.
        assert!(!live.alive(Some("0123456789abcdef0123456789abcdef"), std::process::id()));
        assert!(!live.alive(Some("../../etc/passwd"), 1));
    }

    #[test]
    fn an_owner_is_alive_while_its_lock_is_held_and_dead_after() {
        let dir = tempfile::tempdir().expect("temp dir");
        let live = Liveness::register(dir.path()).expect("register");
        let other = "feedfacefeedfacefeedfacefeedface";
        let path = dir.path().join("owners").join(format!("{other}.lock"));
        let file = File::create(&path).expect("lock file");
        file.try_lock().expect("lock");
        // A lock held through another open file description (as another
        // process would) makes the owner alive.
        assert!(live.alive(Some(other), 0));
        drop(file);
        assert!(!live.alive(Some(other), 0));
    }
}
