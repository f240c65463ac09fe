// Hostile: allocates until it dies. The host must stop it at the tool's
// memory limit with its typed error, and stay healthy.

import { s, tool } from '@cofferdam/guest';

export default tool({
  name: 'membomb',
  version: '0.1.0',
  description: 'Test tool: keeps allocating memory and never frees it.',
  input: s.object({
    chunkMib: s.integer().min(1).max(64).default(1).describe('MiB allocated per step.'),
  }),
  run({ chunkMib }) {
    const hoard = [];
    for (;;) {
      // Typed arrays are zero-filled and touched, so the pages are real.
      const chunk = new Uint8Array(chunkMib << 20);
      chunk.fill(1);
      hoard.push(chunk);
    }
  },
});
