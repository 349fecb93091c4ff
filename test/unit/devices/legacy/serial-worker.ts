/**
 * Worker side of the serial thread tests: feeds `total` bytes of a known
 * pattern into a Serial8250 through enqueueInput, offering again what the
 * FIFO refuses. In 'spin' mode it retries at once (maximum lock contention);
 * in 'notice' mode it sleeps until the guest side's onInputSpace bumps
 * counter [3] (with a timeout as a safety net, counted in [4]).
 * Shared counters: [0] trigger() calls, [1] done flag, [2] refused offers,
 * [3] drain notices, [4] notice waits that timed out, [5] notice waits woken
 * with the count unchanged (the late Atomics.notify of an earlier notice).
 */
import { workerData } from 'node:worker_threads';
import { Serial8250 } from '../../../../devices/legacy/serial-8250.js';
import { patternByte } from './serial-pattern.js';

const { state, counters, total, mode } = workerData as {
  state: SharedArrayBuffer;
  counters: SharedArrayBuffer;
  total: number;
  mode: 'spin' | 'notice';
};
const ctr = new Int32Array(counters);
const uart = new Serial8250(state, {
  trigger: { trigger: () => void Atomics.add(ctr, 0, 1) },
  out: () => {},
});
const NOTICE_TIMEOUT_MS = 200;

// Odd chunk size so that refusals split chunks at varying points.
const chunk = new Uint8Array(37);
let sent = 0;
while (sent < total) {
  const n = Math.min(chunk.length, total - sent);
  for (let i = 0; i < n; i++) chunk[i] = patternByte(sent + i);
  // Read the notice count before offering, so a notice between the refusal and the wait is not lost.
  const notices = Atomics.load(ctr, 3);
  const took = uart.enqueueInput(chunk.subarray(0, n));
  sent += took;
  if (took < n) {
    Atomics.add(ctr, 2, 1);
    if (mode === 'notice') {
      const woke = Atomics.wait(ctr, 3, notices, NOTICE_TIMEOUT_MS);
      if (woke === 'timed-out') Atomics.add(ctr, 4, 1);
      // The guest side adds to the count, then notifies. A wait that began between an earlier notice's add
      // and its notify is woken by that notify with the count unchanged: this refusal's own notice is still
      // to come, and the next refusal, made before the FIFO drains, shares it.
      else if (woke === 'ok' && Atomics.load(ctr, 3) === notices) Atomics.add(ctr, 5, 1);
    }
  }
}
Atomics.store(ctr, 1, 1);
