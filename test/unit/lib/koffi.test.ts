/**
 * lib/koffi.ts: the main thread names koffi's native addon in each worker's argv, and a worker loads that
 * file alone instead of the koffi package's loader. A worker whose argv names nothing usable (no file,
 * another version, something that is not koffi) falls back to the package, and its libc calls still work.
 * Each case starts a real worker that imports lib/sys.ts and makes a libc call through it.
 */
import test from 'ava';
import { existsSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import koffiPackage from 'koffi';
import { KOFFI_ARG, koffiWorkerArg } from '../../../lib/koffi.js';

const SYS_URL = new URL('../../../lib/sys.js', import.meta.url).href;

// The worker imports sys.ts (which loads koffi through lib/koffi.ts and libc through it), calls getpid(2)
// through koffi, and reports which koffi files its thread's module cache holds.
const WORKER = `
const { parentPort } = require('node:worker_threads');
import(${JSON.stringify(SYS_URL)}).then((sys) => {
  const getpid = sys.libc.func('getpid', 'int', []);
  parentPort.postMessage({ pid: getpid(), files: Object.keys(require.cache).filter((k) => k.includes('koffi')) });
});
`;

async function run(argv: string[]): Promise<{ pid: number; files: string[] }> {
  const w = new Worker(WORKER, { eval: true, argv });
  try {
    return await new Promise((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
      w.once('exit', (code) => reject(new Error(`worker exited ${code} without a message`)));
    });
  } finally {
    await w.terminate();
  }
}

const isPackageLoader = (f: string) => f.endsWith('.cjs') || f.endsWith('.js');

test('the main thread names the addon koffi loaded, with its version', (t) => {
  const arg = koffiWorkerArg();
  t.truthy(arg);
  const [version, file] = [arg!.slice(KOFFI_ARG.length, arg!.indexOf('@')), arg!.slice(arg!.indexOf('@') + 1)];
  t.is(version, (koffiPackage as unknown as { version: string }).version);
  t.true(file.endsWith('.node'), file);
  t.true(existsSync(file), file);
});

test('a worker given the argv loads only the addon, and its libc calls work', async (t) => {
  const seen = await run([koffiWorkerArg()!]);
  t.is(seen.pid, process.pid);
  t.is(seen.files.length, 1, seen.files.join(', '));
  t.true(seen.files[0]!.endsWith('.node'));
});

test('a worker without the argv loads the koffi package', async (t) => {
  const seen = await run([]);
  t.is(seen.pid, process.pid);
  t.true(seen.files.some(isPackageLoader), seen.files.join(', '));
});

for (const [what, arg] of [
  ['another version', () => koffiWorkerArg()!.replace(/=[^@]+@/, '=0.0.1@')],
  ['a file that does not exist', () => `${KOFFI_ARG}${koffiWorkerArg()!.split('@')[0]!.slice(KOFFI_ARG.length)}@/nonexistent/koffi.node`],
  ['a module that is not koffi', () => `${KOFFI_ARG}${koffiWorkerArg()!.split('@')[0]!.slice(KOFFI_ARG.length)}@${new URL(import.meta.url).pathname}`],
  ['no version', () => `${KOFFI_ARG}@${koffiWorkerArg()!.split('@')[1]!}`],
] as const) {
  test(`a worker whose argv names ${what} falls back to the koffi package`, async (t) => {
    const seen = await run([arg()]);
    t.is(seen.pid, process.pid);
    t.true(seen.files.some(isPackageLoader), seen.files.join(', '));
  });
}
