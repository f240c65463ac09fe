//! The plain-wasmtime baselines: a minimal embedding of the same tool
//! component, with a fresh pooled instance per call ([`PlainWasmtime`]) or
//! one instance kept for many calls ([`PlainReused`]).
//!
//! It deliberately has none of cofferdam's limits, policies or bookkeeping:
//! it is the floor every figure is compared with.

use std::hint::black_box;

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::runtime::bindings::cofferdam::tool::{host as wit_host, types as wit_types};
use crate::runtime::bindings::{Tool, ToolPre};

/// The store data of the plain baseline: WASI and nothing else.
struct Plain {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Plain {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit_types::Host for Plain {}

impl wit_host::Host for Plain {
    fn log(&mut self, _level: wit_types::Level, message: String) {
        black_box(message);
    }
    fn progress(&mut self, _done: u64, _total: Option<u64>, message: String) {
        black_box(message);
    }
    fn remaining_budget(&mut self) -> u64 {
        0
    }
}

fn plain_state() -> Plain {
    Plain {
        wasi: WasiCtx::builder().build(),
        table: ResourceTable::new(),
    }
}

fn plain_context() -> wit_types::CallContext {
    wit_types::CallContext {
        call_id: "c".into(),
        task_id: None,
        attempt: 1,
        deadline_ms: 1,
    }
}

/// The floor: a minimal wasmtime 48 embedding of a tool component, with the
/// pooling allocator and a fresh store and WASI context per call; no fuel,
/// no epochs, no limits. What any embedder would write first.
pub struct PlainWasmtime {
    engine: Engine,
    pre: ToolPre<Plain>,
    metering: Metering,
}

/// What the plain baseline compiles in to bound a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metering {
    /// Nothing: the floor.
    None,
    /// Epoch checks only (a deadline, no instruction count).
    Epochs,
    /// Fuel and epoch checks, as cofferdam compiles every tool.
    FuelAndEpochs,
}

/// How the plain baseline's pooling allocator resets slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// wasmtime's defaults (`madvise` per slot).
    Default,
    /// The settings cofferdam uses (`memset` of dirtied pages), so the
    /// comparison isolates cofferdam's own per-call work.
    SameAsCofferdam,
}

impl PlainWasmtime {
    /// Compiles `component` into a plain engine.
    pub fn new(component: &[u8], pooling: Pooling) -> wasmtime::Result<Self> {
        Self::build(component, pooling, Metering::None)
    }

    /// The same with fuel metering and epoch interruption compiled in, and
    /// fuel and a deadline set per call: what bounding a guest costs alone.
    pub fn metered(component: &[u8]) -> wasmtime::Result<Self> {
        Self::build(component, Pooling::SameAsCofferdam, Metering::FuelAndEpochs)
    }

    /// The same with epoch interruption only: what bounding a guest by time
    /// alone would cost, without counting its instructions as fuel.
    pub fn epochs_only(component: &[u8]) -> wasmtime::Result<Self> {
        Self::build(component, Pooling::SameAsCofferdam, Metering::Epochs)
    }

    fn build(component: &[u8], pooling: Pooling, metering: Metering) -> wasmtime::Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        if pooling == Pooling::SameAsCofferdam {
            crate::runtime::engine::tune_slot_reuse(&mut pool);
        }
        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .consume_fuel(metering == Metering::FuelAndEpochs)
            .epoch_interruption(metering != Metering::None);
        let engine = Engine::new(&config)?;
        let component = Component::new(&engine, component)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // The tool interface only: the baseline tools keep no state.
        crate::runtime::bindings::cofferdam::tool::host::add_to_linker::<_, HasSelf<Plain>>(
            &mut linker,
            |s| s,
        )?;
        let pre = ToolPre::new(linker.instantiate_pre(&component)?)?;
        Ok(Self {
            engine,
            pre,
            metering,
        })
    }

    /// One call on a fresh instance; panics if the tool fails.
    pub async fn call(&self, input: &str) -> String {
        let mut store = Store::new(&self.engine, plain_state());
        if self.metering == Metering::FuelAndEpochs {
            store.set_fuel(2_000_000_000).expect("fuel");
        }
        if self.metering != Metering::None {
            // No epoch ticker runs here: the check is paid, never hit.
            store.set_epoch_deadline(1);
        }
        let tool = self
            .pre
            .instantiate_async(&mut store)
            .await
            .expect("instantiate");
        tool.call_invoke(&mut store, &plain_context(), input)
            .await
            .expect("call")
            .expect("tool ok")
    }

    /// One instance kept for many calls.
    pub async fn reused(&self) -> wasmtime::Result<PlainReused> {
        let mut store = Store::new(&self.engine, plain_state());
        let tool = self.pre.instantiate_async(&mut store).await?;
        Ok(PlainReused { store, tool })
    }
}

/// The floor of warm reuse: one plain instance called again and again.
pub struct PlainReused {
    store: Store<Plain>,
    tool: Tool,
}

impl PlainReused {
    /// One call on the kept instance; panics if the tool fails.
    pub async fn call(&mut self, input: &str) -> String {
        self.tool
            .call_invoke(&mut self.store, &plain_context(), input)
            .await
            .expect("call")
            .expect("tool ok")
    }
}
