/**
 * Snapshot, restore and clones of a real Linux guest (issue #15). Runs in
 * both test hosts. The guest runs a loop that counts in RAM, writes the count
 * to a disk and reads the hardware RNG each turn, and answers lines typed on
 * its console: so a restored guest shows that RAM, vCPU, interrupt, UART,
 * virtio-blk and virtio-rng state all came back.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, truncateSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MicroVM, defaultGuestImages, guestCommandCmdline } from '../../lib/index.js';
import { SnapshotError, SnapshotStateError, StateError } from '../../lib/errors.js';
import { requireKvm } from '../helpers/kvm.js';

const WAIT_MS = 3 * 60_000;
const DISK_BYTES = 1024 * 1024;

/**
 * The guest's loop: count in RAM (a shell variable and /tmp/c), write
 * `disk=<n>` to sector 0 of /dev/vda, read 16 bytes of /dev/hwrng, print
 * `count=<n> rng=<bytes read>`; a line typed on the console is stored in /tmp/v
 * and read back (`back=<line>`).
 */
const LOOP = [
  'i=0',
  'while :; do',
  '  i=$((i+1)); echo $i > /tmp/c',
  '  printf "disk=%08d\\n" $i | dd of=/dev/vda bs=512 count=1 conv=fsync,notrunc 2>/dev/null',
  '  r=$(head -c 16 /dev/hwrng | wc -c)',
  '  echo "count=$(cat /tmp/c) rng=$r"',
  '  if read -t 1 v; then echo "$v" > /tmp/v; echo "back=$(cat /tmp/v)"; fi',
  'done',
].join('\n');

interface Watched { vm: MicroVM; out: () => string; counts: () => number[]; waitFor(re: RegExp, ms?: number): Promise<RegExpExecArray> }

/** Collects a VM's console and lets the test wait for a pattern in what arrived since `from`. */
function watch(vm: MicroVM): Watched {
  let out = '';
  const waiters: (() => void)[] = [];
  vm.console.on('data', (c: Buffer) => { out += c.toString(); for (const w of waiters.splice(0)) w(); });
  return {
    vm,
    out: () => out,
    counts: () => [...out.matchAll(/count=(\d+) rng=(\d+)/g)].map((m) => Number(m[1])),
    waitFor(re: RegExp, ms = WAIT_MS) {
      const from = out.length;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${re} in:\n${out.slice(-1500)}`)), ms);
        const check = () => {
          const m = re.exec(out.slice(from));
          if (m) { clearTimeout(timer); resolve(m); } else waiters.push(check);
        };
        check();
      });
    },
  };
}

async function bootCounter(dir: string): Promise<{ w: Watched; disk: string }> {
  const imgs = await defaultGuestImages({ quiet: true });
  const disk = join(dir, 'disk.img');
  writeFileSync(disk, Buffer.alloc(DISK_BYTES));
  const vm = new MicroVM({
    kernel: imgs.kernel, initrd: imgs.initrd, memoryMiB: 256, vcpus: 2, rng: true,
    drives: [{ path: disk }], extraCmdline: guestCommandCmdline(['sh', '-c', LOOP]),
  });
  const w = watch(vm);
  await vm.start();
  try {
    await w.waitFor(/count=3 rng=16/);
  } catch (e) {
    await vm.stop();
    throw e;
  }
  return { w, disk };
}

const diskCount = (path: string) => Number(/disk=(\d{8})/.exec(readFileSync(path).subarray(0, 512).toString('latin1'))?.[1]);

async function stopAll(vms: MicroVM[]): Promise<void> {
  await Promise.all(vms.map((v) => v.stop()));
}

test.serial('snapshot of a running guest, stop, restore: the count, tmpfs, disk, RNG and console continue', async (t) => {
  if (!requireKvm(t)) return;
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-snap-'));
  const { w, disk } = await bootCounter(dir);
  t.teardown(() => w.vm.stop());
  await w.vm.pause();
  const before = Math.max(...w.counts());
  const info = await w.vm.snapshot(join(dir, 'snap'));
  t.is(w.vm.state, 'paused', 'a paused VM stays paused through snapshot()');
  t.log(`snapshot: ${info.ms.toFixed(0)} ms, memory ${info.memoryBytes} B, ${info.memoryWritten} B written`);
  t.true(info.memoryWritten < info.memoryBytes, 'the memory file is sparse');
  t.is(statSync(join(dir, 'snap', 'memory')).size, info.memoryBytes);
  await w.vm.stop();

  const t0 = performance.now();
  const r = watch(await MicroVM.restore(join(dir, 'snap')));
  try {
    t.is(r.vm.state, 'running');
    const m = await r.waitFor(/count=(\d+) rng=16/);
    t.log(`restore to first output: ${(performance.now() - t0).toFixed(0)} ms`);
    const first = Number(m[1]);
    t.true(first > before && first <= before + 2, `the restored guest continues from ${before} (printed ${first}), not from 1`);
    await r.waitFor(new RegExp(`count=${first + 2} rng=16`));
    t.true(diskCount(disk) >= first + 1, `the disk holds the restored guest's writes (${diskCount(disk)})`);
    r.vm.console.write('typed-after-restore\n');
    await r.waitFor(/back=typed-after-restore/);
    t.pass();
  } finally {
    await r.vm.stop();
  }
});

test.serial('four clones restored from one snapshot run at once, diverge, and share the memory file', async (t) => {
  if (!requireKvm(t)) return;
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-clones-'));
  const { w } = await bootCounter(dir);
  t.teardown(() => w.vm.stop());
  const snap = join(dir, 'snap');
  await w.vm.snapshot(snap);
  t.is(w.vm.state, 'running', 'a running VM is resumed after snapshot()');
  await w.vm.stop();
  const clones: Watched[] = [];
  try {
    for (let i = 0; i < 4; i++) {
      // Each clone writes its own disk: a writable image is locked by the VM that has it.
      const disk = join(dir, `clone${i}.img`);
      writeFileSync(disk, Buffer.alloc(DISK_BYTES));
      clones.push(watch(await MicroVM.restore(snap, { drives: [{ path: disk }] })));
    }
    await Promise.all(clones.map((c) => c.waitFor(/count=\d+ rng=16/)));
    clones.forEach((c, i) => c.vm.console.write(`clone-${i}\n`));
    await Promise.all(clones.map((c, i) => c.waitFor(new RegExp(`back=clone-${i}\\b`))));
    for (const [i, c] of clones.entries()) t.notRegex(c.out(), new RegExp(`back=clone-(?!${i}\\b)`), `clone ${i} only saw its own value`);
    const shared = sharedMemoryFileKiB(join(snap, 'memory'));
    t.log(`memory file mappings: ${shared.mappings}, shared ${shared.sharedKiB} KiB, private ${shared.privateKiB} KiB`);
    t.is(shared.mappings, 4, 'each clone maps the memory file');
    t.true(shared.sharedKiB > 0, 'pages of the memory file are shared between the clones');
  } finally {
    await stopAll(clones.map((c) => c.vm));
  }
});

/** Sums /proc/self/smaps over the mappings of `file`: how many, and their shared and private resident KiB. */
function sharedMemoryFileKiB(file: string): { mappings: number; sharedKiB: number; privateKiB: number } {
  let mappings = 0;
  let sharedKiB = 0;
  let privateKiB = 0;
  let inFile = false;
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) {
      inFile = line.endsWith(` ${file}`);
      if (inFile) mappings++;
    } else if (inFile) {
      const m = /^(Shared|Private)_(Clean|Dirty):\s+(\d+) kB/.exec(line);
      if (m?.[1] === 'Shared') sharedKiB += Number(m[3]);
      else if (m?.[1] === 'Private') privateKiB += Number(m[3]);
    }
  }
  return { mappings, sharedKiB, privateKiB };
}

test.serial('clone(): an in-process copy of a running VM runs beside it', async (t) => {
  if (!requireKvm(t)) return;
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-clone-'));
  const { w } = await bootCounter(dir);
  t.teardown(() => w.vm.stop());
  const disk = join(dir, 'clone.img');
  writeFileSync(disk, Buffer.alloc(DISK_BYTES));
  // The original keeps its disk (locked): the clone must get its own.
  await t.throwsAsync(() => w.vm.clone(), { message: /drives\[0\]/ });
  t.is(w.vm.state, 'running', 'a failed clone leaves the original running');
  const c = watch(await w.vm.clone({ drives: [{ path: disk }] }));
  try {
    t.is(w.vm.state, 'running');
    w.vm.console.write('original\n');
    c.vm.console.write('the-clone\n');
    await Promise.all([w.waitFor(/back=original/), c.waitFor(/back=the-clone/)]);
    t.notRegex(c.out(), /back=original/);
  } finally {
    await stopAll([w.vm, c.vm]);
  }
});

test.serial('bad snapshots and bad calls: clear errors, nothing left running', async (t) => {
  if (!requireKvm(t)) return;
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-badsnap-'));
  const { w } = await bootCounter(dir);
  t.teardown(() => w.vm.stop());
  const snap = join(dir, 'snap');
  await w.vm.snapshot(snap);
  await w.vm.stop();
  await t.throwsAsync(() => w.vm.snapshot(join(dir, 'late')), { instanceOf: StateError });
  const state = JSON.parse(readFileSync(join(snap, 'state.json'), 'utf8')) as Record<string, any>;
  const variant = (name: string, edit: (s: Record<string, any>) => void, memoryBytes?: number): string => {
    const d = join(dir, name);
    const s = structuredClone(state);
    edit(s);
    // A copy of the snapshot with the edited state (and maybe a truncated memory file).
    execFileSync('cp', ['-r', '--sparse=always', snap, d]);
    writeFileSync(join(d, 'state.json'), JSON.stringify(s));
    if (memoryBytes !== undefined) truncateSync(join(d, 'memory'), memoryBytes);
    return d;
  };
  const before = process.getActiveResourcesInfo().length;
  await t.throwsAsync(() => MicroVM.restore(join(dir, 'nowhere')), { instanceOf: SnapshotError, message: /not a flintvm snapshot/ });
  await t.throwsAsync(() => MicroVM.restore(variant('other-arch', (s) => { s.arch = s.arch === 'arm64' ? 'x86_64' : 'arm64'; })), { instanceOf: SnapshotError, message: /guest; this host runs/ });
  await t.throwsAsync(() => MicroVM.restore(variant('newer', (s) => { s.version = 99; })), { instanceOf: SnapshotError, message: /version 99/ });
  await t.throwsAsync(() => MicroVM.restore(variant('truncated', () => undefined, 4096)), { message: /truncated/ });
  const tamperedQueue = variant('queue', (s) => {
    const q = (s.machine.virtio as { io: { queues: { nextAvail: number; nextUsed: number }[] | null } }[]).find((v) => v.io.queues?.some((x) => x));
    const pos = q!.io.queues!.find((x) => x)!;
    pos.nextAvail = (pos.nextAvail + 7) & 0xffff;
  });
  const e = await t.throwsAsync(() => MicroVM.restore(tamperedQueue), { instanceOf: SnapshotStateError });
  t.log(`tampered queue index: ${e?.message}`);
  await t.throwsAsync(() => MicroVM.restore(variant('regs', (s) => { (s.machine.platform.vcpus as unknown[])[0] = { version: 1 }; })), { instanceOf: SnapshotStateError });
  await t.throwsAsync(() => MicroVM.restore(snap, { drives: [null, { path: '/x' }] }), { message: /overrides\.drives\[1\]/ });
  t.true(process.getActiveResourcesInfo().length <= before + 1, 'no handles left behind by the failed restores');
});

