/**
 * What a flintvm worker runs first (built by `npm run build` into
 * dist/lib/worker-loader.cjs): it runs the worker bundle
 * (dist/lib/worker-bundle.cjs) from V8's code cache when one matches it.
 *
 * A worker thread is a new V8 isolate, so each one parses and compiles the
 * bundle again; in the emulated x86_64 test host that was about a third of a
 * worker's start above an empty worker's. `npm run build` runs one worker
 * through this loader in produce mode: it imports what every worker imports
 * (worker-pool.ts's DEFAULT_PRELOAD) and then writes the compiled code of the
 * bundle, lazily compiled functions included, to
 * dist/lib/worker-bundle.v8cache. Every worker after that deserializes it
 * instead of compiling.
 *
 * The cache file starts with the SHA-256 of the bundle it was made from: V8
 * itself checks only the source's length, so a rebuilt bundle must not meet
 * an old cache. The build writes the bundle, this loader and the cache
 * together and puts the bundle's hash into the loader (BUNDLE_SHA256), so a
 * worker compares two short strings instead of hashing the bundle (27 ms of
 * emulated CPU in the test host). A cache that does not match (another
 * bundle, or another node whose V8 rejects it) is ignored and the bundle
 * compiles as before; nothing here writes a cache at run time.
 *
 * Code run from a vm.Script cannot `import()` a module by itself (and in node
 * 20 not even with `importModuleDynamically` once it came from a code cache),
 * so the loader hands the bundle its own `import()` (WORKER_IMPORT), which
 * worker-modules.ts uses for the modules outside the bundle.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { Module, createRequire } from 'node:module';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as vm from 'node:vm';
import { parentPort } from 'node:worker_threads';
import { CACHE_HASH_BYTES, CODE_CACHE_USE, PRODUCE_FLAG, WORKER_IMPORT, codeCachePath, type CodeCacheUse, type CodeCacheWritten, type WriteCodeCache } from './code-cache.js';

/** The SHA-256 (hex) of the worker bundle this loader was built with: bundles.ts defines it. */
declare const BUNDLE_SHA256: string;

const WRAPPER_ARGS = ['exports', 'require', 'module', '__filename', '__dirname'] as const;

/** Runs `bundle` (a CommonJS script) in this thread, from its code cache when that matches; says how. */
function runBundle(bundle: string, produce: boolean): CodeCacheUse {
  const source = readFileSync(bundle, 'utf8');
  const hash = Buffer.from(BUNDLE_SHA256, 'hex');
  const cachePath = codeCachePath(bundle);
  let cachedData: Buffer | undefined;
  let use: CodeCacheUse = produce ? 'producing' : 'absent';
  if (!produce) {
    try {
      const file = readFileSync(cachePath);
      if (file.length > CACHE_HASH_BYTES && hash.equals(file.subarray(0, CACHE_HASH_BYTES))) cachedData = file.subarray(CACHE_HASH_BYTES);
      else use = 'stale';
    } catch {
      // No cache (a build without it, or removed): compile.
    }
  }
  // The same wrapper node's CommonJS loader puts around a module, so the bundle sees what require() would give it.
  const script = new vm.Script(`(function (${WRAPPER_ARGS.join(', ')}) {${source}\n})`, {
    filename: bundle,
    ...(cachedData ? { cachedData } : {}),
  });
  if (cachedData) use = script.cachedDataRejected === true ? 'rejected' : 'used';
  const mod = new Module(bundle);
  mod.filename = bundle;
  const run = script.runInThisContext() as (...args: unknown[]) => void;
  run.call(mod.exports, mod.exports, createRequire(bundle), mod, bundle, dirname(bundle));
  if (produce) {
    parentPort?.on('message', (m: WriteCodeCache) => {
      if (m?.type !== 'flintvm-write-code-cache') return;
      const data = Buffer.concat([hash, script.createCachedData()]);
      const tmp = `${cachePath}.${process.pid}.tmp`;
      writeFileSync(tmp, data);
      renameSync(tmp, cachePath);
      parentPort!.postMessage({ type: 'flintvm-code-cache-written', bytes: data.length } satisfies CodeCacheWritten);
    });
  }
  return use;
}

// In the loader's own bundle, import.meta.url is the loader's file (bundles.ts defines it), beside the worker bundle.
const produceAt = process.argv.indexOf(PRODUCE_FLAG);
if (produceAt >= 0) process.argv.splice(produceAt, 1);
const bundle = fileURLToPath(new URL('./worker-bundle.cjs', import.meta.url));
(globalThis as Record<symbol, unknown>)[WORKER_IMPORT] = (url: string): Promise<unknown> => import(url);
// The bundle imports its entry a microtask later, so the entry sees this already set.
(globalThis as Record<symbol, unknown>)[CODE_CACHE_USE] = runBundle(bundle, produceAt >= 0);
