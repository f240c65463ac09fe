//! Running one guest: the engine, the `bindgen!` types, the artifact cache, the per-call sandbox
//! and filesystem guard, host imports, outbound HTTP, one attempt, and the warm pool.

pub(crate) mod attempt;
pub(crate) mod bindings;
pub(crate) mod component_cache;
pub(crate) mod compute;
pub(crate) mod engine;
pub(crate) mod fs_guard;
pub(crate) mod host_api;
pub(crate) mod lanes;
pub(crate) mod net;
pub(crate) mod sandbox;
pub(crate) mod state;
pub(crate) mod warm;
pub(crate) mod webhook;
pub(crate) mod yielded;
