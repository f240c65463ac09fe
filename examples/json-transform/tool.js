// `json-transform`: reshapes a JSON document — select a part with a jq-like
// path, keep some fields, rename fields, convert key case. Pure: it reads
// only its input.
//
// Build and run it (from the repository root, after `npm ci --prefix guest-sdk/js`):
//
//     node guest-sdk/js/bin/cofferdam-js.mjs build examples/json-transform/tool.js -o json-transform.wasm
//     cofferdam run json-transform.wasm --input '{"data":{"users":[{"first_name":"Ada","id":1}]},"select":".users[*]","pick":["first_name"],"keyCase":"camel"}'

import { Effect, s, tool } from '@cofferdam/guest';
import { parsePath, select } from './path.js';

const CASES = ['camel', 'snake', 'kebab', 'upper', 'lower'];

function words(key) {
  return key
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .split(/[\s_\-]+/)
    .filter(Boolean);
}

const convert = {
  camel: (key) => words(key).map((w, i) => (i === 0 ? w.toLowerCase() : w[0].toUpperCase() + w.slice(1).toLowerCase())).join(''),
  snake: (key) => words(key).map((w) => w.toLowerCase()).join('_'),
  kebab: (key) => words(key).map((w) => w.toLowerCase()).join('-'),
  upper: (key) => key.toUpperCase(),
  lower: (key) => key.toLowerCase(),
};

/** Applies `f` to every object in `value`: the value itself, or each item of an array. */
function eachObject(value, f) {
  if (Array.isArray(value)) return value.map((item) => eachObject(item, f));
  if (value !== null && typeof value === 'object') return f(value);
  return value;
}

function mapKeysDeep(value, f) {
  if (Array.isArray(value)) return value.map((item) => mapKeysDeep(item, f));
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [f(k), mapKeysDeep(v, f)]));
}

export default tool({
  name: 'json-transform',
  version: '0.1.0',
  description:
    'Reshapes a JSON document: selects a part with a jq-like path (.a.b[0], .items[*].name), keeps only some fields, renames fields and converts key case.',
  effect: Effect.PURE,
  input: s.object({
    data: s.any().describe('The JSON document to transform.'),
    select: s
      .string()
      .max(256)
      .describe('A path to the part to keep, such as ".users[*]" or ".a.b[0]"; "." is the whole document.')
      .default('.'),
    pick: s
      .array(s.string())
      .max(100)
      .describe('Fields to keep in each selected object (others are dropped).')
      .optional(),
    rename: s.record(s.string()).describe('Fields to rename in each selected object, old name → new name.').optional(),
    keyCase: s.enum(CASES).describe('Converts every key, at every depth, to this case.').optional(),
  }),
  run(input, ctx) {
    const steps = parsePath(input.select);
    let result = select(input.data, steps);
    if (input.pick) {
      const keep = new Set(input.pick);
      result = eachObject(result, (o) => Object.fromEntries(Object.entries(o).filter(([k]) => keep.has(k))));
    }
    if (input.rename) {
      const names = input.rename;
      result = eachObject(result, (o) => Object.fromEntries(Object.entries(o).map(([k, v]) => [Object.hasOwn(names, k) ? names[k] : k, v])));
    }
    if (input.keyCase) result = mapKeysDeep(result, convert[input.keyCase]);
    ctx.logInfo(`selected ${input.select} (${steps.length} step${steps.length === 1 ? '' : 's'})`);
    return { result };
  },
});
