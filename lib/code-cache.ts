/**
 * Running the package's CommonJS bundles from V8's code cache.
 *
 * A cold node process (and every worker thread, a new V8 isolate) parses and
 * compiles the bundle it loads, function by function as they first run. In
 * the emulated x86_64 test host that was 200 ms of importing the library and
 * 100 ms of each worker's start. `npm run build` (bundles.ts) therefore runs
 * each bundle once, in produce mode, and saves its compiled code, the
 * functions that ran included, beside it as `<bundle>.v8cache`; later loads
 * deserialize that code instead of compiling.
 *
 * V8 checks little before it uses a cache: the source's length, its own
 * version and flags. A cache made from another bundle of the same length is
 * taken, and so is one made by the same node version on another CPU
 * architecture (an x86_64 cache crashed node in the arm64 test host, which
 * shares this dist/). So a cache file starts with what it was made from, and
 * is used only when both match:
 * - the SHA-256 of the bundle. The build puts it into the code that loads the
 *   bundle (the worker loader, the package entry, each command's entry), so a
 *   load compares two short strings instead of hashing the bundle (27 ms of
 *   emulated CPU there);
 * - the runtime: platform, node and V8 versions and node's build
 *   configuration (`process.config`, which names the architecture), as a
 *   string.
 * A cache that does not match, or that V8 refuses, is ignored and the bundle
 * compiles as it would without one. Nothing writes a cache except in produce
 * mode, so each machine's build makes the cache for its own node.
 *
 * Node 20's `import()` does not work in code that came from a code cache, so
 * a bundle must not contain one (bundles.ts checks); the worker bundle gets
 * its loader's instead (WORKER_IMPORT).
 */
import { isAscii } from 'node:buffer';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { Module, createRequire } from 'node:module';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as vm from 'node:vm';

/** Passed (before the entry's URL) in a worker's argv by the build: write the cache once the entry's preloads are in. */
export const PRODUCE_FLAG = '--flintvm-produce-code-cache';
/** Set to true on `globalThis` by the build before it imports a bundle's ES-module entry: that entry then writes the cache when the process exits. */
export const PRODUCE_ON_EXIT = Symbol.for('flintvm.produceCodeCache');

/** Build -> producing worker, once it said it is ready; it answers {@link CodeCacheWritten}. */
export interface WriteCodeCache { readonly type: 'flintvm-write-code-cache' }
export interface CodeCacheWritten { readonly type: 'flintvm-code-cache-written'; readonly bytes: number }

/** Bytes of the SHA-256 of the bundle that start a cache file; then a u32 (little-endian) length and the runtime key, then V8's data. */
export const CACHE_HASH_BYTES = 32;

/** What V8's code must have been made by to run here (see the top of this file). */
export function runtimeKey(): string {
  // process.config names the architecture node was built for (variables.target_arch).
  return JSON.stringify([process.platform, process.version, process.versions.v8, process.config]);
}

/** The header of a cache file: the bundle's SHA-256, then the runtime key. */
function cacheHeader(hash: Buffer): Buffer {
  const key = Buffer.from(runtimeKey(), 'utf8');
  const length = Buffer.alloc(4);
  length.writeUInt32LE(key.length);
  return Buffer.concat([hash, length, key]);
}

/**
 * How a bundle was run: 'used' (from the cache), 'rejected' (V8 refused it), 'stale' (made from another
 * bundle), 'other-runtime' (made by another node, or on another architecture), 'absent' (no cache file),
 * 'producing' (the build's run that writes it). A worker's
 * is on its `globalThis` under {@link CODE_CACHE_USE} (tests, diagnostics).
 */
export type CodeCacheUse = 'used' | 'rejected' | 'stale' | 'other-runtime' | 'absent' | 'producing';
export const CODE_CACHE_USE = Symbol.for('flintvm.codeCacheUse');

/** The loader's `import()`, on the worker's `globalThis`, for code in the worker bundle (see worker-loader.ts). */
export const WORKER_IMPORT = Symbol.for('flintvm.workerImport');

/** Where the code cache of the CommonJS bundle at `bundle` (a path) lives. */
export function codeCachePath(bundle: string): string {
  return bundle.replace(/\.cjs$/, '') + '.v8cache';
}

export interface LoadedBundle {
  /** The bundle's `module.exports`. */
  readonly exports: Record<string, unknown>;
  readonly use: CodeCacheUse;
  /** Writes the cache from the code compiled so far (produce mode only); returns its size in bytes. */
  writeCache(): number;
}

// The wrapper node's CommonJS loader puts around a module, so the bundle sees what require() would give it.
const WRAPPER_HEAD = '(function (exports, require, module, __filename, __dirname) {';
const WRAPPER_TAIL = '\n})';

/**
 * Runs the CommonJS bundle at `url` in this thread, like `require()` would, but from its code cache when
 * that was made from the bundle whose SHA-256 is `sha256Hex`. With `produce`, compiles without a cache
 * and keeps what {@link LoadedBundle.writeCache} needs.
 */
export function runCommonJsBundle(url: URL, sha256Hex: string, produce = false): LoadedBundle {
  const file = fileURLToPath(url);
  // The build makes every bundle ASCII (bundles.ts's asciiOnly): read as latin1 it is a one-byte string, made
  // without decoding UTF-8. Anything else (a bundle not from the build) is decoded as UTF-8.
  const bytes = readFileSync(file);
  let source = isAscii(bytes) ? bytes.toString('latin1') : bytes.toString('utf8');
  // A command's bundle starts with its `#!` line, which only a file's first line may have: keep the line, as a comment.
  if (source.startsWith('#!')) source = `//${source.slice(2)}`;
  const header = cacheHeader(Buffer.from(sha256Hex, 'hex'));
  const cachePath = codeCachePath(file);
  let cachedData: Buffer | undefined;
  let use: CodeCacheUse = produce ? 'producing' : 'absent';
  if (!produce) {
    let cache: Buffer | undefined;
    try {
      cache = readFileSync(cachePath);
    } catch {
      // No cache (a build without one, or removed): compile.
    }
    if (cache !== undefined) {
      if (cache.length < CACHE_HASH_BYTES || !header.subarray(0, CACHE_HASH_BYTES).equals(cache.subarray(0, CACHE_HASH_BYTES))) use = 'stale';
      else if (cache.length <= header.length || !header.equals(cache.subarray(0, header.length))) use = 'other-runtime';
      else cachedData = cache.subarray(header.length);
    }
  }
  const script = new vm.Script(WRAPPER_HEAD + source + WRAPPER_TAIL, { filename: file, ...(cachedData ? { cachedData } : {}) });
  if (cachedData) use = script.cachedDataRejected === true ? 'rejected' : 'used';
  const mod = new Module(file);
  mod.filename = file;
  const run = script.runInThisContext() as (...args: unknown[]) => void;
  run.call(mod.exports, mod.exports, createRequire(file), mod, file, dirname(file));
  return {
    exports: mod.exports as Record<string, unknown>,
    use,
    writeCache(): number {
      if (!produce) throw new Error('writeCache() is for the build (produce mode)');
      const data = Buffer.concat([header, script.createCachedData()]);
      const tmp = `${cachePath}.${process.pid}.tmp`;
      writeFileSync(tmp, data);
      renameSync(tmp, cachePath);
      return data.length;
    },
  };
}

/**
 * What a generated ES-module entry (the package's, a command's: bundles.ts writes them) calls: runs its
 * bundle, and in the build's produce run writes the cache when the process exits (after a command's
 * `--version`, or the library's import).
 */
export function runBundleEntry(url: URL, sha256Hex: string): Record<string, unknown> {
  const produce = (globalThis as Record<symbol, unknown>)[PRODUCE_ON_EXIT] === true;
  const loaded = runCommonJsBundle(url, sha256Hex, produce);
  if (produce) process.once('exit', () => loaded.writeCache());
  return loaded.exports;
}
