/**
 * Worker for lock.test.ts: waits at a start barrier, then increments a
 * shared counter `iterations` times with plain (non-atomic) loads and stores,
 * each read-modify-write under the SharedLock (or without it when
 * `useLock` is false, to show the race the lock prevents).
 *
 * Shared Int32 layout: [0] lock word, [1] counter, [2] start flag, [3] workers ready.
 */
import { workerData } from 'node:worker_threads';
import { SharedLock } from '../../../../lib/sync/lock.js';

const { sab, iterations, useLock } = workerData as { sab: SharedArrayBuffer; iterations: number; useLock: boolean };
const words = new Int32Array(sab);
const lock = new SharedLock(words, 0);

Atomics.add(words, 3, 1);
while (Atomics.load(words, 2) === 0) Atomics.wait(words, 2, 0, 50);

let sink = 0;
for (let i = 0; i < iterations; i++) {
  if (useLock) lock.acquire();
  // Deliberately non-atomic and spread over a few statements, so an unlocked
  // run loses updates.
  const v = words[1]!;
  for (let k = 0; k < (i & 7); k++) sink += k;
  words[1] = v + 1;
  if (useLock) lock.release();
}
if (sink < 0) console.log(sink); // keeps the delay loop from being optimized away
