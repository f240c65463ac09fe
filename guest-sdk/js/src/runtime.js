// Glue between a tool definition and the component's WIT imports and exports.
//
// Only the entry module that `cofferdam-js build` generates imports this
// file: the `cofferdam:` and `wasi:` specifiers below exist inside a
// ComponentizeJS component, not in node.

import { log, progress, remainingBudget } from 'cofferdam:tool/host@0.1.0';
import { open } from 'wasi:keyvalue/store@0.2.0-draft';
import { increment } from 'wasi:keyvalue/atomics@0.2.0-draft';

import { createExports } from './invoke.js';

const host = Object.freeze({ log, progress, remainingBudget, openBucket: open, increment });

/** The `describe` and `invoke` exports for `definition`. */
export function exportsFor(definition) {
  return createExports(definition, host);
}
