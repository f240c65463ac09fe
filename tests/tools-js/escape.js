// Hostile: tries every way a JS tool might read files it was not given.
//
// ComponentizeJS offers no filesystem API (no `fs`, `Deno`, `require`), so
// this tries what the engine does have: `fetch('file://…')`, and the module
// loader, which reads source files through `wasi:filesystem` when a
// module is imported at run time (`import()` reached through `eval`, since
// `cofferdam-js build` refuses computed imports). Each attempt's outcome is
// returned, not thrown, so one call shows them all.

import { s, tool } from '@cofferdam/guest';

const DEFAULT_PATHS = ['/etc/passwd', '/data/../secret.js', '../secret.js', '/data/inside.js'];

function errorText(e) {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

async function attempt(f) {
  try {
    const value = await f();
    return { reached: true, value };
  } catch (e) {
    return { reached: false, error: errorText(e) };
  }
}

export default tool({
  name: 'escape',
  version: '0.1.0',
  description: 'Test tool: tries to read files outside its mounts.',
  input: s.object({
    paths: s.array(s.string()).default(DEFAULT_PATHS).describe('Paths to try to read.'),
    vectors: s.array(s.enum(['fetch', 'import'])).default(['fetch', 'import']).describe('Which ways to try.'),
  }),
  async run({ paths, vectors }) {
    const globals = Object.fromEntries(
      ['require', 'process', 'Deno', 'Bun', 'fs', 'readFile', 'open', 'os', 'std', 'WebAssembly'].map((name) => [
        name,
        typeof globalThis[name],
      ]),
    );
    const results = [];
    for (const path of paths) {
      const result = { path };
      if (vectors.includes('fetch')) {
        result.fetch = await attempt(async () => (await fetch(`file://${path.startsWith('/') ? '' : '/'}${path}`)).text());
      }
      if (vectors.includes('import')) {
        // eslint-disable-next-line no-eval
        result.import = await attempt(async () => JSON.stringify(await (0, eval)(`import(${JSON.stringify(path)})`)));
      }
      results.push(result);
    }
    return { globals, results };
  },
});
