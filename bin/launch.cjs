// Runs a compiled command of this package (dist/bin/<name>.js, source bin/<name>.ts).
// An installed package ships dist/. In a git clone, `npm install` does not build (no `prepare` step, so
// installing the package never runs a compiler); the first `npx flintvm` (or `npx flintvm-oci`) there
// builds dist/ with the clone's TypeScript, once. After editing the sources, rebuild with `npm run build`.
// `npm run build` also bundles each command into one CommonJS file (dist/bin/<name>.bundle.cjs, see
// lib/bundles.ts), which starts faster than its tree of ES modules, and writes dist/bin/<name>.entry.cjs,
// which runs it from V8's code cache; that runs when it is at least as new as dist/bin/<name>.js (a rebuild
// by `tsc` alone leaves it behind, and then the modules run, with a line on stderr that says so).
//
// CommonJS, like bin/<name>.cjs that loads it and the entry it loads: a process that loads no ES module never
// starts node's ES-module loader (about 10 ms of a cold `flintvm run` here, and node loads an ES module graph
// one module at a time). `flintvm run` also starts its vCPU worker from here (below) before the command loads.
'use strict';
const { existsSync, statSync } = require('node:fs');
const { join } = require('node:path');
const { pathToFileURL } = require('node:url');

const ROOT = join(__dirname, '..');

async function launch(name) {
  // This process runs a command, with no embedder: lib/log.ts loads `debug` only if DEBUG or the command asks.
  globalThis[Symbol.for('flintvm.commandProcess')] = true;
  const main = join(ROOT, 'dist/bin', `${name}.js`);
  if (!existsSync(main)) {
    const tsc = join(ROOT, 'node_modules/typescript/bin/tsc');
    if (!existsSync(tsc) || !existsSync(join(ROOT, 'tsconfig.json'))) {
      console.error(`${name}: ${main} is missing and there is no TypeScript here to build it; reinstall the package, or run 'npm install && npm run build' in a clone`);
      process.exit(125);
    }
    console.error(`${name}: first run in this clone: building dist/ (npm run build)...`);
    // Required here, not at the top: node:child_process (with net and dgram) costs every command 1.5 ms to load.
    const { spawnSync } = require('node:child_process');
    const r = spawnSync(process.execPath, [tsc, '-p', join(ROOT, 'tsconfig.json')], { stdio: 'inherit', cwd: ROOT });
    if (r.status !== 0) {
      console.error(`${name}: the build failed (see above)`);
      process.exit(125);
    }
    // The bundles (npm run build's second step), when this clone has them: without, the modules run.
    const bundles = join(ROOT, 'dist/lib/bundles.js');
    if (existsSync(bundles)) spawnSync(process.execPath, [bundles], { stdio: 'inherit', cwd: ROOT });
  }
  if (name === 'flintvm') startEarlyStandby(process.argv.slice(2));
  const entry = join(ROOT, 'dist/bin', `${name}.entry.cjs`);
  if (isCurrent(entry, main)) require(entry);
  else {
    // Not silent: the modules start slower than the bundle (no code cache, one module at a time).
    if (existsSync(entry)) console.error(`${name}: dist/ is newer than its bundle (built by tsc alone?): running the modules, which start slower; run 'npm run build'`);
    await import(pathToFileURL(main).href);
  }
}

// `flintvm run` boots a VM, whose vCPU runs in a worker thread; starting a worker takes about as long as
// loading the command (node boots a new isolate for it). So the vCPU worker starts first, as a standby
// (dist/lib/worker-spawn.cjs, the build's CommonJS bundle of lib/worker-spawn.ts), and the command takes it
// for its VM (bin/flintvm.ts). With a second CPU the two overlap; on one CPU nothing is lost. Anything that
// goes wrong here only means the VM spawns its worker itself, as it would without this.
function startEarlyStandby(argv) {
  if (argv[0] !== 'run' || argv.includes('--help') || argv.includes('-h')) return;
  const spawner = join(ROOT, 'dist/lib/worker-spawn.cjs');
  if (!isCurrent(spawner, join(ROOT, 'dist/lib/worker-spawn.js'))) return;
  try {
    const { EARLY_STANDBY, startEarlyStandby: start } = require(spawner);
    globalThis[EARLY_STANDBY] = start();
  } catch {
    // Spawned by the VM instead.
  }
}

function isCurrent(built, main) {
  try {
    return statSync(built).mtimeMs >= statSync(main).mtimeMs;
  } catch {
    return false;
  }
}

module.exports = { launch };
