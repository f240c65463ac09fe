//! [`Host`]: loads tools and calls them. The registry of loaded tools and the
//! shared engine, linker and artifact cache live here; each call's work is in
//! [`crate::attempt`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::attempt::{Attempt, Export, Returned};
use crate::bindings::ToolPre;
use crate::bindings::cofferdam::tool::types as wit;
use crate::component_cache::{ArtifactInfo, ComponentCache};
use crate::engine::{self, EngineSettings};
use crate::host_api::{self, LogRecord, ProgressSink};
use crate::policy::resolve_mount;
use crate::sandbox::{CallState, Grants, ResolvedMount};
use crate::{
    BuildError, CallError, Effect, Fuel, Limits, LoadError, PolicyError, TokenPrice, Tokens,
    ToolName, ToolPolicy,
};

/// Configures a [`Host`]. Every default denies or bounds:
///
/// | setting | default |
/// |---|---|
/// | [`data_dir`](Self::data_dir) | none: components compile in memory at every load |
/// | [`allow_root`](Self::allow_root) | none: any policy with mounts is refused |
/// | [`default_limits`](Self::default_limits) | [`Limits::default()`] (fuel 2e9, 30 s, 128 MiB, 1 MiB output…) |
/// | [`token_price`](Self::token_price) | [`TokenPrice::default()`] (100,000 fuel or 4 output bytes per token) |
/// | [`max_instances`](Self::max_instances) | 256 instances live at once, across all tools |
/// | [`max_memory_bytes`](Self::max_memory_bytes) | 1 GiB: no tool's memory limit may exceed it |
/// | [`max_wasm_stack`](Self::max_wasm_stack) | 512 KiB of wasm stack per call |
/// | [`epoch_tick`](Self::epoch_tick) | 10 ms between deadline checks |
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
            .and_then(|()| host_api::add_to_linker(&mut linker))
            .map_err(|e| BuildError::Engine(e.into_boxed_dyn_error()))?;
        let cache =
            ComponentCache::new(&engine, self.data_dir.as_ref().map(|d| d.join("artifacts")));
        let scratch_root = match &self.data_dir {
            Some(dir) => dir.join("scratch"),
            None => std::env::temp_dir().join("cofferdam-scratch"),
        };
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
                tools: RwLock::new(HashMap::new()),
            }),
        })
    }
}

/// Runs tools. Cheap to clone; clones share the engine and loaded tools.
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
    tools: RwLock<HashMap<ToolName, Arc<LoadedTool>>>,
}

struct LoadedTool {
    description: ToolDescription,
    pre: ToolPre<CallState>,
    grants: Grants,
    limits: Limits,
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
    /// Task the call belongs to, passed to the tool.
    pub task_id: Option<String>,
    /// Fuel for this call; capped at the tool's limit.
    pub fuel: Option<Fuel>,
    /// Deadline for this call; capped at the tool's limit.
    pub timeout: Option<Duration>,
    /// Receives the tool's progress reports.
    pub progress: Option<ProgressSink>,
}

impl CallRequest {
    /// A request with only the tool and input set.
    pub fn new(tool: &str, input: impl Into<String>) -> Self {
        Self {
            tool: tool.to_owned(),
            input: input.into(),
            call_id: None,
            task_id: None,
            fuel: None,
            timeout: None,
            progress: None,
        }
    }
}

impl std::fmt::Debug for CallRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallRequest")
            .field("tool", &self.tool)
            .field("call_id", &self.call_id)
            .field("task_id", &self.task_id)
            .field("fuel", &self.fuel)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
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
    /// Wall-clock time of the call.
    #[serde(rename = "duration_us", serialize_with = "micros")]
    pub duration: Duration,
    /// Attempts made (1 until retries exist).
    pub attempts: u32,
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

fn micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
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
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| LoadError::Read {
                path: path.to_owned(),
                source,
            })?;
        self.load_bytes(bytes, policy).await
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
            mounts.push(ResolvedMount {
                host,
                guest: mount.guest.clone(),
                mode: mount.mode,
            });
        }
        let grants = Grants {
            mounts,
            env: policy.env.clone(),
            scratch: policy.scratch,
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
        let host = self.clone();
        let key = digest.clone();
        let (component, artifact) = tokio::task::spawn_blocking(move || {
            host.inner.cache.load(&host.inner.engine, &bytes, &key)
        })
        .await
        .map_err(|e| LoadError::Compile(e.into()))??;

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
        }
        .execute(Export::Describe)
        .await;
        let info = match execution.result {
            Ok(Returned::Info(info)) => info,
            Ok(Returned::Output(_)) => unreachable!("describe returns tool info"),
            Err(error) => return Err(LoadError::Describe(Box::new(error))),
        };

        let description = describe(info, &policy, digest, imports, artifact)?;
        let tool = Arc::new(LoadedTool {
            description: description.clone(),
            pre,
            grants,
            limits,
        });
        let mut tools = inner.tools.write().unwrap_or_else(|e| e.into_inner());
        if tools.contains_key(&description.name) {
            return Err(LoadError::AlreadyLoaded {
                name: description.name,
            });
        }
        tools.insert(description.name.clone(), tool);
        tracing::info!(tool = %description.name, digest = %description.digest, artifact = ?artifact.source, "tool loaded");
        Ok(description)
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

    /// Calls a tool in a fresh sandboxed instance under its limits.
    pub async fn call(&self, request: CallRequest) -> Result<CallOutcome, CallError> {
        let tool = self
            .find(&request.tool)
            .ok_or_else(|| CallError::UnknownTool {
                tool: request.tool.clone(),
            })?;
        let name = &tool.description.name;
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&request.input) {
            return Err(CallError::InvalidInput {
                tool: name.clone(),
                reason: e.to_string(),
            });
        }
        let mut limits = tool.limits;
        if let Some(fuel) = request.fuel {
            limits.fuel = limits.fuel.min(fuel);
        }
        if let Some(timeout) = request.timeout {
            limits.timeout = limits.timeout.min(timeout);
        }
        let call_id = request.call_id.unwrap_or_else(new_call_id);
        let ctx = wit::CallContext {
            call_id: call_id.clone(),
            task_id: request.task_id,
            attempt: 1,
            deadline_ms: u64::try_from(limits.timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let inner = &self.inner;
        let execution = Attempt {
            engine: &inner.engine,
            pre: &tool.pre,
            tool: name,
            grants: &tool.grants,
            limits,
            price: inner.price,
            scratch_root: &inner.scratch_root,
            progress: request.progress,
        }
        .execute(Export::Invoke {
            ctx,
            input: &request.input,
        })
        .await;

        let output = match execution.result {
            Ok(Returned::Output(Ok(output))) => output,
            Ok(Returned::Output(Err(error))) => {
                return Err(CallError::Tool {
                    tool: name.clone(),
                    error: error.into(),
                });
            }
            Ok(Returned::Info(_)) => unreachable!("invoke returns output"),
            Err(error) => {
                tracing::debug!(tool = %name, %call_id, class = error.class().as_str(),
                    stderr = %String::from_utf8_lossy(&execution.stderr), "call failed");
                return Err(error);
            }
        };
        if output.len() > limits.max_output_bytes {
            return Err(CallError::OutputTooLarge {
                tool: name.clone(),
                size: output.len(),
                limit: limits.max_output_bytes,
            });
        }
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&output) {
            return Err(CallError::InvalidOutput {
                tool: name.clone(),
                reason: e.to_string(),
            });
        }
        Ok(CallOutcome {
            tool: name.clone(),
            call_id,
            tokens: inner.price.charge(execution.fuel_used, output.len()),
            output,
            fuel_used: execution.fuel_used,
            duration: execution.duration,
            attempts: 1,
            logs: execution.logs,
            logs_dropped: execution.logs_dropped,
            stdout: String::from_utf8_lossy(&execution.stdout).into_owned(),
            stdout_truncated: execution.stdout_dropped > 0,
            stderr: String::from_utf8_lossy(&execution.stderr).into_owned(),
            stderr_truncated: execution.stderr_dropped > 0,
        })
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
