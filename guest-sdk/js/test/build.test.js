// `cofferdam-js build` up to (not including) ComponentizeJS: definitions
// that cannot be built fail with a message naming the problem, and a missing
// ComponentizeJS says how to install it. Building real components is checked
// against the host (see the README); it takes seconds per tool.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { BuildError, build } from '../lib/build.js';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const BIN = here('../bin/cofferdam-js.mjs');
const out = mkdtempSync(join(tmpdir(), 'cofferdam-js-test-'));
after(() => rmSync(out, { recursive: true, force: true }));

const MISSING = '@bytecodealliance/no-such-componentize';

async function buildError(fixture, options = {}) {
  try {
    await build({ source: here(`../fixtures/${fixture}`), output: join(out, `${fixture}.wasm`), componentizeModule: MISSING, ...options });
  } catch (e) {
    assert.ok(e instanceof BuildError, `expected a BuildError, got ${e?.stack}`);
    return e.message;
  }
  assert.fail('the build succeeded');
}

test('an unsupported definition fails the build naming the field', async () => {
  assert.match(await buildError('bad-field.js'), /bad-field\.js: input schema: field `address\.zip`: 12345 is not a schema/);
});

test('a union of objects fails the build naming the field', async () => {
  assert.match(await buildError('union.js'), /union\.js: input schema: field `shape`: unions \(s\.union\) are not supported/);
});

test('the CLI prints the same message and exits 1', () => {
  const run = spawnSync(process.execPath, [BIN, 'build', here('../fixtures/bad-field.js'), '-o', join(out, 'x.wasm')], { encoding: 'utf8' });
  assert.equal(run.status, 1);
  assert.match(run.stderr, /^cofferdam-js: .*bad-field\.js: input schema: field `address\.zip`: 12345 is not a schema/);
});

test('a valid tool gets as far as ComponentizeJS, and a missing one says how to install it', async () => {
  const message = await buildError('ok.js');
  assert.match(message, new RegExp(`^${MISSING} is not installed`));
  assert.match(message, /npm ci --prefix guest-sdk\/js/);
  assert.match(message, /npm install --save-dev --save-exact @bytecodealliance\/componentize-js@0\.23\.0/);
});

test('imports other than relative files and @cofferdam/guest are refused', async () => {
  assert.match(await buildError('bare-import.js'), /imports `lodash`: cofferdam-js bundles only relative imports and @cofferdam\/guest/);
});

test('a relative import without its extension is refused', async () => {
  assert.match(await buildError('no-extension.js'), /imports `\.\/lib\/greet`, which is not a file .*ES module imports need the file extension/);
});

test('a module without a default tool export is refused', async () => {
  assert.match(await buildError('no-default.js'), /the module must `export default tool\(\{\.\.\.\}\)`/);
});

test('a missing source file is refused', async () => {
  assert.match(await buildError('does-not-exist.js'), /cannot read .*does-not-exist\.js: no such file/);
});

test('a wit directory without the cofferdam world is refused', async () => {
  assert.match(await buildError('ok.js', { witDir: here('../fixtures') }), /has no tool\.wit/);
});

test('staging leaves nothing behind in the temp dir', async () => {
  const before = readdirSync(tmpdir()).filter((n) => n.startsWith('cofferdam-js-') && !n.startsWith('cofferdam-js-test-')).length;
  await buildError('ok.js');
  const after_ = readdirSync(tmpdir()).filter((n) => n.startsWith('cofferdam-js-') && !n.startsWith('cofferdam-js-test-')).length;
  assert.equal(after_, before);
});

test('usage errors exit 2', () => {
  const run = spawnSync(process.execPath, [BIN, 'frobnicate'], { encoding: 'utf8' });
  assert.equal(run.status, 2);
  assert.match(run.stderr, /unknown command `frobnicate`/);
});
