//! What a tool may do (`ToolPolicy`, a manifest) and what a host is (`HostConfig`, `cofferdam.toml`).

pub(crate) mod config;
pub(crate) mod tool;
