//! Paths of the example and test tools, built once to `wasm32-wasip2` by this
//! crate's build script.
//!
//! Each constant is the absolute path of a component; tests load them
//! instead of shelling out to cargo. The build script runs a nested
//! `cargo build --target wasm32-wasip2` with its own target directory under
//! `OUT_DIR`, so it never contends with the outer build's lock.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

pub mod upstream;
