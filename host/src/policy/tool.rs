//! Tool policy: what a tool may reach and consume, parsed from TOML.
//!
//! A policy is deny-by-default: no mounts, no environment, no network, default
//! [`Limits`]. This module parses and checks what can be checked without the
//! host (syntax, guest paths, names); [`crate::Host::load`] then resolves mounts
//! against the host's allowed roots. It does not open the component.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::limits::LimitsSpec;
pub use crate::model::policy::{Mount, MountMode, PolicyError};
use crate::resilience::breaker::{BreakerConfig, BreakerMode, Window};
use crate::resilience::bulkhead::BulkheadConfig;
use crate::resilience::retry::RetryConfig;
use crate::runtime::fs_guard::FilesystemSpec;
use crate::runtime::net::{HttpSpec, NetPolicy};
use crate::runtime::warm::WarmConfig;
use crate::{Effect, ErrorClass, ToolName};

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
/// [filesystem]
/// symlinks = "within-mount"        # or "deny"
/// scratch_max_bytes = 67108864     # /scratch size limit (default 64 MiB)
/// # max_write_bytes = { "/out" = 1048576 }  # bytes per call, per rw mount
///
/// [env]
/// LANG = "C.UTF-8"
///
/// [limits]
/// fuel = 500000000
/// timeout_ms = 2000
/// memory_mib = 64
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// Concurrency (bulkhead) settings.
    #[serde(default)]
    pub pool: PoolSpec,
    /// Warm instance reuse (off unless set): for tools that keep no state
    /// between calls, or whose state is harmless.
    #[serde(default)]
    pub warm: WarmSpec,
    /// CPU share of long computations (`[cpu]`).
    #[serde(default)]
    pub cpu: CpuSpec,
    /// Circuit breaker settings.
    #[serde(default)]
    pub breaker: BreakerSpec,
    /// Retry settings.
    #[serde(default)]
    pub retry: RetrySpec,
    /// Outbound HTTP: allowed origins and limits (nothing is allowed by default).
    #[serde(default)]
    pub http: HttpSpec,
    /// What one call may spend.
    #[serde(default)]
    pub budget: BudgetSpec,
    /// Symlinks and write quotas inside the mounts and `/scratch`.
    #[serde(default)]
    pub filesystem: FilesystemSpec,
    /// The tool acts where a human should be in the loop: background
    /// (scheduled) runs refuse it. Shown in the tool's description.
    #[serde(default)]
    pub sensitive: bool,
    /// Tools tried in order, with the same input, when a call of this tool
    /// fails in one of the `fallback_on` classes (cheap → strong). A
    /// fallback's own fallbacks are not followed.
    #[serde(default)]
    pub fallbacks: Vec<ToolName>,
    /// Classes that send a call to the fallbacks [default: circuit-open,
    /// bulkhead-full, transient, rate-limited, deadline-exceeded]. After
    /// retries, the last attempt's class counts. `unknown-outcome` is never
    /// allowed: the tool may have acted.
    pub fallback_on: Option<Vec<ErrorClass>>,
    /// `[state]`: the key-value bucket the tool may use through
    /// `wasi:keyvalue` (none: no state).
    #[serde(default)]
    pub state: Option<crate::model::state::StateSpec>,
}

/// `[budget]`: spending limits of one call of the tool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// Tokens one call may spend at most, across its attempts; a request's
    /// own cap can only lower it.
    pub max_tokens_per_call: Option<u64>,
}

/// The classes that send a call to its fallbacks when `fallback_on` is unset.
pub const DEFAULT_FALLBACK_ON: [ErrorClass; 5] = [
    ErrorClass::CircuitOpen,
    ErrorClass::BulkheadFull,
    ErrorClass::Transient,
    ErrorClass::RateLimited,
    ErrorClass::DeadlineExceeded,
];

/// `[pool]`: the tool's bulkhead. Unset keys keep [`BulkheadConfig::default`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// Calls running at once (also the tool's share of instance slots).
    pub max_concurrent: Option<u32>,
    /// Calls that may wait for a slot.
    pub max_queue: Option<u32>,
    /// Longest wait in the queue, in milliseconds.
    pub max_wait_ms: Option<u64>,
}

/// `[cpu]`: how much of the batch lane (calls that computed past the host's
/// CPU quantum) a tool may take. Short calls are not limited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuSpec {
    /// Demoted calls of this tool computing at once (default: as many as
    /// the batch lane lets in). Fewer than its bulkhead keeps a tool's long
    /// calls from taking the whole batch lane from other tools.
    pub max_threads: Option<u32>,
}

/// `[warm]`: keep instances of this tool between calls instead of a fresh
/// one per call. **The guest's memory, globals, open handles and `/scratch`
/// carry over from one call to the next** (of any caller): opt in only for
/// tools that keep no state, or whose state is harmless. An instance that
/// trapped, ran out of fuel or time, or was cancelled is never reused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmSpec {
    /// Idle instances kept, at most `pool.max_concurrent` (default 0: off).
    pub instances: Option<u32>,
    /// Calls one instance serves before it is retired (default 1000).
    pub max_invocations: Option<u32>,
    /// An instance idle this long is retired, in milliseconds (default 60000).
    pub idle_ms: Option<u64>,
}

impl WarmSpec {
    /// The settings in force, or `None` when reuse is off.
    pub(crate) fn config(&self) -> Option<WarmConfig> {
        let instances = self.instances.filter(|n| *n > 0)? as usize;
        Some(WarmConfig {
            instances,
            max_invocations: self.max_invocations.unwrap_or(1000),
            idle: Duration::from_millis(self.idle_ms.unwrap_or(60_000)),
        })
    }
}

impl PoolSpec {
    /// Applies the keys that are set on top of the defaults.
    pub fn apply(&self) -> BulkheadConfig {
        let base = BulkheadConfig::default();
        BulkheadConfig {
            max_concurrent: self.max_concurrent.unwrap_or(base.max_concurrent),
            max_queue: self.max_queue.unwrap_or(base.max_queue),
            max_wait: self
                .max_wait_ms
                .map_or(base.max_wait, Duration::from_millis),
        }
    }
}

/// `[breaker]`: the tool's circuit breaker. Unset keys keep the defaults of
/// [`BreakerConfig::for_timeout`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSpec {
    /// `normal`, `disabled`, `forced-open` or `metrics-only`.
    pub mode: Option<BreakerMode>,
    /// Count window: the last N calls (exclusive with `window_seconds`).
    pub window_calls: Option<u32>,
    /// Time window in seconds (exclusive with `window_calls`).
    pub window_seconds: Option<u64>,
    /// Calls needed before rates count.
    pub minimum_calls: Option<u32>,
    /// Failure rate, in percent, that opens the breaker.
    pub failure_rate_percent: Option<f64>,
    /// Slow-call rate, in percent, that opens the breaker.
    pub slow_call_rate_percent: Option<f64>,
    /// Calls at least this long (ms) are slow.
    pub slow_call_ms: Option<u64>,
    /// Failures in a row that open the breaker (0 = off).
    pub consecutive_failures: Option<u32>,
    /// First open period in milliseconds.
    pub open_ms: Option<u64>,
    /// Longest open period in milliseconds.
    pub max_open_ms: Option<u64>,
    /// Probes admitted while half-open.
    pub half_open_probes: Option<u32>,
    /// Pending probes re-open the breaker after this many milliseconds.
    pub half_open_timeout_ms: Option<u64>,
}

impl BreakerSpec {
    /// Applies the keys that are set on top of the defaults for `attempt_timeout`.
    pub fn apply(&self, attempt_timeout: Duration) -> BreakerConfig {
        let base = BreakerConfig::for_timeout(attempt_timeout);
        let ms = Duration::from_millis;
        BreakerConfig {
            mode: self.mode.unwrap_or(base.mode),
            window: match (self.window_calls, self.window_seconds) {
                (Some(n), _) => Window::Count(n),
                (None, Some(s)) => Window::Time(Duration::from_secs(s)),
                (None, None) => base.window,
            },
            minimum_calls: self.minimum_calls.unwrap_or(base.minimum_calls),
            failure_rate: self
                .failure_rate_percent
                .map_or(base.failure_rate, |p| p / 100.0),
            slow_call_rate: self
                .slow_call_rate_percent
                .map_or(base.slow_call_rate, |p| p / 100.0),
            slow_call_duration: self.slow_call_ms.map_or(base.slow_call_duration, ms),
            consecutive_failures: self
                .consecutive_failures
                .unwrap_or(base.consecutive_failures),
            open_duration: self.open_ms.map_or(base.open_duration, ms),
            max_open_duration: self.max_open_ms.map_or(base.max_open_duration, ms),
            half_open_probes: self.half_open_probes.unwrap_or(base.half_open_probes),
            half_open_timeout: self.half_open_timeout_ms.map_or(base.half_open_timeout, ms),
        }
    }
}

/// `[retry]`: the tool's retry policy. Unset keys keep the defaults of
/// [`RetryConfig::for_timeout`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts including the first (1 = never retry).
    pub max_attempts: Option<u32>,
    /// First backoff in milliseconds.
    pub base_backoff_ms: Option<u64>,
    /// Longest backoff in milliseconds.
    pub max_backoff_ms: Option<u64>,
    /// Deadline for all attempts together, in milliseconds.
    pub total_timeout_ms: Option<u64>,
    /// Retries earned per 100 calls.
    pub budget_percent: Option<f64>,
    /// Retries earned per second.
    pub budget_per_second: Option<f64>,
}

impl RetrySpec {
    /// Applies the keys that are set on top of the defaults for `attempt_timeout`.
    pub fn apply(&self, attempt_timeout: Duration) -> RetryConfig {
        let base = RetryConfig::for_timeout(attempt_timeout);
        let ms = Duration::from_millis;
        let max_attempts = self.max_attempts.unwrap_or(base.max_attempts);
        RetryConfig {
            max_attempts,
            base_backoff: self.base_backoff_ms.map_or(base.base_backoff, ms),
            max_backoff: self.max_backoff_ms.map_or(base.max_backoff, ms),
            total_timeout: self
                .total_timeout_ms
                .map_or(attempt_timeout.saturating_mul(max_attempts.max(1)), ms),
            budget_ratio: self.budget_percent.map_or(base.budget_ratio, |p| p / 100.0),
            budget_per_second: self.budget_per_second.unwrap_or(base.budget_per_second),
        }
    }
}

/// A mount already granted, for overlap checks.
#[derive(Debug, Clone)]
pub(crate) struct GrantedMount<'a> {
    pub path: &'a Path,
    pub mode: MountMode,
    /// `this tool` or `tool NAME`.
    pub owner: String,
}

/// Whether two canonical paths overlap: equal, or one inside the other.
pub(crate) fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Checks a tool's canonical mounts against each other, against mounts other
/// tools hold, and against the host's own directories. Two read-only mounts
/// may overlap, and two tools may mount the very same directory; any other
/// overlap (one mount inside another, with a writable side) is refused.
pub(crate) fn check_overlaps(
    mounts: &[(PathBuf, MountMode)],
    others: &[GrantedMount<'_>],
    host_dirs: &[(&'static str, &Path)],
) -> Result<(), PolicyError> {
    for (i, (path, mode)) in mounts.iter().enumerate() {
        for (what, dir) in host_dirs {
            if overlaps(path, dir) {
                return Err(PolicyError::MountOverlapsHostDir {
                    path: path.clone(),
                    what,
                    dir: dir.to_path_buf(),
                });
            }
        }
        let mine = mounts[..i].iter().map(|(p, m)| GrantedMount {
            path: p,
            mode: *m,
            owner: "this tool".to_owned(),
        });
        for (other, same_tool) in mine
            .map(|m| (m, true))
            .chain(others.iter().cloned().map(|m| (m, false)))
        {
            let both_read_only = *mode == MountMode::ReadOnly && other.mode == MountMode::ReadOnly;
            // Two tools may share one directory: each holds it pinned, and
            // neither can rename the other's mount root. Nesting is what lets
            // a writable parent swap its child.
            let shared_root = !same_tool && path == other.path;
            if !both_read_only && !shared_root && overlaps(path, other.path) {
                return Err(PolicyError::MountOverlap {
                    path: path.clone(),
                    mode: *mode,
                    other: other.path.to_path_buf(),
                    other_mode: other.mode,
                    owner: other.owner,
                });
            }
        }
    }
    Ok(())
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
        if let Some(state) = &self.state {
            if !crate::model::state::valid_bucket(&state.bucket) {
                return Err(PolicyError::BadState(format!(
                    "bucket `{}` is not 1-64 of a-z 0-9 - _",
                    state.bucket
                )));
            }
            if state.max_keys == Some(0) || state.max_bytes == Some(0) {
                return Err(PolicyError::BadState(
                    "max_keys and max_bytes must be above zero".into(),
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for mount in &self.mounts {
            if !is_clean_absolute(&mount.guest) {
                return Err(PolicyError::BadGuestPath {
                    guest: mount.guest.clone(),
                });
            }
            if !seen.insert(normal_guest(&mount.guest)) {
                return Err(PolicyError::DuplicateGuestPath {
                    guest: mount.guest.clone(),
                });
            }
        }
        if self.scratch && seen.contains(SCRATCH_GUEST) {
            return Err(PolicyError::ScratchTaken);
        }
        if let Some(name) = self
            .env
            .keys()
            .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
        {
            return Err(PolicyError::BadEnvName { name: name.clone() });
        }
        if let Some(name) = &self.name
            && self.fallbacks.contains(name)
        {
            return Err(PolicyError::FallbackToSelf { name: name.clone() });
        }
        if let Some(classes) = &self.fallback_on
            && classes.contains(&ErrorClass::UnknownOutcome)
        {
            return Err(PolicyError::UnsafeFallback);
        }
        if self.budget.max_tokens_per_call == Some(0) {
            return Err(PolicyError::ZeroLimit {
                key: "budget.max_tokens_per_call",
            });
        }
        let l = &self.limits;
        let zero = [
            ("limits.fuel", l.fuel == Some(0)),
            ("limits.timeout_ms", l.timeout_ms == Some(0)),
            ("limits.memory_mib", l.memory_mib == Some(0)),
            ("limits.max_output_bytes", l.max_output_bytes == Some(0)),
            ("limits.hostcall_bytes", l.hostcall_bytes == Some(0)),
        ];
        if let Some((key, _)) = zero.into_iter().find(|(_, is_zero)| *is_zero) {
            return Err(PolicyError::ZeroLimit { key });
        }
        let (p, b, r) = (&self.pool, &self.breaker, &self.retry);
        let zero = [
            ("pool.max_concurrent", p.max_concurrent == Some(0)),
            ("breaker.window_calls", b.window_calls == Some(0)),
            ("breaker.window_seconds", b.window_seconds == Some(0)),
            ("breaker.half_open_probes", b.half_open_probes == Some(0)),
            ("retry.max_attempts", r.max_attempts == Some(0)),
            ("warm.max_invocations", self.warm.max_invocations == Some(0)),
            ("warm.idle_ms", self.warm.idle_ms == Some(0)),
        ];
        if let Some((key, _)) = zero.into_iter().find(|(_, is_zero)| *is_zero) {
            return Err(PolicyError::ZeroSetting { key });
        }
        let max_concurrent = self.pool.apply().max_concurrent;
        if let Some(instances) = self.warm.instances
            && instances > max_concurrent
        {
            return Err(PolicyError::WarmAbovePool {
                instances,
                max_concurrent,
            });
        }
        if b.window_calls.is_some() && b.window_seconds.is_some() {
            return Err(PolicyError::Conflict {
                keys: "breaker.window_calls and breaker.window_seconds",
            });
        }
        let percents = [
            ("breaker.failure_rate_percent", b.failure_rate_percent),
            ("breaker.slow_call_rate_percent", b.slow_call_rate_percent),
            ("retry.budget_percent", r.budget_percent),
        ];
        for (key, value) in percents {
            if value.is_some_and(|v| !(0.0..=100.0).contains(&v)) {
                return Err(PolicyError::OutOfRange {
                    key,
                    range: "0 to 100",
                });
            }
        }
        if r.budget_per_second
            .is_some_and(|v| !(0.0..=1e6).contains(&v))
        {
            return Err(PolicyError::OutOfRange {
                key: "retry.budget_per_second",
                range: "0 to 1000000",
            });
        }
        NetPolicy::from_spec(&self.http)?;
        self.filesystem.validate(&self.mounts)?;
        Ok(())
    }
}

/// `/a/b` yes; `a`, `/a/../b`, `/a/./b`, `/` no.
/// Where the per-call scratch directory appears to the guest.
const SCRATCH_GUEST: &str = "/scratch";

/// A clean guest path with repeated and trailing slashes folded (`//data/`
/// is `/data`), so two spellings of one place count as one.
fn normal_guest(guest: &str) -> String {
    let parts: Vec<&str> = guest.split('/').filter(|p| !p.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

fn is_clean_absolute(guest: &str) -> bool {
    let path = Path::new(guest);
    guest.starts_with('/')
        // Not the root, however it is spelled (`/`, `///`).
        && !guest.trim_matches('/').is_empty()
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

    /// A seeded stream of small numbers for generated inputs.
    fn picks(seed: u64) -> impl FnMut(usize) -> usize {
        let rng = crate::Jitter::seeded(seed);
        move |n| ((rng.next_unit() * n as f64) as usize).min(n - 1)
    }

    #[test]
    fn generated_guest_paths_are_accepted_only_when_clean() {
        let parts = [
            "/", "a", "b", ".", "..", "//", "\0", " ", "x.y", "...", "/.",
        ];
        let mut pick = picks(14);
        let mut accepted = 0;
        for _ in 0..20_000 {
            let len = 1 + pick(6);
            let guest: String = (0..len)
                .map(|_| parts[pick(parts.len())].replace("\\0", "\0"))
                .collect();
            let policy = ToolPolicy {
                mounts: vec![Mount::read_only("/srv", &guest)],
                ..ToolPolicy::default()
            };
            let Ok(()) = policy.validate() else { continue };
            accepted += 1;
            assert!(guest.starts_with('/'), "{guest:?}");
            assert!(!guest.contains('\0'), "{guest:?}");
            assert!(!guest.trim_matches('/').is_empty(), "{guest:?}");
            assert!(
                guest.split('/').all(|s| s != "." && s != ".."),
                "accepted a path with a dot segment: {guest:?}"
            );
        }
        assert!(
            accepted > 100,
            "the generator reaches valid paths too ({accepted})"
        );
    }

    #[test]
    fn two_spellings_of_one_guest_path_are_a_duplicate() {
        let policy = ToolPolicy {
            mounts: vec![
                Mount::read_only("/srv/a", "/data"),
                Mount::read_write("/srv/b", "//data/"),
            ],
            ..ToolPolicy::default()
        };
        assert!(matches!(
            policy.validate(),
            Err(PolicyError::DuplicateGuestPath { .. })
        ));
        let root = ToolPolicy {
            mounts: vec![Mount::read_only("/srv/a", "///")],
            ..ToolPolicy::default()
        };
        assert!(matches!(
            root.validate(),
            Err(PolicyError::BadGuestPath { .. })
        ));
    }

    #[test]
    fn overlap_checks_match_a_brute_force_oracle() {
        // A small tree with a sibling that is a string prefix but not a
        // path prefix (`/r/ab` is not inside `/r/a`).
        let tree = ["/r", "/r/a", "/r/a/b", "/r/ab", "/r/b", "/s"];
        let mut pick = picks(2026);
        for _ in 0..5_000 {
            let mode = |p: &mut dyn FnMut(usize) -> usize| {
                if p(2) == 0 {
                    MountMode::ReadOnly
                } else {
                    MountMode::ReadWrite
                }
            };
            let mine: Vec<(PathBuf, MountMode)> = (0..pick(3))
                .map(|_| (PathBuf::from(tree[pick(tree.len())]), mode(&mut pick)))
                .collect();
            let theirs: Vec<(PathBuf, MountMode)> = (0..pick(3))
                .map(|_| (PathBuf::from(tree[pick(tree.len())]), mode(&mut pick)))
                .collect();
            let host_dir = (pick(3) == 0).then(|| PathBuf::from(tree[pick(tree.len())]));
            let others: Vec<GrantedMount<'_>> = theirs
                .iter()
                .map(|(path, mode)| GrantedMount {
                    path,
                    mode: *mode,
                    owner: "tool `other`".into(),
                })
                .collect();
            let dirs: Vec<(&'static str, &Path)> =
                host_dir.iter().map(|d| ("data dir", d.as_path())).collect();
            let got = check_overlaps(&mine, &others, &dirs).is_ok();

            let nested = |a: &Path, b: &Path| a.starts_with(b) || b.starts_with(a);
            let conflict = |(a, ma): &(PathBuf, MountMode),
                            (b, mb): &(PathBuf, MountMode),
                            same_tool: bool| {
                let both_ro = *ma == MountMode::ReadOnly && *mb == MountMode::ReadOnly;
                let shared = !same_tool && a == b;
                nested(a, b) && !both_ro && !shared
            };
            let mut expected = true;
            for (i, m) in mine.iter().enumerate() {
                if host_dir.as_deref().is_some_and(|d| nested(&m.0, d)) {
                    expected = false;
                }
                if mine[..i].iter().any(|o| conflict(m, o, true))
                    || theirs.iter().any(|o| conflict(m, o, false))
                {
                    expected = false;
                }
            }
            assert_eq!(
                got, expected,
                "mine {mine:?}, theirs {theirs:?}, host dir {host_dir:?}"
            );
        }
    }

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
        assert!(matches!(
            err,
            PolicyError::ZeroLimit {
                key: "limits.timeout_ms"
            }
        ));
        let err = ToolPolicy::from_toml("[pool]\nmax_concurrent = 0").expect_err("zero");
        assert!(matches!(
            err,
            PolicyError::ZeroSetting {
                key: "pool.max_concurrent"
            }
        ));
        let err = ToolPolicy::from_toml("[breaker]\nwindow_calls = 5\nwindow_seconds = 5")
            .expect_err("both windows");
        assert!(matches!(err, PolicyError::Conflict { .. }));
        let err =
            ToolPolicy::from_toml("[breaker]\nfailure_rate_percent = 150.0").expect_err("pct");
        assert!(matches!(
            err,
            PolicyError::OutOfRange {
                key: "breaker.failure_rate_percent",
                ..
            }
        ));
        let err = ToolPolicy::from_toml("[retry]\nmax_attemps = 2").expect_err("typo");
        assert!(err.to_string().contains("max_attemps"), "{err}");
    }

    #[test]
    fn http_table_is_checked() {
        let policy = ToolPolicy::from_toml(
            "[http]\nallow = [\"https://api.example.com\", \"http://127.0.0.1:8000-8099\"]\n\
             allow_private = [\"127.0.0.0/8\"]\nmax_requests = 4",
        )
        .expect("valid");
        assert_eq!(policy.http.max_requests, Some(4));
        let err = ToolPolicy::from_toml("[http]\nallow = [\"ftp://x\"]").expect_err("scheme");
        assert!(err.to_string().contains("ftp://x"), "{err}");
        let err = ToolPolicy::from_toml("[http]\nallow_private = [\"10/8\"]").expect_err("cidr");
        assert!(err.to_string().contains("10/8"), "{err}");
        let err = ToolPolicy::from_toml("[http]\nalow = []").expect_err("typo");
        assert!(err.to_string().contains("alow"), "{err}");
    }

    #[test]
    fn resilience_tables_apply_over_the_defaults() {
        let policy = ToolPolicy::from_toml(
            "[pool]\nmax_concurrent = 2\nmax_queue = 8\n[breaker]\nmode = \"metrics-only\"\n\
             window_seconds = 60\nfailure_rate_percent = 25.0\n[retry]\nmax_attempts = 5",
        )
        .expect("valid");
        let timeout = Duration::from_secs(2);
        let pool = policy.pool.apply();
        assert_eq!((pool.max_concurrent, pool.max_queue), (2, 8));
        let breaker = policy.breaker.apply(timeout);
        assert_eq!(breaker.mode, BreakerMode::MetricsOnly);
        assert_eq!(breaker.window, Window::Time(Duration::from_secs(60)));
        assert_eq!(breaker.failure_rate, 0.25);
        assert_eq!(breaker.slow_call_duration, Duration::from_millis(1600));
        let retry = policy.retry.apply(timeout);
        assert_eq!(
            (retry.max_attempts, retry.total_timeout),
            (5, Duration::from_secs(10))
        );
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
