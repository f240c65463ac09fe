//! How the outside reaches a host: the MCP server and metrics.

pub(crate) mod mcp;
pub(crate) mod metrics;
