//! [`Host`]: loads tools and calls them. The registry of loaded tools and the
//! shared engine, linker and artifact cache live here; each call's work is in
//! [`crate::runtime::attempt`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::budget::{Budgets, ScopeId};
use crate::model::error::JournalError;
use crate::model::journal::{
    AttemptRecord, Claim, Fingerprint, HistoryQuery, JournalEntry, JournalKey, Reservation,
    Reserved, StoredOutcome, totals,
};
use crate::model::units::unix_millis;
use crate::orchestration::escalation::{EscalationReason, Escalations, NewEscalation};
use crate::orchestration::schedule::{ScheduleConfig, Schedules};
use crate::orchestration::task::Tasks;
use crate::policy::tool::{DEFAULT_FALLBACK_ON, GrantedMount, check_overlaps, resolve_mount};
use crate::resilience::breaker::{Breaker, Refused, Verdict};
use crate::resilience::bulkhead::Bulkhead;
use crate::resilience::classify::{disposition, may_retry};
use crate::resilience::clock::{Clock, Jitter, SystemClock, SystemWallClock, WallClock};
use crate::resilience::retry::{RetryBudget, RetryConfig};
use crate::runtime::attempt::{Attempt, Execution, Export, Returned};
use crate::runtime::bindings::ToolPre;
use crate::runtime::bindings::cofferdam::tool::types as wit;
use crate::runtime::component_cache::{ArtifactInfo, ArtifactSource, ComponentCache};
use crate::runtime::engine::{self, EngineSettings};
use crate::runtime::fs_guard::{self, FsRules};
use crate::runtime::host_api::{self, LogRecord, ProgressSink};
use crate::runtime::net::{HttpStats, NetPolicy};
use crate::runtime::sandbox::{CallState, Grants, PinnedDir, ResolvedMount, ScratchRoot};
use crate::runtime::warm::{WarmPool, WarmStats};
use crate::store::Store;
use crate::store::redb::RedbStore;
use crate::surfaces::metrics::{Metrics, ToolMetrics};
use crate::{
    BreakerMode, BreakerSnapshot, BreakerState, BuildError, CallError, Effect, ErrorClass, Fuel,
    Limits, LoadError, PolicyError, TokenPrice, Tokens, ToolName, ToolPolicy,
};

/// Configures a [`Host`]. Every default denies or bounds:
///
/// | setting | default |
/// |---|---|
/// | [`data_dir`](Self::data_dir) | none: components compile in memory at every load, and the journal (idempotency, budgets, audit) lives in memory |
/// | [`artifact_dir`](Self::artifact_dir) | `<data_dir>/artifacts` |
/// | [`group_commit`](Self::group_commit) | on |
/// | [`retention`](Self::retention) | 24 h for finished idempotency records |
/// | [`allow_root`](Self::allow_root) | none: any policy with mounts is refused |
/// | [`default_limits`](Self::default_limits) | [`Limits::default()`] (fuel 2e9, 30 s, 128 MiB, 1 MiB output…) |
/// | [`token_price`](Self::token_price) | [`TokenPrice::default()`] (100,000 fuel or 4 output bytes per token) |
/// | [`max_instances`](Self::max_instances) | 256 instances live at once, across all tools |
/// | [`max_memory_bytes`](Self::max_memory_bytes) | 1 GiB: no tool's memory limit may exceed it |
/// | [`max_wasm_stack`](Self::max_wasm_stack) | 512 KiB of wasm stack per call |
/// | [`epoch_tick`](Self::epoch_tick) | 10 ms between deadline checks |
/// | [`clock`](Self::clock) | the system clock |
/// | [`wall_clock`](Self::wall_clock) | the system calendar clock (schedules) |
/// | [`schedule_config`](Self::schedule_config) | [`ScheduleConfig::default()`] (60 min apart, 50 per owner, 3 failures pause…) |
/// | [`jitter_seed`](Self::jitter_seed) | seeded from the time |
///
/// Each tool also gets a bulkhead (4 concurrent calls, 16 more queued for up
/// to 1 s), a circuit
/// breaker and a retry policy with the DESIGN §6 defaults, which its policy's
/// `[pool]`, `[breaker]` and `[retry]` tables can change.
///
/// Tools get no files, no environment variables and no network unless their
/// [`ToolPolicy`] grants them.
#[derive(Debug, Clone)]
pub struct HostBuilder {
    data_dir: Option<PathBuf>,
    allowed_roots: Vec<PathBuf>,
    limits: Limits,
    price: TokenPrice,
    engine: EngineSettings,
    clock: Option<Arc<dyn Clock>>,
    jitter_seed: Option<u64>,
    artifact_dir: Option<PathBuf>,
    group_commit: bool,
    retention: Duration,
    wall_clock: Option<Arc<dyn WallClock>>,
    schedules: ScheduleConfig,
}

impl Default for HostBuilder {
    fn default() -> Self {
        Self {
            data_dir: None,
            allowed_roots: Vec::new(),
            limits: Limits::default(),
            price: TokenPrice::default(),
            engine: EngineSettings {
                max_instances: 256,
                max_memory_bytes: 1 << 30,
                max_wasm_stack: 512 << 10,
                epoch_tick: Duration::from_millis(10),
            },
            clock: None,
            jitter_seed: None,
            artifact_dir: None,
            group_commit: true,
            retention: Duration::from_secs(24 * 3600),
            wall_clock: None,
            schedules: ScheduleConfig::default(),
        }
    }
}

impl HostBuilder {
    /// A builder with the defaults above.
    pub fn new() -> Self {
        Self::default()
    }

    /// Directory for precompiled artifacts and per-call scratch directories;
    /// it must be writable only by the host's user.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Allows mounts of `dir` and anything below it. Call once per root.
    pub fn allow_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.allowed_roots.push(dir.into());
        self
    }

    /// Limits for tools whose policy does not set them.
    pub fn default_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How fuel and output bytes are priced in tokens.
    pub fn token_price(mut self, price: TokenPrice) -> Self {
        self.price = price;
        self
    }

    /// Instances that may be live at once across all tools (pool size).
    pub fn max_instances(mut self, count: u32) -> Self {
        self.engine.max_instances = count;
        self
    }

    /// Largest linear memory any tool may have (pool slot size).
    pub fn max_memory_bytes(mut self, bytes: u64) -> Self {
        self.engine.max_memory_bytes = bytes;
        self
    }

    /// Wasm stack available to each call.
    pub fn max_wasm_stack(mut self, bytes: usize) -> Self {
        self.engine.max_wasm_stack = bytes;
        self
    }

    /// Interval between deadline checks for guests that compute.
    pub fn epoch_tick(mut self, tick: Duration) -> Self {
        self.engine.epoch_tick = tick;
        self
    }

    /// The clock breakers, backoff and retry budgets run on (deadlines of
    /// running guests always use real time). Tests pass a [`crate::ManualClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The calendar clock schedules run on. Tests pass a
    /// [`crate::ManualWallClock`].
    pub fn wall_clock(mut self, clock: Arc<dyn WallClock>) -> Self {
        self.wall_clock = Some(clock);
        self
    }

    /// Rules for schedules: minimum interval, owner quota, run budgets and
    /// timeouts, auto-pause; see [`ScheduleConfig`].
    pub fn schedule_config(mut self, config: ScheduleConfig) -> Self {
        self.schedules = config;
        self
    }

    /// Where precompiled artifacts live, instead of `<data_dir>/artifacts`
    /// (several hosts may share one artifact directory).
    pub fn artifact_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.artifact_dir = Some(dir.into());
        self
    }

    /// Whether journal writes of concurrent calls share one commit (default
    /// on). Off, every durable write commits alone: for measuring only.
    pub fn group_commit(mut self, enabled: bool) -> Self {
        self.group_commit = enabled;
        self
    }

    /// How long finished idempotency records are kept (default 24 h).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Seeds the jitter of backoffs and open periods, for reproducible runs.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = Some(seed);
        self
    }

    /// Builds the host: engine, epoch ticker, linker, artifact cache.
    pub fn build(self) -> Result<Host, BuildError> {
        let mut roots = Vec::with_capacity(self.allowed_roots.len());
        for root in &self.allowed_roots {
            let canonical = root
                .canonicalize()
                .map_err(|source| BuildError::AllowedRoot {
                    path: root.clone(),
                    source,
                })?;
            roots.push(canonical);
        }
        if let Some(dir) = &self.data_dir {
            std::fs::create_dir_all(dir).map_err(|source| BuildError::DataDir {
                path: dir.clone(),
                source,
            })?;
        }
        let engine = engine::build(&self.engine)?;
        engine::start_epoch_ticker(&engine, self.engine.epoch_tick);
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|()| fs_guard::add_to_linker(&mut linker))
            .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
            .and_then(|()| host_api::add_to_linker(&mut linker))
            .map_err(|e| BuildError::Engine(e.into_boxed_dyn_error()))?;
        let artifact_dir = self
            .artifact_dir
            .clone()
            .or_else(|| self.data_dir.as_ref().map(|d| d.join("artifacts")));
        let cache = ComponentCache::new(&engine, artifact_dir);
        let store: Arc<dyn Store> = match &self.data_dir {
            Some(dir) => Arc::new(RedbStore::open(
                &dir.join("journal.redb"),
                self.group_commit,
            )?),
            None => Arc::new(RedbStore::in_memory()?),
        };
        let scratch =
            ScratchRoot::open(self.data_dir.as_deref()).map_err(|source| BuildError::DataDir {
                path: self.data_dir.clone().unwrap_or_else(std::env::temp_dir),
                source,
            })?;
        let scratch_root = scratch.path().to_owned();
        Ok(Host {
            inner: Arc::new(Inner {
                engine,
                linker,
                cache,
                roots,
                limits: self.limits,
                price: self.price,
                max_memory_bytes: self.engine.max_memory_bytes,
                scratch_root,
                _scratch: scratch,
                data_dir: self.data_dir.clone(),
                data_dir_canonical: self.data_dir.as_ref().and_then(|d| d.canonicalize().ok()),
                max_instances: self.engine.max_instances,
                clock: self
                    .clock
                    .unwrap_or_else(|| Arc::new(SystemClock::default())),
                jitter: Arc::new(match self.jitter_seed {
                    Some(seed) => Jitter::seeded(seed),
                    None => Jitter::from_entropy(),
                }),
                store,
                budget_settled: tokio::sync::Notify::new(),
                retention: self.retention,
                last_reap_ms: AtomicU64::new(0),
                tools: RwLock::new(HashMap::new()),
                metrics: Metrics::default(),
                tasks_running: Arc::default(),
                wall_clock: self.wall_clock.unwrap_or_else(|| Arc::new(SystemWallClock)),
                schedules: self.schedules,
            }),
        })
    }
}

/// Runs tools. Cheap to clone; clones share the engine and loaded tools.
///
/// Calls must run inside a tokio runtime with the time driver enabled
/// (`enable_time` or `enable_all`): deadlines, backoff and journal upkeep use
/// it. Dropping the last clone waits for the journal to commit what it holds.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use cofferdam::{CallRequest, Host, ToolPolicy};
/// let host = Host::builder().data_dir("/var/lib/cofferdam").build()?;
/// let tool = host.load_file("hello.wasm".as_ref(), ToolPolicy::default()).await?;
/// let outcome = host.call(CallRequest::new(tool.name.as_str(), r#"{"name":"Ada"}"#)).await?;
/// println!("{} ({} fuel)", outcome.output, outcome.fuel_used.0);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<CallState>,
    cache: ComponentCache,
    roots: Vec<PathBuf>,
    limits: Limits,
    price: TokenPrice,
    max_memory_bytes: u64,
    scratch_root: PathBuf,
    /// Keeps `scratch_root` locked (or, without a data dir, alive).
    _scratch: ScratchRoot,
    data_dir: Option<PathBuf>,
    /// The data dir as a canonical path, for mount overlap checks.
    data_dir_canonical: Option<PathBuf>,
    max_instances: u32,
    clock: Arc<dyn Clock>,
    jitter: Arc<Jitter>,
    /// Durable state: idempotency, budgets, audit, escalations, tasks, schedules.
    store: Arc<dyn Store>,
    /// Woken whenever this process settles a reservation, for calls waiting
    /// on a budget that other calls hold.
    budget_settled: tokio::sync::Notify,
    retention: Duration,
    last_reap_ms: AtomicU64,
    tools: RwLock<HashMap<ToolName, Arc<LoadedTool>>>,
    metrics: Metrics,
    tasks_running: Arc<std::sync::Mutex<HashMap<String, CancellationToken>>>,
    wall_clock: Arc<dyn WallClock>,
    schedules: ScheduleConfig,
}

struct LoadedTool {
    description: ToolDescription,
    pre: ToolPre<CallState>,
    grants: Grants,
    limits: Limits,
    breaker: Arc<Breaker>,
    bulkhead: Bulkhead,
    retry: RetryConfig,
    retry_budget: RetryBudget,
    invocations: AtomicU64,
    /// The tool name's counters, shared with earlier and later versions.
    metrics: Arc<ToolMetrics>,
    /// Idle instances kept for the next calls (`[warm]`), if it reuses them.
    warm: Option<Arc<WarmPool>>,
}

/// What a loaded tool is: its self-description plus what the host made of it.
#[derive(Debug, Clone, Serialize)]
pub struct ToolDescription {
    /// Name it is called by.
    pub name: ToolName,
    /// The tool's version.
    pub version: String,
    /// What the tool does.
    pub description: String,
    /// JSON Schema of the input.
    pub input_schema: serde_json::Value,
    /// Effect class in force (the policy's override, else the declared one).
    pub effect: Effect,
    /// Effect class the tool declares.
    pub declared_effect: Effect,
    /// SHA-256 of the component, hex.
    pub digest: String,
    /// Interfaces the component imports.
    pub imports: Vec<String>,
    /// Where its native code came from and how long that took.
    pub artifact: ArtifactInfo,
    /// Background (scheduled) runs refuse it; see [`ToolPolicy::sensitive`].
    pub sensitive: bool,
    /// Tools tried in order when a call fails in a `fallback_on` class.
    pub fallbacks: Vec<ToolName>,
    /// The classes that send a call to the fallbacks.
    pub fallback_on: Vec<ErrorClass>,
    /// Tokens one call may spend at most, when capped by policy.
    pub max_tokens_per_call: Option<Tokens>,
}

/// A call to make. Build with [`CallRequest::new`] and struct update syntax:
///
/// ```
/// # use cofferdam::{CallRequest, Fuel};
/// let request = CallRequest { fuel: Some(Fuel(1_000_000)), ..CallRequest::new("hello", "{}") };
/// ```
#[derive(Clone)]
pub struct CallRequest {
    /// Tool to call.
    pub tool: String,
    /// Input, as JSON text.
    pub input: String,
    /// Identifier of the call, stable across attempts; generated when `None`.
    pub call_id: Option<String>,
    /// Task the call belongs to, passed to the tool; also a budget scope.
    pub task_id: Option<String>,
    /// Agent making the call: a budget scope, and the idempotency scope
    /// when no tenant is given.
    pub agent: Option<String>,
    /// Tenant of the embedding service: the outermost budget scope and the
    /// idempotency scope.
    pub tenant: Option<String>,
    /// Idempotency key (1–255 bytes): the same key and input run once; a
    /// repeat gets the stored outcome.
    pub idempotency_key: Option<String>,
    /// Tokens this call may spend at most, across its attempts.
    pub max_tokens: Option<Tokens>,
    /// Fuel for this call; capped at the tool's limit.
    pub fuel: Option<Fuel>,
    /// Deadline for this call; capped at the tool's limit.
    pub timeout: Option<Duration>,
    /// Receives the tool's progress reports.
    pub progress: Option<ProgressSink>,
    /// Cancelling it stops the call wherever it is: waiting for a bulkhead
    /// slot, backing off, or running (the guest is stopped at its next
    /// yield). The call fails with `Cancelled`, or `UnknownOutcome` when a
    /// side-effecting tool was stopped mid-run.
    pub cancel: Option<CancellationToken>,
}

impl CallRequest {
    /// A request with only the tool and input set.
    pub fn new(tool: &str, input: impl Into<String>) -> Self {
        Self {
            tool: tool.to_owned(),
            input: input.into(),
            call_id: None,
            task_id: None,
            agent: None,
            tenant: None,
            idempotency_key: None,
            max_tokens: None,
            fuel: None,
            timeout: None,
            progress: None,
            cancel: None,
        }
    }
}

impl CallRequest {
    /// The capped-or-not budget scopes of this call, outermost first.
    fn scopes(&self) -> Vec<ScopeId> {
        let mut scopes = Vec::new();
        if let Some(t) = &self.tenant {
            scopes.push(ScopeId::Tenant(t.clone()));
        }
        if let Some(a) = &self.agent {
            scopes.push(ScopeId::Agent(a.clone()));
        }
        if let Some(t) = &self.task_id {
            scopes.push(ScopeId::Task(t.clone()));
        }
        scopes
    }
}

impl std::fmt::Debug for CallRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallRequest")
            .field("tool", &self.tool)
            .field("call_id", &self.call_id)
            .field("task_id", &self.task_id)
            .field("agent", &self.agent)
            .field("tenant", &self.tenant)
            .field("idempotency_key", &self.idempotency_key)
            .field("max_tokens", &self.max_tokens)
            .field("fuel", &self.fuel)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Why a fallback answered a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FallbackUsed {
    /// The tool the caller asked for.
    pub asked: ToolName,
    /// The class it failed with.
    pub because: ErrorClass,
}

/// A successful call.
#[derive(Debug, Clone, Serialize)]
pub struct CallOutcome {
    /// The tool that ran.
    pub tool: ToolName,
    /// The call's identifier.
    pub call_id: String,
    /// The output, as JSON text (checked to be valid JSON).
    pub output: String,
    /// Fuel the call used, instantiation included.
    pub fuel_used: Fuel,
    /// Tokens the call costs ([`TokenPrice::charge`]).
    pub tokens: Tokens,
    /// Wall-clock time of the successful attempt.
    #[serde(rename = "duration_us", serialize_with = "crate::model::units::micros")]
    pub duration: Duration,
    /// Attempts made, this one included.
    pub attempts: u32,
    /// Class of each failed attempt before the one that succeeded.
    pub failed_attempts: Vec<ErrorClass>,
    /// The tool's breaker state after the call.
    pub breaker: BreakerState,
    /// Time spent queued for a slot and backing off between attempts.
    #[serde(rename = "waited_us", serialize_with = "crate::model::units::micros")]
    pub waited: Duration,
    /// Answered from the idempotency journal: nothing ran and nothing was charged.
    pub replayed: bool,
    /// Set when the asked tool failed and a fallback answered; `tool` is
    /// then the fallback.
    pub fallback_used: Option<FallbackUsed>,
    /// What the successful attempt's outbound HTTP did.
    pub http: HttpStats,
    /// What the tool logged through the host interface.
    pub logs: Vec<LogRecord>,
    /// Log records dropped past the limit.
    pub logs_dropped: u64,
    /// The tool's stdout (lossy UTF-8), up to the limit.
    pub stdout: String,
    /// Whether stdout was cut at the limit.
    pub stdout_truncated: bool,
    /// The tool's stderr (lossy UTF-8), up to the limit.
    pub stderr: String,
    /// Whether stderr was cut at the limit.
    pub stderr_truncated: bool,
}

impl CallOutcome {
    /// The output parsed as JSON.
    pub fn output_json(&self) -> serde_json::Value {
        // The host checked the output is JSON before returning it.
        serde_json::from_str(&self.output).unwrap_or(serde_json::Value::Null)
    }
}

/// Fuel and time `describe` may use at load.
const DESCRIBE_FUEL: Fuel = Fuel(500_000_000);
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

impl Host {
    /// A builder with deny-by-default settings; see [`HostBuilder`].
    pub fn builder() -> HostBuilder {
        HostBuilder::new()
    }

    /// Loads the component at `path` under `policy` (whose `component` is ignored).
    pub async fn load_file(
        &self,
        path: &Path,
        policy: ToolPolicy,
    ) -> Result<ToolDescription, LoadError> {
        self.install(read_component(path).await?, policy, Install::New)
            .await
    }

    /// Loads the component at `path` under `policy` in place of the loaded
    /// tool of the same name (or as a new tool when none is loaded). Calls
    /// already running finish on the old version; new calls get the new
    /// one, with a fresh breaker and bulkhead. On error the old version
    /// stays.
    pub async fn replace_file(
        &self,
        path: &Path,
        policy: ToolPolicy,
    ) -> Result<ToolDescription, LoadError> {
        self.install(read_component(path).await?, policy, Install::Replace)
            .await
    }

    /// Loads a tool from a manifest file naming its component.
    pub async fn load_manifest(&self, manifest: &Path) -> Result<ToolDescription, LoadError> {
        let policy = ToolPolicy::from_file(manifest)?;
        let component = policy.component.clone().ok_or(LoadError::NoComponent)?;
        self.load_file(&component, policy).await
    }

    /// Loads a component from memory under `policy`: checks the pin, compiles
    /// (or maps the cached artifact), links, asks the tool to describe itself,
    /// resolves mounts, and registers it. On error nothing is registered.
    pub async fn load_bytes(
        &self,
        bytes: Vec<u8>,
        policy: ToolPolicy,
    ) -> Result<ToolDescription, LoadError> {
        self.install(bytes, policy, Install::New).await
    }

    async fn install(
        &self,
        bytes: Vec<u8>,
        policy: ToolPolicy,
        mode: Install,
    ) -> Result<ToolDescription, LoadError> {
        policy.validate()?;
        let inner = &self.inner;
        let limits = policy.limits.apply(inner.limits);
        if limits.memory_bytes > inner.max_memory_bytes {
            return Err(PolicyError::MemoryAboveHostMax {
                asked: limits.memory_bytes,
                max: inner.max_memory_bytes,
            }
            .into());
        }
        let mut mounts = Vec::with_capacity(policy.mounts.len());
        for mount in &policy.mounts {
            let host = resolve_mount(mount, &inner.roots)?;
            let pin = PinnedDir::open(&host).map_err(|_| PolicyError::MountChanged {
                path: host.clone(),
                now: "a path that cannot be opened without following a symlink".to_owned(),
            })?;
            mounts.push(ResolvedMount {
                host,
                guest: mount.guest.clone(),
                mode: mount.mode,
                pin: Arc::new(pin),
            });
        }
        self.check_mount_overlaps(policy.name.as_ref(), &mounts)?;
        let net = NetPolicy::from_spec(&policy.http).map_err(PolicyError::from)?;
        let grants = Grants {
            mounts,
            env: policy.env.clone(),
            scratch: policy.scratch,
            net: Arc::new(net),
            fs: FsRules::from_spec(&policy.filesystem),
        };

        let digest = hex::encode(Sha256::digest(&bytes));
        if let Some(expected) = &policy.sha256
            && !expected.eq_ignore_ascii_case(&digest)
        {
            return Err(LoadError::DigestMismatch {
                expected: expected.clone(),
                actual: digest,
            });
        }
        // A component already loaded (the same bytes under another name, or
        // a tool replaced with a new policy only) is shared: its native code
        // was authenticated once, when it was first loaded.
        let (component, artifact) = match self.loaded_component(&digest) {
            Some(component) => (
                component,
                ArtifactInfo {
                    source: ArtifactSource::Shared,
                    elapsed: Duration::ZERO,
                },
            ),
            None => {
                let host = self.clone();
                let key = digest.clone();
                tokio::task::spawn_blocking(move || {
                    host.inner.cache.load(&host.inner.engine, &bytes, &key)
                })
                .await
                .map_err(|e| LoadError::Compile(e.into()))??
            }
        };

        let imports = component_imports(&inner.engine, &component);
        let instance_pre = inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(e.into_boxed_dyn_error()))?;
        let pre = ToolPre::new(instance_pre)
            .map_err(|e| LoadError::NotATool(e.into_boxed_dyn_error()))?;

        let placeholder = policy.name.clone().unwrap_or_else(|| {
            ToolName::new("loading").unwrap_or_else(|_| unreachable!("literal is a valid name"))
        });
        let describe_limits = Limits {
            fuel: limits.fuel.min(DESCRIBE_FUEL),
            timeout: limits.timeout.min(DESCRIBE_TIMEOUT),
            ..limits
        };
        let execution = Attempt {
            engine: &inner.engine,
            pre: &pre,
            tool: &placeholder,
            // `describe` runs with nothing granted: it must not need the world.
            grants: &Grants::default(),
            limits: describe_limits,
            price: inner.price,
            scratch_root: &inner.scratch_root,
            progress: None,
            cancel: None,
            warm: None,
        }
        .execute(Export::Describe)
        .await;
        let info = match execution.result {
            Ok(Returned::Info(info)) => info,
            Ok(Returned::Output(_)) => unreachable!("describe returns tool info"),
            Err(error) => return Err(LoadError::Describe(Box::new(error))),
        };

        let description = describe(info, &policy, digest, imports, artifact)?;
        if description.fallbacks.contains(&description.name) {
            return Err(PolicyError::FallbackToSelf {
                name: description.name,
            }
            .into());
        }
        let mut breaker = policy.breaker.apply(limits.timeout);
        if let Some(dir) = &inner.data_dir
            && let Some(mode) = breaker_modes::read(dir).get(description.name.as_str())
        {
            breaker.mode = *mode;
        }
        let bulkhead = policy.pool.apply();
        let retry = policy.retry.apply(limits.timeout);
        let tool = Arc::new(LoadedTool {
            description: description.clone(),
            pre,
            grants,
            limits,
            breaker: Arc::new(Breaker::new(
                description.name.as_str(),
                breaker,
                Arc::clone(&inner.clock),
                Arc::clone(&inner.jitter),
            )),
            bulkhead: Bulkhead::new(bulkhead),
            retry_budget: RetryBudget::new(&retry, inner.clock.now()),
            retry,
            invocations: AtomicU64::new(0),
            metrics: inner.metrics.for_tool(&description.name),
            warm: policy.warm.config().map(WarmPool::start),
        });
        let mut tools = inner.tools.write().unwrap_or_else(|e| e.into_inner());
        if mode == Install::New && tools.contains_key(&description.name) {
            return Err(LoadError::AlreadyLoaded {
                name: description.name,
            });
        }
        // A replaced tool's slots go to its successor.
        let reserved: u32 = tools
            .iter()
            .filter(|(name, _)| **name != description.name)
            .map(|(_, t)| t.bulkhead.config().max_concurrent)
            .sum();
        let free = inner.max_instances.saturating_sub(reserved);
        if bulkhead.max_concurrent > free {
            return Err(LoadError::PoolExhausted {
                needed: bulkhead.max_concurrent,
                free,
                total: inner.max_instances,
            });
        }
        tools.insert(description.name.clone(), tool);
        tracing::info!(tool = %description.name, digest = %description.digest, artifact = ?artifact.source, "tool loaded");
        Ok(description)
    }

    /// The compiled component of a loaded tool whose bytes have `digest`.
    fn loaded_component(&self, digest: &str) -> Option<Component> {
        let tools = self.inner.tools.read().unwrap_or_else(|e| e.into_inner());
        tools
            .values()
            .find(|tool| tool.description.digest == digest)
            .map(|tool| tool.pre.instance_pre().component().clone())
    }

    /// Refuses mounts that overlap a writable mount (of this tool or another
    /// loaded one, except the tool this load replaces) or the host's own
    /// directories.
    fn check_mount_overlaps(
        &self,
        replacing: Option<&ToolName>,
        mounts: &[ResolvedMount],
    ) -> Result<(), PolicyError> {
        let inner = &self.inner;
        let mine: Vec<_> = mounts.iter().map(|m| (m.host.clone(), m.mode)).collect();
        let tools = inner.tools.read().unwrap_or_else(|e| e.into_inner());
        let others: Vec<GrantedMount<'_>> = tools
            .iter()
            .filter(|(name, _)| Some(*name) != replacing)
            .flat_map(|(name, tool)| {
                tool.grants.mounts.iter().map(move |m| GrantedMount {
                    path: &m.host,
                    mode: m.mode,
                    owner: format!("tool `{name}`"),
                })
            })
            .collect();
        let host_dirs: Vec<(&'static str, &Path)> = [
            ("data dir", inner.data_dir_canonical.as_deref()),
            ("artifact dir", inner.cache.dir()),
            ("scratch root", Some(inner.scratch_root.as_path())),
        ]
        .into_iter()
        .filter_map(|(what, dir)| dir.map(|d| (what, d)))
        .collect();
        check_overlaps(&mine, &others, &host_dirs)
    }

    /// Checks that every mount of a loaded tool still names the directory
    /// pinned at load: its configured path, resolved now, is the same
    /// directory. A reload reports a tool whose mount path changed (for
    /// example, a component swapped for a symlink) instead of following it.
    pub fn verify_mounts(&self, name: &str, mounts: &[crate::Mount]) -> Result<(), PolicyError> {
        let Some(tool) = self.find(name) else {
            return Ok(());
        };
        for (pinned, configured) in tool.grants.mounts.iter().zip(mounts) {
            let now = configured.host.canonicalize();
            let same =
                now.as_ref().is_ok_and(|p| *p == pinned.host) && pinned.pin.still_at(&pinned.host);
            if !same {
                return Err(PolicyError::MountChanged {
                    path: pinned.host.clone(),
                    now: match now {
                        Ok(p) => p.display().to_string(),
                        Err(e) => format!("nothing usable ({e})"),
                    },
                });
            }
        }
        Ok(())
    }

    /// Removes a tool; calls already running finish. Returns whether it was loaded.
    pub fn unload(&self, name: &str) -> bool {
        let mut tools = self.inner.tools.write().unwrap_or_else(|e| e.into_inner());
        ToolName::new(name).is_ok_and(|name| tools.remove(&name).is_some())
    }

    /// The loaded tools, sorted by name.
    pub fn tools(&self) -> Vec<ToolDescription> {
        let tools = self.inner.tools.read().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<_> = tools.values().map(|t| t.description.clone()).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// One loaded tool.
    pub fn tool(&self, name: &str) -> Option<ToolDescription> {
        self.find(name).map(|t| t.description.clone())
    }

    fn find(&self, name: &str) -> Option<Arc<LoadedTool>> {
        let name = ToolName::new(name).ok()?;
        let tools = self.inner.tools.read().unwrap_or_else(|e| e.into_inner());
        tools.get(&name).cloned()
    }

    /// Calls a tool. With an idempotency key, the journal first decides
    /// whether the call runs at all (a completed key replays its stored
    /// outcome, with no execution and no charge). Then the resilience
    /// pipeline: circuit breaker, bulkhead, and up to `retry.max_attempts`
    /// attempts, each reserving what the call's budget scopes can pay for and
    /// running in a fresh sandboxed instance with exactly that much fuel.
    /// Which failures are retried and which the breaker counts is fixed by
    /// the error-class table. Every attempt is recorded in the audit history.
    pub async fn call(&self, request: CallRequest) -> Result<CallOutcome, CallError> {
        let started = std::time::Instant::now();
        let span = tracing::info_span!(
            "call",
            tool = %request.tool,
            call_id = request.call_id.as_deref(),
            task = request.task_id.as_deref(),
            agent = request.agent.as_deref(),
            attempts = tracing::field::Empty,
            fuel = tracing::field::Empty,
            tokens = tracing::field::Empty,
            class = tracing::field::Empty,
            replayed = tracing::field::Empty,
        );
        let result = self
            .call_with_fallbacks(&request, started)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(outcome) => {
                span.record("replayed", outcome.replayed);
                span.record("class", "ok");
            }
            Err(error) => {
                span.record("class", error.class().as_str());
            }
        }
        result
    }

    /// The fallback layer: when the asked tool fails in a class its policy
    /// names, its fallbacks are tried in order with the same request.
    async fn call_with_fallbacks(
        &self,
        request: &CallRequest,
        started: std::time::Instant,
    ) -> Result<CallOutcome, CallError> {
        let tool = self
            .find(&request.tool)
            .ok_or_else(|| CallError::UnknownTool {
                tool: request.tool.clone(),
            })?;
        let result = self.call_keyed(&tool, request).await;
        tool.metrics.record(&result, started.elapsed());
        let error = match result {
            Ok(outcome) => return Ok(outcome),
            Err(error) => error,
        };
        let class = error.last_attempt_error().class();
        let falls_back = tool.description.fallback_on.contains(&error.class())
            || tool.description.fallback_on.contains(&class);
        if tool.description.fallbacks.is_empty() || !falls_back {
            return Err(error);
        }
        for fallback in &tool.description.fallbacks {
            let Some(fallback_tool) = self.find(fallback.as_str()) else {
                tracing::warn!(tool = %tool.description.name, %fallback, "fallback tool is not loaded; skipped");
                continue;
            };
            let started = std::time::Instant::now();
            let attempt = CallRequest {
                tool: fallback.to_string(),
                ..request.clone()
            };
            let result = self.call_keyed(&fallback_tool, &attempt).await;
            fallback_tool.metrics.record(&result, started.elapsed());
            match result {
                Ok(mut outcome) => {
                    tracing::info!(tool = %tool.description.name, %fallback, class = class.as_str(), "a fallback answered");
                    outcome.fallback_used = Some(FallbackUsed {
                        asked: tool.description.name.clone(),
                        because: class,
                    });
                    return Ok(outcome);
                }
                Err(e) => {
                    tracing::info!(%fallback, class = e.class().as_str(), "fallback failed");
                }
            }
        }
        Err(error)
    }

    /// The journal layer: keyed calls run at most once.
    async fn call_keyed(
        &self,
        tool: &LoadedTool,
        request: &CallRequest,
    ) -> Result<CallOutcome, CallError> {
        let name = &tool.description.name;
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&request.input) {
            return Err(CallError::InvalidInput {
                tool: name.clone(),
                reason: e.to_string(),
            });
        }
        self.reap_now_and_then();
        let Some(key_text) = &request.idempotency_key else {
            return self.run(tool, request, false).await;
        };
        // A keyed call's id is fixed before the claim, so an escalation of
        // its key names the same call as its attempts (keyed calls wait for
        // an fsync anyway; the copy is noise).
        let with_id;
        let request = if request.call_id.is_none() {
            with_id = CallRequest {
                call_id: Some(new_call_id()),
                ..request.clone()
            };
            &with_id
        } else {
            request
        };
        if key_text.is_empty() || key_text.len() > crate::MAX_IDEMPOTENCY_KEY_LEN {
            return Err(CallError::InvalidKey {
                tool: name.clone(),
                len: key_text.len(),
            });
        }
        let key = JournalKey {
            scope: request
                .tenant
                .as_ref()
                .map(|t| format!("tenant:{t}"))
                .or_else(|| request.agent.as_ref().map(|a| format!("agent:{a}")))
                .unwrap_or_default(),
            tool: name.to_string(),
            key: key_text.clone(),
        };
        let journal = &self.inner.store;
        let fingerprint = fingerprint(&tool.description.digest, &request.input);
        let lease = tool.retry.total_timeout + LEASE_MARGIN;
        let journal_error = |e: JournalError| CallError::Journal {
            tool: name.clone(),
            reason: e.to_string(),
        };
        // What a human needs if this key's outcome becomes unknown.
        let context = || NewEscalation {
            reason: Some(EscalationReason::UnknownOutcome),
            tool: Some(name.to_string()),
            key: Some(key.escalation_key()),
            task: request.task_id.clone(),
            agent: request.agent.clone(),
            call_id: request.call_id.clone(),
            input: Some(request.input.clone()),
            ..NewEscalation::default()
        };
        let side_effecting = tool.description.effect == Effect::SideEffecting;
        match journal
            .claim(
                key.clone(),
                fingerprint,
                tool.description.effect,
                lease,
                side_effecting.then(context),
            )
            .await
        {
            Ok(Claim::Claimed) => {}
            Ok(Claim::Replay(stored)) => return self.replay(tool, request, stored),
            Ok(Claim::Mismatch) => {
                return Err(CallError::IdempotencyMismatch {
                    tool: name.clone(),
                    key: key.key,
                });
            }
            Ok(Claim::InProgress { retry_after }) => {
                return Err(CallError::InProgress {
                    tool: name.clone(),
                    key: key.key,
                    retry_after,
                });
            }
            Ok(Claim::Unknown { reason }) => {
                return Err(CallError::KeyUnknown {
                    tool: name.clone(),
                    key: key.key,
                    reason,
                });
            }
            Err(e) => return Err(journal_error(e)),
        }
        let mut result = self.run(tool, request, true).await;
        let recorded = match &mut result {
            // The tool finished: its outcome is final even though the budget
            // could not pay for the output. Storing it keeps the key from
            // running the tool (and its side effect) a second time.
            Err(CallError::OutputOverBudget {
                output,
                left,
                stored,
                ..
            }) => {
                *stored = true;
                let outcome = StoredOutcome::Output {
                    output: output.clone(),
                    tokens: *left,
                };
                journal.complete(key, outcome).await
            }
            Ok(outcome) => {
                let stored = StoredOutcome::Output {
                    output: outcome.output.clone(),
                    tokens: outcome.tokens,
                };
                journal.complete(key, stored).await
            }
            Err(error @ CallError::UnknownOutcome { .. }) => {
                let context = context();
                journal.mark_unknown(key, error.to_string(), context).await
            }
            Err(error) if is_terminal(error) => {
                let tool_error = match error.last_attempt_error() {
                    CallError::Tool { error, .. } => Some(error.clone()),
                    _ => None,
                };
                let stored = StoredOutcome::Error {
                    class: error.last_attempt_error().class(),
                    message: error.to_string(),
                    tool_error,
                };
                journal.complete(key, stored).await
            }
            Err(_) => journal.release(key).await,
        };
        // Nothing is reported before its record is committed.
        recorded.map_err(journal_error)?;
        result
    }

    /// Answers a keyed call from its stored outcome: no execution, no charge.
    fn replay(
        &self,
        tool: &LoadedTool,
        request: &CallRequest,
        stored: StoredOutcome,
    ) -> Result<CallOutcome, CallError> {
        let name = &tool.description.name;
        let call_id = request.call_id.clone().unwrap_or_else(new_call_id);
        tracing::Span::current().record("call_id", call_id.as_str());
        let now = unix_millis();
        let status = match &stored {
            StoredOutcome::Output { .. } => "ok".to_owned(),
            StoredOutcome::Error { class, .. } => class.as_str().to_owned(),
        };
        self.inner.store.audit(AttemptRecord {
            v: 1,
            tool: name.to_string(),
            digest: tool.description.digest.clone(),
            call_id: call_id.clone(),
            task: request.task_id.clone(),
            agent: request.agent.clone(),
            tenant: request.tenant.clone(),
            attempt: 0,
            started_ms: now,
            ended_ms: now,
            status,
            fuel: 0,
            tokens: 0,
            error: None,
            replayed: true,
            http_requests: 0,
            http_bytes_in: 0,
            http_bytes_out: 0,
        });
        match stored {
            StoredOutcome::Output { output, .. } => Ok(CallOutcome {
                tool: name.clone(),
                call_id,
                output,
                fuel_used: Fuel(0),
                tokens: Tokens(0),
                duration: Duration::ZERO,
                attempts: 0,
                failed_attempts: Vec::new(),
                breaker: tool.breaker.state(),
                waited: Duration::ZERO,
                replayed: true,
                fallback_used: None,
                http: HttpStats::default(),
                logs: Vec::new(),
                logs_dropped: 0,
                stdout: String::new(),
                stdout_truncated: false,
                stderr: String::new(),
                stderr_truncated: false,
            }),
            StoredOutcome::Error {
                class,
                message,
                tool_error,
            } => Err(CallError::Replayed {
                tool: name.clone(),
                class,
                message,
                tool_error,
            }),
        }
    }

    /// The resilience pipeline and the attempts, with budgets and audit.
    async fn run(
        &self,
        tool: &LoadedTool,
        request: &CallRequest,
        keyed: bool,
    ) -> Result<CallOutcome, CallError> {
        let name = &tool.description.name;
        let mut limits = tool.limits;
        if let Some(fuel) = request.fuel {
            limits.fuel = limits.fuel.min(fuel);
        }
        if let Some(timeout) = request.timeout {
            limits.timeout = limits.timeout.min(timeout);
        }
        let inner = &self.inner;
        let clock = &*inner.clock;
        let started = clock.now();
        let total = tool.retry.total_timeout;
        tool.retry_budget.deposit(started);
        let scopes = request.scopes();
        let mut call_left = match (request.max_tokens, tool.description.max_tokens_per_call) {
            (Some(asked), Some(cap)) => Some(asked.0.min(cap.0)),
            (asked, cap) => asked.or(cap).map(|t| t.0),
        };

        // A refused call costs nothing more: no queueing, no instance.
        let mut permit = tool
            .breaker
            .try_acquire()
            .map_err(|r| refused(name, r, 0))?;
        let cancelled = || CallError::Cancelled { tool: name.clone() };
        let (_slot, mut waited) = until_cancelled(request.cancel.as_ref(), tool.bulkhead.acquire())
            .await
            .ok_or_else(cancelled)?
            .map_err(|full| CallError::BulkheadFull {
                tool: name.clone(),
                retry_after: full.retry_after,
            })?;

        let call_id = request.call_id.clone().unwrap_or_else(new_call_id);
        tracing::Span::current().record("call_id", call_id.as_str());
        let mut failed = Vec::new();
        let mut attempt = 1;
        let (mut total_fuel, mut total_tokens) = (0u64, 0u64);
        loop {
            // The first attempt gets the whole attempt timeout (within the
            // total); later ones get what is left of the total.
            let remaining = if attempt == 1 {
                total
            } else {
                total.saturating_sub(clock.now().saturating_sub(started))
            };
            let mut attempt_limits = Limits {
                timeout: limits.timeout.min(remaining).max(MIN_ATTEMPT_TIME),
                ..limits
            };

            // Budget admission: what the tightest scope can pay for.
            let price = inner.price;
            let want = price.tokens_for(attempt_limits.fuel).0.max(1) + price.per_call_tokens;
            let mut asked = want;
            if let Some(left) = call_left {
                if left == 0 {
                    return Err(CallError::BudgetExhausted {
                        tool: name.clone(),
                        scope: "call".into(),
                        asked: Tokens(want),
                        left: Tokens(0),
                    });
                }
                asked = asked.min(left);
            }
            let reservation = if scopes.is_empty() {
                None
            } else {
                let wait_until = std::time::Instant::now() + remaining;
                self.reserve_tokens(name, &scopes, asked, wait_until, request.cancel.as_ref())
                    .await?
            };
            let granted = reservation.as_ref().map_or(asked, |r| r.tokens);
            // Which scope's balance bounds this attempt's fuel, if any does.
            let limited_by = match &reservation {
                _ if granted >= want => None,
                Some(r) if r.tokens < asked => Some(r.tightest.clone()),
                _ => Some("call".to_owned()),
            };
            let fuel_tokens = granted.saturating_sub(price.per_call_tokens);
            let budget_fuel = Fuel(fuel_tokens.saturating_mul(price.fuel_per_token.max(1)));
            attempt_limits.fuel = attempt_limits.fuel.min(budget_fuel);

            let ctx = wit::CallContext {
                call_id: call_id.clone(),
                task_id: request.task_id.clone(),
                attempt,
                deadline_ms: u64::try_from(attempt_limits.timeout.as_millis()).unwrap_or(u64::MAX),
            };
            tool.invocations.fetch_add(1, Ordering::Relaxed);
            let started_ms = unix_millis();
            let execution = Attempt {
                engine: &inner.engine,
                pre: &tool.pre,
                tool: name,
                grants: &tool.grants,
                limits: attempt_limits,
                price,
                scratch_root: &inner.scratch_root,
                progress: request.progress.clone(),
                cancel: request.cancel.as_ref(),
                warm: tool.warm.as_deref(),
            }
            .execute(Export::Invoke {
                ctx,
                input: &request.input,
            })
            .await;
            let duration = execution.duration;
            let fuel_used = execution.fuel_used;
            let (http_requests, http_bytes_in, http_bytes_out) = (
                execution.http.requests,
                execution.http.bytes_in,
                execution.http.bytes_out,
            );
            tool.bulkhead.observe(duration);
            let mut result = checked_output(name, &attempt_limits, execution);
            // Whether the attempt itself was stopped after it may have acted,
            // whatever budget error it is reported as below.
            let stopped_mid_run = result
                .as_ref()
                .err()
                .is_some_and(|e| disposition(e.class()).interrupted);
            let charge = match &result {
                Ok(parts) => price.charge(fuel_used, parts.output.len()).0,
                Err(_) => price.charge(fuel_used, 0).0,
            };
            // Only the output can push past the grant (fuel stops at it). The
            // grant was sized for fuel; the output's tokens are asked for now.
            let call_cap = call_left.unwrap_or(u64::MAX);
            let mut extra = None;
            if let Some(r) = &reservation
                && charge > r.tokens
                && call_cap >= charge
                && result.is_ok()
            {
                extra = self.reserve_exactly(&scopes, charge - r.tokens).await;
            }
            // What this attempt may be charged: its reservations, within the
            // call's own cap; unbounded when no budget applies.
            let allowed = match &reservation {
                Some(r) => r.tokens + extra.as_ref().map_or(0, |x: &Reservation| x.tokens),
                None => u64::MAX,
            }
            .min(call_cap);
            if charge > allowed {
                if let Ok(parts) = &result {
                    // The tool finished and may have acted; only its output
                    // does not fit. It is withheld, never thrown away: a
                    // keyed call stores it (see `call_keyed`).
                    result = Err(CallError::OutputOverBudget {
                        tool: name.clone(),
                        scope: if call_cap < charge {
                            "call".into()
                        } else {
                            reservation
                                .as_ref()
                                .map_or_else(|| "call".into(), |r| r.tightest.clone())
                        },
                        cost: Tokens(charge),
                        left: Tokens(allowed),
                        stored: false,
                        output: parts.output.clone(),
                    });
                }
            } else if let (Err(CallError::OutOfFuel { .. }), Some(scope)) = (&result, &limited_by) {
                result = Err(CallError::BudgetExhausted {
                    tool: name.clone(),
                    scope: scope.clone(),
                    asked: Tokens(want),
                    left: Tokens(granted),
                });
            }
            let charged = charge.min(allowed);
            if let Some(left) = &mut call_left {
                *left = left.saturating_sub(charged);
            }
            let first_part = reservation.as_ref().map_or(0, |r| charged.min(r.tokens));
            for (reservation, actual) in [
                (reservation, first_part),
                (extra, charged.saturating_sub(first_part)),
            ] {
                if let Some(reservation) = reservation {
                    let settled = inner.store.settle(reservation, actual).await;
                    inner.budget_settled.notify_waiters();
                    if let Err(e) = settled {
                        return Err(CallError::Journal {
                            tool: name.clone(),
                            reason: e.to_string(),
                        });
                    }
                }
            }
            inner.store.audit(AttemptRecord {
                v: 1,
                tool: name.to_string(),
                digest: tool.description.digest.clone(),
                call_id: call_id.clone(),
                task: request.task_id.clone(),
                agent: request.agent.clone(),
                tenant: request.tenant.clone(),
                attempt,
                started_ms,
                ended_ms: unix_millis(),
                status: match &result {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => e.class().as_str().to_owned(),
                },
                fuel: fuel_used.0,
                tokens: charged,
                error: result.as_ref().err().map(ToString::to_string),
                replayed: false,
                http_requests,
                http_bytes_in,
                http_bytes_out,
            });

            tool.metrics.attempt(fuel_used.0, charged);
            total_fuel += fuel_used.0;
            total_tokens += charged;
            let span = tracing::Span::current();
            span.record("attempts", attempt);
            span.record("fuel", total_fuel);
            span.record("tokens", total_tokens);

            let error = match result {
                Ok(parts) => {
                    permit.record(Verdict::Success, duration);
                    return Ok(parts.into_outcome(
                        name,
                        call_id,
                        Tokens(charged),
                        attempt,
                        failed,
                        tool.breaker.state(),
                        waited,
                    ));
                }
                Err(error) => error,
            };
            let class = error.class();
            let mut row = disposition(class);
            // A budget error of an attempt that was stopped mid-run (out of
            // the fuel its budget paid for) is still an interruption.
            row.interrupted |= stopped_mid_run;
            // A guest stopped at its deadline while running its own code (a
            // loop, not a wait in a host call) would run out of time again:
            // retrying only triples the CPU it burns.
            if matches!(
                error,
                CallError::DeadlineExceeded {
                    in_guest_code: true,
                    ..
                }
            ) {
                row.retryable = false;
            }
            permit.record(row.verdict, duration);
            tracing::debug!(
                attempt,
                class = class.as_str(),
                fuel = fuel_used.0,
                tokens = charged,
                "attempt failed"
            );
            if row.interrupted && tool.description.effect == Effect::SideEffecting {
                return Err(CallError::UnknownOutcome {
                    tool: name.clone(),
                    cause: Box::new(error),
                });
            }
            failed.push(class);
            let give_up = !row.retryable
                || !may_retry(tool.description.effect, keyed)
                || attempt >= tool.retry.max_attempts;
            if give_up {
                return Err(exhausted(name, attempt, failed, error));
            }
            let backoff = tool
                .retry
                .backoff(attempt, error.retry_after(), &inner.jitter);
            let elapsed = clock.now().saturating_sub(started);
            if elapsed + backoff + MIN_ATTEMPT_TIME > total
                || !tool.retry_budget.try_withdraw(clock.now())
            {
                return Err(exhausted(name, attempt, failed, error));
            }
            until_cancelled(request.cancel.as_ref(), clock.sleep(backoff))
                .await
                .ok_or_else(cancelled)?;
            waited += backoff;
            permit = tool
                .breaker
                .try_acquire()
                .map_err(|r| refused(name, r, attempt))?;
            attempt += 1;
        }
    }

    /// Reserves `asked` tokens in every capped scope for one attempt.
    ///
    /// When a scope has less left than asked only because other calls hold
    /// reservations in it, the attempt waits for them to settle (they give
    /// back what they did not spend) instead of being refused or starting
    /// with a part: concurrent calls queue on a budget rather than fail with
    /// most of it unspent. At `wait_until` (the attempt's deadline) it takes
    /// what is left; only a scope with nothing left refuses.
    async fn reserve_tokens(
        &self,
        name: &ToolName,
        scopes: &[ScopeId],
        asked: u64,
        wait_until: std::time::Instant,
        cancel: Option<&CancellationToken>,
    ) -> Result<Option<Reservation>, CallError> {
        let journal = &self.inner.store;
        loop {
            // Listen before looking, so a settlement in between is not missed.
            let settled = self.inner.budget_settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let whole = std::time::Instant::now() < wait_until;
            let answer = if whole {
                journal.reserve(scopes.to_vec(), asked, true).await
            } else {
                journal.reserve(scopes.to_vec(), asked, false).await
            };
            match answer {
                Ok(Reserved::Unlimited) => return Ok(None),
                Ok(Reserved::Granted(r)) => return Ok(Some(r)),
                Ok(Reserved::Exhausted { scope, left }) => {
                    return Err(CallError::BudgetExhausted {
                        tool: name.clone(),
                        scope,
                        asked: Tokens(asked),
                        left: Tokens(left),
                    });
                }
                Ok(Reserved::Held { .. }) => {
                    // Settlements in this process wake us; another process's
                    // are seen at the next poll.
                    let until = tokio::time::Instant::from_std(wait_until)
                        .min(tokio::time::Instant::now() + BUDGET_POLL);
                    let wait = tokio::time::timeout_at(until, settled);
                    until_cancelled(cancel, wait)
                        .await
                        .ok_or_else(|| CallError::Cancelled { tool: name.clone() })?
                        .ok();
                }
                Err(e) => {
                    return Err(CallError::Journal {
                        tool: name.clone(),
                        reason: e.to_string(),
                    });
                }
            }
        }
    }

    /// Reserves exactly `tokens` more (an output's cost past its grant), or
    /// nothing.
    async fn reserve_exactly(&self, scopes: &[ScopeId], tokens: u64) -> Option<Reservation> {
        let journal = &self.inner.store;
        match journal.reserve(scopes.to_vec(), tokens, false).await {
            Ok(Reserved::Granted(r)) if r.tokens == tokens => Some(r),
            Ok(Reserved::Granted(part)) => {
                let _ = journal.settle(part, 0).await;
                self.inner.budget_settled.notify_waiters();
                None
            }
            _ => None,
        }
    }

    /// Reaps journal records past retention, at most once an hour.
    fn reap_now_and_then(&self) {
        let now = unix_millis();
        let last = self.inner.last_reap_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < REAP_EVERY.as_millis() as u64 {
            return;
        }
        if self
            .inner
            .last_reap_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let journal = self.inner.store.clone();
            let before = now.saturating_sub(self.inner.retention.as_millis() as u64);
            tokio::spawn(async move {
                match journal.reap(before).await {
                    Ok(n) if n > 0 => {
                        tracing::info!(reaped = n, "journal records past retention removed")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot reap the journal"),
                }
            });
        }
    }

    /// Durable tasks: run, resume, cancel and inspect multi-step work.
    pub fn tasks(&self) -> Tasks {
        Tasks {
            host: self.clone(),
            running: Arc::clone(&self.inner.tasks_running),
        }
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The escalation queue: what needs a human, and their resolutions.
    pub fn escalations(&self) -> Escalations {
        Escalations {
            store: self.inner.store.clone(),
        }
    }

    /// The schedules of background runs: create, pause, resume, delete,
    /// history, and the [`crate::Runner`] that fires them.
    pub fn schedules(&self) -> Schedules {
        Schedules::new(
            self.clone(),
            Arc::clone(&self.inner.wall_clock),
            self.inner.schedules.clone(),
        )
    }

    /// The budget ledger: caps, outside charges, balances.
    pub fn budgets(&self) -> Budgets {
        Budgets {
            store: self.inner.store.clone(),
        }
    }

    /// Metrics in the Prometheus text format: calls by outcome, a latency
    /// histogram, attempts, fuel, tokens and replays per tool (kept across
    /// reloads), and bulkhead and breaker gauges of the loaded tools.
    pub fn metrics_text(&self) -> String {
        let loaded: Vec<ToolStats> = self
            .tools()
            .iter()
            .filter_map(|t| self.stats(t.name.as_str()))
            .collect();
        self.inner.metrics.render(&loaded)
    }

    /// Attempts from the audit history, newest first.
    pub fn history(&self, query: &HistoryQuery) -> Result<Vec<AttemptRecord>, JournalError> {
        self.inner.store.history(query)
    }

    /// Tokens charged per scope over the attempts `query` selects.
    pub fn totals(&self, query: &HistoryQuery) -> Result<BTreeMap<String, u64>, JournalError> {
        Ok(totals(&self.history(query)?))
    }

    /// The idempotency records.
    pub fn journal_entries(&self) -> Result<Vec<JournalEntry>, JournalError> {
        self.inner.store.entries()
    }

    /// Deletes finished idempotency records older than `age`; returns how many.
    pub async fn reap_journal(&self, age: Duration) -> Result<usize, JournalError> {
        let before = unix_millis().saturating_sub(age.as_millis() as u64);
        self.inner.store.reap(before).await
    }

    /// Counters and breaker state of one tool.
    pub fn stats(&self, name: &str) -> Option<ToolStats> {
        let tool = self.find(name)?;
        Some(ToolStats {
            name: tool.description.name.clone(),
            invocations: tool.invocations.load(Ordering::Relaxed),
            in_flight: tool.bulkhead.in_use(),
            queued: tool.bulkhead.waiting(),
            max_concurrent: tool.bulkhead.config().max_concurrent,
            breaker: tool.breaker.snapshot(),
            warm: tool.warm.as_ref().map(|pool| pool.stats()),
        })
    }

    /// Sets a tool's breaker mode (force open, disable, metrics-only, or back
    /// to normal). With a data directory the mode is remembered across
    /// restarts, for hosts and CLI runs alike.
    pub fn set_breaker_mode(&self, name: &str, mode: BreakerMode) -> Result<(), CallError> {
        let tool = self.find(name).ok_or_else(|| CallError::UnknownTool {
            tool: name.to_owned(),
        })?;
        tool.breaker.set_mode(mode);
        if let Some(dir) = &self.inner.data_dir
            && let Err(e) = Self::remember_breaker_mode(dir, tool.description.name.as_str(), mode)
        {
            tracing::warn!(error = %e, "cannot remember the breaker mode");
        }
        Ok(())
    }

    /// The breaker modes remembered in a data directory, by tool name.
    pub fn remembered_breaker_modes(data_dir: &Path) -> BTreeMap<String, BreakerMode> {
        breaker_modes::read(data_dir)
    }

    /// Remembers a breaker mode in a data directory without a running host;
    /// hosts on that directory apply it when they load the tool.
    pub fn remember_breaker_mode(
        data_dir: &Path,
        tool: &str,
        mode: BreakerMode,
    ) -> std::io::Result<()> {
        std::fs::create_dir_all(data_dir)?;
        let mut modes = breaker_modes::read(data_dir);
        if mode == BreakerMode::Normal {
            modes.remove(tool);
        } else {
            modes.insert(tool.to_owned(), mode);
        }
        breaker_modes::write(data_dir, &modes)
    }

    /// Closes a tool's breaker and clears its window.
    pub fn reset_breaker(&self, name: &str) -> Result<(), CallError> {
        let tool = self.find(name).ok_or_else(|| CallError::UnknownTool {
            tool: name.to_owned(),
        })?;
        tool.breaker.reset();
        Ok(())
    }
}

/// A key's lease outlives the call's total deadline by this much.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// How often finished journal records past retention are reaped.
const REAP_EVERY: Duration = Duration::from_secs(3600);
/// How often a call waiting on a budget held by another process looks again.
const BUDGET_POLL: Duration = Duration::from_millis(50);

/// Runs `work` unless `cancel` fires first (`None` then).
async fn until_cancelled<T>(
    cancel: Option<&CancellationToken>,
    work: impl Future<Output = T>,
) -> Option<T> {
    match cancel {
        Some(token) => token.run_until_cancelled(work).await,
        None => Some(work.await),
    }
}

async fn read_component(path: &Path) -> Result<Vec<u8>, LoadError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })
}

/// Whether installing a tool may take the place of one with the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Install {
    New,
    Replace,
}

/// A keyed call's fingerprint: its canonical input (object keys sorted, no
/// whitespace) only. The tool is part of the key already; its digest is not
/// part of the request, so a reload of the same tool (a new build, a new
/// custom section) neither breaks replays nor turns them into mismatches.
fn fingerprint(digest: &str, input: &str) -> Fingerprint {
    let canonical = serde_json::from_str::<serde_json::Value>(input)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| input.to_owned());
    Fingerprint {
        current: format!("v2:{}", hex::encode(Sha256::digest(canonical.as_bytes()))),
        legacy: Some((digest.to_owned(), canonical)),
    }
}

/// Whether a keyed call's error is its final answer (stored and replayed)
/// rather than a passing condition (the key is released for a later try).
fn is_terminal(error: &CallError) -> bool {
    disposition(error.last_attempt_error().class()).terminal
}

/// Attempts get at least this long, however little of the total deadline is left.
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(1);

fn refused(tool: &ToolName, refused: Refused, attempts: u32) -> CallError {
    CallError::CircuitOpen {
        tool: tool.clone(),
        state: refused.state,
        retry_after: refused.retry_after,
        attempts,
    }
}

fn exhausted(
    tool: &ToolName,
    attempts: u32,
    classes: Vec<ErrorClass>,
    last: CallError,
) -> CallError {
    if attempts == 1 {
        last
    } else {
        CallError::RetriesExhausted {
            tool: tool.clone(),
            attempts,
            classes,
            last: Box::new(last),
        }
    }
}

/// A successful attempt's results, before the call-level fields are added.
struct Succeeded {
    output: String,
    execution: Execution,
}

impl Succeeded {
    #[expect(clippy::too_many_arguments, reason = "one private constructor")]
    fn into_outcome(
        self,
        tool: &ToolName,
        call_id: String,
        tokens: Tokens,
        attempts: u32,
        failed_attempts: Vec<ErrorClass>,
        breaker: BreakerState,
        waited: Duration,
    ) -> CallOutcome {
        let e = self.execution;
        CallOutcome {
            tool: tool.clone(),
            call_id,
            tokens,
            output: self.output,
            fuel_used: e.fuel_used,
            duration: e.duration,
            attempts,
            failed_attempts,
            breaker,
            waited,
            replayed: false,
            fallback_used: None,
            http: e.http,
            logs: e.logs,
            logs_dropped: e.logs_dropped,
            stdout: String::from_utf8_lossy(&e.stdout).into_owned(),
            stdout_truncated: e.stdout_dropped > 0,
            stderr: String::from_utf8_lossy(&e.stderr).into_owned(),
            stderr_truncated: e.stderr_dropped > 0,
        }
    }
}

/// Turns an attempt into its output or error, checking size and JSON.
fn checked_output(
    tool: &ToolName,
    limits: &Limits,
    mut execution: Execution,
) -> Result<Succeeded, CallError> {
    let result = std::mem::replace(
        &mut execution.result,
        Ok(Returned::Output(Ok(String::new()))),
    );
    let output = match result {
        Ok(Returned::Output(Ok(output))) => output,
        Ok(Returned::Output(Err(error))) => {
            return Err(CallError::Tool {
                tool: tool.clone(),
                error: error.into(),
            });
        }
        Ok(Returned::Info(_)) => unreachable!("invoke returns output"),
        Err(error) => {
            tracing::debug!(tool = %tool, class = error.class().as_str(),
                stderr = %String::from_utf8_lossy(&execution.stderr), "attempt stopped");
            return Err(error);
        }
    };
    if output.len() > limits.max_output_bytes {
        return Err(CallError::OutputTooLarge {
            tool: tool.clone(),
            size: output.len(),
            limit: limits.max_output_bytes,
        });
    }
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&output) {
        return Err(CallError::InvalidOutput {
            tool: tool.clone(),
            reason: e.to_string(),
        });
    }
    Ok(Succeeded { output, execution })
}

/// Counters of one tool, for operators.
#[derive(Debug, Clone, Serialize)]
pub struct ToolStats {
    /// The tool.
    pub name: ToolName,
    /// Attempts started since load (retries included).
    pub invocations: u64,
    /// Calls running now.
    pub in_flight: u32,
    /// Calls waiting for a slot now.
    pub queued: u32,
    /// The bulkhead's size.
    pub max_concurrent: u32,
    /// The breaker's state and counters.
    pub breaker: BreakerSnapshot,
    /// The warm pool's counters, when the tool reuses instances.
    pub warm: Option<WarmStats>,
}

/// Breaker modes set by operators, remembered in `<data>/breaker-modes.json`.
pub(crate) mod breaker_modes {
    use std::collections::BTreeMap;
    use std::path::Path;

    use crate::BreakerMode;

    const FILE: &str = "breaker-modes.json";

    /// The remembered modes; an unreadable file counts as none (and is logged).
    pub(crate) fn read(dir: &Path) -> BTreeMap<String, BreakerMode> {
        match std::fs::read(dir.join(FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "ignoring unreadable {FILE}");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        }
    }

    pub(crate) fn write(dir: &Path, modes: &BTreeMap<String, BreakerMode>) -> std::io::Result<()> {
        let tmp = dir.join(format!(".{FILE}.tmp-{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(modes)?)?;
        std::fs::rename(&tmp, dir.join(FILE))
    }
}

fn describe(
    info: wit::ToolInfo,
    policy: &ToolPolicy,
    digest: String,
    imports: Vec<String>,
    artifact: ArtifactInfo,
) -> Result<ToolDescription, LoadError> {
    let name = match &policy.name {
        Some(name) => name.clone(),
        None => ToolName::new(&info.name).map_err(|e| LoadError::BadToolInfo {
            reason: e.to_string(),
        })?,
    };
    let input_schema: serde_json::Value =
        serde_json::from_str(&info.input_schema).map_err(|e| LoadError::BadToolInfo {
            reason: format!("input schema is not JSON: {e}"),
        })?;
    if !input_schema.is_object() {
        return Err(LoadError::BadToolInfo {
            reason: "input schema is not a JSON object".into(),
        });
    }
    let declared_effect = match info.effect {
        wit::Effect::Pure => Effect::Pure,
        wit::Effect::Idempotent => Effect::Idempotent,
        wit::Effect::SideEffecting => Effect::SideEffecting,
    };
    Ok(ToolDescription {
        name,
        version: info.version,
        description: info.description,
        input_schema,
        effect: policy.effect.unwrap_or(declared_effect),
        declared_effect,
        digest,
        imports,
        artifact,
        sensitive: policy.sensitive,
        fallbacks: policy.fallbacks.clone(),
        fallback_on: policy
            .fallback_on
            .clone()
            .unwrap_or_else(|| DEFAULT_FALLBACK_ON.to_vec()),
        max_tokens_per_call: policy.budget.max_tokens_per_call.map(Tokens),
    })
}

fn component_imports(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect()
}

fn new_call_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(
        "call-{millis:x}-{:x}-{:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
