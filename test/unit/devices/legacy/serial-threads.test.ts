/**
 * Real threads over one UART state: a worker feeds enqueueInput while this
 * thread plays the guest, draining RBR the way Linux's interrupt handler does.
 * No byte may be lost, doubled or reordered.
 */
import test, { type ExecutionContext } from 'ava';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { Serial8250 } from '../../../../devices/legacy/serial-8250.js';
import {
  UART_FCR, UART_FCR_ENABLE_FIFO, UART_IER, UART_IER_RDI, UART_IIR, UART_IIR_NO_INT, UART_LSR, UART_LSR_DR, UART_RX,
  UART_SCR,
} from '../../../../devices/legacy/serial-regs.js';
import { patternByte } from './serial-pattern.js';
import { makeUart } from './uart-harness.js';

const TOTAL = 100_000;
const DEADLINE_MS = 60_000;
const COUNTERS = 6;

async function pump(t: ExecutionContext, mode: 'spin' | 'notice'): Promise<Int32Array> {
  const state = Serial8250.createState();
  const counters = new SharedArrayBuffer(COUNTERS * 4);
  const ctr = new Int32Array(counters);
  const onInputSpace = mode === 'notice'
    ? () => {
      Atomics.add(ctr, 3, 1);
      Atomics.notify(ctr, 3);
    }
    : undefined;
  const { rd, wr } = makeUart(state, onInputSpace ? { onInputSpace } : {});
  wr(UART_FCR, UART_FCR_ENABLE_FIFO);
  wr(UART_IER, UART_IER_RDI);

  const worker = new Worker(new URL('./serial-worker.js', import.meta.url), {
    workerData: { state, counters, total: TOTAL, mode },
  });
  const exited = once(worker, 'exit');

  let got = 0;
  let firstBad = -1;
  let polls = 0;
  const deadline = Date.now() + DEADLINE_MS;
  // Busy loop on purpose: the worker runs on its own thread, and every poll takes the device lock.
  while (got < TOTAL && Date.now() < deadline) {
    polls++;
    // Done flag first, then an empty receiver: everything the worker sent has been read.
    if (Atomics.load(ctr, 1) === 1 && (rd(UART_LSR) & UART_LSR_DR) === 0) break;
    // Like serial8250_handle_irq: IIR, then LSR/RBR until the receiver is empty.
    if ((rd(UART_IIR) & UART_IIR_NO_INT) !== 0) {
      wr(UART_SCR, polls & 0xff); // extra lock traffic from this side
      continue;
    }
    while ((rd(UART_LSR) & UART_LSR_DR) !== 0) {
      const b = rd(UART_RX);
      if (firstBad < 0 && b !== patternByte(got)) firstBad = got;
      got++;
    }
  }
  const [code] = (await exited) as [number];

  t.is(code, 0, 'worker exited cleanly');
  t.is(Atomics.load(ctr, 1), 1, 'worker sent everything');
  t.is(got, TOTAL);
  t.is(firstBad, -1, `first wrong byte at ${firstBad}`);
  t.is(rd(UART_LSR) & UART_LSR_DR, 0, 'nothing extra left in the FIFO');
  const triggers = Atomics.load(ctr, 0);
  t.true(triggers >= 1 && triggers <= TOTAL, `trigger() from the worker ${triggers} times`);
  t.log(`${TOTAL} bytes, ${triggers} interrupts, ${Atomics.load(ctr, 2)} refusals, ` +
    `${Atomics.load(ctr, 3)} drain notices (${Atomics.load(ctr, 4)} timed out, ${Atomics.load(ctr, 5)} woken early), ${polls} polls`);
  return ctr;
}

test('worker hammering enqueueInput vs main-thread RBR reads: 100k bytes in order', async (t) => {
  await pump(t, 'spin');
});

test('worker paced by onInputSpace vs main-thread RBR reads: 100k bytes in order, no lost wake-up', async (t) => {
  const ctr = await pump(t, 'notice');
  t.true(Atomics.load(ctr, 3) >= 1, 'drain notices crossed threads');
  // One notice per refusal, except that a refusal whose wait timed out, or was woken early by an earlier
  // notice's late notify (serial-worker.ts), may share the next one's notice.
  const [refusals, notices, timeouts, early] = [Atomics.load(ctr, 2), Atomics.load(ctr, 3), Atomics.load(ctr, 4), Atomics.load(ctr, 5)];
  t.true(notices <= refusals && notices >= refusals - timeouts - early, `${notices} notices for ${refusals} refusals (${timeouts} timed out, ${early} woken early)`);
});
