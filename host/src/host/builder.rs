//! [`HostBuilder`]: a host's engine, store and defaults, deny by default.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use wasmtime::component::Linker;

use super::metrics::Metrics;
use super::{Host, Inner};
use crate::model::schedule::ScheduleConfig;
use crate::resilience::clock::{Clock, Jitter, SystemClock, SystemWallClock, WallClock};
use crate::runtime::component_cache::ComponentCache;
use crate::runtime::compute::ComputePool;
use crate::runtime::engine::{self, EngineSettings};
use crate::runtime::lanes::{LaneConfig, Lanes};
use crate::runtime::sandbox::{self, ScratchRoot};
use crate::store::Store;
use crate::store::config::{PostgresConfig, StoreConfig};
use crate::store::postgres::PgStore;
use crate::store::redb::RedbStore;
use crate::{BuildError, JournalError, Limits, TokenPrice};

/// Configures a [`Host`]. Every default denies or bounds:
///
/// | setting | default |
/// |---|---|
/// | [`data_dir`](Self::data_dir) | none: components compile in memory at every load, and the journal (idempotency, budgets, audit) lives in memory |
/// | [`store`](Self::store) / [`store_url`](Self::store_url) | [`StoreConfig::Embedded`]: the redb file `<data_dir>/journal.redb` (in memory without a data dir) |
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
/// | [`batch_threads`](Self::batch_threads) | all cores but one (at least one) compute demoted calls at once |
/// | [`cpu_quantum`](Self::cpu_quantum) | one epoch tick of guest computing before a call is demoted to the batch lane |
/// | [`compute_threads`](Self::compute_threads) | none: guests run on the caller's runtime |
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
    store: StoreConfig,
    store_url: Option<String>,
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
    prices: crate::Prices,
    sinks: std::collections::BTreeMap<String, crate::Webhook>,
    sink_errors: Vec<(String, String)>,
    batch_threads: Option<u32>,
    cpu_quantum: Option<Duration>,
    compute_threads: Option<usize>,
}

impl Default for HostBuilder {
    fn default() -> Self {
        Self {
            data_dir: None,
            store: StoreConfig::Embedded,
            store_url: None,
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
            batch_threads: None,
            cpu_quantum: None,
            compute_threads: None,
            prices: crate::Prices::default(),
            sinks: std::collections::BTreeMap::new(),
            sink_errors: Vec::new(),
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

    /// Where durable state lives: the embedded redb file (the default) or a
    /// PostgreSQL database shared by several hosts
    /// ([`StoreConfig::Postgres`]), which makes idempotency keys, budgets,
    /// audit history, escalations, tasks, schedules and breaker modes one
    /// truth across them. Breaker state stays per host.
    pub fn store(mut self, store: StoreConfig) -> Self {
        self.store = store;
        self.store_url = None;
        self
    }

    /// The store a URL names (`postgres://user@host/db`); a URL that names
    /// none fails [`build`](Self::build) with an error naming it (without
    /// its password). Settings of a [`PostgresConfig`](crate::PostgresConfig)
    /// given to [`store`](Self::store) before are kept: only the database
    /// changes.
    pub fn store_url(mut self, url: &str) -> Self {
        self.store_url = Some(url.to_owned());
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

    /// What 1,000 tokens cost, per tool and by default, in one currency:
    /// costs are shown beside tokens, and schedules may cap a run in money.
    pub fn prices(mut self, prices: crate::Prices) -> Self {
        self.prices = prices;
        self
    }

    /// A sink schedules may name in `notify` to hear when their runs end,
    /// fail, pause the schedule or are escalated (replaces one of the same
    /// name).
    pub fn notify(mut self, name: impl Into<String>, hook: crate::Webhook) -> Self {
        self.sinks.insert(name.into(), hook);
        self
    }

    /// A sink the config could not describe: [`build`](Self::build) fails
    /// naming it.
    pub(crate) fn notify_invalid(mut self, name: &str, reason: String) -> Self {
        self.sink_errors.push((name.to_owned(), reason));
        self
    }

    /// Where precompiled artifacts live, instead of `<data_dir>/artifacts`
    /// (several hosts may share one artifact directory).
    pub fn artifact_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.artifact_dir = Some(dir.into());
        self
    }

    /// Whether journal writes of concurrent calls share one commit (default
    /// on), on redb and on PostgreSQL alike. Off, every durable write
    /// commits alone: for measuring only.
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

    /// How many calls demoted to the batch lane (they computed past the
    /// [`cpu_quantum`](Self::cpu_quantum)) may compute at once. Keep it
    /// below the threads that run calls, so a short call always finds one.
    pub fn batch_threads(mut self, threads: u32) -> Self {
        self.batch_threads = Some(threads.max(1));
        self
    }

    /// Guest computing time after which a call moves to the batch lane
    /// (measured in epoch ticks, so at [`epoch_tick`](Self::epoch_tick)
    /// granularity).
    pub fn cpu_quantum(mut self, quantum: Duration) -> Self {
        self.cpu_quantum = Some(quantum);
        self
    }

    /// Runs guest code on `threads` threads of the host's own instead of the
    /// caller's runtime (0: on the caller's runtime, the default), so an
    /// embedder's I/O never waits behind a computing guest. The batch lane
    /// then defaults to all of these threads but one. Each attempt costs a
    /// hand-off between threads (the README gives the figure).
    pub fn compute_threads(mut self, threads: usize) -> Self {
        self.compute_threads = (threads > 0).then_some(threads);
        self
    }

    /// The store [`store`](Self::store) and [`store_url`](Self::store_url)
    /// name together.
    pub(crate) fn store_config(&self) -> Result<StoreConfig, JournalError> {
        let Some(url) = &self.store_url else {
            return Ok(self.store.clone());
        };
        Ok(match (StoreConfig::from_url(url)?, &self.store) {
            (StoreConfig::Postgres(named), StoreConfig::Postgres(set)) => {
                StoreConfig::Postgres(set.with_url(&named))
            }
            (named, _) => named,
        })
    }

    /// Builds the host: engine, epoch ticker, linker, artifact cache.
    pub fn build(self) -> Result<Host, BuildError> {
        self.prices.check().map_err(BuildError::Prices)?;
        if let Some((sink, reason)) = self.sink_errors.first() {
            return Err(BuildError::Notify {
                sink: sink.clone(),
                reason: reason.clone(),
            });
        }
        let mut sinks = std::collections::BTreeMap::new();
        for (name, hook) in &self.sinks {
            let bad = |reason: String| BuildError::Notify {
                sink: name.clone(),
                reason,
            };
            if !crate::model::schedule::valid_name(name) {
                return Err(bad("a sink name is 1-64 of `A-Z a-z 0-9 . _ -`".into()));
            }
            let sink = crate::runtime::webhook::Sink::new(hook).map_err(|e| bad(e.to_string()))?;
            sinks.insert(name.clone(), sink);
        }
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
        let compute = self
            .compute_threads
            .map(ComputePool::start)
            .transpose()
            .map_err(BuildError::ComputePool)?;
        let threads = match &compute {
            Some(pool) => pool.threads(),
            None => std::thread::available_parallelism().map_or(1, usize::from),
        };
        let tick = self.engine.epoch_tick;
        let lanes = Arc::new(Lanes::new(LaneConfig::new(
            threads,
            self.batch_threads,
            self.cpu_quantum.unwrap_or(tick),
            tick,
        )));
        let mut linker = Linker::new(&engine);
        sandbox::add_to_linker(&mut linker)
            .map_err(|e| BuildError::Engine(e.into_boxed_dyn_error()))?;
        let artifact_dir = self
            .artifact_dir
            .clone()
            .or_else(|| self.data_dir.as_ref().map(|d| d.join("artifacts")));
        let cache = ComponentCache::new(&engine, artifact_dir);
        let store_config = self.store_config()?;
        let store: Arc<dyn Store> = match (&store_config, &self.data_dir) {
            (StoreConfig::Postgres(config), _) => Arc::new(PgStore::open(&PostgresConfig {
                group_commit: self.group_commit,
                ..config.clone()
            })?),
            (StoreConfig::Embedded, Some(dir)) => Arc::new(RedbStore::open(
                &dir.join("journal.redb"),
                self.group_commit,
            )?),
            (StoreConfig::Embedded, None) => Arc::new(RedbStore::in_memory()?),
        };
        let scratch =
            ScratchRoot::open(self.data_dir.as_deref()).map_err(|source| BuildError::DataDir {
                path: self.data_dir.clone().unwrap_or_else(std::env::temp_dir),
                source,
            })?;
        let scratch_root = scratch.path().to_owned();
        let clock: Arc<dyn Clock> = self
            .clock
            .unwrap_or_else(|| Arc::new(SystemClock::default()));
        let jitter = Arc::new(match self.jitter_seed {
            Some(seed) => Jitter::seeded(seed),
            None => Jitter::from_entropy(),
        });
        let sinks = sinks
            .into_iter()
            .map(|(name, sink)| {
                let breaker = Arc::new(crate::resilience::breaker::Breaker::new(
                    &format!("notify:{name}"),
                    crate::BreakerConfig::for_timeout(sink.timeout),
                    Arc::clone(&clock),
                    Arc::clone(&jitter),
                ));
                (name, Arc::new(super::NotifySink { sink, breaker }))
            })
            .collect();
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
                data_dir_canonical: self.data_dir.as_ref().and_then(|d| d.canonicalize().ok()),
                max_instances: self.engine.max_instances,
                clock,
                jitter,
                store,
                budget_settled: tokio::sync::Notify::new(),
                retention: self.retention,
                last_reap_ms: AtomicU64::new(0),
                tools: RwLock::new(HashMap::new()),
                metrics: Metrics::default(),
                tasks_running: Arc::default(),
                wall_clock: self.wall_clock.unwrap_or_else(|| Arc::new(SystemWallClock)),
                schedules: self.schedules,
                prices: self.prices,
                sinks,
                lanes,
                compute,
            }),
        })
    }
}
