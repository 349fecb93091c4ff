/**
 * lib/koffi.ts: the main thread loads koffi's native addon from the record `npm run build` wrote, and names
 * it in each worker's argv; a worker loads that file alone instead of the koffi package's loader. A record
 * or an argv that names nothing usable (no file, another version, something that is not koffi) falls back
 * to the package, and libc calls still work. Each worker case starts a real worker that imports lib/sys.ts
 * and makes a libc call through it; each record case runs a fresh node process.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import koffiPackage from 'koffi';
import { firstMessage } from '../../helpers/worker-message.js';
import { KOFFI_ADDON_RECORD, KOFFI_ARG, KOFFI_LOADED_DIRECTLY, addonCandidates, koffiWorkerArg } from '../../../lib/koffi.js';

const SYS_URL = new URL('../../../lib/sys.js', import.meta.url).href;
/** The clone's root (dist/test/unit/lib/ is four folders down). */
const ROOT_DIR = fileURLToPath(new URL('../../../../', import.meta.url));

// The worker imports sys.ts (which loads koffi through lib/koffi.ts and libc through it), calls getpid(2)
// through koffi, and reports which koffi files its thread's module cache holds.
const WORKER = `
const { parentPort } = require('node:worker_threads');
import(${JSON.stringify(SYS_URL)}).then((sys) => {
  const getpid = sys.libc.func('getpid', 'int', []);
  parentPort.postMessage({ pid: getpid(), files: Object.keys(require.cache).filter((k) => k.includes('koffi')) });
});
`;

function run(argv: string[]): Promise<{ pid: number; files: string[] }> {
  return firstMessage(new Worker(WORKER, { eval: true, argv }));
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

test('the build recorded the addon, and this process loaded it from the record', (t) => {
  const rec = JSON.parse(readFileSync(KOFFI_ADDON_RECORD, 'utf8')) as { version: string; file: string };
  t.is(rec.version, (koffiPackage as unknown as { version: string }).version);
  t.false(rec.file.startsWith('/'), 'relative to dist/lib/, so a moved clone still finds it');
  t.true(existsSync(resolve(dirname(KOFFI_ADDON_RECORD), rec.file)));
  t.true(KOFFI_LOADED_DIRECTLY);
});

/** lib/koffi.js copied into a directory under dist/ with `record` as its record (none if null), imported by a fresh node. */
function mainThreadWith(t: { teardown(f: () => void): void }, record: string | null): { direct: boolean; pid: number; files: string[] } {
  const lib = fileURLToPath(new URL('../../../lib/', import.meta.url));
  const dir = mkdtempSync(join(lib, '..', 'koffi-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const f of ['koffi.js', 'koffi-addon.js']) copyFileSync(join(lib, f), join(dir, f));
  if (record !== null) writeFileSync(join(dir, 'koffi-addon.json'), record);
  const script = `import { createRequire } from 'node:module';
    const k = await import(${JSON.stringify(pathToFileURL(join(dir, 'koffi.js')).href)});
    const getpid = k.default.load('libc.so.6').func('getpid', 'int', []);
    const files = Object.keys(createRequire(import.meta.url).cache).filter((f) => f.includes('koffi'));
    console.log(JSON.stringify({ direct: k.KOFFI_LOADED_DIRECTLY, pid: getpid(), files }));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', cwd: dir });
  if (r.status !== 0) throw new Error(r.stderr);
  const out = JSON.parse(r.stdout) as { direct: boolean; pid: number; files: string[] };
  return { ...out, pid: out.pid - r.pid! };
}

const recorded = () => JSON.parse(readFileSync(KOFFI_ADDON_RECORD, 'utf8')) as { version: string; file: string; inNodeModules: string; platform: string; arch: string };
const addonFile = () => resolve(dirname(KOFFI_ADDON_RECORD), recorded().file);

test('a fresh process loads the addon a valid record names, and not the package', (t) => {
  const seen = mainThreadWith(t, JSON.stringify({ version: recorded().version, file: addonFile() }));
  t.true(seen.direct);
  t.is(seen.pid, 0, 'its libc calls work');
  t.false(seen.files.some(isPackageLoader), seen.files.join(', '));
});

for (const [what, record] of [
  ['no record', () => null],
  ['a record of another version', () => JSON.stringify({ version: '0.0.1', file: addonFile() })],
  ['a record of a file that does not exist', () => JSON.stringify({ version: recorded().version, file: 'nowhere/koffi.node' })],
  ['a record that is not JSON', () => '{ version'],
  ['a record without a file', () => JSON.stringify({ version: recorded().version })],
] as const) {
  test(`a fresh process with ${what} loads koffi through its package`, (t) => {
    const seen = mainThreadWith(t, record());
    t.false(seen.direct);
    t.is(seen.pid, 0, 'its libc calls work');
    t.true(seen.files.some(isPackageLoader), seen.files.join(', '));
  });
}

test('addonCandidates: node_modules/<addon> in each folder above dist/lib, nearest first, never node_modules/node_modules', (t) => {
  t.deepEqual(addonCandidates('/app/node_modules/flintvm/dist/lib', '@k/p/a.node'), [
    '/app/node_modules/flintvm/dist/lib/node_modules/@k/p/a.node',
    '/app/node_modules/flintvm/dist/node_modules/@k/p/a.node',
    '/app/node_modules/flintvm/node_modules/@k/p/a.node',
    '/app/node_modules/@k/p/a.node',
    '/node_modules/@k/p/a.node',
  ]);
});

test('the record names the addon below its node_modules folder, with the build platform and arch', (t) => {
  const rec = recorded();
  t.is(rec.platform, process.platform);
  t.is(rec.arch, process.arch);
  t.true(rec.inNodeModules.endsWith('.node') && !rec.inNodeModules.startsWith('/'), rec.inNodeModules);
  t.is(resolve(ROOT_DIR, 'node_modules', rec.inNodeModules), realpathSync(addonFile()));
});

test('an installed layout: koffi\'s platform package beside flintvm, no path from the build fits, the addon still loads directly', (t) => {
  const app = mkdtempSync(join(tmpdir(), 'flintvm-koffi-app-'));
  t.teardown(() => rmSync(app, { recursive: true, force: true }));
  const lib = join(app, 'node_modules', 'flintvm', 'dist', 'lib');
  mkdirSync(lib, { recursive: true });
  for (const f of ['koffi.js', 'koffi-addon.js']) copyFileSync(fileURLToPath(new URL(`../../../lib/${f}`, import.meta.url)), join(lib, f));
  const rec = recorded();
  // The platform package as npm installs it: node_modules/<scope>/<name>, beside flintvm (here a link to this clone's).
  const parts = rec.inNodeModules.split('/');
  const pkgDepth = parts[0]!.startsWith('@') ? 2 : 1;
  mkdirSync(join(app, 'node_modules', ...parts.slice(0, pkgDepth - 1)), { recursive: true });
  symlinkSync(join(ROOT_DIR, 'node_modules', ...parts.slice(0, pkgDepth)), join(app, 'node_modules', ...parts.slice(0, pkgDepth)));
  writeFileSync(join(lib, 'koffi-addon.json'), JSON.stringify({ ...rec, file: '../../node_modules/nowhere/koffi.node' }));
  // There is no koffi package in this app: a fallback to require('koffi') would throw.
  const script = `const k = await import(${JSON.stringify(pathToFileURL(join(lib, 'koffi.js')).href)});
    console.log(JSON.stringify({ direct: k.KOFFI_LOADED_DIRECTLY, pid: k.default.load('libc.so.6').func('getpid', 'int', [])() }));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', cwd: app });
  t.is(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { direct: boolean; pid: number };
  t.true(out.direct);
  t.is(out.pid, r.pid);
});

for (const [what, change] of [
  ['another platform', { platform: 'freebsd' }],
  ['another arch', { arch: process.arch === 'arm64' ? 'x64' : 'arm64' }],
  ['a path that climbs out of node_modules', { inNodeModules: '../node_modules/x.node' }],
] as const) {
  test(`a record whose build file is gone and whose node_modules entry is for ${what} loads koffi through its package`, (t) => {
    // In dist/koffi-test-*, the folders above include this clone, whose node_modules holds the addon.
    const seen = mainThreadWith(t, JSON.stringify({ ...recorded(), file: 'nowhere/koffi.node', ...change }));
    t.false(seen.direct);
    t.true(seen.files.some(isPackageLoader), seen.files.join(', '));
  });
}

test('the same record with this platform and arch finds the addon in the clone\'s node_modules', (t) => {
  const seen = mainThreadWith(t, JSON.stringify({ ...recorded(), file: 'nowhere/koffi.node' }));
  t.true(seen.direct);
  t.false(seen.files.some(isPackageLoader), seen.files.join(', '));
});
