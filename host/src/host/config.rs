//! `cofferdam.toml`: one file for a host (data dir, allowed roots, pool and
//! default limits) and a `[tools.NAME]` table per tool, each a
//! [`ToolPolicy`]. Relative paths are resolved against the file's directory.
//!
//! ```toml
//! data_dir = "data"
//! allowed_roots = ["shared"]
//! max_instances = 256
//! batch_threads = 1     # long computations on at most this many threads
//! compute_threads = 2   # guests on threads of their own, not the service's
//!
//! [store]               # optional: one database for several replicas
//! url = "postgres://cofferdam@db.internal/cofferdam"
//! lease_ms = 15000      # a replica silent this long is dead (default 15 s)
//!
//! [defaults]            # limits for tools that do not set them
//! timeout_ms = 10000
//!
//! [schedules]           # rules for background runs
//! min_interval_minutes = 60
//! quota_per_owner = 50
//! max_run_tokens = 100000
//!
//! [tools.grep]
//! component = "tools/grep.wasm"
//! [[tools.grep.mounts]]
//! host = "shared/docs"
//! guest = "/data"
//! ```
//!
//! It does not run anything: [`HostConfig::check`] finds every problem it can
//! without the components, and [`HostConfig::load`] builds a host and loads
//! the tools (where pins, links and `describe` are checked).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use std::time::Duration;

use crate::model::limits::LimitsSpec;
use crate::policy::tool::{GrantedMount, check_overlaps};
use crate::{
    Host, HostBuilder, LoadError, MountMode, ScheduleConfig, Tokens, ToolDescription, ToolName,
    ToolPolicy,
};

/// A parsed `cofferdam.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Data directory (artifacts, journal, scratch).
    pub data_dir: Option<PathBuf>,
    /// Directories below which mounts are allowed.
    #[serde(default)]
    pub allowed_roots: Vec<PathBuf>,
    /// Instances live at once across all tools.
    pub max_instances: Option<u32>,
    /// Largest memory any tool may have, in MiB.
    pub max_memory_mib: Option<u64>,
    /// Calls demoted to the batch lane that may compute at once (default:
    /// all cores but one); see [`HostBuilder::batch_threads`].
    pub batch_threads: Option<u32>,
    /// Guest computing time, in milliseconds, after which a call is demoted
    /// to the batch lane (default one epoch tick, 10 ms).
    pub cpu_quantum_ms: Option<u64>,
    /// Threads of the host's own that run guest code (default: none, guests
    /// run on the runtime that calls); see [`HostBuilder::compute_threads`].
    pub compute_threads: Option<usize>,
    /// Limits for tools that do not set them.
    #[serde(default)]
    pub defaults: LimitsSpec,
    /// Rules for schedules (background runs).
    #[serde(default)]
    pub schedules: ScheduleTable,
    /// Where durable state lives (default: the redb file in `data_dir`).
    #[serde(default)]
    pub store: StoreTable,
    /// The tools, by name.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolPolicy>,
    /// The MCP clients allowed over HTTP, each a bearer token's digest and
    /// the agent it stands for; with any, every HTTP request needs a token.
    #[serde(default)]
    pub clients: Vec<crate::model::identity::ClientSpec>,
    /// What 1,000 tokens cost: `default = "0.002 USD"` and `[prices.tools]`.
    #[serde(default)]
    pub prices: crate::Prices,
    /// Notification sinks schedules may name (`notify = ["NAME"]`).
    #[serde(default)]
    pub notify: BTreeMap<String, crate::model::notify::NotifySpec>,
    /// The identity of the MCP client over stdio (default: none; its
    /// `_meta` says who it is, and it manages nothing).
    #[serde(default)]
    pub stdio: Option<crate::model::identity::StdioSpec>,
    /// How the MCP server answers (`[mcp]`).
    #[serde(default)]
    pub mcp: McpTable,
}

/// `[mcp]`: how `cofferdam serve` answers MCP clients. Applied again when
/// the file is reloaded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpTable {
    /// The largest output, in bytes, a successful `tools/call` also returns
    /// as `structuredContent` (default: no limit). A larger one comes as
    /// text content only, with `_meta.structuredOmitted = true`: the reply
    /// then carries the output once instead of twice.
    pub max_structured_bytes: Option<u64>,
}

/// The webhook `spec` describes, its secret read from the environment.
fn webhook(spec: &crate::model::notify::NotifySpec) -> Result<crate::Webhook, String> {
    let secret = std::env::var(&spec.secret_env).map_err(|_| {
        format!(
            "secret_env: the environment variable {} is not set (it holds the signing secret)",
            spec.secret_env
        )
    })?;
    let mut hook = crate::Webhook::new(&spec.url, secret);
    for range in &spec.allow_private {
        hook = hook.allow_private(range);
    }
    if !spec.events.is_empty() {
        hook = hook.events(spec.events.iter().copied());
    }
    if let Some(ms) = spec.timeout_ms {
        hook = hook.timeout(Duration::from_millis(ms));
    }
    if let Some(n) = spec.max_attempts {
        hook = hook.max_attempts(n);
    }
    Ok(hook)
}

/// `[store]`: a database shared by every replica instead of the embedded
/// redb file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreTable {
    /// `postgres://user[:password]@host[:port]/database`.
    pub url: Option<String>,
    /// How long a replica's keys and reservations outlive its last
    /// heartbeat, in ms (default 15000); see [`crate::PostgresConfig::lease`].
    pub lease_ms: Option<u64>,
}

/// `[schedules]`: the host's rules for background runs; unset keys keep the
/// [`ScheduleConfig`] defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleTable {
    /// Shortest time between two runs of a schedule, in minutes (default 60).
    pub min_interval_minutes: Option<u64>,
    /// Schedules one owner may have (default 50).
    pub quota_per_owner: Option<usize>,
    /// Largest per-run budget, in tokens (default 100000).
    pub max_run_tokens: Option<u64>,
    /// Run timeout of schedules that do not set one, in ms (default 300000).
    pub default_timeout_ms: Option<u64>,
    /// Longest run timeout a schedule may set, in ms (default 3600000).
    pub max_timeout_ms: Option<u64>,
    /// Failed runs in a row that pause a schedule (default 3).
    pub failures_before_pause: Option<u32>,
    /// How late a slot may start and count as on time, in ms (default 300000).
    pub misfire_grace_ms: Option<u64>,
}

impl ScheduleTable {
    /// These settings over `base`.
    pub fn apply(&self, base: ScheduleConfig) -> ScheduleConfig {
        let ms = Duration::from_millis;
        ScheduleConfig {
            min_interval: self
                .min_interval_minutes
                .map_or(base.min_interval, |m| Duration::from_secs(m * 60)),
            quota_per_owner: self.quota_per_owner.unwrap_or(base.quota_per_owner),
            max_run_budget: self.max_run_tokens.map_or(base.max_run_budget, Tokens),
            default_timeout: self.default_timeout_ms.map_or(base.default_timeout, ms),
            max_timeout: self.max_timeout_ms.map_or(base.max_timeout, ms),
            failures_before_pause: self
                .failures_before_pause
                .unwrap_or(base.failures_before_pause),
            misfire_grace: self.misfire_grace_ms.map_or(base.misfire_grace, ms),
        }
    }

    /// Keys set to zero (none of them may be).
    fn zeros(&self) -> Vec<&'static str> {
        [
            ("min_interval_minutes", self.min_interval_minutes == Some(0)),
            ("quota_per_owner", self.quota_per_owner == Some(0)),
            ("default_timeout_ms", self.default_timeout_ms == Some(0)),
            ("max_timeout_ms", self.max_timeout_ms == Some(0)),
            (
                "failures_before_pause",
                self.failures_before_pause == Some(0),
            ),
        ]
        .into_iter()
        .filter_map(|(key, zero)| zero.then_some(key))
        .collect()
    }
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown key (named in the message).
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with the key and line.
        message: String,
    },
}

/// One problem [`HostConfig::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where: `tools.grep`, `allowed_roots`, …
    pub at: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

impl HostConfig {
    /// Parses a config file, resolving relative paths against its directory.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Self = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(dir) = &mut config.data_dir {
            rebase(dir);
        }
        config.allowed_roots.iter_mut().for_each(rebase);
        for policy in config.tools.values_mut() {
            if let Some(component) = &mut policy.component {
                rebase(component);
            }
            for mount in &mut policy.mounts {
                rebase(&mut mount.host);
            }
        }
        Ok(config)
    }

    /// Every problem that can be found without loading the components:
    /// tool names, missing components, policy errors, missing roots. Empty
    /// when the config is usable as far as that goes.
    pub fn check(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut push = |at: String, message: String| problems.push(ConfigProblem { at, message });
        for root in &self.allowed_roots {
            if !root.is_dir() {
                push(
                    "allowed_roots".into(),
                    format!("{} is not a directory", root.display()),
                );
            }
        }
        if let Some(url) = &self.store.url
            && let Err(e) = crate::StoreConfig::from_url(url)
        {
            push("store.url".into(), e.to_string());
        }
        if self.store.lease_ms.is_some() && self.store.url.is_none() {
            push(
                "store.lease_ms".into(),
                "only a shared store has leases: set store.url".into(),
            );
        }
        for key in self.schedules.zeros() {
            push(format!("schedules.{key}"), "must be above zero".into());
        }
        if let Err(e) = self.prices.check() {
            push("prices".into(), e.to_string());
        }
        for (name, spec) in &self.notify {
            if let Err(e) = webhook(spec).and_then(|hook| {
                crate::runtime::webhook::Sink::new(&hook).map_err(|e| e.to_string())
            }) {
                push(format!("notify.{name}"), e);
            }
        }
        if let Err(e) = crate::model::identity::parse_clients(&self.clients) {
            push("clients".into(), e.to_string());
        }
        if let Some(stdio) = &self.stdio
            && (stdio.agent.is_empty() || stdio.agent.chars().any(char::is_control))
        {
            push(
                "stdio.agent".into(),
                "must be printable and not empty".into(),
            );
        }
        for name in self.tools.keys() {
            if crate::model::identity::is_reserved(name) {
                push(
                    format!("tools.{name}"),
                    "is the name of an MCP management tool; choose another".into(),
                );
            }
        }
        let rules = self.schedules.apply(ScheduleConfig::default());
        if rules.default_timeout > rules.max_timeout {
            push(
                "schedules.default_timeout_ms".into(),
                "is above schedules.max_timeout_ms".into(),
            );
        }
        let data_dir = self.data_dir.as_ref().and_then(|d| d.canonicalize().ok());
        let mut granted: Vec<(String, Vec<(PathBuf, MountMode)>)> = Vec::new();
        for (name, policy) in &self.tools {
            let at = format!("tools.{name}");
            if let Err(e) = ToolName::new(name) {
                push(at.clone(), e.to_string());
            }
            match &policy.component {
                None => push(at.clone(), "no `component`".into()),
                Some(path) if !path.is_file() => {
                    push(
                        at.clone(),
                        format!("component {} does not exist", path.display()),
                    );
                }
                Some(_) => {}
            }
            if let Err(e) = policy.validate() {
                push(at.clone(), e.to_string());
            }
            for fallback in &policy.fallbacks {
                if fallback.as_str() == name {
                    push(at.clone(), "lists itself in `fallbacks`".into());
                } else if !self.tools.contains_key(fallback.as_str()) {
                    push(
                        format!("{at}.fallbacks"),
                        format!("no tool `{fallback}` in this config"),
                    );
                }
            }
            let roots: Vec<PathBuf> = self
                .allowed_roots
                .iter()
                .filter_map(|r| r.canonicalize().ok())
                .collect();
            let mut mine = Vec::new();
            for mount in &policy.mounts {
                match crate::policy::tool::resolve_mount(mount, &roots) {
                    Ok(path) => mine.push((path, mount.mode)),
                    Err(e) => push(at.clone(), e.to_string()),
                }
            }
            // Overlaps within this tool, with tools checked before it, and
            // with the host's data dir.
            let others: Vec<GrantedMount<'_>> = granted
                .iter()
                .flat_map(|(tool, mounts): &(String, Vec<(PathBuf, MountMode)>)| {
                    mounts.iter().map(move |(path, mode)| GrantedMount {
                        path,
                        mode: *mode,
                        owner: format!("tool `{tool}`"),
                    })
                })
                .collect();
            let host_dirs: Vec<(&'static str, &Path)> =
                data_dir.iter().map(|d| ("data dir", d.as_path())).collect();
            if let Err(e) = check_overlaps(&mine, &others, &host_dirs) {
                push(at.clone(), e.to_string());
            }
            drop(others);
            granted.push((name.clone(), mine));
        }
        problems
    }

    /// A host builder with this config's settings.
    pub fn builder(&self) -> HostBuilder {
        let mut builder =
            Host::builder().default_limits(self.defaults.apply(crate::Limits::default()));
        builder = builder.prices(self.prices.clone());
        for (name, spec) in &self.notify {
            builder = match webhook(spec) {
                Ok(hook) => builder.notify(name, hook),
                Err(reason) => builder.notify_invalid(name, reason),
            };
        }
        if let Some(dir) = &self.data_dir {
            builder = builder.data_dir(dir);
        }
        if let Some(url) = &self.store.url {
            if let Some(ms) = self.store.lease_ms {
                let config = crate::PostgresConfig::new(url).lease(Duration::from_millis(ms));
                builder = builder.store(crate::StoreConfig::Postgres(config));
            }
            // After `store`: checks the URL, keeping the settings above.
            builder = builder.store_url(url);
        }
        for root in &self.allowed_roots {
            builder = builder.allow_root(root);
        }
        if let Some(n) = self.max_instances {
            builder = builder.max_instances(n);
        }
        if let Some(mib) = self.max_memory_mib {
            builder = builder.max_memory_bytes(mib << 20);
        }
        if let Some(threads) = self.batch_threads {
            builder = builder.batch_threads(threads);
        }
        if let Some(ms) = self.cpu_quantum_ms {
            builder = builder.cpu_quantum(std::time::Duration::from_millis(ms));
        }
        if let Some(threads) = self.compute_threads {
            builder = builder.compute_threads(threads);
        }
        builder.schedule_config(self.schedules.apply(ScheduleConfig::default()))
    }

    /// Loads every tool into `host` under its table's name, and reports each
    /// tool's result (a failing tool does not stop the others).
    pub async fn load(&self, host: &Host) -> Vec<(String, Result<ToolDescription, LoadError>)> {
        let mut results = Vec::with_capacity(self.tools.len());
        for (name, policy) in &self.tools {
            let result = async {
                let (component, policy) = named(name, policy)?;
                host.load_file(&component, policy).await
            }
            .await;
            results.push((name.clone(), result));
        }
        results
    }

    /// Brings `host`, loaded from `previous`, in line with this config:
    /// tools no longer listed are unloaded, new ones loaded, and those whose
    /// table or component file changed are replaced (running calls finish on
    /// the old version). A tool that fails to load keeps its old version.
    /// Host-wide settings cannot change without a restart; they are reported.
    pub async fn reload(&self, host: &Host, previous: &HostConfig) -> ReloadReport {
        let mut report = ReloadReport::default();
        let host_wide = [
            ("data_dir", self.data_dir != previous.data_dir),
            ("store", self.store != previous.store),
            (
                "allowed_roots",
                self.allowed_roots != previous.allowed_roots,
            ),
            (
                "max_instances",
                self.max_instances != previous.max_instances,
            ),
            (
                "max_memory_mib",
                self.max_memory_mib != previous.max_memory_mib,
            ),
            (
                "batch_threads",
                self.batch_threads != previous.batch_threads,
            ),
            (
                "cpu_quantum_ms",
                self.cpu_quantum_ms != previous.cpu_quantum_ms,
            ),
            (
                "compute_threads",
                self.compute_threads != previous.compute_threads,
            ),
            ("defaults", self.defaults != previous.defaults),
            ("schedules", self.schedules != previous.schedules),
        ];
        report.needs_restart = host_wide
            .into_iter()
            .filter_map(|(key, changed)| changed.then_some(key))
            .collect();
        for name in previous.tools.keys() {
            if !self.tools.contains_key(name) && host.unload(name) {
                report.removed.push(name.clone());
            }
        }
        for (name, policy) in &self.tools {
            let loaded = host.tool(name);
            let result = async {
                let (component, named_policy) = named(name, policy)?;
                let Some(loaded) = loaded else {
                    return host
                        .load_file(&component, named_policy)
                        .await
                        .map(|_| Some(true));
                };
                let bytes =
                    tokio::fs::read(&component)
                        .await
                        .map_err(|source| LoadError::Read {
                            path: component.clone(),
                            source,
                        })?;
                let same_file = hex::encode(Sha256::digest(&bytes)) == loaded.digest;
                if same_file && previous.tools.get(name) == Some(policy) {
                    // Unchanged, but its mounts must still be the directories
                    // pinned at load: a path swapped for a symlink is named,
                    // never followed (the tool keeps its pinned mounts).
                    host.verify_mounts(name, &policy.mounts)?;
                    return Ok(None);
                }
                host.replace_file(&component, named_policy)
                    .await
                    .map(|_| Some(false))
            }
            .await;
            match result {
                Ok(Some(true)) => report.added.push(name.clone()),
                Ok(Some(false)) => report.updated.push(name.clone()),
                Ok(None) => {}
                Err(error) => report.failed.push((name.clone(), error)),
            }
        }
        report
    }
}

/// The component path and policy of `[tools.NAME]`, registered as `NAME`.
fn named(name: &str, policy: &ToolPolicy) -> Result<(PathBuf, ToolPolicy), LoadError> {
    let tool_name = ToolName::new(name).map_err(|e| LoadError::BadToolInfo {
        reason: e.to_string(),
    })?;
    let component = policy.component.clone().ok_or(LoadError::NoComponent)?;
    Ok((
        component,
        ToolPolicy {
            name: Some(tool_name),
            ..policy.clone()
        },
    ))
}

/// What [`HostConfig::reload`] changed.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ReloadReport {
    /// Tools loaded for the first time.
    pub added: Vec<String>,
    /// Tools replaced by a new version or policy.
    pub updated: Vec<String>,
    /// Tools unloaded.
    pub removed: Vec<String>,
    /// Tools that failed to load; a replaced tool keeps its old version.
    pub failed: Vec<(String, LoadError)>,
    /// Host-wide keys that changed but take effect only on restart.
    pub needs_restart: Vec<&'static str>,
}

impl ReloadReport {
    /// Whether the set of tools or any tool changed.
    pub fn tools_changed(&self) -> bool {
        !(self.added.is_empty() && self.updated.is_empty() && self.removed.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn paths_are_relative_to_the_file_and_tables_become_policies() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("docs")).expect("mkdir");
        write(dir.path(), "grep.wasm", "");
        let file = write(
            dir.path(),
            "cofferdam.toml",
            "data_dir = \"data\"\nallowed_roots = [\".\"]\n[defaults]\ntimeout_ms = 5000\n\
             [tools.grep]\ncomponent = \"grep.wasm\"\n[[tools.grep.mounts]]\nhost = \"docs\"\nguest = \"/data\"\n",
        );
        let config = HostConfig::from_file(&file).expect("valid");
        assert_eq!(config.data_dir, Some(dir.path().join("data")));
        assert_eq!(
            config.tools["grep"].component,
            Some(dir.path().join("grep.wasm"))
        );
        assert_eq!(config.tools["grep"].mounts[0].host, dir.path().join("docs"));
        assert_eq!(config.defaults.timeout_ms, Some(5000));
        assert_eq!(config.check(), Vec::new());
    }

    #[test]
    fn the_batch_lane_is_sized_from_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(
            dir.path(),
            "cofferdam.toml",
            "batch_threads = 3\ncpu_quantum_ms = 5\n",
        );
        let config = HostConfig::from_file(&file).expect("valid");
        assert_eq!(
            (config.batch_threads, config.cpu_quantum_ms),
            (Some(3), Some(5))
        );
        let host = config.builder().build().expect("host");
        assert_eq!(host.lane_stats().batch_threads, 3);
    }

    #[test]
    fn compute_threads_size_the_batch_lane_when_it_is_not_set() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "cofferdam.toml", "compute_threads = 3\n");
        let config = HostConfig::from_file(&file).expect("valid");
        assert_eq!(config.compute_threads, Some(3));
        let host = config.builder().build().expect("host");
        assert_eq!(host.compute_threads(), Some(3));
        assert_eq!(host.lane_stats().batch_threads, 2);
    }

    #[test]
    fn unknown_keys_are_named_with_their_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(
            dir.path(),
            "c.toml",
            "[tools.grep]\ncomponent = \"g.wasm\"\ntimout_ms = 5\n",
        );
        let error = HostConfig::from_file(&file).expect_err("typo");
        assert!(error.to_string().contains("timout_ms"), "{error}");
        let file = write(dir.path(), "m.toml", "[mcp]\nmax_structured = 5\n");
        let error = HostConfig::from_file(&file).expect_err("typo");
        assert!(error.to_string().contains("max_structured"), "{error}");
        let file = write(dir.path(), "n.toml", "[mcp]\nmax_structured_bytes = 5\n");
        let config = HostConfig::from_file(&file).expect("parses");
        assert_eq!(config.mcp.max_structured_bytes, Some(5));
        let file = write(dir.path(), "d.toml", "dat_dir = \"x\"\n");
        assert!(
            HostConfig::from_file(&file)
                .expect_err("typo")
                .to_string()
                .contains("dat_dir")
        );
    }

    #[test]
    fn check_names_every_problem_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(
            dir.path(),
            "c.toml",
            "allowed_roots = [\"nope\"]\n[tools.Bad]\ncomponent = \"missing.wasm\"\n\
             [tools.ok]\ncomponent = \"missing2.wasm\"\n[tools.ok.limits]\ntimeout_ms = 0\n\
             [[tools.ok.mounts]]\nhost = \"/\"\nguest = \"/root\"\n",
        );
        let problems = HostConfig::from_file(&file).expect("parses").check();
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let has = |needle: &str| text.iter().any(|t| t.contains(needle));
        assert!(has("allowed_roots"), "{text:#?}");
        assert!(has("tools.Bad: invalid tool name"), "{text:#?}");
        assert!(has("missing.wasm does not exist"), "{text:#?}");
        assert!(has("tools.ok: limit `limits.timeout_ms`"), "{text:#?}");
        assert!(has("outside the host's allowed roots"), "{text:#?}");
        assert_eq!(problems.len(), 6, "{text:#?}");
    }

    #[test]
    fn the_store_table_names_a_shared_database_and_a_bad_url_is_a_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(
            dir.path(),
            "c.toml",
            "[store]\nurl = \"postgres://app@db.internal/cofferdam\"\n",
        );
        let config = HostConfig::from_file(&file).expect("valid");
        assert_eq!(
            config.store.url.as_deref(),
            Some("postgres://app@db.internal/cofferdam")
        );
        assert_eq!(config.check(), Vec::new());
        let file = write(
            dir.path(),
            "d.toml",
            "[store]\nurl = \"mysql://app:s3cret@db/x\"\n",
        );
        let problems = HostConfig::from_file(&file).expect("parses").check();
        assert_eq!(problems.len(), 1, "{problems:?}");
        let text = problems[0].to_string();
        assert!(
            text.contains("store.url") && text.contains("mysql://app:***@db/x"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        let file = write(dir.path(), "e.toml", "[store]\nuri = \"postgres://x/y\"\n");
        let error = HostConfig::from_file(&file).expect_err("typo");
        assert!(error.to_string().contains("uri"), "{error}");
    }

    #[test]
    fn the_store_lease_is_set_in_ms_and_kept_when_the_url_is_overridden() {
        use crate::{PostgresConfig, StoreConfig};
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(
            dir.path(),
            "c.toml",
            "[store]\nurl = \"postgres://app@db/one\"\nlease_ms = 900\n",
        );
        let config = HostConfig::from_file(&file).expect("valid");
        assert_eq!(config.check(), Vec::new());
        let lease = Duration::from_millis(900);
        let expected = |url| StoreConfig::Postgres(PostgresConfig::new(url).lease(lease));
        assert_eq!(
            config.builder().store_config().expect("store"),
            expected("postgres://app@db/one")
        );
        // `--store` names another database; the lease still holds there.
        assert_eq!(
            config
                .builder()
                .store_url("postgres://app@db/two")
                .store_config()
                .expect("store"),
            expected("postgres://app@db/two")
        );
        let file = write(dir.path(), "d.toml", "[store]\nlease_ms = 900\n");
        let problems = HostConfig::from_file(&file).expect("parses").check();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].to_string().contains("store.lease_ms"),
            "{problems:?}"
        );
    }
}
