// The schema builder: one definition both emits the input's JSON Schema (what
// `describe` reports to hosts and models) and validates the input before the
// tool's `run` sees it, so the two cannot disagree.
//
// It deliberately covers only what it can emit and check exactly: strings,
// integers, numbers, booleans, arrays, records, string/number/boolean enums,
// `any` JSON, and objects of those, with descriptions, defaults, optional
// fields and min/max/pattern bounds. Unions, nullable types and references
// are not offered; a definition that uses them (or puts anything but a
// builder value in an object shape) fails when the tool is built, naming the
// field, instead of producing a schema that says something else.

import { InvalidInput } from './errors.js';

const BRAND = Symbol.for('cofferdam.schema');

/** A tool definition the builder cannot express; thrown at build time. */
export class SchemaDefinitionError extends Error {
  constructor(path, message) {
    super(`input schema: ${path.length === 0 ? 'the input' : `field \`${formatPath(path)}\``}: ${message}`);
    this.name = 'SchemaDefinitionError';
    /** Where in the definition: field names and `[]` for array items. */
    this.path = path;
  }
}

/** One node of a schema. Immutable: every method returns a new node. */
export class Schema {
  constructor(def) {
    this._def = Object.freeze(def);
    Object.freeze(this);
  }

  get [BRAND]() {
    return true;
  }

  #with(extra) {
    return new Schema({ ...this._def, ...extra });
  }

  #problem(message) {
    // Recorded now, reported with the field's path when the schema is compiled.
    return this.#with({ problem: this._def.problem ?? message });
  }

  /** Sets the description shown to models (JSON Schema `description`). */
  describe(text) {
    if (typeof text !== 'string') return this.#problem('describe() takes a string');
    return this.#with({ description: text });
  }

  /** The value used when the field is absent; makes the field optional. */
  default(value) {
    return this.#with({ default: value, hasDefault: true });
  }

  /** Marks an object field as optional (it may be absent). Same as `s.optional(this)`. */
  optional() {
    return this.#with({ optional: true });
  }

  /** Lower bound: value for numbers, length in characters for strings, items for arrays. */
  min(n) {
    return this.#bound('min', n);
  }

  /** Upper bound: value for numbers, length in characters for strings, items for arrays. */
  max(n) {
    return this.#bound('max', n);
  }

  #bound(which, n) {
    const { kind } = this._def;
    if (!['string', 'integer', 'number', 'array'].includes(kind)) {
      return this.#problem(`${which}() applies to strings, integers, numbers and arrays, not to ${article(kind)}`);
    }
    const count = kind === 'string' || kind === 'array';
    if (typeof n !== 'number' || !Number.isFinite(n) || (count && (!Number.isInteger(n) || n < 0))) {
      return this.#problem(`${which}() takes ${count ? 'a non-negative integer' : 'a finite number'}, got ${show(n)}`);
    }
    return this.#with({ [which]: n });
  }

  /** A regular expression (`u` flag semantics) the whole string must match somewhere; strings only. */
  pattern(regex) {
    if (this._def.kind !== 'string') return this.#problem(`pattern() applies to strings, not to ${article(this._def.kind)}`);
    const source = regex instanceof RegExp ? regex.source : regex;
    if (typeof source !== 'string') return this.#problem(`pattern() takes a RegExp or a string, got ${show(regex)}`);
    if (regex instanceof RegExp && regex.flags.replace(/[uv]/g, '') !== '') {
      return this.#problem(`pattern() cannot carry RegExp flags (${regex.flags}): JSON Schema patterns have none`);
    }
    try {
      new RegExp(source, 'u');
    } catch (e) {
      return this.#problem(`pattern() is not a valid regular expression: ${e.message}`);
    }
    return this.#with({ pattern: source });
  }

  /** The JSON Schema of this node, as an object. Throws `SchemaDefinitionError` for an unsupported definition. */
  toJSONSchema() {
    return compile(this, []);
  }

  /**
   * Checks `value` against this schema and returns it with defaults filled in
   * (a new value; the argument is not changed). Throws `InvalidInput` listing
   * every mismatch.
   */
  parse(value) {
    if (!compiled.has(this)) {
      compile(this, []);
      compiled.add(this);
    }
    const problems = [];
    const out = check(this, value, [], problems);
    if (problems.length > 0) {
      const shown = problems.slice(0, MAX_PROBLEMS);
      const more = problems.length - shown.length;
      throw new InvalidInput(
        `input does not match the schema: ${shown.join('; ')}${more > 0 ? `; and ${more} more` : ''}`,
      );
    }
    return out;
  }
}

const MAX_PROBLEMS = 10;

/** Nodes already compiled without error, so `parse` checks the definition once. */
const compiled = new WeakSet();

function node(kind, extra = {}) {
  return new Schema({ kind, ...extra });
}

/** The builder. */
export const s = Object.freeze({
  /** A string. */
  string: () => node('string'),
  /** A whole number (JSON Schema `integer`). */
  integer: () => node('integer'),
  /** Any finite number. */
  number: () => node('number'),
  /** `true` or `false`. */
  boolean: () => node('boolean'),
  /** Any JSON value, not checked (JSON Schema `{}`). */
  any: () => node('any'),
  /** A list whose items all match `item`. */
  array: (item) => node('array', { item }),
  /** An object with any keys whose values all match `value` (JSON Schema `additionalProperties`). */
  record: (value) => node('record', { value }),
  /** One of the given strings, numbers or booleans. */
  enum: (values) => node('enum', { values }),
  /** An object field that may be absent. */
  optional: (schema) => (isSchema(schema) ? schema.optional() : node('optional-of', { inner: schema })),
  /** An object with exactly these fields; unknown fields are rejected. */
  object: (shape) => node('object', { shape }),
  /**
   * Not supported: a tool's input has one shape. Exists so that trying it
   * fails at build time naming the field, rather than with "not a function".
   */
  union: (...options) => node('union', { options }),
});

/** Whether `value` was made by the builder. */
export function isSchema(value) {
  return value !== null && typeof value === 'object' && value[BRAND] === true;
}

// ---- compile: definition → JSON Schema, or SchemaDefinitionError naming the field

function compile(schema, path) {
  if (!isSchema(schema)) throw new SchemaDefinitionError(path, notASchema(schema));
  const def = schema._def;
  if (def.problem) throw new SchemaDefinitionError(path, def.problem);
  const out = {};
  if (def.description !== undefined) out.description = def.description;
  switch (def.kind) {
    case 'string':
      out.type = 'string';
      if (def.min !== undefined) out.minLength = def.min;
      if (def.max !== undefined) out.maxLength = def.max;
      if (def.pattern !== undefined) out.pattern = def.pattern;
      break;
    case 'integer':
    case 'number':
      out.type = def.kind;
      if (def.min !== undefined) out.minimum = def.min;
      if (def.max !== undefined) out.maximum = def.max;
      break;
    case 'boolean':
      out.type = 'boolean';
      break;
    case 'any':
      break;
    case 'array':
      out.type = 'array';
      out.items = compileInner(def.item, [...path, '[]'], 'array items');
      if (def.min !== undefined) out.minItems = def.min;
      if (def.max !== undefined) out.maxItems = def.max;
      break;
    case 'record':
      out.type = 'object';
      out.additionalProperties = compileInner(def.value, [...path, '*'], 'record values');
      break;
    case 'enum':
      Object.assign(out, compileEnum(def.values, path));
      break;
    case 'object':
      Object.assign(out, compileObject(def.shape, path));
      break;
    case 'optional-of':
      throw new SchemaDefinitionError(path, `s.optional() takes a builder value, got ${notASchema(def.inner, false)}`);
    case 'union':
      throw new SchemaDefinitionError(
        path,
        'unions (s.union) are not supported: a tool input has one shape; use an s.enum() field to choose a mode and s.optional() fields for the rest',
      );
    default:
      throw new SchemaDefinitionError(path, `unknown schema kind ${show(def.kind)}`);
  }
  if (def.min !== undefined && def.max !== undefined && def.min > def.max) {
    throw new SchemaDefinitionError(path, `min(${def.min}) is greater than max(${def.max})`);
  }
  if (def.hasDefault) {
    const problems = [];
    check(schema, def.default, [], problems);
    if (problems.length > 0 || def.default === undefined) {
      throw new SchemaDefinitionError(
        path,
        `default ${show(def.default)} does not match the field's own schema${problems.length > 0 ? `: it ${problems[0].replace(/^the input /, '')}` : ''}`,
      );
    }
    out.default = JSON.parse(JSON.stringify(def.default));
  }
  return out;
}

function compileInner(schema, path, where) {
  if (isSchema(schema) && (schema._def.optional || schema._def.hasDefault)) {
    throw new SchemaDefinitionError(
      path,
      `${where} cannot be optional or have a default: only object fields can be absent`,
    );
  }
  return compile(schema, path);
}

function compileEnum(values, path) {
  if (!Array.isArray(values) || values.length === 0) {
    throw new SchemaDefinitionError(path, `s.enum() takes a non-empty array of strings, numbers or booleans, got ${show(values)}`);
  }
  const seen = new Set();
  for (const value of values) {
    if (isSchema(value) || (value !== null && typeof value === 'object')) {
      throw new SchemaDefinitionError(
        path,
        's.enum() takes literal strings, numbers or booleans, not schemas or objects: unions of objects are not supported',
      );
    }
    const literal =
      typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value));
    if (!literal) throw new SchemaDefinitionError(path, `s.enum() value ${show(value)} is not a string, finite number or boolean`);
    if (seen.has(value)) throw new SchemaDefinitionError(path, `s.enum() lists ${show(value)} twice`);
    seen.add(value);
  }
  const types = new Set(values.map((v) => typeof v));
  const out = { enum: [...values] };
  if (types.size === 1) out.type = [...types][0];
  return out;
}

function compileObject(shape, path) {
  if (isSchema(shape) || shape === null || typeof shape !== 'object' || Array.isArray(shape)) {
    throw new SchemaDefinitionError(path, `s.object() takes a plain object of fields, got ${notASchema(shape, false)}`);
  }
  const properties = {};
  const required = [];
  for (const [name, field] of Object.entries(shape)) {
    const fieldPath = [...path, name];
    properties[name] = compile(field, fieldPath);
    if (!(field._def.optional || field._def.hasDefault)) required.push(name);
  }
  const out = { type: 'object', properties };
  if (required.length > 0) out.required = required;
  out.additionalProperties = false;
  return out;
}

function notASchema(value, withHint = true) {
  const hint = withHint ? ' (use s.string(), s.integer(), s.object({...}), … from @cofferdam/guest)' : '';
  if (value === undefined) return `it is undefined, not a schema${hint}`;
  if (typeof value === 'function') {
    const name = value.name ? `s.${value.name}` : 'a function';
    return `${name} is a function, not a schema: call it (${value.name ? `${name}()` : 'add ()'})`;
  }
  if (Array.isArray(value)) {
    return 'an array literal is not a schema: use s.array(T) for a list (unions such as [A, B] are not supported)';
  }
  if (value !== null && typeof value === 'object') {
    if ('type' in value || 'properties' in value || '$ref' in value || 'anyOf' in value || 'oneOf' in value) {
      return `a raw JSON Schema object is not a builder value: build it with s.*()${hint}`;
    }
    return `a plain object is not a schema: wrap nested fields in s.object({...})`;
  }
  return `${show(value)} is not a schema${hint}`;
}

// ---- check: input value → validated copy, collecting problems

function check(schema, value, path, problems) {
  const def = schema._def;
  const at = (message) => problems.push(path.length === 0 ? `the input ${message}` : `\`${formatPath(path)}\` ${message}`);
  switch (def.kind) {
    case 'any':
      return value;
    case 'string': {
      if (typeof value !== 'string') return at(`must be a string, got ${describeValue(value)}`);
      const length = [...value].length;
      if (def.min !== undefined && length < def.min) at(`must be at least ${plural(def.min, 'character')} long`);
      if (def.max !== undefined && length > def.max) at(`must be at most ${plural(def.max, 'character')} long`);
      if (def.pattern !== undefined && !new RegExp(def.pattern, 'u').test(value)) at(`must match /${def.pattern}/`);
      return value;
    }
    case 'integer':
    case 'number': {
      if (typeof value !== 'number' || !Number.isFinite(value)) {
        return at(`must be ${def.kind === 'integer' ? 'an integer' : 'a number'}, got ${describeValue(value)}`);
      }
      if (def.kind === 'integer' && !Number.isInteger(value)) return at(`must be an integer, got ${value}`);
      if (def.min !== undefined && value < def.min) at(`must be at least ${def.min}, got ${value}`);
      if (def.max !== undefined && value > def.max) at(`must be at most ${def.max}, got ${value}`);
      return value;
    }
    case 'boolean':
      if (typeof value !== 'boolean') return at(`must be true or false, got ${describeValue(value)}`);
      return value;
    case 'enum':
      if (!def.values.includes(value)) {
        return at(`must be one of ${def.values.map((v) => JSON.stringify(v)).join(', ')}, got ${describeValue(value)}`);
      }
      return value;
    case 'array': {
      if (!Array.isArray(value)) return at(`must be an array, got ${describeValue(value)}`);
      if (def.min !== undefined && value.length < def.min) at(`must have at least ${plural(def.min, 'item')}`);
      if (def.max !== undefined && value.length > def.max) at(`must have at most ${plural(def.max, 'item')}`);
      return value.map((item, i) => check(def.item, item, [...path, i], problems));
    }
    case 'record': {
      if (!isPlainObject(value)) return at(`must be an object, got ${describeValue(value)}`);
      const out = {};
      for (const [key, item] of Object.entries(value)) out[key] = check(def.value, item, [...path, key], problems);
      return out;
    }
    case 'object': {
      if (!isPlainObject(value)) return at(`must be an object, got ${describeValue(value)}`);
      const out = {};
      for (const [name, field] of Object.entries(def.shape)) {
        if (Object.hasOwn(value, name)) {
          out[name] = check(field, value[name], [...path, name], problems);
        } else if (field._def.hasDefault) {
          out[name] = structuredCloneJson(field._def.default);
        } else if (!field._def.optional) {
          problems.push(`missing field \`${formatPath([...path, name])}\``);
        }
      }
      for (const name of Object.keys(value)) {
        if (!Object.hasOwn(def.shape, name)) {
          const known = Object.keys(def.shape).map((k) => `\`${k}\``);
          problems.push(
            `unknown field \`${formatPath([...path, name])}\`${known.length > 0 ? ` (expected ${known.join(', ')})` : ''}`,
          );
        }
      }
      return out;
    }
    default:
      return at(`cannot be checked: unsupported schema kind ${def.kind}`);
  }
}

function structuredCloneJson(value) {
  return JSON.parse(JSON.stringify(value));
}

function isPlainObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** `a.b[2].c`, `tags["x y"]`. */
export function formatPath(path) {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else if (part === '[]' || part === '*') out += part === '[]' ? '[]' : '.*';
    else if (IDENT.test(part)) out += out === '' ? part : `.${part}`;
    else out += `[${JSON.stringify(part)}]`;
  }
  return out;
}

function describeValue(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  switch (typeof value) {
    case 'string':
      return `the string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)}`;
    case 'number':
      return `the number ${value}`;
    case 'boolean':
      return String(value);
    case 'object':
      return 'an object';
    case 'undefined':
      return 'nothing';
    default:
      return typeof value;
  }
}

function show(value) {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'function') return `function ${value.name || '(anonymous)'}`;
  if (typeof value === 'bigint') return `${value}n`;
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

function article(kind) {
  const noun = kind === 'any' ? 'any' : kind === 'enum' ? 'an enum' : kind === 'object' ? 'an object' : kind === 'integer' ? 'an integer' : `a ${kind}`;
  return noun;
}

function plural(n, noun) {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}
