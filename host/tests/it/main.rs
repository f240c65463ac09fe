//! The host's integration tests, in one binary: one module per behaviour
//! area (a test binary links wasmtime once, not once per file). Guests are
//! built once by `tests/artifacts`; `common` holds the shared helpers.

mod cli;
mod common;
mod crash;
mod escalations;
mod http;
mod journal;
mod lanes;
mod lifecycle;
mod limits;
mod manage;
mod mcp;
mod migrate;
mod notify;
mod polyglot;
mod postgres;
mod prices;
mod replicas;
mod resilience;
mod sandbox;
mod schedules;
mod state;
mod task_crash;
mod tasks;
mod warm;
