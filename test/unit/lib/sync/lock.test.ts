import test from 'ava';
import { Worker } from 'node:worker_threads';
import { SharedLock } from '../../../../lib/sync/lock.js';

const WORKER = new URL('./lock-worker.js', import.meta.url);
const LOCK = 0;
const COUNTER = 1;
const START = 2;
const READY = 3;

/** Runs `workers` threads (plus optionally the main thread) incrementing the counter; returns the final count. */
async function race(workers: number, iterations: number, useLock: boolean, mainIterations = 0): Promise<number> {
  const sab = new SharedArrayBuffer(4 * 4);
  const words = new Int32Array(sab);
  const ws = Array.from({ length: workers }, () => new Worker(WORKER, { workerData: { sab, iterations, useLock } }));
  const exits = ws.map((w) => new Promise<number>((resolve, reject) => { w.once('error', reject); w.once('exit', resolve); }));
  // Start everyone together, once every worker is at the barrier.
  const t0 = Date.now();
  while (Atomics.load(words, READY) < workers) {
    if (Date.now() - t0 > 20_000) throw new Error('workers did not reach the barrier');
    await new Promise((r) => setTimeout(r, 5));
  }
  Atomics.store(words, START, 1);
  Atomics.notify(words, START);
  // The main thread cannot Atomics.wait: SharedLock spins here instead.
  const lock = new SharedLock(words, LOCK);
  for (let i = 0; i < mainIterations; i++) {
    lock.acquire();
    words[COUNTER] = words[COUNTER]! + 1;
    lock.release();
  }
  const codes = await Promise.all(exits);
  if (codes.some((c) => c !== 0)) throw new Error(`worker exit codes ${codes.join(',')}`);
  return Atomics.load(words, COUNTER);
}

test('mutual exclusion: 3 workers x 200k locked increments of a plain counter are exact', async (t) => {
  const n = await race(3, 200_000, true);
  t.is(n, 600_000);
});

test('mutual exclusion including the main thread (spinning path)', async (t) => {
  const n = await race(2, 100_000, true, 100_000);
  t.is(n, 300_000);
});

test('control: without the lock the same workload can lose updates (logged, not asserted)', async (t) => {
  const n = await race(3, 200_000, false);
  t.log(`unlocked count ${n} of 600000 (${600_000 - n} lost updates)`);
  t.true(n <= 600_000);
});

test('lock state returns to unlocked; with() releases on a throw', (t) => {
  const words = new Int32Array(new SharedArrayBuffer(8));
  const lock = new SharedLock(words, 1);
  t.is(lock.with(() => { t.is(Atomics.load(words, 1), 1, 'locked inside'); return 42; }), 42);
  t.is(Atomics.load(words, 1), 0);
  t.throws(() => lock.with(() => { throw new Error('boom'); }), { message: 'boom' });
  t.is(Atomics.load(words, 1), 0, 'released after the throw');
  t.is(Atomics.load(words, 0), 0, 'neighbouring slot untouched');
});
