//! How the outside reaches a host: the MCP server (metrics are rendered by the host).

pub(crate) mod mcp;
