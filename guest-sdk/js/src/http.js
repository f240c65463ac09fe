// HTTP for tools: the global `fetch` (ComponentizeJS runs it over
// `wasi:http`), with failures and statuses mapped to the tool errors the
// host acts on, as the Rust SDK's `http` module does.
//
//     import { http } from '@cofferdam/guest';
//     const res = http.errorForStatus(await http.send(url, { headers: { accept: 'application/json' } }));
//     const data = await http.readJson(res);
//
// The host decides what may be reached: a request to an origin the tool's
// policy does not allow, or to a private address, is refused before any
// connection is made (`permanent`). Redirects are returned, not followed,
// unless the host's policy says otherwise.

import { InvalidInput, Permanent, RateLimited, Transient } from './errors.js';

/**
 * `fetch(url, init)`, with a request that produced no response mapped to a
 * tool error. A URL that does not parse, or whose scheme is not http or
 * https, is `Permanent` (checked before anything is sent). A request that
 * gets no response is `Transient`: StarlingMonkey reports every `wasi:http`
 * error as the same `TypeError: NetworkError when attempting to fetch
 * resource`, so a refusal by the host's policy cannot be told apart from an
 * unreachable upstream here (the call's outcome lists refusals under
 * `http.refused`).
 */
export async function send(url, init) {
  const text = String(url);
  let parsed;
  try {
    parsed = new URL(text);
  } catch (e) {
    throw new Permanent(`invalid URL ${text}: ${e.message}`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new Permanent(`invalid URL ${text}: only http and https URLs can be fetched`);
  }
  try {
    return await fetch(url, init);
  } catch (e) {
    throw fetchError(text, e);
  }
}

/** Classifies what `fetch` threw; exported for tests. */
export function fetchError(url, thrown) {
  const detail = thrown instanceof Error ? thrown.message : String(thrown);
  const text = detail.toLowerCase();
  // Engines that say why a request failed are taken at their word.
  if (/invalid url|unsupported scheme|not a valid url/.test(text)) {
    return new Permanent(`invalid URL ${url}: ${detail}`);
  }
  if (/denied|prohibited|not allowed|refused by/.test(text)) {
    return new Permanent(`${url}: refused by the host's network policy: ${detail}`);
  }
  return new Transient(
    `${url}: no response (unreachable, or refused by the host's network policy: the JS engine does not say which): ${detail}`,
  );
}

/**
 * Returns `response` when its status is 2xx or 3xx, else throws the error
 * the host acts on:
 *
 * | status | error |
 * |---|---|
 * | 429 | `RateLimited`, `Retry-After` seconds (default 1 s) |
 * | 408, 502, 503, 504 | `Transient` |
 * | 400, 404, 422 | `InvalidInput`: the request built from the input was rejected |
 * | other 4xx and 5xx | `Permanent` |
 */
export function errorForStatus(response) {
  const status = response.status;
  if (status >= 200 && status <= 399) return response;
  const what = `${response.url || 'the upstream'} answered ${status}`;
  switch (status) {
    case 429:
      return raise(new RateLimited(retryAfterSeconds(response.headers.get('retry-after')) * 1000, `${what}: rate limited`));
    case 408:
    case 502:
    case 503:
    case 504:
      return raise(new Transient(what));
    case 400:
    case 404:
    case 422:
      return raise(new InvalidInput(what));
    default:
      return raise(new Permanent(what));
  }
}

function raise(error) {
  throw error;
}

function retryAfterSeconds(header) {
  const value = header?.trim();
  if (value && /^\d+$/.test(value)) {
    const n = Number(value);
    if (n <= 0xffff_ffff) return Math.min(n, Math.floor(0xffff_ffff / 1000));
  }
  return 1;
}

/** The body parsed as JSON; a body that does not parse is `Permanent`. */
export async function readJson(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Permanent(`${response.url || 'the upstream'}: response is not the expected JSON: ${e.message}`);
  }
}
