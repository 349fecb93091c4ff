import test from 'ava';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { MicroVM } from '../../lib/index.js';
import { DEFAULT_VCPU_NICE } from '../../lib/vm/config.js';
import { requireKvm } from '../helpers/kvm.js';
import { printAndExitCode, spinCode, writeTempKernel } from '../helpers/tiny-elf.js';
import { readKvmStats } from '../../lib/kvm/stats.js';
import * as ffi from '../../lib/kvm/ffi.js';
import { REGISTER_PAGES_NAME } from '../../lib/vm/register-pages.js';
import type { BuiltVm } from '../../lib/vm/builder.js';

function collect(vm: MicroVM): () => string {
  const chunks: Buffer[] = [];
  vm.console.on('data', (c: Buffer) => chunks.push(c));
  return () => Buffer.concat(chunks).toString();
}

test('a tiny ELF kernel boots in long mode, prints through the 8250, reports its exit status', async (t) => {
  if (!requireKvm(t)) return;
  const kernel = writeTempKernel(printAndExitCode('hello from long mode\n', 42));
  const vm = new MicroVM({ kernel, memoryMiB: 16, vcpus: 1 });
  const out = collect(vm);
  const states: string[] = [];
  vm.on('state', (s) => states.push(s));
  await vm.start();
  const exit = await vm.wait();
  t.is(exit.reason, 'guest-exit');
  t.is(exit.exitStatus, 42);
  t.is(out(), 'hello from long mode\n');
  t.deepEqual(states, ['starting', 'running', 'stopping', 'exited']);
  t.truthy(exit.timings.firstRun && exit.timings.released && exit.timings.released >= exit.timings.firstRun);
});

test('two vCPUs: the BSP runs the kernel while the AP waits for SIPI', async (t) => {
  if (!requireKvm(t)) return;
  const kernel = writeTempKernel(printAndExitCode('bsp\n', 0));
  const vm = new MicroVM({ kernel, memoryMiB: 16, vcpus: 2 });
  const out = collect(vm);
  await vm.start();
  const exit = await vm.wait();
  t.is(exit.reason, 'guest-exit');
  t.is(exit.vcpu, 0);
  t.is(out(), 'bsp\n');
});

/** Nice values of this process's threads named `name`, and of the main thread. */
function threadNices(name: string): { threads: number[]; main: number } {
  const nice = (stat: string) => Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
  const threads: number[] = [];
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      if (readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim() === name) threads.push(nice(readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')));
    } catch {
      // the thread ended meanwhile
    }
  }
  return { threads, main: nice(readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8')) };
}

// Serial: no other VM of this file has vCPU threads while it looks at them.
test.serial('vcpuNice: each vCPU thread runs that many nice steps below the process (default 0), the rest of the process does not', async (t) => {
  if (!requireKvm(t)) return;
  const kernel = writeTempKernel(spinCode());
  for (const [vcpuNice, steps] of [[undefined, DEFAULT_VCPU_NICE], [10, 10], [4, 4]] as const) {
    const vm = new MicroVM({ kernel, memoryMiB: 16, vcpus: 2, ...(vcpuNice === undefined ? {} : { vcpuNice }) });
    await vm.start();
    try {
      const base = threadNices('none').main;
      const want = Math.min(19, base + steps);
      t.deepEqual(threadNices('flintvm-vcpu0').threads, [want], `vcpuNice ${vcpuNice}: vCPU 0`);
      t.deepEqual(threadNices('flintvm-vcpu1').threads, [want], `vcpuNice ${vcpuNice}: vCPU 1`);
    } finally {
      await vm.stop();
    }
  }
});

function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}
function rssMiB(): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

// 50 cycles on a machine's own KVM; 16 inside the TCG test host, where each worker start costs over a
// second of emulated CPU (50 took 9 minutes there): enough cycles for a leak to show in the counts below.
const CYCLES = process.env.FLINTVM_IN_TEST_HOST ? 16 : 50;

test.serial(`${CYCLES} create/stop cycles release every fd, mapping and worker`, async (t) => {
  if (!requireKvm(t)) return;
  const exitKernel = writeTempKernel(printAndExitCode('x', 0));
  const spinKernel = writeTempKernel(spinCode());
  // Warm up once so lazily loaded modules and koffi state are not counted as leaks.
  const warm = new MicroVM({ kernel: exitKernel, memoryMiB: 16 });
  await warm.start();
  await warm.wait();
  const fds0 = fdCount();
  const rss0 = rssMiB();
  for (let i = 0; i < CYCLES; i++) {
    // Alternate guests that exit by themselves and guests that must be stopped.
    const vm = new MicroVM({ kernel: i % 2 ? spinKernel : exitKernel, memoryMiB: 64, vcpus: 1 + (i % 2) });
    vm.console.resume();
    await vm.start();
    if (i % 2) await vm.stop();
    const e = await vm.wait();
    t.is(e.reason, i % 2 ? 'stopped' : 'guest-exit');
  }
  const fds1 = fdCount();
  const rss1 = rssMiB();
  t.log(`fds ${fds0} -> ${fds1}, RSS ${rss0.toFixed(1)} -> ${rss1.toFixed(1)} MiB`);
  t.is(fds1, fds0, 'no fd leaked');
  // CYCLES x 64 MiB of guest RAM plus 1.5 workers per cycle: a leak would show as hundreds of MiB.
  t.true(rss1 - rss0 < 100, `RSS grew by ${(rss1 - rss0).toFixed(1)} MiB`);
  const maps = readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes('anon_inode:kvm')).length;
  t.is(maps, 0, 'no kvm_run mapping left');
});

/** Threads of this process. */
function threadCount(): number {
  return readdirSync('/proc/self/task').length;
}

// Serial: it counts the process's fds and threads.
test.serial('a kernel that fails to load, after the vCPU and I/O workers started, leaves no fd, mapping or thread behind', async (t) => {
  if (!requireKvm(t)) return;
  // Warm up: the first VM starts libuv's pool threads, which stay.
  const warm = new MicroVM({ kernel: writeTempKernel(printAndExitCode('x', 0)), memoryMiB: 16 });
  await warm.start();
  await warm.wait();
  const fds0 = fdCount();
  const threads0 = threadCount();
  // The file exists, so the config passes; the image is neither ELF nor bzImage, found while the vCPUs are set up.
  const garbage = writeTempKernel(new Uint8Array(0));
  writeFileSync(garbage, Buffer.alloc(8192, 0x5a));
  const disk = `${garbage}.disk.img`;
  writeFileSync(disk, Buffer.alloc(1024 * 1024));
  for (let i = 0; i < 4; i++) {
    // With virtio devices the I/O worker starts early too (a fresh boot), beside the vCPU workers.
    const vm = new MicroVM({ kernel: garbage, memoryMiB: 16, vcpus: 2, ...(i % 2 ? { drives: [{ path: disk }], rng: true } : {}) });
    await t.throwsAsync(vm.start(), { code: 'FLINTVM_E_LOADER', message: /neither an ELF vmlinux nor a bzImage/ });
    t.is((await vm.wait()).reason, 'error');
  }
  // And the disk's lock went with the failed VM.
  const again = new MicroVM({ kernel: writeTempKernel(printAndExitCode('x', 0)), memoryMiB: 16, drives: [{ path: disk }] });
  await again.start();
  t.is((await again.wait()).reason, 'guest-exit');
  t.is(fdCount(), fds0, 'no fd leaked');
  // A terminated worker's thread may take a moment to leave /proc (longer on a loaded machine: up to 10 s here).
  for (let i = 0; i < 500 && threadCount() > threads0; i++) await new Promise((r) => setTimeout(r, 20));
  t.is(threadCount(), threads0, 'every vCPU worker thread ended');
  t.is(readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes('anon_inode:kvm')).length, 0, 'no kvm_run mapping left');
});

test('several MicroVMs run at once in one process', async (t) => {
  if (!requireKvm(t)) return;
  const vms = [1, 2, 3, 4].map((n) => new MicroVM({ kernel: writeTempKernel(printAndExitCode(`vm${n}\n`, n)), memoryMiB: 16 }));
  const outs = vms.map(collect);
  await Promise.all(vms.map((v) => v.start()));
  const exits = await Promise.all(vms.map((v) => v.wait()));
  t.deepEqual(exits.map((e) => e.exitStatus), [1, 2, 3, 4]);
  t.deepEqual(outs.map((o) => o()), ['vm1\n', 'vm2\n', 'vm3\n', 'vm4\n']);
});

test.serial('virtio devices: a VM with disks and rng starts its I/O worker and releases everything', async (t) => {
  if (!requireKvm(t)) return;
  const { mkdtempSync, writeFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-virtio-'));
  const disk = join(dir, 'disk.img');
  writeFileSync(disk, Buffer.alloc(1024 * 1024));
  const kernel = writeTempKernel(printAndExitCode('ok\n', 0));
  const spin = writeTempKernel(spinCode());
  const fds0 = fdCount();
  for (let i = 0; i < 5; i++) {
    const vm = new MicroVM({ kernel: i % 2 ? spin : kernel, memoryMiB: 16, drives: [{ path: disk }], rng: true });
    vm.console.resume();
    await vm.start();
    if (i % 2) {
      // While it runs, the image is locked against a second writer.
      await t.throwsAsync(new MicroVM({ kernel, memoryMiB: 16, drives: [{ path: disk }] }).start(), { message: /drives\[0\]\.path.*locked/ });
      await vm.stop();
    }
    const e = await vm.wait();
    t.is(e.reason, i % 2 ? 'stopped' : 'guest-exit');
  }
  t.is(fdCount(), fds0, 'eventfds, disk fds and the I/O worker are released');
  // And the lock is gone with the VM.
  const again = new MicroVM({ kernel, memoryMiB: 16, drives: [{ path: disk }] });
  await again.start();
  t.is((await again.wait()).reason, 'guest-exit');
});

test('stop() during start() never runs the guest and releases everything; a failed start() resolves wait()', async (t) => {
  if (!requireKvm(t)) return;
  const kernel = writeTempKernel(spinCode());
  const vm = new MicroVM({ kernel, memoryMiB: 16 });
  const starting = vm.start();
  const stopped = vm.stop();
  await starting;
  const e = await stopped;
  t.is(e.reason, 'stopped');
  t.is(vm.state, 'exited');
  t.is(e.timings.firstRun, undefined, 'the vCPU never entered KVM_RUN');

  // A disk image whose size is not a multiple of 512 passes the constructor and fails in start().
  const oddDisk = `${kernel}.odd.img`;
  writeFileSync(oddDisk, Buffer.alloc(100));
  const bad = new MicroVM({ kernel, memoryMiB: 16, drives: [{ path: oddDisk }] });
  await t.throwsAsync(bad.start(), { code: 'FLINTVM_E_CONFIG' });
  t.is((await bad.wait()).reason, 'error');
});

/**
 * 64-bit code for a VM whose first virtio device's window is at 0xd0000000:
 * reads MagicValue 1000 times, prints it on COM1 ("virt"), writes 1 to
 * InterruptAck, writes STATUS = ACKNOWLEDGE, reads STATUS back and prints it
 * as a digit, then a newline, then halts.
 */
function registerReaderCode(): Uint8Array {
  return Uint8Array.from([
    0xbe, 0x00, 0x00, 0x00, 0xd0, // mov esi, 0xd0000000 (the window of virtio device 0)
    0xb9, 0xe8, 0x03, 0x00, 0x00, // mov ecx, 1000
    0x8b, 0x06, // L: mov eax, [rsi] (MagicValue)
    0xff, 0xc9, // dec ecx
    0x75, 0xfa, // jnz L
    0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xee, 0xc1, 0xe8, 0x08, // out dx, al; shr eax, 8
    0xee, 0xc1, 0xe8, 0x08,
    0xee, 0xc1, 0xe8, 0x08,
    0xee,
    0xc7, 0x46, 0x64, 0x01, 0x00, 0x00, 0x00, // mov dword [rsi+0x64], 1 (InterruptAck of VRING: KVM's ioeventfd takes it, no exit)
    0xc7, 0x46, 0x70, 0x01, 0x00, 0x00, 0x00, // mov dword [rsi+0x70], 1 (STATUS = ACKNOWLEDGE: a write, which exits)
    0x8b, 0x46, 0x70, // mov eax, [rsi+0x70] (STATUS)
    0x04, 0x30, 0xee, // add al, '0'; out dx, al
    0xb0, 0x0a, 0xee, // mov al, '\n'; out dx, al
    0xf4, 0xeb, 0xfd, // hlt; jmp hlt
  ]);
}

test.serial('x86_64: the guest reads virtio registers from the register page and acks VRING without exits; other writes still exit and show in the page', async (t) => {
  if (!requireKvm(t)) return;
  const named = () => readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes(`[anon:${REGISTER_PAGES_NAME}]`)).length;
  const namesMappings = kernelNamesAnonMappings();
  const vm = new MicroVM({ kernel: writeTempKernel(registerReaderCode()), memoryMiB: 16, rng: true });
  const out = collect(vm);
  await vm.start();
  try {
    const end = Date.now() + 20_000;
    while (!out().includes('\n') && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    t.is(out(), 'virt1\n', 'MagicValue from the page; the STATUS write reached the transport, which republished the page');
    // KVM_GET_STATS_FD waits for the vCPU's mutex, which KVM_RUN holds: take the vCPU out of the guest first.
    await vm.pause();
    const built = (vm as unknown as { built: BuiltVm }).built;
    const stats = readKvmStats(built.machine.vcpus[0]!.fd);
    const mmio = Number(stats.get('mmio_exits'));
    t.log(`KVM counters of vCPU 0: mmio_exits ${mmio}, io_exits ${stats.get('io_exits')}, exits ${stats.get('exits')}`);
    // 1000 reads that exited would be 1000 mmio_exits, an ack that exited one more; the STATUS write is the one.
    t.is(mmio, 1, 'only the STATUS write exited');
    if (namesMappings) t.is(named(), 1, 'the register pages are one mapping while the VM runs');
  } finally {
    await vm.stop();
  }
  if (namesMappings) t.is(named(), 0, 'and none after stop()');
});

/** Whether this kernel names anonymous mappings (CONFIG_ANON_VMA_NAME), tried on a page of its own. */
function kernelNamesAnonMappings(): boolean {
  const a = ffi.mmap(null, 4096, ffi.PROT_READ | ffi.PROT_WRITE, ffi.MAP_PRIVATE | ffi.MAP_ANONYMOUS, -1, 0)!;
  try {
    return ffi.prctlName(ffi.PR_SET_VMA, ffi.PR_SET_VMA_ANON_NAME, a, 4096, 'flintvm-probe') === 0;
  } finally {
    ffi.munmap(a, 4096);
  }
}
