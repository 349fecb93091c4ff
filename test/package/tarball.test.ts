/**
 * The package as users get it (#17 item 1): `npm pack`, install the tarball into an empty project (offline,
 * from the npm cache), import it, type-check against it, run `npx flintvm --version`; the tarball holds
 * what it should (LICENSE, CHANGELOG, examples, the sources its maps name) and nothing of the tests.
 * Also the clone flow: bin/flintvm.cjs builds dist/ on first use when it is missing.
 *
 * Needs the npm cache to hold the dependencies (it does after `npm ci` in this clone). Run it alone with
 * `npm run test:package`.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const PKG = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string; license: string };
const work = mkdtempSync(join(tmpdir(), 'flintvm-pack-'));
test.after.always(() => rmSync(work, { recursive: true, force: true }));

const npmEnv = { ...process.env, npm_config_offline: 'true', npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' };
function run(cmd: string, args: string[], cwd: string): string {
  return execFileSync(cmd, args, { cwd, env: npmEnv, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000 });
}

test.serial('npm pack -> install into an empty project -> import, types, npx flintvm --version', (t) => {
  // --ignore-scripts: dist/ is already built (this test runs from it); prepack would rebuild it under us.
  const packed = JSON.parse(run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], ROOT)) as { filename: string; files: { path: string }[] }[];
  const files = packed[0]!.files.map((f) => f.path);
  for (const f of ['LICENSE', 'CHANGELOG.md', 'README.md', 'package.json', 'bin/flintvm.cjs', 'bin/flintvm-oci.cjs', 'bin/launch.cjs', 'bin/flintvm.js', 'bin/flintvm-oci.js', 'dist/bin/flintvm.js', 'dist/bin/flintvm-oci.js', 'dist/lib/index.js', 'dist/lib/index.bundle.js', 'dist/bin/flintvm.entry.cjs', 'dist/bin/flintvm-oci.entry.cjs', 'dist/lib/code-cache.cjs', 'dist/lib/index.d.ts', 'dist/lib/worker-bundle.cjs', 'dist/lib/worker-spawn.cjs', 'examples/run-command.ts', 'dist/examples/run-command.js', 'guest/build.sh', 'guest/init']) {
    t.true(files.includes(f), `tarball has ${f}`);
  }
  t.deepEqual(files.filter((f) => /(^|\/)(test|bench)\//.test(f) || /\.test\./.test(f)), [], 'no tests or benches in the tarball');
  // Every source a shipped source map names is shipped too.
  const missing: string[] = [];
  for (const map of files.filter((f) => f.endsWith('.js.map'))) {
    for (const src of (JSON.parse(readFileSync(join(ROOT, map), 'utf8')) as { sources: string[] }).sources) {
      const p = join(dirname(map), src);
      if (!files.includes(p)) missing.push(`${map} -> ${p}`);
    }
  }
  t.deepEqual(missing, [], 'source maps point only at shipped sources');
  t.regex(readFileSync(join(ROOT, 'LICENSE'), 'utf8'), /Apache License\s+Version 2\.0/);
  t.is(PKG.license, 'Apache-2.0');

  const app = join(work, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true, type: 'module' }));
  const tgz = join(work, packed[0]!.filename);
  // The consumer's lockfile pins flintvm's dependencies as this clone's lockfile does, so that `npm ci --offline`
  // installs from the npm cache alone (the cache holds their tarballs, not the registry's package lists).
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true, type: 'module', dependencies: { flintvm: `file:${tgz}` } }));
  writeFileSync(join(app, 'package-lock.json'), JSON.stringify(consumerLock(tgz)));
  run('npm', ['ci', '--offline', '--no-audit', '--no-fund'], app);
  t.true(existsSync(join(app, 'node_modules/flintvm/dist/lib/index.js')), 'installed from the tarball');
  t.false(existsSync(join(app, 'node_modules/flintvm/tsconfig.json')), 'installed package has no build config');

  const imported = run(process.execPath, ['--input-type=module', '-e', "const m = await import('flintvm'); console.log(typeof m.MicroVM, typeof m.WorkerPool, typeof m.ConfigError)"], app);
  t.is(imported.trim(), 'function function function');
  // The import loads koffi's native addon straight from where npm put its platform package (lib/koffi.ts), not
  // through the koffi package's loader: the build's record names it below node_modules.
  const loaded = run(process.execPath, ['--input-type=module', '-e', "import { createRequire } from 'node:module'; await import('flintvm'); console.log(JSON.stringify(Object.keys(createRequire(import.meta.url).cache).filter((f) => f.includes('koffi'))))"], app);
  const koffiFiles = JSON.parse(loaded) as string[];
  t.true(koffiFiles.some((f) => f.startsWith(join(app, 'node_modules')) && f.endsWith('koffi.node')), koffiFiles.join(', '));
  t.deepEqual(koffiFiles.filter((f) => !f.endsWith('.node')), [], 'no script of the koffi package ran');

  // A TypeScript consumer compiles against the shipped .d.ts files.
  writeFileSync(join(app, 'main.ts'), [
    "import { MicroVM, ConfigError, type MicroVMConfig, type ResolvedConfig, type KvmRegs, type FlintvmErrorCode } from 'flintvm';",
    "const config: MicroVMConfig = { kernel: 'vmlinux', memoryMiB: 256, drives: [{ path: 'disk.img', readOnly: true }] };",
    "const code: FlintvmErrorCode = 'FLINTVM_E_CONFIG';",
    'let r: ResolvedConfig | undefined; let regs: KvmRegs | undefined;',
    'try { new MicroVM(config); } catch (e) { if (e instanceof ConfigError && e.code === code) console.log(e.problems.length, r, regs); }',
    '',
  ].join('\n'));
  writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({ compilerOptions: { strict: true, module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', noEmit: true, types: ['node'], typeRoots: [join(ROOT, 'node_modules/@types')] }, files: ['main.ts'] }));
  t.notThrows(() => run(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', app], app), 'a strict TS consumer type-checks');

  const version = run('npx', ['flintvm', '--version'], app);
  t.is(version.trim(), PKG.version);
});

interface LockEntry { version?: string; dependencies?: Record<string, string>; optionalDependencies?: Record<string, string>; [k: string]: unknown }

/** A lockfile for an app that depends on the tarball: flintvm's runtime dependencies copied from this clone's lockfile. */
function consumerLock(tgz: string): object {
  const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
  const self = lock.packages['']!;
  const packages: Record<string, LockEntry> = {
    '': { name: 'app', version: '1.0.0', dependencies: { flintvm: `file:${tgz}` } },
    'node_modules/flintvm': {
      version: PKG.version, resolved: `file:${tgz}`, license: PKG.license, dependencies: self.dependencies,
      peerDependencies: self.peerDependencies, peerDependenciesMeta: self.peerDependenciesMeta, bin: self.bin, engines: self.engines,
    },
  };
  const todo = Object.keys({ ...self.dependencies });
  while (todo.length) {
    const name = todo.pop()!;
    const key = `node_modules/${name}`;
    if (packages[key]) continue;
    const entry = lock.packages[key];
    if (!entry) throw new Error(`${name} is not in package-lock.json`);
    packages[key] = entry;
    todo.push(...Object.keys({ ...entry.dependencies, ...entry.optionalDependencies }));
  }
  return { name: 'app', version: '1.0.0', lockfileVersion: 3, requires: true, packages };
}

test.serial('clone flow: bin/flintvm.cjs builds dist/ on first use when it is missing', (t) => {
  // A miniature clone: the real launcher, a one-file CLI, the clone's TypeScript.
  const clone = join(work, 'clone');
  mkdirSync(join(clone, 'bin'), { recursive: true });
  mkdirSync(join(clone, 'node_modules'));
  copyFileSync(join(ROOT, 'bin/flintvm.cjs'), join(clone, 'bin/flintvm.cjs'));
  copyFileSync(join(ROOT, 'bin/launch.cjs'), join(clone, 'bin/launch.cjs'));
  symlinkSync(join(ROOT, 'node_modules/typescript'), join(clone, 'node_modules/typescript'));
  writeFileSync(join(clone, 'package.json'), JSON.stringify({ name: 'mini', version: '9.9.9', type: 'module' }));
  writeFileSync(join(clone, 'tsconfig.json'), JSON.stringify({ compilerOptions: { module: 'NodeNext', target: 'ES2022', outDir: 'dist', rootDir: '.', types: [] }, include: ['bin'] }));
  writeFileSync(join(clone, 'bin/flintvm.ts'), "declare const process: { argv: string[] };\nconsole.log('built and ran', process.argv.slice(2).join(' '));\n");
  const first = execFileSync(process.execPath, [join(clone, 'bin/flintvm.cjs'), '--version'], { cwd: clone, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  t.is(first.trim(), 'built and ran --version');
  t.true(existsSync(join(clone, 'dist/bin/flintvm.js')));
  // Without dist/ and without TypeScript (an installed package that lost its files): a clear error.
  rmSync(join(clone, 'dist'), { recursive: true });
  rmSync(join(clone, 'node_modules/typescript'));
  const e = t.throws(() => execFileSync(process.execPath, [join(clone, 'bin/flintvm.cjs')], { cwd: clone, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }));
  t.regex(String((e as { stderr?: string }).stderr), /is missing and there is no TypeScript here to build it/);
});
