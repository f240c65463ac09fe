// Tool errors, and how any thrown value becomes the WIT `tool-error` the host acts on.
//
// The class, not the message, tells the host what to do next: `InvalidInput`
// is never retried, `Transient` and `RateLimited` may be, `Permanent` is not.
// Anything else a tool throws (a plain `Error`, a string) is `permanent` with
// its message: a JS tool never traps on an exception.

// Recognised by brand, not `instanceof`, so an error class from a second copy
// of this package still maps to its case.
const BRAND = Symbol.for('cofferdam.tool-error');
const KINDS = ['invalid-input', 'transient', 'rate-limited', 'permanent'];

/** Base class of the errors a tool reports; throw one of its subclasses. */
export class ToolError extends Error {
  get [BRAND]() {
    return true;
  }

  /** The WIT `tool-error` case, such as `invalid-input`; `permanent` unless a subclass says otherwise. */
  get kind() {
    return 'permanent';
  }
}

/** The caller's input is wrong (bad arguments, a path that does not exist); never retried. */
export class InvalidInput extends ToolError {
  constructor(message) {
    super(message);
    this.name = 'InvalidInput';
  }
  get kind() {
    return 'invalid-input';
  }
}

/** A temporary failure (an upstream hiccup); a retry with backoff may succeed. */
export class Transient extends ToolError {
  constructor(message) {
    super(message);
    this.name = 'Transient';
  }
  get kind() {
    return 'transient';
  }
}

/** Upstream asked to slow down: retry after `retryAfterMs` milliseconds. */
export class RateLimited extends ToolError {
  constructor(retryAfterMs, message) {
    const ms = clampU32(retryAfterMs);
    super(message ?? `rate limited, retry after ${ms} ms`);
    this.name = 'RateLimited';
    this.retryAfterMs = ms;
  }
  get kind() {
    return 'rate-limited';
  }
}

/** A failure that a retry will not fix. */
export class Permanent extends ToolError {
  constructor(message) {
    super(message);
    this.name = 'Permanent';
  }
  get kind() {
    return 'permanent';
  }
}

function clampU32(value) {
  const n = Math.round(Number(value));
  if (!Number.isFinite(n) || n < 0) return 0;
  return Math.min(n, 0xffff_ffff);
}

/** The message of any thrown value, for a `permanent` error. */
function messageOf(thrown) {
  if (thrown instanceof Error) {
    const message = thrown.message || thrown.name || 'error';
    // A plain `Error` says what went wrong in its message; a `TypeError` or
    // `RangeError` is worth naming (it is usually a bug in the tool).
    return thrown.name && thrown.name !== 'Error' ? `${thrown.name}: ${message}` : message;
  }
  if (typeof thrown === 'string') return thrown;
  try {
    const json = JSON.stringify(thrown);
    if (json !== undefined) return `thrown value ${json}`;
  } catch {
    // fall through
  }
  return `thrown value ${String(thrown)}`;
}

/**
 * Maps anything a tool threw to a WIT `tool-error` value (`{ tag, val }`).
 * `ToolError` subclasses keep their case; everything else is `permanent`.
 */
export function toWitError(thrown) {
  if (thrown instanceof Error && thrown[BRAND] === true && KINDS.includes(thrown.kind)) {
    if (thrown.kind === 'rate-limited') return { tag: 'rate-limited', val: clampU32(thrown.retryAfterMs) };
    return { tag: thrown.kind, val: String(thrown.message) };
  }
  return { tag: 'permanent', val: messageOf(thrown) };
}
