// Adapts a `tool()` definition to the WIT exports `describe` and `invoke`.
//
// The host functions are passed in, so this runs under node's test runner as
// well as inside the component (`runtime.js` passes the real imports).
// Whatever `run` throws, or however the input is wrong, `invoke` answers with
// a WIT `tool-error` instead of letting the exception trap the instance.

import { Context } from './context.js';
import { InvalidInput, Permanent, toWitError } from './errors.js';
import { isTool } from './tool.js';

/**
 * `{ describe, invoke }` for the component's exports. `host` holds `log`,
 * `progress`, `remainingBudget`, `openBucket` and `increment`.
 */
export function createExports(definition, host) {
  if (!isTool(definition)) {
    throw new TypeError('the tool module must `export default tool({...})` (from @cofferdam/guest)');
  }
  const info = Object.freeze({
    name: definition.name,
    version: definition.version,
    description: definition.description,
    inputSchema: definition.inputSchema,
    effect: definition.effect,
  });

  function describe() {
    return info;
  }

  async function invoke(call, inputText) {
    try {
      let raw;
      try {
        raw = JSON.parse(inputText);
      } catch (e) {
        throw new InvalidInput(`input is not valid JSON: ${e.message}`);
      }
      const input = definition.input.parse(raw);
      const output = await definition.run(input, new Context(call, host));
      let text;
      try {
        text = JSON.stringify(output === undefined ? null : output);
      } catch (e) {
        throw new Permanent(`cannot serialize the output as JSON: ${e.message}`);
      }
      if (text === undefined) throw new Permanent(`cannot serialize the output as JSON: ${typeof output} is not JSON`);
      return { tag: 'ok', val: text };
    } catch (thrown) {
      return { tag: 'err', val: toWitError(thrown) };
    }
  }

  return { describe, invoke };
}
