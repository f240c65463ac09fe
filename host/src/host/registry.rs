//! The registry of loaded tools: load, describe, replace, unload, look up.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::{Host, LoadedTool, ToolDescription};
use crate::policy::tool::{DEFAULT_FALLBACK_ON, GrantedMount, check_overlaps, resolve_mount};
use crate::resilience::breaker::Breaker;
use crate::resilience::bulkhead::Bulkhead;
use crate::resilience::retry::RetryBudget;
use crate::runtime::attempt::{Attempt, Export, Returned};
use crate::runtime::bindings::ToolPre;
use crate::runtime::bindings::cofferdam::tool::types as wit;
use crate::runtime::component_cache::{ArtifactInfo, ArtifactSource};
use crate::runtime::fs_guard::FsRules;
use crate::runtime::net::NetPolicy;
use crate::runtime::sandbox::{Grants, PinnedDir, ResolvedMount};
use crate::runtime::warm::WarmPool;
use crate::{Effect, Fuel, Limits, LoadError, PolicyError, Tokens, ToolName, ToolPolicy};
use tokio::sync::Semaphore;

impl Host {
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
            state: policy.state.clone(),
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
            lanes: &inner.lanes,
            cpu: None,
            state: None,
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
        if let Some(mode) = inner.store.breaker_modes().get(description.name.as_str()) {
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
            cpu: policy
                .cpu
                .max_threads
                .map(|n| Arc::new(Semaphore::new(n.max(1) as usize))),
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

    pub(super) fn find(&self, name: &str) -> Option<Arc<LoadedTool>> {
        let name = ToolName::new(name).ok()?;
        let tools = self.inner.tools.read().unwrap_or_else(|e| e.into_inner());
        tools.get(&name).cloned()
    }
}

/// Fuel and time `describe` may use at load.
const DESCRIBE_FUEL: Fuel = Fuel(500_000_000);
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

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
