#!/usr/bin/env node
// cofferdam-js: build JavaScript cofferdam tools into WebAssembly components.
//
//     cofferdam-js build tool.js -o tool.wasm [--wit DIR] [--no-http] [--keep-staging]
//
// Exit codes: 0 built, 1 the tool or the build failed (message on stderr),
// 2 bad usage.

import { parseArgs } from 'node:util';
import { basename, extname } from 'node:path';

const USAGE = `usage: cofferdam-js build TOOL.js [-o TOOL.wasm] [--wit DIR] [--no-http] [--keep-staging]

Builds a tool module (\`export default tool({...})\` from @cofferdam/guest) into a
WebAssembly component of the cofferdam:tool@0.1.0 world \`tool\`.

  -o, --output FILE   where to write the component (default: TOOL.wasm in the current directory)
      --wit DIR       the cofferdam wit/ directory (default: the one shipped with this package)
      --no-http       leave out fetch() and the wasi:http imports
      --keep-staging  keep the staged sources and print where they are`;

function fail(message, code = 1) {
  process.stderr.write(`cofferdam-js: ${message}\n`);
  process.exit(code);
}

async function main(argv) {
  const [command, ...rest] = argv;
  if (command === '-h' || command === '--help' || command === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (command !== 'build') fail(command ? `unknown command \`${command}\`\n${USAGE}` : USAGE, 2);
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      allowPositionals: true,
      options: {
        output: { type: 'string', short: 'o' },
        wit: { type: 'string' },
        'no-http': { type: 'boolean', default: false },
        'keep-staging': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (e) {
    fail(`${e.message}\n${USAGE}`, 2);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (positionals.length !== 1) fail(`build takes one tool module\n${USAGE}`, 2);
  const [source] = positionals;
  const output = values.output ?? `${basename(source, extname(source))}.wasm`;

  const { build, BuildError } = await import('../lib/build.js');
  try {
    const result = await build({
      source,
      output,
      witDir: values.wit,
      disableFeatures: values['no-http'] ? ['http'] : [],
      keepStaging: values['keep-staging'],
    });
    const { info, bytes, ms } = result;
    process.stderr.write(
      `built tool \`${info.name}\` ${info.version} (${info.effect}) → ${output}: ${(bytes / 1048576).toFixed(1)} MiB in ${(ms / 1000).toFixed(1)} s\n`,
    );
    if (result.stagingDir) process.stderr.write(`staged sources kept in ${result.stagingDir}\n`);
  } catch (e) {
    if (e instanceof BuildError) fail(e.message);
    throw e;
  }
}

await main(process.argv.slice(2));
