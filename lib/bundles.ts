/**
 * Build step, not part of the library: `npm run build` runs it (node
 * dist/lib/bundles.js) after `tsc`. It bundles the compiled ES modules into
 * single CommonJS files with esbuild, because a cold node process spends most
 * of its start-up resolving, reading, compiling and linking one module at a
 * time (about 190 modules behind lib/index.js), and saves each bundle's
 * compiled code beside it (`<bundle>.v8cache`, see code-cache.ts), because
 * compiling even one file is most of the rest:
 *
 * - dist/lib/worker-bundle.cjs: every module a VM's workers run (see
 *   worker-bundle.ts and worker-modules.ts), with dist/lib/worker-loader.cjs,
 *   which every worker runs first and which runs the bundle (worker-loader.ts);
 * - dist/lib/index.bundle.cjs: the library, run by dist/lib/index.bundle.js,
 *   the ES module a package user imports (package.json's `exports`), which
 *   re-exports what lib/index.js exports;
 * - dist/bin/<command>.bundle.cjs: each command, run by the CommonJS script
 *   dist/bin/<command>.entry.cjs (bin/launch.cjs requires that when it is
 *   current) through dist/lib/code-cache.cjs, so a command loads no ES module;
 * - dist/lib/worker-spawn.cjs: lib/worker-spawn.ts, which bin/launch.cjs
 *   requires to start `flintvm run`'s vCPU worker first.
 *
 * In the library and command bundles each module keeps its own
 * `import.meta.url`: it is rewritten to the URL of that module's compiled
 * file, computed from the bundle's own URL, so the paths the library derives
 * from it (the guest scripts, the worker entries, package.json) stay what they
 * are unbundled. In the worker bundle every module sees the bundle's URL
 * (worker-modules.ts maps entry URLs onto the bundled modules). koffi (a
 * native addon) and debug stay outside, required as packages.
 */
import { build, type Plugin } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { PRODUCE_FLAG, PRODUCE_ON_EXIT, codeCachePath, type CodeCacheWritten, type WriteCodeCache } from './code-cache.js';
import { KOFFI_ADDON_RECORD, writeKoffiAddonRecord } from './koffi.js';
import { STANDBY_TAG } from './worker-data.js';
import type { StandbyData, StandbyMessage } from './worker-standby.js';

const DIST = fileURLToPath(new URL('../', import.meta.url));
const EXTERNAL = ['koffi', 'debug'];
// Strict like the ES modules it came from, and its own URL, which replaces import.meta.url.
const BANNER = '"use strict"; const __bundle_url = require("node:url").pathToFileURL(__filename).href;';
/** A dynamic import() left in a bundle: it would fail when the bundle runs from its code cache (code-cache.ts). */
const DYNAMIC_IMPORT = /(^|[^\w$.])import\(/m;

/** Each module's `import.meta.url` becomes its own compiled file's URL, relative to the bundle at `outfile`. */
function ownMetaUrl(outfile: string): Plugin {
  return {
    name: 'own-import-meta-url',
    setup(b) {
      b.onLoad({ filter: /\.js$/ }, async (args) => {
        const source = await readFile(args.path, 'utf8');
        if (!source.includes('import.meta.url')) return { contents: source, loader: 'js' };
        const rel = relative(dirname(outfile), args.path).split(sep).join('/');
        return { contents: source.replaceAll('import.meta.url', `new URL(${JSON.stringify(rel)}, __bundle_url).href`), loader: 'js' };
      });
    },
  };
}

/**
 * `source` with every non-ASCII UTF-16 unit written as a `\\uXXXX` escape. esbuild already escapes them in
 * strings, templates, regular expressions and identifiers (its default ASCII charset), so what is left is in
 * comments (a § or µ), where the escape is only text. An ASCII file is read as latin1 (code-cache.ts): a
 * one-byte string, without UTF-8 decoding. With 13 such characters in the worker bundle's comments, reading
 * it as UTF-8 took 4.6 ms of a worker's start and made its source a two-byte string; as latin1, 0.9 ms.
 */
function asciiOnly(source: string): string {
  return source.replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Bundles `entry` into the CommonJS script `outfile` (both under dist/) and returns the script's SHA-256 (hex). */
async function cjsBundle(entry: string, outfile: string, opts: { ownUrls: boolean; define?: Record<string, string>; mayImport?: boolean }): Promise<string> {
  const out = join(DIST, outfile);
  await build({
    entryPoints: [join(DIST, entry)], outfile: out, bundle: true, platform: 'node', format: 'cjs', target: 'node20',
    external: EXTERNAL, logLevel: 'warning', banner: { js: BANNER },
    ...(opts.ownUrls ? { plugins: [ownMetaUrl(out)] } : {}),
    define: { ...(opts.ownUrls ? {} : { 'import.meta.url': '__bundle_url' }), ...opts.define },
  });
  const source = Buffer.from(asciiOnly((await readFile(out)).toString('utf8')), 'latin1');
  await writeFile(out, source);
  if (!opts.mayImport && DYNAMIC_IMPORT.test(source.toString('latin1'))) {
    throw new Error(`${outfile} has a dynamic import(), which fails in code run from V8's code cache: import the module statically or with a literal path`);
  }
  return createHash('sha256').update(source).digest('hex');
}

/**
 * The ES module at `outfile` (under dist/lib) that runs the bundle `cjs` (beside it) and re-exports `names`
 * of its exports; it carries the bundle's hash (code-cache.ts).
 */
async function esmEntry(outfile: string, cjs: string, hash: string, names: readonly string[]): Promise<void> {
  const lines = [
    `// Generated by lib/bundles.ts: runs ${cjs} from V8's code cache when that matches it (lib/code-cache.ts).`,
    `import { runBundleEntry } from "./code-cache.js";`,
    `const bundle = runBundleEntry(new URL(${JSON.stringify(`./${cjs}`)}, import.meta.url), ${JSON.stringify(hash)});`,
    `export const { ${names.join(', ')} } = bundle;`,
  ];
  await writeFile(join(DIST, outfile), `${lines.join('\n')}\n`);
}

/**
 * The CommonJS script at `outfile` (under dist/bin) that runs the command bundle `cjs` (beside it) through
 * dist/lib/code-cache.cjs; it carries the bundle's hash (code-cache.ts). A command that starts this way
 * loads no ES module, and node never starts its ES-module loader (bin/launch.cjs).
 */
async function commandEntry(outfile: string, cjs: string, hash: string): Promise<void> {
  const lines = [
    `// Generated by lib/bundles.ts: runs ${cjs} from V8's code cache when that matches it (lib/code-cache.ts).`,
    "'use strict';",
    `require('../lib/code-cache.cjs').runBundleEntry(require('node:url').pathToFileURL(require('node:path').join(__dirname, ${JSON.stringify(cjs)})), ${JSON.stringify(hash)});`,
  ];
  await writeFile(join(DIST, outfile), `${lines.join('\n')}\n`, { mode: 0o755 });
}

/**
 * Writes the code cache of an entry's bundle: a node process loads the entry (an ES module is imported, a
 * CommonJS script required) in produce mode, with `args`.
 */
function produceEntryCache(outfile: string, args: readonly string[]): void {
  const file = join(DIST, outfile);
  const flag = `globalThis[Symbol.for(${JSON.stringify(PRODUCE_ON_EXIT.description)})] = true;
    process.argv = [process.argv[0], ${JSON.stringify(file)}, ...${JSON.stringify(args)}];`;
  const r = outfile.endsWith('.cjs')
    ? spawnSync(process.execPath, ['-e', `${flag} require(${JSON.stringify(file)});`], { encoding: 'utf8', timeout: 120_000 })
    : spawnSync(process.execPath, ['--input-type=module', '-e', `${flag} await import(${JSON.stringify(pathToFileURL(file).href)});`], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) console.warn(`bundles: no code cache for ${outfile} (it will compile its bundle): ${r.stderr || r.error?.message}`);
}

/**
 * Writes the worker bundle's code cache: one standby worker, started through the loader in produce mode,
 * imports what every worker imports, and the loader then saves the bundle's compiled code. Without it (a
 * build where that worker cannot run) workers compile the bundle, so a failure only warns.
 */
async function produceWorkerCache(loader: string, preload: readonly string[]): Promise<void> {
  const data: StandbyData = { tag: STANDBY_TAG, preload };
  const standby = new URL('./worker-standby.js', import.meta.url).href;
  const worker = new Worker(join(DIST, loader), { argv: [PRODUCE_FLAG, standby], workerData: data });
  try {
    await new Promise<void>((resolve, reject) => {
      worker.on('error', reject);
      worker.on('exit', (code) => reject(new Error(`the worker exited (${code}) before writing the cache`)));
      worker.on('message', (m: StandbyMessage | CodeCacheWritten) => {
        if (m.type === 'flintvm-standby-ready') worker.postMessage({ type: 'flintvm-write-code-cache' } satisfies WriteCodeCache);
        else if (m.type === 'flintvm-standby-failed') reject(new Error(m.message));
        else if (m.type === 'flintvm-code-cache-written') resolve();
      });
    });
  } catch (e) {
    console.warn(`bundles: no code cache for ${loader}'s bundle (its workers will compile it): ${(e as Error).message}`);
  } finally {
    await worker.terminate();
  }
}

/** A worker bundle, then its loader, which carries the bundle's name and hash; returns the loader's path under dist/. */
async function workerBundle(name: string): Promise<string> {
  const hash = await cjsBundle(`lib/${name}-bundle.js`, `lib/${name}-bundle.cjs`, { ownUrls: false, mayImport: true });
  const loader = `lib/${name}-loader.cjs`;
  await cjsBundle('lib/worker-loader.js', loader, {
    ownUrls: false, define: { BUNDLE_SHA256: JSON.stringify(hash), BUNDLE_FILE: JSON.stringify(`./${name}-bundle.cjs`) }, mayImport: true,
  });
  return loader;
}

/** The worker bundles (the whole one; the vCPU worker's), their loaders, then their caches. */
async function workerScripts(): Promise<void> {
  const [loader, vcpuLoader] = await Promise.all([workerBundle('worker'), workerBundle('worker-vcpu')]);
  // Imported here, after the bundles exist: worker-pool.js looks for them when it loads.
  const { DEFAULT_PRELOAD, VCPU_PRELOAD } = await import('./worker-pool.js');
  await Promise.all([produceWorkerCache(loader, DEFAULT_PRELOAD), produceWorkerCache(vcpuLoader, VCPU_PRELOAD)]);
}

/** The library: its bundle, the package entry, the cache (made by importing it). */
async function library(): Promise<void> {
  const hash = await cjsBundle('lib/index.js', 'lib/index.bundle.cjs', { ownUrls: true });
  const names = Object.keys(await import('./index.js')).sort();
  await esmEntry('lib/index.bundle.js', 'index.bundle.cjs', hash, names);
  produceEntryCache('lib/index.bundle.js', []);
}

/**
 * A command: its bundle, its entry, the cache (made by running `--version`). Needs dist/lib/code-cache.cjs
 * (the entry runs the bundle with it).
 */
async function command(name: string): Promise<void> {
  const hash = await cjsBundle(`bin/${name}.js`, `bin/${name}.bundle.cjs`, { ownUrls: true });
  await commandEntry(`bin/${name}.entry.cjs`, `${name}.bundle.cjs`, hash);
  produceEntryCache(`bin/${name}.entry.cjs`, ['--version']);
}

/**
 * lib/worker-spawn.ts as one CommonJS script, dist/lib/worker-spawn.cjs (its URLs are its own, in dist/lib):
 * bin/launch.cjs requires it to start `flintvm run`'s vCPU worker before anything else loads.
 */
async function earlySpawner(): Promise<void> {
  await cjsBundle('lib/worker-spawn.js', 'lib/worker-spawn.cjs', { ownUrls: false });
}

// The koffi addon the main thread of later processes loads directly (lib/koffi.ts); without a record, the package.
if (writeKoffiAddonRecord() === undefined) {
  await rm(KOFFI_ADDON_RECORD, { force: true });
  console.warn("bundles: koffi's addon is not in the module cache: processes will load koffi through its package");
}
// Old caches first: one left from another bundle would be ignored (its hash differs), but it is dead weight.
// So are the ES-module command entries (dist/bin/<command>.bundle.js) that builds before the CommonJS ones made.
await Promise.all(['lib/worker-bundle.cjs', 'lib/worker-vcpu-bundle.cjs', 'lib/index.bundle.cjs', 'bin/flintvm.bundle.cjs', 'bin/flintvm-oci.bundle.cjs']
  .map((f) => rm(codeCachePath(join(DIST, f)), { force: true }))
  .concat(['bin/flintvm.bundle.js', 'bin/flintvm-oci.bundle.js'].map((f) => rm(join(DIST, f), { force: true }))));
// The code-cache loader as CommonJS, for the command entries.
await cjsBundle('lib/code-cache.js', 'lib/code-cache.cjs', { ownUrls: false });
await Promise.all([workerScripts(), library(), command('flintvm'), command('flintvm-oci'), earlySpawner()]);
