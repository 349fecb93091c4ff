import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DEFAULT_PRELOAD, VCPU_PRELOAD } from '../../../lib/worker-pool.js';

// A standby imports these before it is ready; a moved module made every standby fail to start (each
// pooled start then fell back to spawning), which only the KVM tiers showed.
test('every module a standby worker preloads exists', (t) => {
  t.true(DEFAULT_PRELOAD.length > 0);
  for (const u of [...DEFAULT_PRELOAD, ...VCPU_PRELOAD]) t.true(existsSync(fileURLToPath(u)), u);
});

// In the worker bundle a standby's preloads must come from the bundle (worker-bundle.ts's table), or the
// standby would load a second copy of them as separate ES modules.
test('every module a standby worker preloads is in the worker bundle', (t) => {
  const root = new URL('../../../lib/', import.meta.url).href;
  const entry = readFileSync(fileURLToPath(new URL('worker-bundle.js', root)), 'utf8');
  for (const u of DEFAULT_PRELOAD) {
    t.true(u.startsWith(root), u);
    const key = u.slice(root.length);
    t.true(entry.includes(`'${key}': () => import('./${key}')`), `worker-bundle.ts maps '${key}'`);
  }
});

// The vCPU worker's bundle: the build makes its code cache by preloading VCPU_PRELOAD in a standby, so each
// must be in its table, with the vCPU loop itself; and none of the I/O worker's code is.
test("every module of the vCPU preload, and the vCPU loop, is in the vCPU worker's bundle, and no I/O worker code", (t) => {
  const root = new URL('../../../lib/', import.meta.url).href;
  const entry = readFileSync(fileURLToPath(new URL('worker-vcpu-bundle.js', root)), 'utf8');
  for (const key of [...VCPU_PRELOAD.map((u) => u.slice(root.length)), 'vcpu/worker.js', 'worker-standby.js']) {
    t.true(entry.includes(`'${key}': () => import('./${key}')`), `worker-vcpu-bundle.ts maps '${key}'`);
  }
  const bundle = readFileSync(fileURLToPath(new URL('worker-vcpu-bundle.cjs', root)), 'latin1');
  t.true(bundle.includes('dist/lib/vcpu/worker.js'), 'the vCPU loop is in it');
  for (const io of ['dist/lib/io/io-worker-entry.js', 'dist/lib/vm/io-wiring.js', 'dist/devices/virtio/block/']) t.false(bundle.includes(io), io);
});
