//! The one `bindgen!` of the host: typed exports of the `cofferdam:tool` world.
//!
//! Host imports (`cofferdam:tool/host`) are linked by hand in
//! [`crate::runtime::host_api`], because `remaining-budget` needs the store's fuel,
//! which bindgen's generated traits cannot reach without the
//! component-model-async machinery.

wasmtime::component::bindgen!({
    world: "tool",
    path: "../wit",
    exports: { default: async },
});
