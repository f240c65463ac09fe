// The schema builder: what each builder emits, what it accepts and rejects,
// and the definitions it refuses (by field) instead of emitting a wrong schema.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { InvalidInput, SchemaDefinitionError, s } from '../src/index.js';

const schemaOf = (shape) => s.object(shape).toJSONSchema().properties.x;

describe('builder → JSON Schema', () => {
  const table = [
    [s.string(), { type: 'string' }],
    [s.integer(), { type: 'integer' }],
    [s.number(), { type: 'number' }],
    [s.boolean(), { type: 'boolean' }],
    [s.any(), {}],
    [s.array(s.integer()), { type: 'array', items: { type: 'integer' } }],
    [s.record(s.string()), { type: 'object', additionalProperties: { type: 'string' } }],
    [s.enum(['a', 'b']), { enum: ['a', 'b'], type: 'string' }],
    [s.enum([1, 2]), { enum: [1, 2], type: 'number' }],
    [s.enum(['a', 1]), { enum: ['a', 1] }],
    [s.string().describe('d'), { description: 'd', type: 'string' }],
    [s.string().min(1).max(5).pattern(/^[a-z]+$/), { type: 'string', minLength: 1, maxLength: 5, pattern: '^[a-z]+$' }],
    [s.integer().min(0).max(10), { type: 'integer', minimum: 0, maximum: 10 }],
    [s.array(s.string()).min(1).max(3), { type: 'array', items: { type: 'string' }, minItems: 1, maxItems: 3 }],
    [s.integer().default(3), { type: 'integer', default: 3 }],
    [
      s.object({ a: s.string(), b: s.optional(s.integer()), c: s.boolean().default(false) }),
      {
        type: 'object',
        properties: { a: { type: 'string' }, b: { type: 'integer' }, c: { type: 'boolean', default: false } },
        required: ['a'],
        additionalProperties: false,
      },
    ],
  ];
  for (const [builder, expected] of table) {
    test(JSON.stringify(expected), () => {
      assert.deepEqual(schemaOf({ x: builder }), expected);
    });
  }

  test('an object with no required fields has no `required`', () => {
    assert.deepEqual(s.object({ a: s.string().optional() }).toJSONSchema(), {
      type: 'object',
      properties: { a: { type: 'string' } },
      additionalProperties: false,
    });
  });

  test('nodes are immutable: describe() returns a new node', () => {
    const base = s.string();
    const described = base.describe('x');
    assert.equal(base.toJSONSchema().description, undefined);
    assert.equal(described.toJSONSchema().description, 'x');
  });
});

describe('validation', () => {
  const input = s.object({
    name: s.string().min(1),
    count: s.integer().min(0).max(10).default(1),
    ratio: s.number().optional(),
    tags: s.array(s.string()).optional(),
    mode: s.enum(['fast', 'slow']).default('fast'),
    meta: s.record(s.integer()).optional(),
    nested: s.object({ flag: s.boolean() }).optional(),
    anything: s.any().optional(),
  });

  test('valid input is returned with defaults filled in, and not mutated', () => {
    const raw = { name: 'a', tags: ['x'] };
    assert.deepEqual(input.parse(raw), { name: 'a', count: 1, tags: ['x'], mode: 'fast' });
    assert.deepEqual(raw, { name: 'a', tags: ['x'] });
  });

  test('defaults are copies: changing one does not change the next', () => {
    const schema = s.object({ list: s.array(s.string()).default(['a']) });
    schema.parse({}).list.push('b');
    assert.deepEqual(schema.parse({}).list, ['a']);
  });

  test('any keeps any JSON value, including null', () => {
    assert.deepEqual(input.parse({ name: 'a', anything: { deep: [null, 1] } }).anything, { deep: [null, 1] });
    assert.equal(input.parse({ name: 'a', anything: null }).anything, null);
  });

  const rejects = [
    [[], 'the input must be an object, got an array'],
    [null, 'the input must be an object, got null'],
    [{}, 'missing field `name`'],
    [{ name: '' }, '`name` must be at least 1 character long'],
    [{ name: 'a', count: 1.5 }, '`count` must be an integer, got 1.5'],
    [{ name: 'a', count: '1' }, '`count` must be an integer, got the string "1"'],
    [{ name: 'a', count: 11 }, '`count` must be at most 10, got 11'],
    [{ name: 'a', ratio: true }, '`ratio` must be a number, got true'],
    [{ name: 'a', tags: ['x', 2] }, '`tags[1]` must be a string, got the number 2'],
    [{ name: 'a', mode: 'medium' }, '`mode` must be one of "fast", "slow", got the string "medium"'],
    [{ name: 'a', meta: { 'a b': 'x' } }, '`meta["a b"]` must be an integer, got the string "x"'],
    [{ name: 'a', nested: {} }, 'missing field `nested.flag`'],
    [{ name: 'a', extra: 1 }, 'unknown field `extra` (expected `name`, `count`, `ratio`, `tags`, `mode`, `meta`, `nested`, `anything`)'],
    [{ name: 'a', ratio: null }, '`ratio` must be a number, got null'],
  ];
  for (const [value, message] of rejects) {
    test(`rejects ${JSON.stringify(value)}`, () => {
      assert.throws(
        () => input.parse(value),
        (e) => e instanceof InvalidInput && e.message === `input does not match the schema: ${message}`,
      );
    });
  }

  test('every problem is listed, up to ten', () => {
    const many = s.object({ list: s.array(s.integer()) });
    assert.throws(
      () => many.parse({ list: Array.from({ length: 12 }, () => 'x') }),
      (e) => e.message.split('; ').length === 11 && e.message.endsWith('; and 2 more'),
    );
  });

  test('string length counts characters, not UTF-16 units', () => {
    const one = s.object({ c: s.string().max(1) });
    assert.deepEqual(one.parse({ c: '🦀' }), { c: '🦀' });
  });

  test('pattern matches anywhere unless anchored, with u semantics', () => {
    const p = s.object({ id: s.string().pattern('[0-9]') });
    assert.deepEqual(p.parse({ id: 'a1' }), { id: 'a1' });
    assert.throws(() => p.parse({ id: 'ab' }), /`id` must match \/\[0-9\]\//);
  });
});

describe('definitions the builder cannot express fail, naming the field', () => {
  const cases = [
    ['a non-builder value', () => s.object({ a: 42 }), 'field `a`: 42 is not a schema'],
    ['a plain nested object', () => s.object({ a: { b: s.string() } }), 'field `a`: a plain object is not a schema: wrap nested fields in s.object'],
    ['an uncalled builder, nested', () => s.object({ o: s.object({ z: s.string }) }), 'field `o.z`: s.string is a function, not a schema: call it (s.string())'],
    ['a union', () => s.object({ u: s.union(s.object({}), s.object({})) }), 'field `u`: unions (s.union) are not supported'],
    ['an enum of objects', () => s.object({ e: s.enum([s.object({}), s.object({})]) }), 'field `e`: s.enum() takes literal strings, numbers or booleans, not schemas or objects: unions of objects are not supported'],
    ['an array literal', () => s.object({ l: [s.string(), s.integer()] }), 'field `l`: an array literal is not a schema'],
    ['a raw JSON Schema', () => s.object({ j: { type: 'string' } }), 'field `j`: a raw JSON Schema object is not a builder value'],
    ['an optional array item', () => s.object({ a: s.array(s.string().optional()) }), 'field `a[]`: array items cannot be optional'],
    ['an optional record value', () => s.object({ r: s.record(s.string().default('x')) }), 'field `r.*`: record values cannot be optional'],
    ['a default of the wrong type', () => s.object({ d: s.string().default(3) }), 'field `d`: default 3 does not match the field\'s own schema: it must be a string, got the number 3'],
    ['min() on a boolean', () => s.object({ b: s.boolean().min(1) }), 'field `b`: min() applies to strings, integers, numbers and arrays, not to a boolean'],
    ['min greater than max', () => s.object({ n: s.integer().min(5).max(1) }), 'field `n`: min(5) is greater than max(1)'],
    ['an empty enum', () => s.object({ e: s.enum([]) }), 'field `e`: s.enum() takes a non-empty array'],
    ['a duplicate enum value', () => s.object({ e: s.enum(['a', 'a']) }), 'field `e`: s.enum() lists "a" twice'],
    ['s.optional of a non-builder', () => s.object({ o: s.optional('x') }), 'field `o`: s.optional() takes a builder value'],
    ['a bad pattern', () => s.object({ p: s.string().pattern('(') }), 'field `p`: pattern() is not a valid regular expression'],
    ['a pattern with flags', () => s.object({ p: s.string().pattern(/a/i) }), 'field `p`: pattern() cannot carry RegExp flags (i)'],
    ['deep inside arrays', () => s.object({ rows: s.array(s.object({ cell: 7 })) }), 'field `rows[].cell`: 7 is not a schema'],
  ];
  for (const [what, define, message] of cases) {
    test(what, () => {
      assert.throws(
        () => define().toJSONSchema(),
        (e) => e instanceof SchemaDefinitionError && e.message.startsWith(`input schema: ${message}`),
      );
    });
  }

  test('parse() refuses an unsupported definition too', () => {
    assert.throws(() => s.object({ a: 42 }).parse({ a: 1 }), SchemaDefinitionError);
  });
});
