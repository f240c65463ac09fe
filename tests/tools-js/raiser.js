// Hostile: throws the error its input asks for, to check that every class
// maps to its WIT `tool-error` case and that anything else becomes
// `permanent` with its message instead of trapping.

import { InvalidInput, Permanent, RateLimited, Transient, s, tool } from '@cofferdam/guest';

const KINDS = ['invalid-input', 'transient', 'rate-limited', 'permanent', 'plain-error', 'type-error', 'string', 'object', 'async-reject', 'ok'];

export default tool({
  name: 'raiser',
  version: '0.1.0',
  description: 'Test tool: throws the error class named by its input.',
  input: s.object({
    kind: s.enum(KINDS).describe('Which error to throw.'),
    message: s.string().default('raised on purpose'),
    retryAfterMs: s.integer().min(0).default(1500),
  }),
  async run({ kind, message, retryAfterMs }) {
    switch (kind) {
      case 'invalid-input':
        throw new InvalidInput(message);
      case 'transient':
        throw new Transient(message);
      case 'rate-limited':
        throw new RateLimited(retryAfterMs);
      case 'permanent':
        throw new Permanent(message);
      case 'plain-error':
        throw new Error(message);
      case 'type-error':
        return null.property;
      case 'string':
        throw message;
      case 'object':
        throw { code: 42, message };
      case 'async-reject':
        await new Promise((resolve) => setTimeout(resolve, 1));
        throw new Transient(`${message} (after an await)`);
      default:
        return { ok: true };
    }
  },
});
