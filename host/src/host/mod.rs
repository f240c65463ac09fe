//! [`Host`]: loads tools and calls them. The registry of loaded tools and the
//! shared engine, linker and artifact cache live here; each call's work is in
//! [`crate::runtime::attempt`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::budget::Budgets;
use crate::model::error::JournalError;
use crate::model::journal::{AttemptRecord, HistoryQuery, JournalEntry, totals};
use crate::model::schedule::ScheduleConfig;
use crate::model::units::unix_millis;
use crate::resilience::breaker::Breaker;
use crate::resilience::bulkhead::Bulkhead;
use crate::resilience::clock::{Clock, Jitter, WallClock};
use crate::resilience::retry::{RetryBudget, RetryConfig};
use crate::runtime::bindings::ToolPre;
use crate::runtime::component_cache::{ArtifactInfo, ComponentCache};
use crate::runtime::sandbox::{CallState, Grants, ScratchRoot};
use crate::runtime::warm::{WarmPool, WarmStats};
use crate::store::Store;
use crate::{
    BreakerMode, BreakerSnapshot, CallError, Effect, ErrorClass, Limits, TokenPrice, Tokens,
    ToolName,
};

mod builder;
mod call;
pub(crate) mod config;
pub(crate) mod metrics;

use crate::store::redb::breaker_modes;
mod registry;
mod request;

pub use self::builder::HostBuilder;
use self::metrics::{Metrics, ToolMetrics};
pub use self::request::{CallOutcome, CallRequest, FallbackUsed, ToolFilter};
use crate::runtime::compute::ComputePool;
use crate::runtime::lanes::{LaneStats, Lanes};

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
    prices: crate::Prices,
    /// Notification sinks, by name.
    sinks: std::collections::BTreeMap<String, Arc<NotifySink>>,
    /// The CPU lanes every attempt runs in.
    lanes: Arc<Lanes>,
    /// Threads of the host's own for guest code, when the embedder asked.
    compute: Option<ComputePool>,
}

/// A notification sink and the breaker that guards it.
pub(crate) struct NotifySink {
    pub(crate) sink: crate::runtime::webhook::Sink,
    pub(crate) breaker: Arc<Breaker>,
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
    /// Its demoted calls computing at once, at most (`[cpu] max_threads`).
    cpu: Option<Arc<tokio::sync::Semaphore>>,
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

impl Host {
    /// A builder with deny-by-default settings; see [`HostBuilder`].
    pub fn builder() -> HostBuilder {
        HostBuilder::new()
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

    /// The durable store, for the orchestration handles.
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Tasks running in this process, by id, for [`crate::Tasks`].
    pub(crate) fn tasks_running(
        &self,
    ) -> &Arc<std::sync::Mutex<HashMap<String, CancellationToken>>> {
        &self.inner.tasks_running
    }

    /// The wall clock schedules fire by.
    pub(crate) fn wall_clock(&self) -> &Arc<dyn WallClock> {
        &self.inner.wall_clock
    }

    /// The rules every schedule follows.
    pub(crate) fn schedule_config(&self) -> &ScheduleConfig {
        &self.inner.schedules
    }

    /// The notification sink called `name` ([`crate::HostBuilder::notify`]).
    pub(crate) fn sink(&self, name: &str) -> Option<&Arc<NotifySink>> {
        self.inner.sinks.get(name)
    }

    /// The time on the host's clock (breakers, backoff).
    pub(crate) fn clock_now(&self) -> Duration {
        self.inner.clock.now()
    }

    /// A uniform value in `[0, 1)` from the host's jitter source.
    pub(crate) fn jitter_unit(&self) -> f64 {
        self.inner.jitter.next_unit()
    }

    /// The notification sinks' names and URLs.
    pub fn sinks(&self) -> Vec<(String, String)> {
        self.inner
            .sinks
            .iter()
            .map(|(name, s)| (name.clone(), s.sink.url()))
            .collect()
    }

    /// What tokens cost ([`crate::HostBuilder::prices`]).
    pub fn prices(&self) -> &crate::Prices {
        &self.inner.prices
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
        let mut text = self.inner.metrics.render(&loaded);
        metrics::render_lanes(&mut text, &self.inner.lanes.stats());
        text
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
        if let Err(e) = self
            .inner
            .store
            .set_breaker_mode(tool.description.name.as_str(), mode)
        {
            tracing::warn!(error = %e, "cannot remember the breaker mode");
        }
        Ok(())
    }

    /// The breaker modes operators set, as this host's store remembers them
    /// (on a PostgreSQL store, every replica's), by tool name.
    pub fn stored_breaker_modes(&self) -> BTreeMap<String, BreakerMode> {
        self.inner.store.breaker_modes()
    }

    /// Remembers a breaker mode in this host's store, loaded tool or not;
    /// hosts on the store apply it when they load the tool.
    pub fn store_breaker_mode(&self, tool: &str, mode: BreakerMode) -> Result<(), JournalError> {
        self.inner.store.set_breaker_mode(tool, mode)
    }

    /// The breaker modes remembered in a data directory (the embedded
    /// store's), by tool name.
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
        breaker_modes::remember(data_dir, tool, mode)
    }

    /// What the CPU lanes are doing: demoted calls computing and parked,
    /// demotions and permit waits since start.
    pub fn lane_stats(&self) -> LaneStats {
        self.inner.lanes.stats()
    }

    /// How many threads of the host's own run guest code (`None`: guests
    /// run on the caller's runtime); see
    /// [`HostBuilder::compute_threads`](crate::HostBuilder::compute_threads).
    pub fn compute_threads(&self) -> Option<usize> {
        self.inner.compute.as_ref().map(ComputePool::threads)
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

/// How often finished journal records past retention are reaped.
const REAP_EVERY: Duration = Duration::from_secs(3600);

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

fn new_call_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // The process id is a system call; it does not change (the host does
    // not fork), so it is read once.
    static PID: std::sync::LazyLock<u32> = std::sync::LazyLock::new(std::process::id);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    // `call-{millis:x}-{pid:x}-{seq:x}`, written without `format!` (its
    // machinery was 5% of a call).
    let mut id = String::with_capacity(48);
    id.push_str("call-");
    push_hex(&mut id, millis);
    id.push('-');
    push_hex(&mut id, u64::from(*PID));
    id.push('-');
    push_hex(&mut id, NEXT.fetch_add(1, Ordering::Relaxed));
    id
}

/// Appends `n` in lowercase hex without leading zeros, as `{n:x}` does.
fn push_hex(out: &mut String, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    let mut at = buf.len();
    let mut n = n;
    loop {
        at -= 1;
        buf[at] = DIGITS[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    for &digit in &buf[at..] {
        out.push(char::from(digit));
    }
}

/// Tool state for operators: what each bucket's scopes hold; from
/// [`Host::state`]. A space is `BUCKET/tool`, `BUCKET/owner:AGENT` or
/// `BUCKET/schedule:OWNER/NAME`.
#[derive(Clone)]
pub struct ToolState {
    host: Host,
}

impl std::fmt::Debug for ToolState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolState").finish_non_exhaustive()
    }
}

impl ToolState {
    /// Every space, with what it holds, in order.
    pub fn spaces(&self) -> Result<Vec<(String, crate::StateUsage)>, JournalError> {
        self.host.inner.store.state_spaces()
    }

    /// The keys of `space`, in order.
    pub fn keys(&self, space: &str) -> Result<Vec<String>, JournalError> {
        self.host.inner.store.state_keys(space)
    }

    /// The value of `key` in `space`.
    pub fn get(&self, space: &str, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
        self.host.inner.store.state_get(space, key)
    }

    /// Removes `key` from `space` (an operator's change: no quota applies);
    /// whether it was there.
    pub async fn delete(&self, space: &str, key: &str) -> Result<bool, JournalError> {
        let existed = self.get(space, key)?.is_some();
        let changes = crate::model::state::StateChanges {
            space: space.to_owned(),
            writes: [(key.to_owned(), crate::model::state::StateWrite::Delete)].into(),
            quota: None,
        };
        // Without a quota, a delete is never refused.
        let _ = self.host.inner.store.state_commit(changes).await?;
        Ok(existed)
    }
}

impl Host {
    /// The tools' durable key-value state, for operators.
    pub fn state(&self) -> ToolState {
        ToolState { host: self.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::{new_call_id, push_hex};

    #[test]
    fn hex_matches_the_formatter() {
        for n in [0, 1, 9, 10, 15, 16, 255, 0xdead_beef, u64::MAX] {
            let mut out = String::new();
            push_hex(&mut out, n);
            assert_eq!(out, format!("{n:x}"));
        }
    }

    #[test]
    fn call_ids_are_distinct_and_shaped() {
        let (a, b) = (new_call_id(), new_call_id());
        assert_ne!(a, b);
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(parts.len(), 4, "{a}");
        assert_eq!(parts[0], "call");
        assert_eq!(parts[2], format!("{:x}", std::process::id()));
    }
}
