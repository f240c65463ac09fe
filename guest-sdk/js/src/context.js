// The call context a tool's `run` receives, over the host functions of the
// `cofferdam:tool/host` interface (passed in, so this file runs in node too).

import { Level } from './tool.js';
import { State } from './state.js';

const LEVELS = Object.values(Level);

/** The call in progress: its identity, and the host services a tool may use. */
export class Context {
  #host;

  /** @param call the WIT `call-context`; @param host the host functions (see `runtime.js`). */
  constructor(call, host) {
    /** Unique id of this call, the same for every attempt. */
    this.callId = call.callId;
    /** The task this call is a step of, or `null`. */
    this.taskId = call.taskId ?? null;
    /** Attempt number, starting at 1. */
    this.attempt = call.attempt;
    /** Milliseconds the host allowed for this call when it started. */
    this.deadlineMs = Number(call.deadlineMs);
    this.#host = host;
    Object.freeze(this);
  }

  /** Records a log line on the call's outcome. The host bounds how many it keeps. */
  log(level, message) {
    if (!LEVELS.includes(level)) {
      throw new TypeError(`unknown log level ${JSON.stringify(level)} (expected ${LEVELS.join(', ')})`);
    }
    this.#host.log(level, String(message));
  }

  logTrace(message) {
    this.log(Level.TRACE, message);
  }
  logDebug(message) {
    this.log(Level.DEBUG, message);
  }
  logInfo(message) {
    this.log(Level.INFO, message);
  }
  logWarn(message) {
    this.log(Level.WARN, message);
  }
  logError(message) {
    this.log(Level.ERROR, message);
  }

  /**
   * Reports progress of a long call; the host forwards it (for example as MCP
   * progress notifications). `total` may be `null` when unknown.
   */
  progress(done, total, message = '') {
    this.#host.progress(toU64(done), total === null || total === undefined ? undefined : toU64(total), String(message));
  }

  /** Tokens this call may still spend, derived from the fuel it has left. */
  remainingBudget() {
    return Number(this.#host.remainingBudget());
  }

  /** The tool's durable key-value state (the bucket its policy grants); see `State`. */
  state() {
    return State.open(this.#host);
  }
}

function toU64(n) {
  const value = typeof n === 'bigint' ? n : BigInt(Math.max(0, Math.floor(Number(n) || 0)));
  return BigInt.asUintN(64, value < 0n ? 0n : value);
}
