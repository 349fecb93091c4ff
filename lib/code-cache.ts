/**
 * Names shared by the worker loader (worker-loader.ts, which runs the worker
 * bundle from V8's code cache) and the build step that writes that cache
 * (bundles.ts). No side effects: both import it.
 */

/** Passed (before the entry's URL) in a worker's argv by the build: write the cache once the entry's preloads are in. */
export const PRODUCE_FLAG = '--flintvm-produce-code-cache';

/** Build -> producing worker, once it said it is ready; it answers {@link CodeCacheWritten}. */
export interface WriteCodeCache { readonly type: 'flintvm-write-code-cache' }
export interface CodeCacheWritten { readonly type: 'flintvm-code-cache-written'; readonly bytes: number }

/** Bytes of the SHA-256 of the bundle that start a cache file. */
export const CACHE_HASH_BYTES = 32;

/** Where the code cache of the CommonJS bundle at `bundle` (a path) lives. */
export function codeCachePath(bundle: string): string {
  return bundle.replace(/\.cjs$/, '') + '.v8cache';
}

/**
 * How this worker's loader ran the bundle, on the worker's `globalThis` under {@link CODE_CACHE_USE} (tests,
 * diagnostics): 'used' (from the cache), 'rejected' (V8 refused it: another node), 'stale' (made from another
 * bundle), 'absent' (no cache file), 'producing' (the build's worker), 'unsupported' (a node without
 * `vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER`: required as a plain module).
 */
export type CodeCacheUse = 'used' | 'rejected' | 'stale' | 'absent' | 'producing' | 'unsupported';
export const CODE_CACHE_USE = Symbol.for('flintvm.codeCacheUse');

/** The loader's `import()`, on the worker's `globalThis`, for code in the bundle (see worker-loader.ts). */
export const WORKER_IMPORT = Symbol.for('flintvm.workerImport');
