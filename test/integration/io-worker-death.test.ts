/**
 * A dying I/O worker (issue #19, fix 2): it ends only its own VM, with exit
 * reason 'error' and an IoWorkerError as the cause, frees that VM's fds,
 * mappings and threads, and leaves the other VMs in the process running.
 *
 * The death is made through the IoWorker's test hook (not reachable from any
 * config): the worker's loop returns without a stop being asked for, its
 * thread tears down and exits, which the main thread sees as a death.
 */
import test from 'ava';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MicroVM } from '../../lib/index.js';
import type { BuiltVm } from '../../lib/vm/builder.js';
import { IoWorkerError } from '../../lib/errors.js';
import { requireKvm } from '../helpers/kvm.js';
import { printAndExitCode, spinCode, writeTempKernel } from '../helpers/tiny-elf.js';

const fdCount = () => readdirSync('/proc/self/fd').length;
const threadCount = () => readdirSync('/proc/self/task').length;
const kvmMaps = () => readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes('anon_inode:kvm')).length;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The VM's I/O worker, through the MicroVM's private build result (test-only access). */
function ioWorkerOf(vm: MicroVM) {
  const built = (vm as unknown as { built: BuiltVm | null }).built;
  if (!built?.ioWorker) throw new Error('the VM has no I/O worker');
  return built.ioWorker;
}

/** Waits (up to `ms`) for worker threads to finish exiting, then returns the count. */
async function settledThreads(target: number, ms = 5000): Promise<number> {
  const end = Date.now() + ms;
  while (threadCount() > target && Date.now() < end) await sleep(20);
  return threadCount();
}

test.serial('a dying I/O worker stops only its VM, with reason error and an IoWorkerError, and leaks nothing', async (t) => {
  if (!requireKvm(t)) return;
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-iodeath-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const disks = [0, 1].map((i) => {
    const p = join(dir, `disk${i}.img`);
    writeFileSync(p, Buffer.alloc(1024 * 1024));
    return p;
  });
  const spin = writeTempKernel(spinCode());
  const exit = writeTempKernel(printAndExitCode('warm\n', 0));

  // Warm up once (lazily loaded modules, koffi, the kick handler) so they do not count as leaks.
  const warm = new MicroVM({ kernel: exit, memoryMiB: 16, drives: [{ path: disks[0]! }], rng: true });
  warm.console.resume();
  await warm.start();
  t.is((await warm.wait()).reason, 'guest-exit');
  const fds0 = fdCount();
  const threads0 = await settledThreads(0, 300);

  const vm1 = new MicroVM({ kernel: spin, memoryMiB: 32, vcpus: 2, drives: [{ path: disks[0]! }], rng: true });
  const vm2 = new MicroVM({ kernel: spin, memoryMiB: 32, drives: [{ path: disks[1]! }], rng: true });
  for (const vm of [vm1, vm2]) vm.console.resume();
  await Promise.all([vm1.start(), vm2.start()]);
  t.true(fdCount() > fds0, 'the two VMs hold fds while they run');

  const io1 = ioWorkerOf(vm1);
  io1.endUnexpectedlyForTest();
  const e1 = await vm1.wait();
  t.is(e1.reason, 'error');
  t.is(e1.vcpu, -1);
  t.true(e1.error instanceof IoWorkerError, `cause: ${String(e1.error)}`);
  t.is((e1.error as IoWorkerError).code, 'FLINTVM_E_IO_WORKER');
  t.regex(e1.error!.message, /I\/O worker serving this VM's virtio devices died .*the VM was stopped/);
  t.is(e1.detail?.code, 'FLINTVM_E_IO_WORKER');
  t.is(vm1.state, 'exited');
  t.true(io1.hasExited, 'the dead worker thread is gone');
  t.truthy(e1.timings.released, 'VM1 released its resources before wait() resolved');

  // VM2 is untouched: still running a while later, its own I/O worker alive.
  await sleep(300);
  t.is(vm2.state, 'running');
  t.is(vm2.exit, null);
  t.false(ioWorkerOf(vm2).hasExited);
  // And VM1's disk lock is gone with it: a new VM can open that image writable.
  const again = new MicroVM({ kernel: exit, memoryMiB: 16, drives: [{ path: disks[0]! }] });
  again.console.resume();
  await again.start();
  t.is((await again.wait()).reason, 'guest-exit');

  const e2 = await vm2.stop();
  t.is(e2.reason, 'stopped');
  t.is(e2.error, undefined);

  t.is(fdCount(), fds0, 'no fd left: eventfds, disk fds, KVM fds, the dead worker\'s epoll fd');
  t.is(kvmMaps(), 0, 'no kvm_run mapping left');
  t.is(await settledThreads(threads0), threads0, 'every vCPU and I/O worker thread ended');
});
