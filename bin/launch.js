// Runs a compiled command of this package (dist/bin/<name>.js, source bin/<name>.ts).
// An installed package ships dist/. In a git clone, `npm install` does not build (no `prepare` step, so
// installing the package never runs a compiler); the first `npx flintvm` (or `npx flintvm-oci`) there
// builds dist/ with the clone's TypeScript, once. After editing the sources, rebuild with `npm run build`.
// `npm run build` also bundles each command into one file (dist/bin/<name>.bundle.js, see lib/bundles.ts),
// which starts faster than its tree of ES modules; it runs when it is at least as new as dist/bin/<name>.js
// (a rebuild by `tsc` alone leaves it behind, and then the modules run).
import { existsSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export async function launch(name) {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const main = new URL(`../dist/bin/${name}.js`, import.meta.url);
  if (!existsSync(fileURLToPath(main))) {
    const tsc = fileURLToPath(new URL('../node_modules/typescript/bin/tsc', import.meta.url));
    if (!existsSync(tsc) || !existsSync(`${root}tsconfig.json`)) {
      console.error(`${name}: ${fileURLToPath(main)} is missing and there is no TypeScript here to build it; reinstall the package, or run 'npm install && npm run build' in a clone`);
      process.exit(125);
    }
    console.error(`${name}: first run in this clone: building dist/ (npm run build)...`);
    const r = spawnSync(process.execPath, [tsc, '-p', `${root}tsconfig.json`], { stdio: 'inherit', cwd: root });
    if (r.status !== 0) {
      console.error(`${name}: the build failed (see above)`);
      process.exit(125);
    }
    // The bundles (npm run build's second step), when this clone has them: without, the modules run.
    const bundles = `${root}dist/lib/bundles.js`;
    if (existsSync(bundles)) spawnSync(process.execPath, [bundles], { stdio: 'inherit', cwd: root });
  }
  if (name === 'flintvm') await startEarlyStandby(process.argv.slice(2));
  const bundle = new URL(`../dist/bin/${name}.bundle.js`, import.meta.url);
  await import(isCurrent(bundle, main) ? bundle.href : main.href);
}

function isCurrent(bundle, main) {
  try {
    return statSync(fileURLToPath(bundle)).mtimeMs >= statSync(fileURLToPath(main)).mtimeMs;
  } catch {
    return false;
  }
}

// `flintvm run` boots a VM, whose vCPU runs in a worker thread; starting a worker takes about as long as
// loading the command (node boots a new isolate for it). So the vCPU worker starts first, as a standby
// (dist/lib/worker-spawn.js, which loads nothing of flintvm's but itself and two small modules), and the
// command takes it for its VM (bin/flintvm.ts). With a second CPU the two overlap; on one CPU nothing is
// lost. Anything that goes wrong here only means the VM spawns its worker itself, as it would without this.
async function startEarlyStandby(argv) {
  if (argv[0] !== 'run' || argv.includes('--help') || argv.includes('-h')) return;
  try {
    const { EARLY_STANDBY, startEarlyStandby: start } = await import(new URL('../dist/lib/worker-spawn.js', import.meta.url).href);
    globalThis[EARLY_STANDBY] = start();
  } catch {
    // Spawned by the VM instead.
  }
}
