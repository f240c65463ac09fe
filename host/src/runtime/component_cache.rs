//! Compiles components once and keeps the native artifacts on disk,
//! authenticated.
//!
//! Artifacts are keyed by the component's SHA-256 and a stable hash of the
//! engine's compatibility settings, so a second process start (or a wasmtime
//! upgrade) either maps the existing artifact or compiles afresh, never loads
//! a stale one. Loading native code is code execution, so an artifact is
//! trusted only if its HMAC-SHA256 tag, made under a random key that never
//! leaves the artifact directory (`0700`, refused as a mount), matches the
//! exact bytes handed to wasmtime: a swapped, corrupted or crafted file is
//! discarded with a warning and the component compiled again. The bytes are
//! read once, checked, and deserialized from memory, so nothing can change
//! them between the check and the load.
//!
//! This is the only module with `unsafe`.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::LoadError;

/// Where a loaded component's native code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactSource {
    /// Loaded from a precompiled, authenticated artifact in the data directory.
    Cached,
    /// Compiled now and written to the data directory.
    Compiled,
    /// Compiled now, in memory only (the host has no data directory).
    CompiledInMemory,
    /// The native code of a tool already loaded from the same bytes (another
    /// name, or the same tool with a new policy).
    Shared,
}

/// How a component was made ready to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ArtifactInfo {
    /// Where the native code came from.
    pub source: ArtifactSource,
    /// Time spent compiling or mapping.
    pub elapsed: Duration,
}

type Tag = Hmac<Sha256>;

/// Length of the key, in bytes.
const KEY_LEN: usize = 32;
/// Name of the key file inside the artifact directory.
const KEY_FILE: &str = "artifacts.key";
/// The tag is appended to the artifact: `native code ‖ tag ‖ MAGIC`.
const MAGIC: &[u8; 8] = b"cfdmtag1";
const TAG_LEN: usize = 32;

pub(crate) struct ComponentCache {
    /// The artifact directory (canonical) and the key that signs its files;
    /// `None` when the host has no data directory or it is unusable.
    disk: Option<Disk>,
    /// Stable hash of the engine's compatibility settings and this crate's
    /// version, in every artifact name.
    compat: String,
}

struct Disk {
    dir: PathBuf,
    key: [u8; KEY_LEN],
}

impl ComponentCache {
    /// A cache in `dir`, created `0700` with its key; without a usable
    /// directory, components compile in memory at every load.
    pub(crate) fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = StableHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        let compat = hex::encode(&hasher.0.finalize()[..8]);
        let disk = dir.and_then(|dir| match Disk::open(&dir) {
            Ok(disk) => Some(disk),
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "artifact cache unusable; compiling in memory");
                None
            }
        });
        Self { disk, compat }
    }

    /// The artifact directory (canonical).
    pub(crate) fn dir(&self) -> Option<&Path> {
        self.disk.as_ref().map(|d| d.dir.as_path())
    }

    /// The file an artifact of the component with SHA-256 `digest` lives in.
    pub(crate) fn artifact_path(&self, digest: &str) -> Option<PathBuf> {
        let disk = self.disk.as_ref()?;
        Some(disk.dir.join(format!("{digest}-{}.cwasm", self.compat)))
    }

    /// Returns a ready component for `bytes`, whose SHA-256 is `digest`.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &str,
    ) -> Result<(Component, ArtifactInfo), LoadError> {
        let start = Instant::now();
        let compile_error = |e: wasmtime::Error| LoadError::Compile(e.into_boxed_dyn_error());
        let (Some(disk), Some(path)) = (&self.disk, self.artifact_path(digest)) else {
            let component = Component::new(engine, bytes).map_err(compile_error)?;
            let info = ArtifactInfo {
                source: ArtifactSource::CompiledInMemory,
                elapsed: start.elapsed(),
            };
            return Ok((component, info));
        };
        match fs::read(&path) {
            Ok(file) => match disk.verified(digest, &file) {
                Some(native) => match deserialize_verified(engine, native) {
                    Ok(component) => {
                        let info = ArtifactInfo {
                            source: ArtifactSource::Cached,
                            elapsed: start.elapsed(),
                        };
                        return Ok((component, info));
                    }
                    Err(error) => {
                        tracing::warn!(path = %path.display(), %error, "discarding unusable artifact");
                    }
                },
                None => {
                    tracing::warn!(
                        path = %path.display(),
                        "artifact failed authentication (swapped, corrupted or not written by this host); compiling again"
                    );
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read artifact; compiling again");
            }
        }
        let native = engine.precompile_component(bytes).map_err(compile_error)?;
        if let Err(error) = disk.write(&path, digest, &native) {
            tracing::warn!(path = %path.display(), %error, "cannot cache artifact");
        }
        let component = deserialize_fresh(engine, &native).map_err(compile_error)?;
        Ok((
            component,
            ArtifactInfo {
                source: ArtifactSource::Compiled,
                elapsed: start.elapsed(),
            },
        ))
    }
}

impl Disk {
    fn open(dir: &Path) -> std::io::Result<Self> {
        create_private_dir(dir)?;
        let dir = dir.canonicalize()?;
        let key_path = dir.join(KEY_FILE);
        let key = match fs::read(&key_path) {
            Ok(key) if key.len() == KEY_LEN => key,
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{} is not a key",
                    key_path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = vec![0; KEY_LEN];
                getrandom::fill(&mut key).map_err(std::io::Error::other)?;
                // Two processes may race here: the first rename wins and
                // both read the winner back.
                write_atomically(&key_path, &key, false)?;
                fs::read(&key_path)?
            }
            Err(e) => return Err(e),
        };
        let key = key
            .try_into()
            .map_err(|_| std::io::Error::other("key changed length"))?;
        Ok(Self { dir, key })
    }

    /// The tag binds the native code to the component it was compiled
    /// from: another tool's genuine artifact under this name fails too.
    fn mac(&self, digest: &str, native: &[u8]) -> Tag {
        let mut mac = Tag::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(digest.as_bytes());
        mac.update(&[0]);
        mac.update(native);
        mac
    }

    fn tag(&self, digest: &str, native: &[u8]) -> [u8; TAG_LEN] {
        self.mac(digest, native).finalize().into_bytes().into()
    }

    /// The native code of `file` if its tag is ours, for this component.
    fn verified<'a>(&self, digest: &str, file: &'a [u8]) -> Option<&'a [u8]> {
        let body_len = file.len().checked_sub(TAG_LEN + MAGIC.len())?;
        let (native, trailer) = file.split_at(body_len);
        let (tag, magic) = trailer.split_at(TAG_LEN);
        if magic != MAGIC {
            return None;
        }
        // Constant-time comparison.
        self.mac(digest, native).verify_slice(tag).ok()?;
        Some(native)
    }

    fn write(&self, path: &Path, digest: &str, native: &[u8]) -> std::io::Result<()> {
        let mut file = Vec::with_capacity(native.len() + TAG_LEN + MAGIC.len());
        file.extend_from_slice(native);
        file.extend_from_slice(&self.tag(digest, native));
        file.extend_from_slice(MAGIC);
        write_atomically(path, &file, true)
    }
}

/// Creates `dir` (and parents) and makes it `0700`.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes a `0600` file next to `path`, fsyncs it and renames it into
/// place, so a reader sees the old file or the whole new one, and a crash
/// never leaves a torn file under the final name. `replace` false keeps an
/// existing file (first writer wins).
fn write_atomically(path: &Path, bytes: &[u8], replace: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp-{}", std::process::id(), unique_suffix()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        if replace {
            fs::rename(&tmp, path)
        } else {
            // `hard_link` fails if `path` exists: the first writer wins.
            match fs::hard_link(&tmp, path) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
                _ => Ok(()),
            }
        }
    })();
    let _ = fs::remove_file(&tmp);
    result?;
    // The rename itself is durable once the directory is.
    fs::File::open(dir).and_then(|d| d.sync_all())
}

fn unique_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Feeds `Hash` input into SHA-256: unlike `DefaultHasher`, the same input
/// gives the same name under every Rust release.
struct StableHasher(Sha256);

impl Hasher for StableHasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[expect(
    unsafe_code,
    reason = "loading precompiled native code is inherently unsafe"
)]
fn deserialize_verified(engine: &Engine, native: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `native` is the exact byte sequence whose HMAC-SHA256 under this
    // host's secret key (random, `0600` in a `0700` directory no mount may
    // overlap) was just verified in memory; only `Disk::write` makes such a
    // tag, and only over `Engine::precompile_component` output. The bytes are
    // not re-read from disk after the check. wasmtime checks the header's
    // engine compatibility again.
    unsafe { Component::deserialize(engine, native) }
}

#[expect(
    unsafe_code,
    reason = "loading precompiled native code is inherently unsafe"
)]
fn deserialize_fresh(engine: &Engine, native: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `native` is the output of `engine.precompile_component` made by
    // this very call to `ComponentCache::load`; it never left memory.
    unsafe { Component::deserialize(engine, native) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk() -> (tempfile::TempDir, Disk) {
        let dir = tempfile::tempdir().expect("temp dir");
        let disk = Disk::open(&dir.path().join("artifacts")).expect("cache dir");
        (dir, disk)
    }

    #[test]
    fn a_tag_made_under_another_key_is_refused() {
        let (_a, ours) = disk();
        let (_b, theirs) = disk();
        let mut file = b"native code".to_vec();
        file.extend_from_slice(&theirs.tag("d1", b"native code"));
        file.extend_from_slice(MAGIC);
        assert!(ours.verified("d1", &file).is_none());
        assert_eq!(theirs.verified("d1", &file), Some(&b"native code"[..]));
        // Genuine, but made for another component.
        assert!(theirs.verified("d2", &file).is_none());
    }

    #[test]
    fn a_flipped_bit_or_a_short_file_is_refused() {
        let (_d, disk) = disk();
        let path = disk.dir.join("x.cwasm");
        disk.write(&path, "d", b"native code").expect("write");
        let mut file = fs::read(&path).expect("read");
        assert!(disk.verified("d", &file).is_some());
        file[3] ^= 1;
        assert!(disk.verified("d", &file).is_none());
        assert!(disk.verified("d", b"short").is_none());
        assert!(disk.verified("d", &[]).is_none());
    }

    #[cfg(unix)]
    #[test]
    fn the_directory_is_private_and_the_key_is_kept() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, disk) = disk();
        let path = dir.path().join("artifacts");
        let mode = fs::metadata(&path).expect("dir").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let key_mode = fs::metadata(path.join(KEY_FILE))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
        let again = Disk::open(&path).expect("reopen");
        assert_eq!(again.key, disk.key);
    }

    #[test]
    fn the_stable_hasher_is_sha256() {
        let mut a = StableHasher(Sha256::new());
        "abc".hash(&mut a);
        let mut b = StableHasher(Sha256::new());
        "abc".hash(&mut b);
        assert_eq!(a.finish(), b.finish());
    }
}
