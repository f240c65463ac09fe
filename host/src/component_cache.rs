//! Compiles components once and keeps the native artifacts on disk.
//!
//! Artifacts are keyed by the component's SHA-256 and the engine's
//! compatibility hash, so a second process start (or a wasmtime upgrade)
//! either maps the existing artifact or compiles afresh, never loads a stale
//! one. This is the only module with `unsafe`.

use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::LoadError;

/// Where a loaded component's native code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactSource {
    /// Mapped from a precompiled artifact in the data directory.
    Cached,
    /// Compiled now and written to the data directory.
    Compiled,
    /// Compiled now, in memory only (the host has no data directory).
    CompiledInMemory,
}

/// How a component was made ready to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ArtifactInfo {
    /// Where the native code came from.
    pub source: ArtifactSource,
    /// Time spent compiling or mapping.
    pub elapsed: Duration,
}

pub(crate) struct ComponentCache {
    dir: Option<PathBuf>,
    /// Engine compatibility hash, as part of every artifact name.
    compat: u64,
}

impl ComponentCache {
    pub(crate) fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        Self {
            dir,
            compat: hasher.finish(),
        }
    }

    /// Returns a ready component for `bytes`, whose SHA-256 is `digest`.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &str,
    ) -> Result<(Component, ArtifactInfo), LoadError> {
        let start = Instant::now();
        let Some(dir) = &self.dir else {
            let component = Component::new(engine, bytes)
                .map_err(|e| LoadError::Compile(e.into_boxed_dyn_error()))?;
            let info = ArtifactInfo {
                source: ArtifactSource::CompiledInMemory,
                elapsed: start.elapsed(),
            };
            return Ok((component, info));
        };
        let path = dir.join(format!("{digest}-{:016x}.cwasm", self.compat));
        if path.exists() {
            match deserialize(engine, &path) {
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
            }
        }
        let native = engine
            .precompile_component(bytes)
            .map_err(|e| LoadError::Compile(e.into_boxed_dyn_error()))?;
        let component = match write_atomically(&path, &native) {
            Ok(()) => deserialize(engine, &path).ok(),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot cache artifact");
                None
            }
        };
        let component = match component {
            Some(component) => component,
            // The disk let us down; the artifact we just compiled is still good.
            None => deserialize_bytes(engine, &native)
                .map_err(|e| LoadError::Compile(e.into_boxed_dyn_error()))?,
        };
        Ok((
            component,
            ArtifactInfo {
                source: ArtifactSource::Compiled,
                elapsed: start.elapsed(),
            },
        ))
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.tmp-{}", std::process::id(), unique_suffix()));
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

fn unique_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[expect(
    unsafe_code,
    reason = "loading precompiled native code is inherently unsafe"
)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the file was written by `ComponentCache::load` (this process or
    // an earlier one) from `Engine::precompile_component` output, under the
    // host's data directory, which must be writable only by the host's user.
    // Its name carries the engine compatibility hash, and wasmtime checks the
    // header again on load. Files are replaced atomically (write + rename),
    // so a concurrent writer never exposes a torn artifact.
    unsafe { Component::deserialize_file(engine, path) }
}

#[expect(
    unsafe_code,
    reason = "loading precompiled native code is inherently unsafe"
)]
fn deserialize_bytes(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `bytes` is the output of `engine.precompile_component` made by
    // this very call to `ComponentCache::load`; it never left memory.
    unsafe { Component::deserialize(engine, bytes) }
}
