/**
 * What a flintvm worker runs first (built by `npm run build` into
 * dist/lib/worker-loader.cjs, which runs the worker bundle
 * dist/lib/worker-bundle.cjs, and dist/lib/worker-vcpu-loader.cjs, which runs
 * the vCPU worker's smaller bundle dist/lib/worker-vcpu-bundle.cjs): it runs
 * its bundle from V8's code cache when one matches it (code-cache.ts).
 *
 * `npm run build` runs one worker through each loader in produce mode: it
 * imports what the bundle's workers import (worker-pool.ts's DEFAULT_PRELOAD,
 * VCPU_PRELOAD) and then, asked by the build, writes the bundle's
 * `.v8cache`. In the
 * emulated x86_64 test host that took a standby worker's start from 707 to
 * 605 ms (median of 7).
 *
 * Code from a code cache cannot `import()` in node 20, so the loader hands
 * the bundle its own `import()` (WORKER_IMPORT), which worker-modules.ts uses
 * for the modules outside the bundle.
 */
import { parentPort } from 'node:worker_threads';
import { CODE_CACHE_USE, PRODUCE_FLAG, WORKER_IMPORT, runCommonJsBundle, type CodeCacheWritten, type WriteCodeCache } from './code-cache.js';

/** The SHA-256 (hex) of the worker bundle this loader was built with: bundles.ts defines it. */
declare const BUNDLE_SHA256: string;
/** The bundle this loader runs, relative to the loader ('./worker-bundle.cjs'): bundles.ts defines it. */
declare const BUNDLE_FILE: string;

const produceAt = process.argv.indexOf(PRODUCE_FLAG);
const produce = produceAt >= 0;
if (produce) process.argv.splice(produceAt, 1);
const global = globalThis as Record<symbol, unknown>;
global[WORKER_IMPORT] = (url: string): Promise<unknown> => import(url);
// In the loader's own bundle, import.meta.url is the loader's file (bundles.ts defines it), beside the worker bundle.
const loaded = runCommonJsBundle(new URL(BUNDLE_FILE, import.meta.url), BUNDLE_SHA256, produce);
// The bundle imports its entry a microtask later, so the entry sees this already set.
global[CODE_CACHE_USE] = loaded.use;
if (produce) {
  parentPort?.on('message', (m: WriteCodeCache) => {
    if (m?.type !== 'flintvm-write-code-cache') return;
    parentPort!.postMessage({ type: 'flintvm-code-cache-written', bytes: loaded.writeCache() } satisfies CodeCacheWritten);
  });
}
