// A small jq-like path language for `select`: `.a.b`, `.items[0]`,
// `.items[*].name`, `.["odd key"]`. A missing key or index gives `null`
// (as in jq); indexing into a string or number is the caller's mistake.

import { InvalidInput } from '@cofferdam/guest';

/** Parses a path into steps: `{ key }`, `{ index }` or `{ all: true }`. */
export function parsePath(text) {
  const steps = [];
  let i = 0;
  const fail = (why) => {
    throw new InvalidInput(`\`select\`: ${why} at character ${i + 1} of ${JSON.stringify(text)}`);
  };
  if (text === '' || text === '.') return steps;
  while (i < text.length) {
    if (text[i] === '.') {
      i++;
      if (text[i] === '[') continue;
      const match = /^[A-Za-z_$][A-Za-z0-9_$-]*/.exec(text.slice(i));
      if (!match) fail('expected a key after `.`');
      steps.push({ key: match[0] });
      i += match[0].length;
    } else if (text[i] === '[') {
      const rest = text.slice(i);
      const index = /^\[(\d+)\]/.exec(rest);
      const all = /^\[\*\]/.exec(rest);
      const quoted = /^\[("(?:[^"\\]|\\.)*")\]/.exec(rest);
      if (index) steps.push({ index: Number(index[1]) });
      else if (all) steps.push({ all: true });
      else if (quoted) steps.push({ key: JSON.parse(quoted[1]) });
      else fail('expected [N], [*] or ["key"]');
      i += (index ?? all ?? quoted)[0].length;
    } else {
      fail('expected `.` or `[`');
    }
  }
  return steps;
}

/** Applies parsed steps to `value`. */
export function select(value, steps, at = '') {
  if (steps.length === 0) return value;
  const [step, ...rest] = steps;
  if (value === null || value === undefined) return null;
  if (step.all) {
    if (!Array.isArray(value)) throw new InvalidInput(`\`select\`: ${at || '.'} is not an array, cannot apply [*]`);
    return value.map((item, i) => select(item, rest, `${at}[${i}]`));
  }
  if (step.index !== undefined) {
    if (!Array.isArray(value)) throw new InvalidInput(`\`select\`: ${at || '.'} is not an array, cannot index it with [${step.index}]`);
    return select(value[step.index] ?? null, rest, `${at}[${step.index}]`);
  }
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new InvalidInput(`\`select\`: ${at || '.'} is ${Array.isArray(value) ? 'an array' : `a ${typeof value}`}, cannot take its key ${JSON.stringify(step.key)}`);
  }
  return select(Object.hasOwn(value, step.key) ? value[step.key] : null, rest, `${at}.${step.key}`);
}
