// The HTTP helpers' status → error mapping, the same table as the Rust SDK.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { InvalidInput, Permanent, RateLimited, Transient, http } from '../src/index.js';

const response = (status, headers = {}) => new Response(status === 204 ? null : 'body', { status, headers });

const table = [
  [200, null],
  [204, null],
  [302, null],
  [429, RateLimited],
  [408, Transient],
  [502, Transient],
  [503, Transient],
  [504, Transient],
  [400, InvalidInput],
  [404, InvalidInput],
  [422, InvalidInput],
  [401, Permanent],
  [403, Permanent],
  [409, Permanent],
  [500, Permanent],
  [501, Permanent],
];
for (const [status, error] of table) {
  test(`status ${status} → ${error ? error.name : 'the response'}`, () => {
    const res = response(status);
    if (error === null) assert.equal(http.errorForStatus(res), res);
    else assert.throws(() => http.errorForStatus(res), (e) => e.constructor === error && e.message.includes(`answered ${status}`));
  });
}

test('429 waits Retry-After seconds, 1 s when absent or not a number of seconds', () => {
  const wait = (headers) => {
    try {
      http.errorForStatus(response(429, headers));
    } catch (e) {
      return e.retryAfterMs;
    }
    return undefined;
  };
  assert.equal(wait({ 'retry-after': '7' }), 7000);
  assert.equal(wait({ 'retry-after': ' 2 ' }), 2000);
  assert.equal(wait({}), 1000);
  assert.equal(wait({ 'retry-after': 'Wed, 21 Oct 2015 07:28:00 GMT' }), 1000);
  assert.equal(wait({ 'retry-after': '99999999999' }), 1000);
});

test('a fetch without a response is transient unless the engine says it was refused', () => {
  // What StarlingMonkey reports for every wasi:http error, refused or unreachable:
  const network = http.fetchError('http://x', new TypeError('NetworkError when attempting to fetch resource'));
  assert.ok(network instanceof Transient);
  assert.match(network.message, /^http:\/\/x: no response \(unreachable, or refused by the host's network policy/);
  assert.ok(http.fetchError('http://x', new TypeError('HTTP request denied')) instanceof Permanent);
  assert.ok(http.fetchError('ftp://x', new TypeError('unsupported scheme')) instanceof Permanent);
});

test('send refuses URLs that are not http or https before fetching', async () => {
  await assert.rejects(http.send('file:///etc/passwd'), (e) => e instanceof Permanent && /only http and https URLs/.test(e.message));
  await assert.rejects(http.send('not a url'), (e) => e instanceof Permanent && /^invalid URL not a url/.test(e.message));
});

test('readJson: a body that is not JSON is permanent', async () => {
  assert.deepEqual(await http.readJson(new Response('{"a":1}')), { a: 1 });
  await assert.rejects(http.readJson(new Response('<html>')), (e) => e instanceof Permanent && /not the expected JSON/.test(e.message));
});
