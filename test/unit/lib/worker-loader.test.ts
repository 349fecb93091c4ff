/**
 * The worker loader (lib/worker-loader.ts): every worker runs the worker bundle through it, from the code
 * cache `npm run build` writes when that cache was made from the same bundle, and compiles the bundle as
 * before when it was not (another bundle, a corrupt cache, none at all). Each case starts a real worker.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { CACHE_HASH_BYTES, codeCachePath, runtimeKey } from '../../../lib/code-cache.js';
import { firstMessage } from '../../helpers/worker-message.js';

const LIB = fileURLToPath(new URL('../../../lib/', import.meta.url));
const BUNDLE = join(LIB, 'worker-bundle.cjs');
const CACHE = codeCachePath(BUNDLE);

// An entry outside the bundle: the bundle imports it with a plain import(), which a vm.Script can only do
// with the main context's loader, so this also checks that path.
const ENTRY = `import { parentPort, workerData } from 'node:worker_threads';
parentPort.postMessage({ use: globalThis[Symbol.for('flintvm.codeCacheUse')], data: workerData });
`;

/** An entry outside the bundles that reports how its worker was started (test/helpers/worker-probe.ts). */
const PROBE_URL = new URL('../../helpers/worker-probe.js', import.meta.url).href;

/** A copy of the loader and the bundle in a directory under dist/ (so koffi and debug still resolve), with `cache` as its cache file (none if null). */
function copy(t: { teardown(f: () => void): void }, cache: Buffer | null): string {
  const dir = mkdtempSync(join(LIB, '..', 'loader-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  copyFileSync(join(LIB, 'worker-loader.cjs'), join(dir, 'worker-loader.cjs'));
  copyFileSync(BUNDLE, join(dir, 'worker-bundle.cjs'));
  if (cache) writeFileSync(codeCachePath(join(dir, 'worker-bundle.cjs')), cache);
  writeFileSync(join(dir, 'entry.mjs'), ENTRY);
  return dir;
}

/** Starts a worker through the loader in `dir` and returns what its entry saw. */
function run(dir: string): Promise<{ use: string; data: unknown }> {
  return firstMessage(new Worker(join(dir, 'worker-loader.cjs'), { argv: [pathToFileURL(join(dir, 'entry.mjs')).href], workerData: { n: 7 } }));
}

test('the build wrote a code cache that starts with the SHA-256 of the worker bundle', (t) => {
  const cache = readFileSync(CACHE);
  const hash = createHash('sha256').update(readFileSync(BUNDLE)).digest();
  t.true(cache.length > CACHE_HASH_BYTES + 10_000, `${cache.length} bytes`);
  t.deepEqual(cache.subarray(0, CACHE_HASH_BYTES), hash);
});

test('a worker runs the bundle from the cache the build wrote, and its entry gets its workerData', async (t) => {
  const seen = await run(copy(t, readFileSync(CACHE)));
  t.is(seen.use, 'used');
  t.deepEqual(seen.data, { n: 7 });
});

test('a cache made from another bundle is not used: the bundle compiles and the worker runs', async (t) => {
  const cache = Buffer.from(readFileSync(CACHE));
  cache[0] ^= 0xff;
  const seen = await run(copy(t, cache));
  t.is(seen.use, 'stale');
  t.deepEqual(seen.data, { n: 7 });
});

/** Where V8's data starts in a cache file: after the bundle's hash, the runtime key's length and the key. */
function dataStart(cache: Buffer): number {
  return CACHE_HASH_BYTES + 4 + cache.readUInt32LE(CACHE_HASH_BYTES);
}

test('the cache names the runtime that made it', (t) => {
  const cache = readFileSync(CACHE);
  t.is(cache.subarray(CACHE_HASH_BYTES + 4, dataStart(cache)).toString('utf8'), runtimeKey());
  t.true(runtimeKey().includes(`"target_arch":${JSON.stringify(process.arch)}`));
});

test('a cache V8 refuses (matching hash and runtime, corrupt code) is not used, and the worker runs', async (t) => {
  const cache = Buffer.from(readFileSync(CACHE));
  const at = dataStart(cache);
  cache.fill(0x5a, at, at + 64);
  const seen = await run(copy(t, cache));
  t.is(seen.use, 'rejected');
});

// Same bundle, same node version, another architecture: V8 took such a cache and crashed (an x86_64 build's
// cache in the arm64 test host). Here the key's architecture is changed, as if another machine had built it.
test('a cache made by another runtime (another architecture) is not used, and the worker runs', async (t) => {
  const cache = readFileSync(CACHE);
  const at = dataStart(cache);
  const key = cache.subarray(CACHE_HASH_BYTES + 4, at).toString('utf8');
  const other = key.replace(`"target_arch":${JSON.stringify(process.arch)}`, `"target_arch":${JSON.stringify(process.arch === 'arm64' ? 'x64' : 'arm64')}`);
  t.not(other, key);
  const length = Buffer.alloc(4);
  length.writeUInt32LE(Buffer.byteLength(other));
  const seen = await run(copy(t, Buffer.concat([cache.subarray(0, CACHE_HASH_BYTES), length, Buffer.from(other), cache.subarray(at)])));
  t.is(seen.use, 'other-runtime');
  t.deepEqual(seen.data, { n: 7 });
});

test('without a cache file the bundle compiles and the worker runs', async (t) => {
  const seen = await run(copy(t, null));
  t.is(seen.use, 'absent');
  t.deepEqual(seen.data, { n: 7 });
});

// A freshly spawned vCPU worker runs its own, smaller bundle through its own loader (worker-vcpu-bundle.ts).
test("the vCPU worker's loader runs its bundle from the cache the build wrote", async (t) => {
  const seen = await firstMessage<{ codeCacheUse: string; data: unknown }>(new Worker(join(LIB, 'worker-vcpu-loader.cjs'), { argv: [PROBE_URL], workerData: { n: 8 } }));
  t.is(seen.codeCacheUse, 'used');
  t.deepEqual(seen.data, { n: 8 });
  const hash = createHash('sha256').update(readFileSync(join(LIB, 'worker-vcpu-bundle.cjs'))).digest();
  t.deepEqual(readFileSync(codeCachePath(join(LIB, 'worker-vcpu-bundle.cjs'))).subarray(0, CACHE_HASH_BYTES), hash);
});
