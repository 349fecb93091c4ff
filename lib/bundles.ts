/**
 * Build step, not part of the library: `npm run build` runs it (node
 * dist/lib/bundles.js) after `tsc`. It bundles the compiled ES modules into
 * single files with esbuild, because a cold node process spends most of its
 * start-up resolving, reading, compiling and linking one module at a time
 * (about 190 modules behind lib/index.js):
 *
 * - dist/lib/worker-bundle.cjs: every module a VM's workers run (see
 *   worker-bundle.ts and worker-modules.ts);
 * - dist/lib/index.bundle.js: the library as a package user imports it
 *   (package.json's `exports`);
 * - dist/bin/<command>.bundle.js: each command (bin/launch.js runs it when it
 *   is current).
 *
 * In the two ES-module bundles each module keeps its own `import.meta.url`:
 * it is rewritten to the URL of that module's compiled file, computed from the
 * bundle's own URL, so the paths the library derives from it (the guest
 * scripts, the worker entries, package.json) stay what they are unbundled.
 * koffi (a native addon) and debug stay outside, imported as packages.
 */
import { build, type Plugin } from 'esbuild';
import { readFile } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const DIST = fileURLToPath(new URL('../', import.meta.url));
const EXTERNAL = ['koffi', 'debug'];

/** Each module's `import.meta.url` becomes its own compiled file's URL, relative to the bundle at `outfile`. */
function ownMetaUrl(outfile: string): Plugin {
  return {
    name: 'own-import-meta-url',
    setup(b) {
      b.onLoad({ filter: /\.js$/ }, async (args) => {
        const source = await readFile(args.path, 'utf8');
        if (!source.includes('import.meta.url')) return { contents: source, loader: 'js' };
        const rel = relative(dirname(outfile), args.path).split(sep).join('/');
        return { contents: source.replaceAll('import.meta.url', `new URL(${JSON.stringify(rel)}, import.meta.url).href`), loader: 'js' };
      });
    },
  };
}

async function esmBundle(entry: string, outfile: string): Promise<void> {
  await build({
    entryPoints: [join(DIST, entry)], outfile: join(DIST, outfile), bundle: true, platform: 'node', format: 'esm',
    target: 'node20', external: EXTERNAL, logLevel: 'warning', plugins: [ownMetaUrl(join(DIST, outfile))],
  });
}

await Promise.all([
  build({
    // CommonJS, so that a worker loads it as one script; every module sees the bundle's own URL as its
    // import.meta.url, and worker-modules.ts maps entry URLs onto the bundled modules.
    entryPoints: [join(DIST, 'lib/worker-bundle.js')], outfile: join(DIST, 'lib/worker-bundle.cjs'), bundle: true,
    platform: 'node', format: 'cjs', target: 'node20', external: EXTERNAL, logLevel: 'warning',
    define: { 'import.meta.url': '__bundle_url' },
    banner: { js: 'const __bundle_url = require("node:url").pathToFileURL(__filename).href;' },
  }),
  esmBundle('lib/index.js', 'lib/index.bundle.js'),
  esmBundle('bin/flintvm.js', 'bin/flintvm.bundle.js'),
  esmBundle('bin/flintvm-oci.js', 'bin/flintvm-oci.bundle.js'),
]);
