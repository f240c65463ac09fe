// @cofferdam/guest: write cofferdam tools in JavaScript.
//
// A tool is one `export default tool({...})`: metadata, an input schema from
// the `s` builder, and `run(input, ctx)`. `cofferdam-js build tool.js -o
// tool.wasm` turns the module into a WebAssembly component of the
// `cofferdam:tool@0.1.0` world (`wit/tool.wit`) with ComponentizeJS.
//
// Nothing here grants capabilities: the network and state are whatever the
// host's policy for the tool allows.

export { tool, isTool, Effect, Level, ToolDefinitionError } from './tool.js';
export { s, Schema, SchemaDefinitionError, isSchema } from './schema.js';
export { ToolError, InvalidInput, Transient, RateLimited, Permanent } from './errors.js';
export { Context } from './context.js';
export { State } from './state.js';
export * as http from './http.js';
