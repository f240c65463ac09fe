// Durable key-value state between calls, over `wasi:keyvalue` (0.2.0-draft).
//
//     const state = ctx.state();
//     const seen = state.get('seen') ?? [];
//     state.set('seen', [...seen, input.item]);
//     const runs = state.increment('runs');
//
// The host grants one bucket per tool (`[tools.NAME.state]` in its config)
// and decides whose keys a call sees (per owner, per schedule or per tool).
// Writes take effect when the call succeeds: a failed attempt's writes are
// dropped, and a call replayed from the journal writes nothing. Values are
// JSON; counters are decimal text, as the Rust SDK stores them.

import { InvalidInput, Permanent } from './errors.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Maps a `wasi:keyvalue` error (thrown by the bindings with a `payload`) to a tool error. */
export function stateError(thrown) {
  if (thrown === null || typeof thrown !== 'object' || !('payload' in thrown)) return thrown;
  const error = thrown.payload;
  switch (error?.tag) {
    case 'no-such-store':
      return new Permanent("no such state bucket: the tool's policy grants another");
    case 'access-denied':
      return new Permanent(
        "no state is granted to this tool (or to this call's scope): add [tools.NAME.state] to the host's config",
      );
    case 'other': {
      const message = String(error.val);
      // The caller's scope is full: its fault, not the tool's, so it is not
      // retried and does not count against the tool's breaker.
      if (message.startsWith('state-quota-exceeded') || message.startsWith('state-too-many-writes')) {
        return new InvalidInput(message);
      }
      return new Permanent(message);
    }
    default:
      return new Permanent(`state store failed: ${JSON.stringify(error)}`);
  }
}

function guarded(f) {
  try {
    return f();
  } catch (e) {
    throw stateError(e);
  }
}

/** The tool's state bucket; from `ctx.state()`. */
export class State {
  #bucket;
  #host;

  constructor(bucket, host) {
    this.#bucket = bucket;
    this.#host = host;
  }

  /** Opens the bucket the host grants this tool. */
  static open(host) {
    return new State(
      guarded(() => host.openBucket('')),
      host,
    );
  }

  /** The value of `key` (parsed JSON), or `undefined` when it is not set. */
  get(key) {
    const bytes = guarded(() => this.#bucket.get(key));
    if (bytes === undefined || bytes === null) return undefined;
    const text = decoder.decode(bytes);
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new Permanent(`state key \`${key}\` holds other data: ${e.message}`);
    }
  }

  /** Sets `key` to `value` (as JSON). Fails with `invalid-input` when the scope's quota would be exceeded. */
  set(key, value) {
    let text;
    try {
      text = JSON.stringify(value);
    } catch (e) {
      throw new Permanent(`cannot encode state key \`${key}\`: ${e.message}`);
    }
    if (text === undefined) throw new Permanent(`cannot encode state key \`${key}\`: ${typeof value} is not JSON`);
    guarded(() => this.#bucket.set(key, encoder.encode(text)));
  }

  /** Removes `key` (removing an absent key is fine). */
  delete(key) {
    guarded(() => this.#bucket.delete(key));
  }

  /**
   * Adds `delta` (a non-negative integer, 1 by default) to the counter `key`
   * (absent counts as 0) and returns its new value. Concurrent calls'
   * increments all count.
   */
  increment(key, delta = 1) {
    if (!(Number.isSafeInteger(delta) && delta >= 0) && typeof delta !== 'bigint') {
      throw new TypeError(`increment() takes a non-negative integer delta, got ${delta}`);
    }
    const value = guarded(() => this.#host.increment(this.#bucket, key, BigInt(delta)));
    return Number(value);
  }

  /** Every key. */
  keys() {
    const keys = [];
    let cursor;
    for (;;) {
      const page = guarded(() => this.#bucket.listKeys(cursor));
      keys.push(...page.keys);
      if (page.cursor === undefined || page.cursor === null) return keys;
      cursor = page.cursor;
    }
  }
}
