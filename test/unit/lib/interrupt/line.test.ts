import test from 'ava';
import { Worker } from 'node:worker_threads';
import { IrqLines } from '../../../../lib/interrupt/line.js';
import type { Vm } from '../../../../lib/kvm/vm.js';

const LINE_URL = new URL('../../../../lib/interrupt/line.js', import.meta.url).href;
const PULSES = 2000;

/**
 * Threads pulse the same line through IrqLines over one lock buffer, against a
 * stand-in for the VM fd that logs every level it is given (and dawdles between
 * the two halves of a pulse, as a preempted thread would). The log must read
 * up, down, up, down: an "up" while the line is already up is the lost edge
 * that stalled the UART.
 */
test('IrqLines: pulses from several threads never interleave (no up while the line is up)', async (t) => {
  const lock = IrqLines.createLock();
  const log = new Int32Array(new SharedArrayBuffer(4 * (1 + 2 * PULSES * 3)));
  const src = `
    const { workerData, parentPort } = require('node:worker_threads');
    (async () => {
      const { IrqLines } = await import(workerData.url);
      const log = new Int32Array(workerData.log);
      const go = new Int32Array(workerData.go);
      const vm = { irqLine(gsi, level) {
        log[1 + Atomics.add(log, 0, 1)] = level;
        if (level === 1) for (let i = 0; i < 200; i++) Atomics.load(log, 0);
      } };
      const lines = new IrqLines(vm, workerData.lock);
      parentPort.postMessage('ready');
      Atomics.wait(go, 0, 0);
      for (let i = 0; i < workerData.pulses; i++) lines.pulse(4);
    })();`;
  const go = new Int32Array(new SharedArrayBuffer(4));
  const workers = [0, 1].map(() => new Worker(src, { eval: true, workerData: { url: LINE_URL, lock, log: log.buffer, go: go.buffer, pulses: PULSES } }));
  await Promise.all(workers.map((w) => new Promise((r) => w.once('message', r))));
  // The main thread pulses too, as the console input does.
  const vmHere = {
    irqLine(_gsi: number, level: 0 | 1) {
      log[1 + Atomics.add(log, 0, 1)] = level;
    },
  } as unknown as Vm;
  const here = new IrqLines(vmHere, lock);
  // All three start at once.
  Atomics.store(go, 0, 1);
  Atomics.notify(go, 0);
  for (let i = 0; i < PULSES; i++) here.pulse(4);
  await Promise.all(workers.map((w) => new Promise((r) => w.once('exit', r))));
  const n = Atomics.load(log, 0);
  t.is(n, 2 * PULSES * 3, 'every pulse was two level changes');
  let bad = 0;
  for (let i = 0; i < n; i++) if (log[1 + i] !== (i % 2 === 0 ? 1 : 0)) bad++;
  t.is(bad, 0, 'the levels alternate up, down');
});
