// Hostile: spins forever. The host must stop it by fuel (`--fuel`) or by the
// deadline (`--timeout`), and stay healthy.

import { s, tool } from '@cofferdam/guest';

export default tool({
  name: 'spin',
  version: '0.1.0',
  description: 'Test tool: loops forever without yielding.',
  input: s.object({}),
  run() {
    for (;;) {
      // nothing
    }
  },
});
