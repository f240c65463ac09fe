//! The one wasmtime [`Engine`] of a host: pooling allocator, fuel, epoch
//! interruption, and the ticker thread that advances epochs.
//!
//! It does not know about tools; per-call limits are applied to each `Store`
//! in [`crate::runtime::attempt`].

use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::BuildError;

/// Engine-wide settings, fixed when the host is built.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EngineSettings {
    /// Component instances that can be live at once across all tools.
    pub max_instances: u32,
    /// Size of each memory slot in the pool; no tool's memory cap may exceed it.
    pub max_memory_bytes: u64,
    /// Wasm stack per call.
    pub max_wasm_stack: usize,
    /// How often epochs advance (the granularity of deadline checks).
    pub epoch_tick: Duration,
}

/// Bytes of each memory and table reset by `memset` instead of `madvise`.
const KEEP_RESIDENT: usize = 2 << 20;
/// Slots whose decommit is batched into one `madvise` round.
const DECOMMIT_BATCH: usize = 16;

/// How slots are reset for reuse. Resetting with `madvise` flushes the TLB
/// of every core the process runs on (an IPI per call): measured, it cost
/// 60 µs of a 97 µs call and kept 2 workers at the throughput of 1. Instead,
/// the pages a call dirtied are reset with `memset` (PAGEMAP_SCAN finds
/// them, Linux 6.7+), up to [`KEEP_RESIDENT`] bytes, and the `madvise` calls
/// that remain are batched.
pub(crate) fn tune_slot_reuse(pool: &mut PoolingAllocationConfig) {
    pool.pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .decommit_batch_size(DECOMMIT_BATCH);
}

pub(crate) fn build(settings: &EngineSettings) -> Result<Engine, BuildError> {
    let mut pool = PoolingAllocationConfig::new();
    let n = settings.max_instances.max(1);
    // A wasip2 Rust component has about four core instances (the program,
    // the WASI adapter and shims) and two memories; a Python one
    // (componentize-py) has 14 core instances, so every instance of the pool
    // gets room for 16. Slots are address space reserved, not memory used.
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(16))
        .total_memories(n.saturating_mul(4))
        .total_tables(n.saturating_mul(16))
        .total_stacks(n)
        .max_memory_size(usize::try_from(settings.max_memory_bytes).unwrap_or(usize::MAX));
    tune_slot_reuse(&mut pool);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(settings.max_wasm_stack)
        .memory_init_cow(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|e| BuildError::Engine(e.into_boxed_dyn_error()))
}

/// Advances the engine's epoch every `tick` until the engine is dropped.
/// Holds only a weak reference, so the thread never keeps the engine alive.
pub(crate) fn start_epoch_ticker(engine: &Engine, tick: Duration) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("cofferdam-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(tick);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        });
    if let Err(error) = spawned {
        // Without the ticker, deadlines still hold through the async timeout;
        // only CPU-bound guests lose their preemption points.
        tracing::error!(%error, "cannot start the epoch ticker thread");
    }
}
