import test from 'ava';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startWorker } from '../../../lib/worker-pool.js';
import { KOFFI_ARG } from '../../../lib/koffi.js';
import { importWorkerModule, registerBundledModules } from '../../../lib/worker-modules.js';

const PROBE = new URL('../../helpers/worker-probe.js', import.meta.url);
const BUNDLE = fileURLToPath(new URL('../../../lib/worker-bundle.cjs', import.meta.url));
const LOADER = fileURLToPath(new URL('../../../lib/worker-loader.cjs', import.meta.url));

test.serial('importWorkerModule: a plain import() when no bundle is registered', async (t) => {
  const m = (await importWorkerModule('data:text/javascript,export const answer = 42;')) as { answer: number };
  t.is(m.answer, 42);
});

test.serial('importWorkerModule: a registered bundle serves its own modules under its root, and only those', async (t) => {
  const fromBundle = { bundled: true };
  registerBundledModules({ root: 'file:///opt/flintvm/dist/lib/', modules: { 'vcpu/worker.js': () => Promise.resolve(fromBundle) } });
  t.is(await importWorkerModule('file:///opt/flintvm/dist/lib/vcpu/worker.js'), fromBundle);
  // Not in the bundle, or outside its root: imported as usual.
  const other = (await importWorkerModule('data:text/javascript,export const x = 1;')) as { x: number };
  t.is(other.x, 1);
  await t.throwsAsync(() => importWorkerModule('file:///opt/flintvm/dist/lib/not-bundled.js'), { code: 'ERR_MODULE_NOT_FOUND' });
});

test.serial('npm run build makes a current worker bundle, and startWorker runs an entry through it with its data and the koffi addon', async (t) => {
  t.true(existsSync(BUNDLE), `${BUNDLE} is built by npm run build`);
  const w = startWorker(PROBE, { hello: 'worker' });
  const m = await new Promise<{ argv: string[]; data: unknown; codeCacheUse: unknown }>((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  });
  await w.terminate();
  t.is(m.argv[1], LOADER, 'the worker ran the loader');
  t.is(m.codeCacheUse, 'used', 'which ran the bundle from the code cache the build wrote');
  t.is(m.argv[m.argv.length - 1], PROBE.href, "the entry's URL is the bundle's last argument");
  t.true(m.argv.slice(2, -1).some((a) => a.startsWith(KOFFI_ARG)), 'before it, the koffi addon the worker loads directly (lib/koffi.ts)');
  t.deepEqual(m.data, { hello: 'worker' });
});
