// `cofferdam-js build`: a JS tool module → a WebAssembly component of the
// `cofferdam:tool@0.1.0` world `tool`, with ComponentizeJS.
//
// Steps: collect the module graph (relative imports and @cofferdam/guest
// only), stage it in a temporary directory with the SDK beside it, load the
// tool in node to check its definition (schema mistakes fail here, naming the
// field), then let ComponentizeJS snapshot an entry module that exports
// `describe` and `invoke`. It does not bundle npm packages and does not run
// TypeScript: compile or bundle those first.

import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SDK_SRC = join(PACKAGE_DIR, 'src');
const SDK_NAME = '@cofferdam/guest';
/** The world every cofferdam tool targets. */
export const WORLD = 'tool';
/** ComponentizeJS features a tool never needs: it does not serve incoming HTTP. */
const ALWAYS_DISABLED = ['fetch-event'];
export const COMPONENTIZE = '@bytecodealliance/componentize-js';

/** A build that cannot proceed; its message is meant for the user as is. */
export class BuildError extends Error {
  constructor(message) {
    super(message);
    this.name = 'BuildError';
  }
}

/** The `wit/` directory: shipped in the package, or the repository's (`../../wit`). */
export function defaultWitDir() {
  for (const dir of [join(PACKAGE_DIR, 'wit'), resolve(PACKAGE_DIR, '..', '..', 'wit')]) {
    if (existsSync(join(dir, 'tool.wit'))) return dir;
  }
  return null;
}

async function checkWit(witDir) {
  if (!witDir) {
    throw new BuildError('cannot find the cofferdam WIT (wit/tool.wit); pass --wit DIR');
  }
  const file = join(witDir, 'tool.wit');
  let text;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    throw new BuildError(`${witDir} has no tool.wit; pass the cofferdam wit/ directory with --wit`);
  }
  if (!/^\s*package\s+cofferdam:tool@/m.test(text) || !new RegExp(`^\\s*world\\s+${WORLD}\\s*\\{`, 'm').test(text)) {
    throw new BuildError(`${file} does not define package cofferdam:tool with world \`${WORLD}\``);
  }
}

// ---- module graph

function isRelative(specifier) {
  return specifier.startsWith('./') || specifier.startsWith('../');
}

function within(dir, file) {
  const rel = relative(dir, file);
  return rel !== '' && !rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel);
}

/**
 * Every file the tool imports, transitively, with its imports located for
 * rewriting. Imports of the SDK (by package name, or by a relative path into
 * this package's `src/`) are marked so they all resolve to one staged copy.
 */
async function collectGraph(entry) {
  const { init, parse } = await import('es-module-lexer');
  await init;
  const files = new Map();
  const queue = [entry];
  while (queue.length > 0) {
    const file = queue.shift();
    if (files.has(file)) continue;
    let source;
    try {
      source = await readFile(file, 'utf8');
    } catch (e) {
      throw new BuildError(`cannot read ${file}: ${e.code === 'ENOENT' ? 'no such file' : e.message}`);
    }
    let imports;
    try {
      [imports] = parse(source, file);
    } catch (e) {
      throw new BuildError(`${file}: cannot parse as an ES module: ${e.message}`);
    }
    const edits = [];
    for (const imp of imports) {
      if (imp.d === -2) continue; // import.meta
      const specifier = imp.n;
      const dynamic = imp.d > -1;
      if (specifier === undefined) {
        if (dynamic) {
          throw new BuildError(`${file}: dynamic import() with a computed specifier cannot be bundled; import the module statically`);
        }
        continue;
      }
      const at = dynamic ? { s: imp.s + 1, e: imp.e - 1 } : { s: imp.s, e: imp.e };
      if (specifier === SDK_NAME) {
        edits.push({ ...at, sdk: 'index.js' });
      } else if (specifier.startsWith(`${SDK_NAME}/`)) {
        throw new BuildError(`${file}: import \`${specifier}\`: import everything from \`${SDK_NAME}\` itself`);
      } else if (isRelative(specifier)) {
        const target = resolve(dirname(file), specifier);
        if (!existsSync(target) || !(await stat(target)).isFile()) {
          throw new BuildError(
            `${file}: imports \`${specifier}\`, which is not a file (${target})${/\.[cm]?js$/.test(specifier) ? '' : '; ES module imports need the file extension'}`,
          );
        }
        if (within(SDK_SRC, target)) {
          edits.push({ ...at, sdk: relative(SDK_SRC, target).split(sep).join('/') });
        } else {
          edits.push({ ...at, file: target });
          queue.push(target);
        }
      } else {
        throw new BuildError(
          `${file}: imports \`${specifier}\`: cofferdam-js bundles only relative imports and ${SDK_NAME}` +
            (specifier.startsWith('node:') ? ' (node: modules do not exist inside a component)' : '; bundle npm packages into the tool first (for example with esbuild)'),
        );
      }
    }
    files.set(file, { source, edits });
  }
  return files;
}

function commonDir(paths) {
  let common = dirname(paths[0]).split(sep);
  for (const path of paths.slice(1)) {
    const parts = dirname(path).split(sep);
    let i = 0;
    while (i < common.length && i < parts.length && common[i] === parts[i]) i++;
    common = common.slice(0, i);
  }
  return common.join(sep) || sep;
}

function relSpecifier(fromFile, toFile) {
  let rel = relative(dirname(fromFile), toFile).split(sep).join('/');
  if (!rel.startsWith('.')) rel = `./${rel}`;
  return rel;
}

/**
 * Writes the staged tree: `app/` (the tool's files, layout kept), `sdk/` (this
 * package's `src/`), `entry.js` (the component's exports). Returns paths.
 */
async function stage(entry, files, dir) {
  const root = commonDir([...files.keys()]);
  const appDir = join(dir, 'app');
  const sdkDir = join(dir, 'sdk');
  const staged = (file) => join(appDir, relative(root, file));
  await mkdir(sdkDir, { recursive: true });
  for (const name of await readdir(SDK_SRC)) {
    if (name.endsWith('.js')) await copyFile(join(SDK_SRC, name), join(sdkDir, name));
  }
  for (const [file, { source, edits }] of files) {
    const out = staged(file);
    let text = '';
    let last = 0;
    for (const edit of [...edits].sort((a, b) => a.s - b.s)) {
      const target = edit.sdk ? join(sdkDir, edit.sdk) : staged(edit.file);
      text += source.slice(last, edit.s) + relSpecifier(out, target);
      last = edit.e;
    }
    text += source.slice(last);
    await mkdir(dirname(out), { recursive: true });
    await writeFile(out, text);
  }
  const tool = staged(entry);
  const entryFile = join(dir, 'entry.js');
  await writeFile(
    entryFile,
    [
      '// Generated by cofferdam-js build: the component exports of the tool below.',
      `import definition from ${JSON.stringify(relSpecifier(entryFile, tool))};`,
      "import { exportsFor } from './sdk/runtime.js';",
      'const exported = exportsFor(definition);',
      'export const describe = exported.describe;',
      'export const invoke = exported.invoke;',
      '',
    ].join('\n'),
  );
  await writeFile(join(dir, 'package.json'), '{ "type": "module" }\n');
  return { tool, entryFile, sdkDir };
}

/** Loads the staged tool in node and checks that it is a valid definition. */
async function loadDefinition(stagedTool, sdkDir, source) {
  const { isTool } = await import(pathToFileURL(join(sdkDir, 'tool.js')).href);
  let module;
  try {
    module = await import(pathToFileURL(stagedTool).href);
  } catch (e) {
    const what = e?.name === 'SchemaDefinitionError' || e?.name === 'ToolDefinitionError' ? e.message : `loading the tool failed: ${e?.stack ?? e}`;
    throw new BuildError(`${source}: ${what}`);
  }
  if (!isTool(module.default)) {
    throw new BuildError(`${source}: the module must \`export default tool({...})\` (from ${SDK_NAME})`);
  }
  return module.default;
}

async function loadComponentize(specifier) {
  try {
    const module = await import(specifier);
    return { componentize: module.componentize, version: module.version };
  } catch (e) {
    if (e?.code === 'ERR_MODULE_NOT_FOUND' || e?.code === 'MODULE_NOT_FOUND') {
      throw new BuildError(
        `${specifier} is not installed, and cofferdam-js needs it to build components.\n` +
          `  In the cofferdam repository: npm ci --prefix guest-sdk/js\n` +
          `  In your own project:         npm install --save-dev --save-exact ${COMPONENTIZE}@0.23.0`,
      );
    }
    throw e;
  }
}

/**
 * Builds `source` (a tool module) into the component `output`.
 *
 * Options: `witDir` (default: the package's or repository's `wit/`),
 * `disableFeatures` (ComponentizeJS features to leave out, such as `http`),
 * `keepStaging` (leave the staged sources for debugging),
 * `componentizeModule` (where to load ComponentizeJS from).
 * Resolves to `{ info, bytes, ms, stagingDir? }`.
 */
export async function build({
  source,
  output,
  witDir = defaultWitDir(),
  disableFeatures = [],
  keepStaging = false,
  componentizeModule = COMPONENTIZE,
}) {
  const started = Date.now();
  const entry = resolve(source);
  const out = resolve(output);
  const wit = witDir ? resolve(witDir) : witDir;
  await checkWit(wit);
  const files = await collectGraph(entry);
  const stagingDir = await mkdtemp(join(tmpdir(), 'cofferdam-js-'));
  const previousDir = process.cwd();
  try {
    const { tool, entryFile, sdkDir } = await stage(entry, files, stagingDir);
    const definition = await loadDefinition(tool, sdkDir, source);
    const { componentize } = await loadComponentize(componentizeModule);
    // ComponentizeJS maps the current directory into the snapshotting
    // sandbox when the source lies under it; run it from the staging
    // directory so exactly the staged tree is visible.
    process.chdir(stagingDir);
    let component;
    try {
      ({ component } = await componentize({
        sourcePath: entryFile,
        witPath: wit,
        worldName: WORLD,
        disableFeatures: [...new Set([...ALWAYS_DISABLED, ...disableFeatures])],
      }));
    } catch (e) {
      throw new BuildError(`ComponentizeJS failed: ${e?.message ?? e}`);
    } finally {
      process.chdir(previousDir);
    }
    await mkdir(dirname(out), { recursive: true });
    await writeFile(out, component);
    return {
      info: {
        name: definition.name,
        version: definition.version,
        effect: definition.effect,
        description: definition.description,
      },
      bytes: component.length,
      ms: Date.now() - started,
      stagingDir: keepStaging ? stagingDir : undefined,
    };
  } finally {
    if (!keepStaging) await rm(stagingDir, { recursive: true, force: true });
  }
}
