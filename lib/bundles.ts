/**
 * Build step, not part of the library: `npm run build` runs it (node
 * dist/lib/bundles.js) after `tsc`. It bundles the compiled ES modules into
 * single files with esbuild, because a cold node process spends most of its
 * start-up resolving, reading, compiling and linking one module at a time
 * (about 190 modules behind lib/index.js):
 *
 * - dist/lib/worker-bundle.cjs: every module a VM's workers run (see
 *   worker-bundle.ts and worker-modules.ts), with dist/lib/worker-loader.cjs,
 *   which every worker runs first, and dist/lib/worker-bundle.v8cache, the
 *   bundle's compiled code, which that loader uses (worker-loader.ts);
 * - dist/lib/index.bundle.js: the library as a package user imports it
 *   (package.json's `exports`);
 * - dist/bin/<command>.bundle.js: each command (bin/launch.js runs it when it
 *   is current).
 *
 * In the two ES-module bundles each module keeps its own `import.meta.url`:
 * it is rewritten to the URL of that module's compiled file, computed from the
 * bundle's own URL, so the paths the library derives from it (the guest
 * scripts, the worker entries, package.json) stay what they are unbundled.
 * koffi (a native addon) and debug stay outside, imported as packages.
 */
import { build, type Plugin } from 'esbuild';
import { createHash } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { PRODUCE_FLAG, codeCachePath, type CodeCacheWritten, type WriteCodeCache } from './code-cache.js';
import { STANDBY_TAG } from './worker-data.js';
import type { StandbyData, StandbyMessage } from './worker-standby.js';

const DIST = fileURLToPath(new URL('../', import.meta.url));
const EXTERNAL = ['koffi', 'debug'];

/** Each module's `import.meta.url` becomes its own compiled file's URL, relative to the bundle at `outfile`. */
function ownMetaUrl(outfile: string): Plugin {
  return {
    name: 'own-import-meta-url',
    setup(b) {
      b.onLoad({ filter: /\.js$/ }, async (args) => {
        const source = await readFile(args.path, 'utf8');
        if (!source.includes('import.meta.url')) return { contents: source, loader: 'js' };
        const rel = relative(dirname(outfile), args.path).split(sep).join('/');
        return { contents: source.replaceAll('import.meta.url', `new URL(${JSON.stringify(rel)}, import.meta.url).href`), loader: 'js' };
      });
    },
  };
}

async function esmBundle(entry: string, outfile: string): Promise<void> {
  await build({
    entryPoints: [join(DIST, entry)], outfile: join(DIST, outfile), bundle: true, platform: 'node', format: 'esm',
    target: 'node20', external: EXTERNAL, logLevel: 'warning', plugins: [ownMetaUrl(join(DIST, outfile))],
  });
}

/**
 * CommonJS, so that a worker loads it as one script; every module sees the output file's own URL as its
 * import.meta.url, and worker-modules.ts maps entry URLs onto the bundled modules.
 */
async function workerScript(entry: string, outfile: string, define: Record<string, string> = {}): Promise<void> {
  await build({
    entryPoints: [join(DIST, entry)], outfile: join(DIST, outfile), bundle: true,
    platform: 'node', format: 'cjs', target: 'node20', external: EXTERNAL, logLevel: 'warning',
    define: { 'import.meta.url': '__bundle_url', ...define },
    banner: { js: 'const __bundle_url = require("node:url").pathToFileURL(__filename).href;' },
  });
}

/**
 * Writes the worker bundle's code cache: one standby worker, started through the loader in produce mode,
 * imports what every worker imports, and the loader then saves the bundle's compiled code. Without it (a
 * build where that worker cannot run) workers compile the bundle as before, so a failure only warns.
 */
async function writeWorkerCodeCache(): Promise<void> {
  await rm(codeCachePath(join(DIST, 'lib/worker-bundle.cjs')), { force: true });
  // Imported here, after the bundles exist: worker-pool.js looks for them when it loads.
  const { DEFAULT_PRELOAD } = await import('./worker-pool.js');
  const data: StandbyData = { tag: STANDBY_TAG, preload: DEFAULT_PRELOAD };
  const standby = new URL('./worker-standby.js', import.meta.url).href;
  const worker = new Worker(join(DIST, 'lib/worker-loader.cjs'), { argv: [PRODUCE_FLAG, standby], workerData: data });
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
    console.warn(`bundles: no code cache for the worker bundle (workers will compile it): ${(e as Error).message}`);
  } finally {
    await worker.terminate();
  }
}

/** The worker bundle, then its loader, which carries the bundle's hash (worker-loader.ts), then the code cache. */
async function workerScripts(): Promise<void> {
  await workerScript('lib/worker-bundle.js', 'lib/worker-bundle.cjs');
  const hash = createHash('sha256').update(await readFile(join(DIST, 'lib/worker-bundle.cjs'))).digest('hex');
  await workerScript('lib/worker-loader.js', 'lib/worker-loader.cjs', { BUNDLE_SHA256: JSON.stringify(hash) });
  await writeWorkerCodeCache();
}

await Promise.all([
  workerScripts(),
  esmBundle('lib/index.js', 'lib/index.bundle.js'),
  esmBundle('bin/flintvm.js', 'bin/flintvm.bundle.js'),
  esmBundle('bin/flintvm-oci.js', 'bin/flintvm-oci.bundle.js'),
]);
