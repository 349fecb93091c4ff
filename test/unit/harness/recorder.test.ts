import test from 'ava';
import { Worker } from 'node:worker_threads';
import { once } from 'node:events';
import { recorded, recordedCount } from '../../helpers/test-devices.js';

// The integration tests' recorder device is written by several vCPU threads at once (exits.test.ts,
// vcpu-loop.test.ts); an append that read the count and stored count+1 lost entries when two interleaved.
test('recorder: writes from two threads at once are all kept, none twice', async (t) => {
  const PER = 200_000;
  const log = new SharedArrayBuffer(4 * (2 + 3 * (2 * PER + 8)));
  const go = new Int32Array(new SharedArrayBuffer(8));
  const url = new URL('./recorder-writer.js', import.meta.url);
  const workers = [0, 1_000_000].map((base) => new Worker(url, { workerData: { log, base, count: PER, go: go.buffer } }));
  const exited = Promise.all(workers.map((w) => once(w, 'exit')));
  while (Atomics.load(go, 1) < 2) await new Promise((r) => setTimeout(r, 5));
  Atomics.store(go, 0, 1);
  Atomics.notify(go, 0);
  await exited;
  t.is(recordedCount(log), 2 * PER);
  const values = recorded(log).map((e) => e.value);
  t.is(new Set(values).size, 2 * PER, 'every value once');
  for (const base of [0, 1_000_000]) {
    const mine = values.filter((v) => v >= base && v < base + PER);
    t.deepEqual(mine, Array.from({ length: PER }, (_, i) => base + i), `thread ${base}: in its own order`);
  }
});

test('recorder: a full log keeps the first entries and stops counting', (t) => {
  const log = new SharedArrayBuffer(4 * (2 + 3 * 2));
  const url = new URL('./recorder-writer.js', import.meta.url);
  return once(new Worker(url, { workerData: { log, base: 5, count: 4 } }), 'exit').then(() => {
    t.is(recordedCount(log), 2);
    t.deepEqual(recorded(log).map((e) => e.value), [5, 6]);
  });
});
