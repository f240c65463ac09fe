// A definition run as the component runs it (`createExports` with a fake
// host): input checked before `run`, every error class mapped to its WIT
// case, anything else `permanent`, and the context wired to the host.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  Effect,
  InvalidInput,
  Permanent,
  RateLimited,
  ToolDefinitionError,
  ToolError,
  Transient,
  s,
  tool,
} from '../src/index.js';
import { createExports } from '../src/invoke.js';

function fakeHost() {
  const calls = { log: [], progress: [] };
  const store = new Map();
  const bucket = {
    get: (k) => (store.has(k) ? store.get(k) : undefined),
    set: (k, v) => void store.set(k, v),
    delete: (k) => void store.delete(k),
    listKeys: (cursor) => {
      const keys = [...store.keys()].sort();
      const start = cursor === undefined ? 0 : Number(cursor);
      const page = keys.slice(start, start + 2);
      return { keys: page, cursor: start + 2 < keys.length ? BigInt(start + 2) : undefined };
    },
  };
  return {
    calls,
    store,
    log: (level, message) => calls.log.push([level, message]),
    progress: (done, total, message) => calls.progress.push([done, total, message]),
    remainingBudget: () => 1234n,
    openBucket: (name) => {
      calls.opened = name;
      return bucket;
    },
    increment: (b, key, delta) => {
      assert.equal(b, bucket);
      const next = BigInt(new TextDecoder().decode(store.get(key) ?? new TextEncoder().encode('0'))) + delta;
      store.set(key, new TextEncoder().encode(String(next)));
      return next;
    },
  };
}

const CALL = { callId: 'call-1', taskId: undefined, attempt: 2, deadlineMs: 30000n };

function define(run, input = s.object({ n: s.integer().default(1) })) {
  return tool({ name: 'probe', version: '1.2.3', description: 'A probe.', input, run });
}

describe('tool()', () => {
  test('describe reports metadata, effect and the schema', () => {
    const { describe: d } = createExports(
      tool({
        name: 'hello',
        version: '0.1.0',
        description: 'Greets.',
        effect: Effect.IDEMPOTENT,
        input: s.object({ name: s.string().describe('Whom') }),
        run: () => null,
      }),
      fakeHost(),
    );
    const info = d();
    assert.deepEqual({ ...info, inputSchema: JSON.parse(info.inputSchema) }, {
      name: 'hello',
      version: '0.1.0',
      description: 'Greets.',
      effect: 'idempotent',
      inputSchema: {
        $schema: 'https://json-schema.org/draft/2020-12/schema',
        title: 'hello',
        type: 'object',
        properties: { name: { description: 'Whom', type: 'string' } },
        required: ['name'],
        additionalProperties: false,
      },
    });
  });

  test('the effect is pure unless given', () => {
    assert.equal(define(() => null).effect, 'pure');
  });

  const bad = [
    [{ name: 'Bad Name' }, '`name` must be 1 to 64 characters'],
    [{ version: '1.0' }, '`version` must be a semver version'],
    [{ description: ' ' }, '`description` must be a non-empty string'],
    [{ effect: 'pure-ish' }, '`effect` must be Effect.PURE'],
    [{ input: s.string() }, '`input` must be s.object({...})'],
    [{ input: { a: s.string() } }, '`input` must be s.object({...})'],
    [{ run: 'x' }, '`run` must be a function'],
    [{ efect: 'pure' }, 'tool(): unknown key `efect`'],
  ];
  for (const [override, message] of bad) {
    test(`refuses ${JSON.stringify(Object.keys(override))}: ${message}`, () => {
      const base = { name: 'ok', version: '0.1.0', description: 'd', input: s.object({}), run: () => null };
      assert.throws(
        () => tool({ ...base, ...override }),
        (e) => e instanceof ToolDefinitionError && e.message.includes(message),
      );
    });
  }

  test('an input schema the builder cannot express fails when tool() runs', () => {
    assert.throws(() => define(() => null, s.object({ a: { b: s.string() } })), /input schema: field `a`/);
  });
});

describe('invoke', () => {
  test('output is JSON; undefined is null', async () => {
    const host = fakeHost();
    assert.deepEqual(await createExports(define((i) => ({ twice: i.n * 2 })), host).invoke(CALL, '{"n":4}'), {
      tag: 'ok',
      val: '{"twice":8}',
    });
    assert.deepEqual(await createExports(define(() => undefined), host).invoke(CALL, '{}'), { tag: 'ok', val: 'null' });
  });

  test('input that does not match is invalid-input, and run is not called', async () => {
    let ran = false;
    const { invoke } = createExports(define(() => (ran = true)), fakeHost());
    assert.deepEqual(await invoke(CALL, '{"n":"x"}'), {
      tag: 'err',
      val: { tag: 'invalid-input', val: 'input does not match the schema: `n` must be an integer, got the string "x"' },
    });
    assert.equal((await invoke(CALL, '{')).val.tag, 'invalid-input');
    assert.match((await invoke(CALL, '{')).val.val, /^input is not valid JSON: /);
    assert.equal(ran, false);
  });

  const thrown = [
    ['InvalidInput', () => new InvalidInput('bad'), { tag: 'invalid-input', val: 'bad' }],
    ['Transient', () => new Transient('later'), { tag: 'transient', val: 'later' }],
    ['RateLimited', () => new RateLimited(2500), { tag: 'rate-limited', val: 2500 }],
    ['RateLimited, clamped to u32', () => new RateLimited(2 ** 40), { tag: 'rate-limited', val: 0xffffffff }],
    ['RateLimited, negative', () => new RateLimited(-5), { tag: 'rate-limited', val: 0 }],
    ['Permanent', () => new Permanent('never'), { tag: 'permanent', val: 'never' }],
    ['ToolError itself', () => new ToolError('base'), { tag: 'permanent', val: 'base' }],
    ['a plain Error', () => new Error('boom'), { tag: 'permanent', val: 'boom' }],
    ['a TypeError', () => new TypeError('x is not a function'), { tag: 'permanent', val: 'TypeError: x is not a function' }],
    ['a string', () => 'just text', { tag: 'permanent', val: 'just text' }],
    ['an object', () => ({ code: 7 }), { tag: 'permanent', val: 'thrown value {"code":7}' }],
    ['undefined', () => undefined, { tag: 'permanent', val: 'thrown value undefined' }],
  ];
  for (const [what, make, expected] of thrown) {
    test(`throwing ${what} → ${expected.tag}`, async () => {
      const sync = createExports(define(() => { throw make(); }), fakeHost());
      assert.deepEqual(await sync.invoke(CALL, '{}'), { tag: 'err', val: expected });
      const rejected = createExports(define(async () => { await null; throw make(); }), fakeHost());
      assert.deepEqual(await rejected.invoke(CALL, '{}'), { tag: 'err', val: expected });
    });
  }

  test('an error class from a second copy of the SDK keeps its case', async () => {
    const copy = await import(`../src/errors.js?copy=${Date.now()}`);
    assert.notEqual(copy.Transient, Transient);
    const { invoke } = createExports(define(() => { throw new copy.Transient('from the copy'); }), fakeHost());
    assert.deepEqual(await invoke(CALL, '{}'), { tag: 'err', val: { tag: 'transient', val: 'from the copy' } });
  });

  test('output that is not JSON is permanent', async () => {
    const { invoke } = createExports(define(() => ({ n: 1n })), fakeHost());
    const result = await invoke(CALL, '{}');
    assert.equal(result.val.tag, 'permanent');
    assert.match(result.val.val, /^cannot serialize the output as JSON: /);
  });
});

describe('context', () => {
  test('describes the call and reaches the host', async () => {
    const host = fakeHost();
    let seen;
    const { invoke } = createExports(
      define((input, ctx) => {
        seen = { callId: ctx.callId, taskId: ctx.taskId, attempt: ctx.attempt, deadlineMs: ctx.deadlineMs, budget: ctx.remainingBudget() };
        ctx.log('warn', 'careful');
        ctx.logInfo('hello');
        ctx.progress(1, 3, 'a third');
        ctx.progress(2, null, 'unknown total');
        return null;
      }),
      host,
    );
    assert.equal((await invoke(CALL, '{}')).tag, 'ok');
    assert.deepEqual(seen, { callId: 'call-1', taskId: null, attempt: 2, deadlineMs: 30000, budget: 1234 });
    assert.deepEqual(host.calls.log, [['warn', 'careful'], ['info', 'hello']]);
    assert.deepEqual(host.calls.progress, [[1n, 3n, 'a third'], [2n, undefined, 'unknown total']]);
  });

  test('an unknown log level is a permanent error naming the levels', async () => {
    const { invoke } = createExports(define((i, ctx) => ctx.log('loud', 'x')), fakeHost());
    assert.deepEqual((await invoke(CALL, '{}')).val, {
      tag: 'permanent',
      val: 'TypeError: unknown log level "loud" (expected trace, debug, info, warn, error)',
    });
  });

  test('state: JSON values, counters and keys over the granted bucket', async () => {
    const host = fakeHost();
    let out;
    const { invoke } = createExports(
      define((i, ctx) => {
        const state = ctx.state();
        const before = state.get('seen');
        state.set('seen', ['a', 'b']);
        state.set('z', 1);
        state.set('y', 2);
        const runs = [state.increment('runs'), state.increment('runs', 5)];
        state.delete('z');
        out = { before, after: state.get('seen'), runs, keys: state.keys() };
        return null;
      }),
      host,
    );
    await invoke(CALL, '{}');
    assert.equal(host.calls.opened, '');
    assert.deepEqual(out, { before: undefined, after: ['a', 'b'], runs: [1, 6], keys: ['runs', 'seen', 'y'] });
  });

  const storeErrors = [
    [{ tag: 'access-denied' }, 'permanent', /no state is granted to this tool/],
    [{ tag: 'no-such-store' }, 'permanent', /no such state bucket/],
    [{ tag: 'other', val: 'state-quota-exceeded: 1 MiB' }, 'invalid-input', /^state-quota-exceeded: 1 MiB$/],
    [{ tag: 'other', val: 'state-too-many-writes: 100' }, 'invalid-input', /^state-too-many-writes/],
    [{ tag: 'other', val: 'disk on fire' }, 'permanent', /^disk on fire$/],
  ];
  for (const [payload, tag, message] of storeErrors) {
    test(`a store error ${payload.tag} ${payload.val ?? ''} → ${tag}`, async () => {
      const host = { ...fakeHost(), openBucket: () => { throw Object.assign(new Error('store'), { payload }); } };
      const { invoke } = createExports(define((i, ctx) => ctx.state()), host);
      const result = await invoke(CALL, '{}');
      assert.equal(result.val.tag, tag);
      assert.match(result.val.val, message);
    });
  }
});
