//! Tool policy: what a tool may reach and consume, parsed from TOML.
//!
//! A policy is deny-by-default: no mounts, no environment, no network, default
//! [`Limits`]. This module parses and checks what can be checked without the
//! host (syntax, guest paths, names); [`crate::Host::load`] then resolves mounts
//! against the host's allowed roots. It does not open the component.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::limits::LimitsSpec;
use crate::{Effect, ToolName};

/// The policy a tool is loaded under. Parse one with [`ToolPolicy::from_toml`]
/// or [`ToolPolicy::from_file`], or build it in code:
///
/// ```
/// use cofferdam::{Mount, ToolPolicy};
/// let policy = ToolPolicy {
///     mounts: vec![Mount::read_only("/srv/docs", "/data")],
///     ..ToolPolicy::default()
/// };
/// assert!(policy.validate().is_ok());
/// ```
///
/// In TOML (unknown keys are errors that name the key):
///
/// ```toml
/// component = "grep.wasm"          # relative to the manifest file
/// sha256 = "9f86d0…"               # optional pin of the component's digest
/// effect = "pure"                  # overrides what the tool declares
/// scratch = true                   # private /scratch dir, removed after each call
///
/// [[mounts]]
/// host = "./docs"
/// guest = "/data"
/// mode = "ro"                      # "ro" (default) or "rw"
///
/// [env]
/// LANG = "C.UTF-8"
///
/// [limits]
/// fuel = 500000000
/// timeout_ms = 2000
/// memory_mib = 64
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolPolicy {
    /// Component file; relative paths are resolved against the manifest's directory.
    pub component: Option<PathBuf>,
    /// Expected SHA-256 of the component file, hex; loading fails on mismatch.
    pub sha256: Option<String>,
    /// Name to register the tool under instead of the one it describes.
    pub name: Option<ToolName>,
    /// Effect class to use instead of the one the tool declares.
    pub effect: Option<Effect>,
    /// Host directories the tool may see.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Environment variables the tool sees (none by default).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Give every call a private, empty, writable `/scratch`, removed afterwards.
    #[serde(default)]
    pub scratch: bool,
    /// Per-call limits; unset keys keep the host's defaults.
    #[serde(default)]
    pub limits: LimitsSpec,
}

/// A host directory made visible to the tool at a guest path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// Directory on the host; must lie inside one of the host's allowed roots.
    pub host: PathBuf,
    /// Absolute path the guest sees it at, such as `/data`.
    pub guest: String,
    /// Read-only unless `rw`.
    #[serde(default)]
    pub mode: MountMode,
}

impl Mount {
    /// A read-only mount.
    pub fn read_only(host: impl Into<PathBuf>, guest: &str) -> Self {
        Self {
            host: host.into(),
            guest: guest.to_owned(),
            mode: MountMode::ReadOnly,
        }
    }

    /// A read-write mount.
    pub fn read_write(host: impl Into<PathBuf>, guest: &str) -> Self {
        Self {
            host: host.into(),
            guest: guest.to_owned(),
            mode: MountMode::ReadWrite,
        }
    }
}

/// Whether a mount may be written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountMode {
    /// Files and directories can be read, not created, changed or removed.
    #[default]
    #[serde(rename = "ro")]
    ReadOnly,
    /// Full access below the mount.
    #[serde(rename = "rw")]
    ReadWrite,
}

/// A policy that cannot be used, naming the key or path at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The manifest file could not be read.
    #[error("cannot read manifest {path}")]
    Read {
        /// The manifest path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("invalid manifest {path}: {message}")]
    Parse {
        /// The manifest path (`<inline>` for a string).
        path: PathBuf,
        /// The parser's message, naming the key and line.
        message: String,
    },
    /// `sha256` is not 64 hex digits.
    #[error("`sha256` must be 64 hex digits, got `{value}`")]
    BadDigest {
        /// The value given.
        value: String,
    },
    /// A mount's guest path is not absolute and normalized.
    #[error("mount guest path `{guest}` must be absolute, without `.` or `..` parts")]
    BadGuestPath {
        /// The guest path given.
        guest: String,
    },
    /// Two mounts share a guest path.
    #[error("two mounts use guest path `{guest}`")]
    DuplicateGuestPath {
        /// The guest path.
        guest: String,
    },
    /// A mount uses `/scratch` while `scratch = true` reserves it.
    #[error("mount guest path `/scratch` is reserved when `scratch = true`")]
    ScratchTaken,
    /// An environment variable name is empty or contains `=` or NUL.
    #[error("environment variable name `{name}` is invalid")]
    BadEnvName {
        /// The name.
        name: String,
    },
    /// A limit is zero or otherwise unusable.
    #[error("limit `limits.{key}` must be greater than zero")]
    ZeroLimit {
        /// The key.
        key: &'static str,
    },
    /// `limits.memory_mib` is above the host's per-memory maximum.
    #[error("limit `limits.memory_mib` asks for {} MiB, above the host maximum of {} MiB", .asked >> 20, .max >> 20)]
    MemoryAboveHostMax {
        /// Bytes asked for.
        asked: u64,
        /// The host's maximum.
        max: u64,
    },
    /// A mount's host directory does not exist or is not a directory.
    #[error("mount host directory {path} does not exist or is not a directory")]
    MountMissing {
        /// The host path as given.
        path: PathBuf,
    },
    /// A mount's host directory lies outside every allowed root.
    #[error("mount host directory {path} is outside the host's allowed roots ({roots})")]
    MountOutsideRoots {
        /// The canonical host path.
        path: PathBuf,
        /// The allowed roots, comma-separated (`none configured` if empty).
        roots: String,
    },
}

impl ToolPolicy {
    /// Parses a policy from TOML text. Relative paths stay relative.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        Self::parse(text, Path::new("<inline>"))
    }

    /// Reads a manifest file; relative `component` and mount paths are
    /// resolved against the file's directory.
    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut policy = Self::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(component) = &mut policy.component
            && component.is_relative()
        {
            *component = base.join(&*component);
        }
        for mount in &mut policy.mounts {
            if mount.host.is_relative() {
                mount.host = base.join(&mount.host);
            }
        }
        Ok(policy)
    }

    fn parse(text: &str, path: &Path) -> Result<Self, PolicyError> {
        let policy: Self = toml::from_str(text).map_err(|e| PolicyError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        policy.validate()?;
        Ok(policy)
    }

    /// Checks everything that does not need the file system: digest syntax,
    /// guest paths, environment names, limits.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if let Some(digest) = &self.sha256
            && (digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(PolicyError::BadDigest {
                value: digest.clone(),
            });
        }
        let mut seen = std::collections::HashSet::new();
        for mount in &self.mounts {
            if !is_clean_absolute(&mount.guest) {
                return Err(PolicyError::BadGuestPath {
                    guest: mount.guest.clone(),
                });
            }
            if !seen.insert(mount.guest.trim_end_matches('/')) {
                return Err(PolicyError::DuplicateGuestPath {
                    guest: mount.guest.clone(),
                });
            }
        }
        if self.scratch && seen.contains("/scratch") {
            return Err(PolicyError::ScratchTaken);
        }
        if let Some(name) = self
            .env
            .keys()
            .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
        {
            return Err(PolicyError::BadEnvName { name: name.clone() });
        }
        let l = &self.limits;
        let zero = [
            ("fuel", l.fuel == Some(0)),
            ("timeout_ms", l.timeout_ms == Some(0)),
            ("memory_mib", l.memory_mib == Some(0)),
            ("max_output_bytes", l.max_output_bytes == Some(0)),
            ("hostcall_bytes", l.hostcall_bytes == Some(0)),
        ];
        if let Some((key, _)) = zero.into_iter().find(|(_, is_zero)| *is_zero) {
            return Err(PolicyError::ZeroLimit { key });
        }
        Ok(())
    }
}

/// `/a/b` yes; `a`, `/a/../b`, `/a/./b`, `/` no.
fn is_clean_absolute(guest: &str) -> bool {
    let path = Path::new(guest);
    guest.starts_with('/')
        && guest != "/"
        && !guest.contains('\0')
        && path
            .components()
            .skip(1)
            .all(|c| matches!(c, Component::Normal(_)))
        && !guest
            .split('/')
            .skip(1)
            .any(|part| part == "." || part == "..")
}

/// Canonicalizes a mount's host directory and checks that it lies inside one
/// of `roots` (which must already be canonical).
pub(crate) fn resolve_mount(mount: &Mount, roots: &[PathBuf]) -> Result<PathBuf, PolicyError> {
    let canonical = mount
        .host
        .canonicalize()
        .ok()
        .filter(|p| p.is_dir())
        .ok_or_else(|| PolicyError::MountMissing {
            path: mount.host.clone(),
        })?;
    if roots.iter().any(|root| canonical.starts_with(root)) {
        Ok(canonical)
    } else {
        let roots = if roots.is_empty() {
            "none configured".to_owned()
        } else {
            roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(PolicyError::MountOutsideRoots {
            path: canonical,
            roots,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_manifest_parses() {
        let policy = ToolPolicy::from_toml(
            r#"
            component = "grep.wasm"
            sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
            effect = "idempotent"
            scratch = true
            [[mounts]]
            host = "docs"
            guest = "/data"
            [[mounts]]
            host = "out"
            guest = "/out"
            mode = "rw"
            [env]
            LANG = "C"
            [limits]
            fuel = 10
            timeout_ms = 2000
            memory_mib = 64
            "#,
        )
        .expect("valid manifest");
        assert_eq!(policy.effect, Some(Effect::Idempotent));
        assert_eq!(policy.mounts[0].mode, MountMode::ReadOnly);
        assert_eq!(policy.mounts[1].mode, MountMode::ReadWrite);
        assert_eq!(policy.limits.timeout_ms, Some(2000));
        assert_eq!(policy.env["LANG"], "C");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = ToolPolicy::from_toml("componnet = \"x.wasm\"").expect_err("typo");
        assert!(err.to_string().contains("componnet"), "{err}");
        let err = ToolPolicy::from_toml("[limits]\nfuell = 1").expect_err("typo");
        assert!(err.to_string().contains("fuell"), "{err}");
        let err = ToolPolicy::from_toml("[[mounts]]\nhost = \"a\"\nguest = \"/a\"\nmode = \"rwx\"")
            .expect_err("bad mode");
        assert!(err.to_string().contains("rwx"), "{err}");
    }

    #[test]
    fn guest_paths_must_be_clean_and_absolute() {
        for bad in ["data", "/", "/data/../etc", "/data/./x", ""] {
            let policy = ToolPolicy {
                mounts: vec![Mount::read_only("/tmp", bad)],
                ..Default::default()
            };
            assert!(
                matches!(policy.validate(), Err(PolicyError::BadGuestPath { .. })),
                "{bad:?} accepted"
            );
        }
        let policy = ToolPolicy {
            mounts: vec![Mount::read_only("/tmp", "/data/x")],
            ..Default::default()
        };
        assert!(policy.validate().is_ok());
    }

    #[test]
    fn duplicate_guest_paths_and_scratch_clash_are_refused() {
        let policy = ToolPolicy {
            mounts: vec![
                Mount::read_only("/a", "/data"),
                Mount::read_only("/b", "/data/"),
            ],
            ..Default::default()
        };
        assert!(matches!(
            policy.validate(),
            Err(PolicyError::DuplicateGuestPath { .. })
        ));
        let policy = ToolPolicy {
            mounts: vec![Mount::read_only("/a", "/scratch")],
            scratch: true,
            ..Default::default()
        };
        assert!(matches!(policy.validate(), Err(PolicyError::ScratchTaken)));
    }

    #[test]
    fn bad_digest_env_and_zero_limits_are_refused() {
        let err = ToolPolicy::from_toml("sha256 = \"abc\"").expect_err("short digest");
        assert!(matches!(err, PolicyError::BadDigest { .. }));
        let err = ToolPolicy::from_toml("[env]\n\"A=B\" = \"x\"").expect_err("bad env");
        assert!(matches!(err, PolicyError::BadEnvName { .. }));
        let err = ToolPolicy::from_toml("[limits]\ntimeout_ms = 0").expect_err("zero");
        assert!(matches!(err, PolicyError::ZeroLimit { key: "timeout_ms" }));
    }

    #[test]
    fn mounts_must_lie_inside_allowed_roots() {
        let root = tempfile::tempdir().expect("tempdir");
        let inside = root.path().join("inside");
        std::fs::create_dir(&inside).expect("mkdir");
        let roots = vec![root.path().canonicalize().expect("canonical")];
        let ok = resolve_mount(&Mount::read_only(&inside, "/data"), &roots).expect("inside");
        assert_eq!(ok, inside.canonicalize().expect("canonical"));

        let escape = Mount::read_only(inside.join(".."), "/data");
        let resolved = resolve_mount(&escape, &roots).expect("root itself is allowed");
        assert_eq!(resolved, roots[0]);
        let outside = Mount::read_only(root.path().join("inside/../.."), "/data");
        assert!(matches!(
            resolve_mount(&outside, &roots),
            Err(PolicyError::MountOutsideRoots { .. })
        ));
        let missing = Mount::read_only(root.path().join("nope"), "/data");
        assert!(matches!(
            resolve_mount(&missing, &roots),
            Err(PolicyError::MountMissing { .. })
        ));
        assert!(matches!(
            resolve_mount(&Mount::read_only(&inside, "/data"), &[]),
            Err(PolicyError::MountOutsideRoots { .. })
        ));
    }

    #[test]
    fn symlinked_mount_is_checked_where_it_points() {
        let root = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let link = root.path().join("link");
        std::os::unix::fs::symlink(outside.path(), &link).expect("symlink");
        let roots = vec![root.path().canonicalize().expect("canonical")];
        assert!(matches!(
            resolve_mount(&Mount::read_only(&link, "/data"), &roots),
            Err(PolicyError::MountOutsideRoots { .. })
        ));
    }

    #[test]
    fn manifest_paths_are_relative_to_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tool.toml");
        std::fs::write(
            &file,
            "component = \"t.wasm\"\n[[mounts]]\nhost = \"d\"\nguest = \"/d\"",
        )
        .expect("write");
        let policy = ToolPolicy::from_file(&file).expect("parse");
        assert_eq!(policy.component, Some(dir.path().join("t.wasm")));
        assert_eq!(policy.mounts[0].host, dir.path().join("d"));
    }
}
