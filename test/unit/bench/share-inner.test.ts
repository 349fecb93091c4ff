/**
 * bench/share-inner.ts: the guest workload's result lines (the floor step
 * included) and the thread roles its CPU probe sums by.
 */
import test from 'ava';
import { parseShareRes, shareThreadRole, shareWorkload } from '../../../bench/share-inner.js';

test('the workload times a guest-side zeroing floor and marks the write and the read for the CPU probe', (t) => {
  const w = shareWorkload(64, false);
  t.regex(w, /dd if=\/dev\/zero of=\/dev\/null bs=1M count=64 .*SHRES zero/);
  t.true(w.indexOf('SHMARK write') < w.indexOf('of=/mnt/big'), 'the write is announced before it starts');
  t.true(w.indexOf('SHMARK read') < w.indexOf('if=/mnt/big'), 'the read is announced before it starts');
  t.false(w.includes('tar -xf'), 'no extraction without the tar step');
});

test('parseShareRes turns the guest clock readings into seconds per step', (t) => {
  const r = parseShareRes('noise\r\nSHRES zero 10.00 11.50\r\nSHMARK write\r\nSHRES write 12.00 20.25\r\nSHRES read 21.00 26.00\r\nSHRES entries 7\r\n');
  t.is(r.zeroS, 1.5);
  t.is(r.writeS, 8.25);
  t.is(r.readS, 5);
  t.is(r.entries, 7);
  t.is(r.tarS, undefined);
});

test('thread roles: guest time makes the vCPU thread; the main thread, the I/O worker and the rest are told apart', (t) => {
  const s = (comm: string, guest = 0) => ({ comm, user: 10, sys: 5, guest });
  const me = shareThreadRole(process.pid);
  t.is(me(process.pid + 1, s('node', 7)), 'vcpu');
  t.is(me(process.pid + 2, s('flintvm-vcpu0')), 'vcpu', 'a vCPU thread that has not entered the guest yet');
  t.is(me(process.pid, s('node')), 'main');
  t.is(me(process.pid + 3, s('flintvm-io')), 'io');
  t.is(me(process.pid + 4, s('node')), 'helpers', "node's own threads in flintvm's process");
  // Another process (QEMU): threads that are neither its vCPU nor its main thread are its I/O pool.
  const qemu = shareThreadRole(4242);
  t.is(qemu(4242, s('qemu-system-x86')), 'main');
  t.is(qemu(4243, s('qemu-system-x86', 3)), 'vcpu');
  t.is(qemu(4244, s('qemu-system-x86')), 'io');
});
