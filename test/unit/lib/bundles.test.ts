/**
 * The single-file bundles `npm run build` makes (lib/bundles.ts): the package's entry is the library bundle
 * and exports what lib/index.js exports; each bundled module still sees its own compiled file as
 * import.meta.url (the paths derived from it are right); and bin/launch.cjs runs a command's bundle only
 * while it is at least as new as the command's compiled module.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const DIST = fileURLToPath(new URL('../../../', import.meta.url));
const ROOT = join(DIST, '..');
const PKG = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };

test('the package entry is the library bundle, with the same exports as lib/index.js', async (t) => {
  t.is(import.meta.resolve('flintvm'), pathToFileURL(join(DIST, 'lib/index.bundle.js')).href);
  const bundle = (await import('flintvm')) as Record<string, unknown>;
  const modules = (await import('../../../lib/index.js')) as Record<string, unknown>;
  t.deepEqual(Object.keys(bundle).sort(), Object.keys(modules).sort());
  t.is(typeof bundle['MicroVM'], 'function');
  t.not(bundle['MicroVM'], modules['MicroVM'], 'a separate copy, not a re-export of the modules');
  // The bundled guest-images module finds guest/build.sh from its own compiled file, as unbundled.
  const source = readFileSync(join(DIST, 'lib/index.bundle.cjs'), 'utf8');
  t.false(/new URL\(\s*["']\.\.\/\.\.\/guest\/build\.sh["'],\s*(import\.meta\.url|__bundle_url)\)/.test(source), 'no module kept the bundle\'s own URL');
  t.true(source.includes('new URL("guest-images.js", __bundle_url)'), 'guest-images.js sees its own URL');
});

// Each entry (the package's ES module, each command's CommonJS script) carries its bundle's hash; the build's
// cache must match it and V8 must take it, or every load silently compiles again (lib/code-cache.ts).
test('each entry runs its bundle from the code cache the build wrote', (t) => {
  const codeCache = pathToFileURL(join(DIST, 'lib/code-cache.js')).href;
  for (const [entry, bundle] of [['lib/index.bundle.js', 'lib/index.bundle.cjs'], ['bin/flintvm.entry.cjs', 'bin/flintvm.bundle.cjs'], ['bin/flintvm-oci.entry.cjs', 'bin/flintvm-oci.bundle.cjs']]) {
    const hash = /"([0-9a-f]{64})"/.exec(readFileSync(join(DIST, entry!), 'utf8'))?.[1];
    t.truthy(hash, `${entry} names its bundle's hash`);
    const script = `process.argv = [process.argv[0], 'x', '--version'];
      const { runCommonJsBundle } = await import(${JSON.stringify(codeCache)});
      console.log('USE=' + runCommonJsBundle(new URL(${JSON.stringify(pathToFileURL(join(DIST, bundle!)).href)}), ${JSON.stringify(hash)}).use);`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    t.regex(r.stdout, /^USE=used$/m, `${bundle}: ${r.stdout} ${r.stderr}`);
  }
});

test('the command bundles run: --version reads package.json through a rewritten import.meta.url', (t) => {
  for (const name of ['flintvm', 'flintvm-oci']) {
    const r = spawnSync(process.execPath, [join(DIST, `bin/${name}.entry.cjs`), '--version'], { encoding: 'utf8', timeout: 60_000 });
    t.is(r.status, 0, r.stderr);
    t.true(r.stdout.includes(PKG.version), `${name}: ${r.stdout}`);
  }
});

// A command loads no ES module on its way to its bundle, so node never starts its ES-module loader (about
// 10 ms of a cold start; bin/launch.cjs): its main thread loads only the loader modules `node -e 0` loads.
test('a command reaches its bundle without starting the ES-module loader', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-esm-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const probe = join(dir, 'probe.cjs');
  writeFileSync(probe, "process.on('exit', () => process._rawDebug('ESM=' + process.moduleLoadList.filter((m) => m.includes('/esm/')).join(',') + '\\nCP=' + process.moduleLoadList.includes('NativeModule child_process')));\n");
  const esm = (args: readonly string[]) => {
    const r = spawnSync(process.execPath, ['--require', probe, ...args], { encoding: 'utf8', timeout: 60_000 });
    t.is(r.status, 0, r.stderr);
    return { out: r.stdout, esm: /^ESM=(.*)$/m.exec(r.stderr)?.[1], childProcess: /^CP=(.*)$/m.exec(r.stderr)?.[1] };
  };
  const floor = esm(['-e', '0']).esm;
  t.truthy(floor, 'the probe reports');
  for (const name of ['flintvm', 'flintvm-oci']) {
    const cmd = esm([join(ROOT, 'bin', `${name}.cjs`), '--version']);
    t.true(cmd.out.includes(PKG.version), `${name}: ${cmd.out}`);
    t.is(cmd.esm, floor, `${name}: no ES-module loader modules beyond node -e 0's`);
    // Nor node:child_process (with net and dgram, 1.5 ms): the launcher requires it only to build a clone's
    // dist/, flintvm-oci only to spawn a holder (the next test).
    t.is(cmd.childProcess, 'false', `${name}: node:child_process loaded`);
  }
  const viaEsm = esm([join(DIST, 'bin/flintvm.js'), '--version']);
  t.not(viaEsm.esm, floor, 'the compiled ES modules start the loader');
  t.is(esm(['-e', "require('node:child_process')"]).childProcess, 'true');
});

test('flintvm-oci state and delete, which podman calls most, load no module node -e 0 does not, on pipes too', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-ocimods-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const probe = join(dir, 'probe.cjs');
  writeFileSync(probe, "process.on('exit', () => process._rawDebug('MODS=' + process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13)).join(',')));\n");
  // A container in state.json only, whose pid (this process) is alive: `state` prints it, `delete` refuses a running one.
  mkdirSync(join(dir, 'root', 'c1'), { recursive: true });
  writeFileSync(join(dir, 'root', 'c1', 'state.json'), JSON.stringify({ ociVersion: '1.2.0', id: 'c1', status: 'running', pid: process.pid, bundle: dir, annotations: {}, created: new Date().toISOString() }));
  const mods = (args: readonly string[], status: number) => {
    // stdout and stderr are pipes, as podman gives them: node makes process.stdout on a pipe a net.Socket.
    const r = spawnSync(process.execPath, ['--require', probe, ...args], { encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'pipe'] });
    t.is(r.status, status, r.stderr);
    return { out: r.stdout, err: r.stderr, mods: new Set(/^MODS=(.*)$/m.exec(r.stderr)?.[1]?.split(',') ?? []) };
  };
  const floor = mods(['-e', '0'], 0).mods;
  t.true(floor.size > 10, 'the probe reports');
  const cli = join(ROOT, 'bin', 'flintvm-oci.cjs');
  const state = mods([cli, '--root', join(dir, 'root'), 'state', 'c1'], 0);
  t.is((JSON.parse(state.out) as { status: string }).status, 'running');
  const del = mods([cli, '--root', join(dir, 'root'), 'delete', 'c1'], 1);
  t.regex(del.err, /container c1 is running/);
  for (const [what, r] of [['state', state], ['delete', del]] as const) {
    // os (signal numbers) and vm (the code cache runs the bundle through vm.Script) are expected.
    const extra = [...r.mods].filter((m) => !floor.has(m) && m !== 'os' && m !== 'vm');
    t.deepEqual(extra, [], `${what} loads beyond node -e 0 (and os, vm)`);
  }
  // The check can fail: writing to process.stdout on a pipe loads net.
  t.true(mods(['-e', "process.stdout.write('x')"], 0).mods.has('net'));
});

test('bin/launch.cjs runs the bundle while it is current, the compiled module once that is newer (and says so)', (t) => {
  const clone = mkdtempSync(join(tmpdir(), 'flintvm-launch-'));
  t.teardown(() => rmSync(clone, { recursive: true, force: true }));
  mkdirSync(join(clone, 'bin'));
  mkdirSync(join(clone, 'dist/bin'), { recursive: true });
  for (const f of ['flintvm.cjs', 'launch.cjs']) copyFileSync(join(ROOT, 'bin', f), join(clone, 'bin', f));
  writeFileSync(join(clone, 'package.json'), JSON.stringify({ name: 'mini', version: '0.0.0', type: 'module' }));
  const main = join(clone, 'dist/bin/flintvm.js');
  const bundle = join(clone, 'dist/bin/flintvm.entry.cjs');
  writeFileSync(main, "console.log('modules');\n");
  writeFileSync(bundle, "console.log('bundle');\n");
  let stderr = '';
  const run = () => {
    const r = spawnSync(process.execPath, [join(clone, 'bin/flintvm.cjs')], { encoding: 'utf8', timeout: 60_000 });
    stderr = r.stderr;
    return r.stdout.trim();
  };
  const at = (f: string, s: number) => utimesSync(f, s, s);
  at(main, 1000); at(bundle, 1000);
  t.is(run(), 'bundle', 'same age: the bundle');
  t.is(stderr, '');
  at(main, 2000);
  t.is(run(), 'modules', 'the module rebuilt after the bundle (tsc alone): the modules');
  t.regex(stderr, /^flintvm: dist\/ is newer than its bundle .*run 'npm run build'\n$/, 'and it says so');
  rmSync(bundle);
  t.is(run(), 'modules', 'no bundle: the modules');
  t.is(stderr, '', 'a dist/ without bundles is not stale');
});

// The loaders read an ASCII bundle as latin1: a one-byte string, without UTF-8 decoding (lib/code-cache.ts).
test('every bundle the build makes is ASCII, comments included', (t) => {
  for (const f of ['lib/worker-bundle.cjs', 'lib/worker-loader.cjs', 'lib/worker-vcpu-bundle.cjs', 'lib/worker-vcpu-loader.cjs', 'lib/index.bundle.cjs', 'bin/flintvm.bundle.cjs', 'bin/flintvm-oci.bundle.cjs']) {
    const bytes = readFileSync(join(DIST, f));
    const at = bytes.findIndex((b) => b > 0x7f);
    t.is(at, -1, `${f}: a non-ASCII byte at ${at}`);
  }
});

test('runCommonJsBundle runs a bundle that is not ASCII (not made by the build) as UTF-8', async (t) => {
  const { runCommonJsBundle } = await import('../../../lib/code-cache.js');
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-utf8-bundle-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'b.cjs');
  // § in a comment and µ in a string, as in the sources; and an ASCII twin, read as latin1.
  writeFileSync(file, '/* §2.7 */ module.exports = { unit: "µs", n: 2 };\n', 'utf8');
  const loaded = runCommonJsBundle(pathToFileURL(file), '00'.repeat(32));
  t.deepEqual({ ...loaded.exports }, { unit: 'µs', n: 2 });
  t.is(loaded.use, 'absent');
  writeFileSync(file, '/* \\u00a72.7 */ module.exports = { unit: "\\u00b5s", n: 3 };\n', 'utf8');
  t.deepEqual({ ...runCommonJsBundle(pathToFileURL(file), '00'.repeat(32)).exports }, { unit: 'µs', n: 3 });
});
