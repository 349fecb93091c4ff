/**
 * bench/thread-cpu.ts: per-thread CPU from procfs, summed by role per
 * operation, and KVM's counters (none for a process without a VM).
 */
import test from 'ava';
import { Worker } from 'node:worker_threads';
import { cpuPerOp, kvmExitStats, perOp, sampleThreads } from '../../../bench/thread-cpu.js';

const SYS = new URL('../../../lib/sys.js', import.meta.url).href;

test('a busy named worker thread gets its CPU under its own role, the main thread under another', async (t) => {
  // The worker names itself, says so, then spins until its own thread has used 200 ms of CPU (procfs, in
  // 10 ms ticks), not for a wall time: on a loaded machine a wall-time spin gets any share of a CPU.
  const w = new Worker(`
    const { parentPort } = require('node:worker_threads');
    const { readFileSync } = require('node:fs');
    const cpuMs = () => {
      const stat = readFileSync('/proc/thread-self/stat', 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return (Number(f[11]) + Number(f[12])) * 10; // utime + stime (fields 14, 15), in 1/100 s
    };
    import(${JSON.stringify(SYS)}).then((sys) => {
      sys.nameThisThread('tcpu-busy');
      parentPort.once('message', () => {
        const start = cpuMs();
        const end = Date.now() + 60_000;
        while (cpuMs() - start < 200 && Date.now() < end);
        parentPort.postMessage('done');
        // Stay alive until terminate(): a worker with nothing left to do exits, and its /proc entry with it.
        setInterval(() => {}, 1 << 30);
      });
      parentPort.postMessage('named');
    });`, { eval: true });
  await new Promise((r) => w.once('message', r));
  const before = sampleThreads(process.pid);
  t.true(before.has(process.pid), 'the main thread is a task of the process');
  t.true([...before.values()].some((s) => s.comm === 'tcpu-busy'));
  w.postMessage('go');
  await new Promise((r) => w.once('message', r));
  const after = sampleThreads(process.pid);
  await w.terminate();
  const ops = 10;
  const roles = cpuPerOp(before, after, ops, (tid, s) => (s.comm === 'tcpu-busy' ? 'busy' : tid === process.pid ? 'main' : 'other'));
  t.is(roles.busy?.threads, 1);
  // 200 ms of CPU over 10 operations, give or take a tick or two of procfs's 10 ms on either side.
  const busy = roles.busy!.userUs + roles.busy!.sysUs;
  t.true(busy >= 18_000 && busy <= 23_000, `busy thread: ${busy} us per op`);
  t.is(roles.busy!.guestUs, 0, 'no guest time outside a vCPU');
  t.true(roles.main !== undefined && roles.main.threads === 1);
  t.true(roles.main!.userUs + roles.main!.sysUs < busy, 'the main thread only waited');
});

test('kvmExitStats: nothing for a process that has no VM; perOp divides the counters both samples have', (t) => {
  t.is(kvmExitStats(process.pid), null);
  t.deepEqual(perOp({ exits: 10, halt_exits: 4 }, { exits: 30, halt_exits: 4, only_after: 7 }, 10), { exits: 2, halt_exits: 0 });
});
