//! What a tool policy says about mounts, and why a policy is refused: the
//! vocabulary the runtime and the policy layer share.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::model::units::ToolName;

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

impl std::fmt::Display for MountMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ReadOnly => "ro",
            Self::ReadWrite => "rw",
        })
    }
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
    /// A tool names itself among its fallbacks.
    #[error("tool `{name}` lists itself in `fallbacks`")]
    FallbackToSelf {
        /// The tool.
        name: ToolName,
    },
    /// `fallback_on` lists `unknown-outcome`: the tool may have acted, so
    /// another tool must not do it again.
    #[error("`fallback_on` cannot list `unknown-outcome`: the tool may have acted")]
    UnsafeFallback,
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
    #[error("limit `{key}` must be greater than zero")]
    ZeroLimit {
        /// The key.
        key: &'static str,
    },
    /// The `[http]` table is invalid.
    #[error(transparent)]
    Http(#[from] NetPolicyError),
    /// A setting that must be positive is zero.
    #[error("`{key}` must be greater than zero")]
    ZeroSetting {
        /// The key.
        key: &'static str,
    },
    /// More warm instances than calls may run at once.
    #[error("`warm.instances` ({instances}) is above `pool.max_concurrent` ({max_concurrent})")]
    WarmAbovePool {
        /// Asked for.
        instances: u32,
        /// The bulkhead's size.
        max_concurrent: u32,
    },
    /// Two keys that exclude each other are both set.
    #[error("set only one of {keys}")]
    Conflict {
        /// The keys.
        keys: &'static str,
    },
    /// A value is outside its range.
    #[error("`{key}` must be between {range}")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// The allowed range.
        range: &'static str,
    },
    /// `limits.memory_mib` is above the host's per-memory maximum.
    #[error("limit `limits.memory_mib` asks for {} MiB, above the host maximum of {} MiB", .asked >> 20, .max >> 20)]
    MemoryAboveHostMax {
        /// Bytes asked for.
        asked: u64,
        /// The host's maximum.
        max: u64,
    },
    /// `filesystem.max_write_bytes` names a guest path that is not a
    /// read-write mount of the tool.
    #[error("`filesystem.max_write_bytes` names `{guest}`, which is not a read-write mount")]
    QuotaWithoutMount {
        /// The guest path given.
        guest: String,
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
    /// Two mounts overlap (one lies inside the other) and one of them is
    /// writable: a write through one would reach the other, and a writable
    /// parent could swap the other for a symlink.
    #[error(
        "mount {path} ({mode}) overlaps mount {other} ({other_mode}) of {owner}; overlapping mounts must both be read-only"
    )]
    MountOverlap {
        /// This mount's canonical host path.
        path: PathBuf,
        /// Its mode.
        mode: MountMode,
        /// The other mount's canonical host path.
        other: PathBuf,
        /// The other mount's mode.
        other_mode: MountMode,
        /// `this tool` or `tool NAME`.
        owner: String,
    },
    /// A mount contains or lies inside a directory the host keeps for itself
    /// (data dir, artifact dir, scratch root): a tool could read the journal
    /// or replace precompiled native code.
    #[error("mount {path} overlaps the host's {what} {dir}; mount a directory apart from it")]
    MountOverlapsHostDir {
        /// The mount's canonical host path.
        path: PathBuf,
        /// `data dir`, `artifact dir` or `scratch root`.
        what: &'static str,
        /// The host's directory.
        dir: PathBuf,
    },
    /// A mount's host directory is no longer the directory pinned when the
    /// tool was loaded (a component of its path was replaced, for example by
    /// a symlink).
    #[error(
        "mount {path} changed since the tool was loaded: it no longer names the directory checked then (now resolves to {now})"
    )]
    MountChanged {
        /// The canonical host path at load.
        path: PathBuf,
        /// What the configured path resolves to now.
        now: String,
    },
    /// `[state]` names a bucket that is not 1–64 of `a-z 0-9 - _`, or a
    /// zero quota.
    #[error("`state`: {0}")]
    BadState(String),
}

/// A policy's `[http]` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetPolicyError {
    /// An `allow` entry is not `scheme://host[:port]`.
    #[error("`http.allow` entry `{0}` is not scheme://host[:port] with scheme http or https")]
    BadOrigin(String),
    /// An `allow_private` entry is not a CIDR range.
    #[error("`http.allow_private` entry `{0}` is not a CIDR range such as 127.0.0.0/8")]
    BadRange(String),
}

/// The state a breaker is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls are refused until the open period ends.
    Open,
    /// A few probe calls are let through to test recovery.
    HalfOpen,
    /// Operator mode: everything let through, nothing recorded.
    Disabled,
    /// Operator mode: everything refused.
    ForcedOpen,
    /// Operator mode: everything let through, outcomes recorded.
    MetricsOnly,
}

impl BreakerState {
    /// Every state, in declaration order.
    pub const ALL: [Self; 6] = [
        Self::Closed,
        Self::Open,
        Self::HalfOpen,
        Self::Disabled,
        Self::ForcedOpen,
        Self::MetricsOnly,
    ];

    /// Kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
            Self::Disabled => "disabled",
            Self::ForcedOpen => "forced-open",
            Self::MetricsOnly => "metrics-only",
        }
    }
}
