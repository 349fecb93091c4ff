// Runs a compiled command of this package (dist/bin/<name>.js, source bin/<name>.ts).
// An installed package ships dist/. In a git clone, `npm install` does not build (no `prepare` step, so
// installing the package never runs a compiler); the first `npx flintvm` (or `npx flintvm-oci`) there
// builds dist/ with the clone's TypeScript, once. After editing the sources, rebuild with `npm run build`.
import { existsSync } from 'node:fs';
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
  }
  await import(main.href);
}
