//! What a tool may do: `ToolPolicy` and its manifest, composed from the resilience and runtime settings it names.

pub(crate) mod tool;
