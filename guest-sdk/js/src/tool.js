// `tool({...})`: the one definition of a tool, checked when the module loads.
//
// Loading happens at build time (`cofferdam-js build` imports the tool in
// node, and ComponentizeJS evaluates it again while snapshotting), so every
// mistake here is a build error, never a wrong `describe` at run time.
// This file does not touch the host: `invoke.js` runs a definition.

import { isSchema } from './schema.js';

const TOOL = Symbol.for('cofferdam.tool');

/** What calling a tool does to the world; the host retries and journals by it. */
export const Effect = Object.freeze({
  /** No side effects: safe to retry and to run twice. The default. */
  PURE: 'pure',
  /** Side effects that are safe to repeat with the same input. */
  IDEMPOTENT: 'idempotent',
  /** Side effects that must happen at most once. */
  SIDE_EFFECTING: 'side-effecting',
});

/** Severity of a log record sent to the host. */
export const Level = Object.freeze({
  TRACE: 'trace',
  DEBUG: 'debug',
  INFO: 'info',
  WARN: 'warn',
  ERROR: 'error',
});

/** A tool definition that cannot be built (bad name, missing `run`, …). */
export class ToolDefinitionError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ToolDefinitionError';
  }
}

const KEYS = ['name', 'version', 'description', 'effect', 'input', 'run'];
const NAME = /^[a-z0-9_-]{1,64}$/;
const SEMVER = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$/;

/**
 * Defines a tool. Export the result as the module's default export:
 *
 *     export default tool({
 *       name: 'hello', version: '0.1.0', description: 'Greets someone by name',
 *       effect: Effect.PURE,                       // optional; PURE by default
 *       input: s.object({ name: s.string().describe('Whom to greet') }),
 *       run(input, ctx) { return { greeting: `Hello, ${input.name}!` }; },
 *     });
 *
 * Throws `ToolDefinitionError` or `SchemaDefinitionError` for a definition
 * that cannot be built.
 */
export function tool(definition) {
  if (definition === null || typeof definition !== 'object') {
    throw new ToolDefinitionError(`tool() takes an object ({ name, version, description, input, run }), got ${typeof definition}`);
  }
  const unknown = Object.keys(definition).filter((k) => !KEYS.includes(k));
  if (unknown.length > 0) {
    throw new ToolDefinitionError(`tool(): unknown key${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => `\`${k}\``).join(', ')} (expected ${KEYS.join(', ')})`);
  }
  const { name, version, description, effect = Effect.PURE, input, run } = definition;
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw new ToolDefinitionError(`tool(): \`name\` must be 1 to 64 characters of a-z, 0-9, _ and -, got ${JSON.stringify(name)}`);
  }
  if (typeof version !== 'string' || !SEMVER.test(version)) {
    throw new ToolDefinitionError(`tool \`${name}\`: \`version\` must be a semver version such as "0.1.0", got ${JSON.stringify(version)}`);
  }
  if (typeof description !== 'string' || description.trim() === '') {
    throw new ToolDefinitionError(`tool \`${name}\`: \`description\` must be a non-empty string (one or two sentences for a model)`);
  }
  if (!Object.values(Effect).includes(effect)) {
    throw new ToolDefinitionError(`tool \`${name}\`: \`effect\` must be Effect.PURE, Effect.IDEMPOTENT or Effect.SIDE_EFFECTING, got ${JSON.stringify(effect)}`);
  }
  if (!isSchema(input) || input._def.kind !== 'object') {
    throw new ToolDefinitionError(`tool \`${name}\`: \`input\` must be s.object({...}) (a tool's input is a JSON object)`);
  }
  if (input._def.optional || input._def.hasDefault) {
    throw new ToolDefinitionError(`tool \`${name}\`: \`input\` cannot be optional or have a default`);
  }
  if (typeof run !== 'function') {
    throw new ToolDefinitionError(`tool \`${name}\`: \`run\` must be a function (input, ctx) => output`);
  }
  const schema = {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    title: name,
    ...input.toJSONSchema(),
  };
  return Object.freeze({
    [TOOL]: true,
    name,
    version,
    description,
    effect,
    input,
    inputSchema: JSON.stringify(schema),
    run,
  });
}

/** Whether `value` was made by `tool()`. */
export function isTool(value) {
  return value !== null && typeof value === 'object' && value[TOOL] === true;
}
