//! The one `bindgen!` of the host: typed exports of the `cofferdam:tool` world.
//!
//! Host imports (`cofferdam:tool/host`) are linked by hand in
//! [`crate::runtime::host_api`], because `remaining-budget` needs the store's fuel,
//! which bindgen's generated traits cannot reach without the
//! component-model-async machinery.

//!
//! `wasi:keyvalue` imports are generated here and implemented on the call's
//! store data in [`crate::runtime::state`].

wasmtime::component::bindgen!({
    world: "tool",
    path: "../wit",
    exports: { default: async },
    imports: {
        "wasi:keyvalue/store": trappable,
        "wasi:keyvalue/atomics": trappable,
    },
    with: {
        "wasi:keyvalue/store.bucket": crate::runtime::bindings::Bucket,
    },
    trappable_error_type: {
        "wasi:keyvalue/store.error" => crate::runtime::bindings::StateError,
    },
});

/// An open bucket (the guest's handle).
pub struct Bucket;

/// What a `wasi:keyvalue` function fails with; a store failure traps
/// nothing but is told to the guest as `other`.
#[derive(Debug)]
pub enum StateError {
    /// No bucket of that name is granted.
    NoSuchStore,
    /// The tool has no state grant, or the call has no scope for it.
    AccessDenied,
    /// Anything else, as a message.
    Other(String),
}

impl From<wasmtime::component::ResourceTableError> for StateError {
    fn from(e: wasmtime::component::ResourceTableError) -> Self {
        Self::Other(e.to_string())
    }
}

impl From<crate::model::error::JournalError> for StateError {
    fn from(e: crate::model::error::JournalError) -> Self {
        Self::Other(format!("state store: {e}"))
    }
}
