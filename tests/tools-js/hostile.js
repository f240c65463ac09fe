// Every hostile case in one component, chosen by `mode`, so the host's
// integration tests compile one JavaScript component instead of three:
// `spin` loops forever (fuel or the deadline must stop it), `membomb`
// allocates until it dies (the memory cap must stop it), `throw` throws the
// error `kind` names (each maps to a tool error; anything else is permanent),
// `fetch` fetches `url` (to see how a request the host refuses ends).

import { InvalidInput, Permanent, RateLimited, Transient, http, s, tool } from '@cofferdam/guest';

export default tool({
  name: 'js-hostile',
  version: '0.1.0',
  description: 'Test tool: spins, hoards memory, throws or fetches, as asked.',
  input: s.object({
    mode: s.enum(['spin', 'membomb', 'throw', 'fetch']),
    url: s.string().default('http://169.254.169.254/latest/meta-data/'),
    kind: s.enum(['invalid-input', 'transient', 'rate-limited', 'permanent', 'plain-error']).default('permanent'),
  }),
  async run({ mode, kind, url }) {
    if (mode === 'fetch') {
      const res = await http.send(url);
      return { status: res.status };
    }
    if (mode === 'spin') {
      for (;;) {
        // nothing
      }
    }
    if (mode === 'membomb') {
      const hoard = [];
      for (;;) {
        const chunk = new Uint8Array(8 << 20);
        chunk.fill(1);
        hoard.push(chunk);
      }
    }
    switch (kind) {
      case 'invalid-input':
        throw new InvalidInput('as asked');
      case 'transient':
        throw new Transient('as asked');
      case 'rate-limited':
        throw new RateLimited(1500);
      case 'permanent':
        throw new Permanent('as asked');
      default:
        throw new Error('as asked');
    }
  },
});
