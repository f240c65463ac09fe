// Hostile: never returns. `busy` (the default) spins in `for (;;) {}`;
// `sleep` waits on a timer that fires after an hour, blocked in the host's
// `wasi:io/poll`. The host must stop it by fuel (`--fuel`, busy only) or by
// the deadline (`--timeout`), and stay healthy.

import { s, tool } from '@cofferdam/guest';

export default tool({
  name: 'spin',
  version: '0.1.0',
  description: 'Test tool: loops forever without yielding, or sleeps for an hour.',
  input: s.object({
    mode: s.enum(['busy', 'sleep']).default('busy'),
  }),
  async run({ mode }) {
    if (mode === 'sleep') {
      await new Promise((resolve) => setTimeout(resolve, 3_600_000));
      return 'woke up';
    }
    for (;;) {
      // nothing
    }
  },
});
