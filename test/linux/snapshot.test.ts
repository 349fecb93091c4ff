/**
 * Snapshot, restore and clones of a real Linux guest (issue #15). Runs in
 * both test hosts. The guest runs a loop that counts in RAM, writes the count
 * to a disk and reads the hardware RNG each turn, and answers lines typed on
 * its console: so a restored guest shows that RAM, vCPU, interrupt, UART,
 * virtio-blk and virtio-rng state all came back.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync, statSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { promisify } from 'node:util';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MicroVM, defaultGuestImages } from '../../lib/index.js';
import { SnapshotError, SnapshotStateError, StateError } from '../../lib/errors.js';
import { requireKvm, skipOrFail } from '../helpers/kvm.js';
import { quietCommand } from '../helpers/guest-cmdline.js';
import { toolsInitrd } from './share-helpers.js';

const execFileP = promisify(execFile);

/** The arm64 test host is several times slower than the x86_64 one. */
const SLOW = process.arch === 'arm64' ? 3 : 1;
const WAIT_MS = 3 * 60_000 * SLOW;
const DISK_BYTES = 1024 * 1024;

/**
 * The guest's loop: count in RAM (a shell variable and /tmp/c), write
 * `disk=<n>` to sector 0 of /dev/vda, read 16 bytes of /dev/hwrng, print
 * `count=<n> rng=<bytes read>`, every half second, in the background; in the
 * foreground, each line typed on the console is stored in /tmp/v and read
 * back (`back=<line>`).
 */
const LOOP = [
  '(i=0',
  ' while :; do',
  '  i=$((i+1)); echo $i > /tmp/c',
  '  printf "disk=%08d\\n" $i | dd of=/dev/vda bs=512 count=1 conv=fsync,notrunc 2>/dev/null',
  '  r=$(head -c 16 /dev/hwrng | wc -c)',
  '  echo "count=$(cat /tmp/c) rng=$r"',
  '  sleep 0.5',
  ' done) &',
  'while read v; do echo "$v" > /tmp/v; echo "back=$(cat /tmp/v)"; done',
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

async function bootCounter(dir: string, vcpus = 2): Promise<{ w: Watched; disk: string }> {
  const imgs = await defaultGuestImages({ quiet: true });
  const disk = join(dir, 'disk.img');
  writeFileSync(disk, Buffer.alloc(DISK_BYTES));
  const vm = new MicroVM({
    kernel: imgs.kernel, initrd: imgs.initrd, memoryMiB: 256, vcpus, rng: true,
    drives: [{ path: disk }], extraCmdline: quietCommand(['sh', '-c', LOOP]),
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
    const tm = r.vm.timings;
    const rel = (x?: number) => (x === undefined || tm.startCalled === undefined ? '-' : (x - tm.startCalled).toFixed(0));
    t.log(`restore to first output: ${(performance.now() - t0).toFixed(0)} ms (VM ready +${rel(tm.vmReady)}, state restored +${rel(tm.kernelLoaded)}, workers +${rel(tm.workersReady)}, first KVM_RUN +${rel(tm.firstRun)} ms)`);
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
  // One vCPU each: four guests share the test host's one emulated CPU.
  const { w } = await bootCounter(dir, 1);
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
    // The snapshot with the edited state: the memory file hard-linked (or a truncated one of its own).
    mkdirSync(d);
    if (memoryBytes === undefined) linkSync(join(snap, 'memory'), join(d, 'memory'));
    else writeFileSync(join(d, 'memory'), Buffer.alloc(memoryBytes));
    writeFileSync(join(d, 'state.json'), JSON.stringify(s));
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


/**
 * The guest of the device test: NIC up, shares mounted by init (flintvm.mount=), a vsock echo server on port
 * 1234, then a console shell loop: each line typed is run, and `END <id>` is printed after it.
 */
const DEVICE_GUEST = [
  `ip addr add ${'10.0.9.15'}/24 dev eth0 && ip link set eth0 up || echo NET-FAILED`,
  'socat VSOCK-LISTEN:1234,fork EXEC:cat &',
  'echo DEVICES-UP',
  'while :; do if read -t 1 line; then eval "$line"; fi; done',
].join('\n');

test.serial('restore with another tap and vsock socket: the NIC, a new vsock connection, a 9p and a virtio-fs share all work', async (t) => {
  if (!requireKvm(t)) return;
  if (!existsSync('/dev/net/tun')) return skipOrFail(t, 'no /dev/net/tun in this host (tun.ko not loaded)');
  const tools = await toolsInitrd();
  if (!tools) return skipOrFail(t, 'needs the guest tools image (socat): build it with guest/build.sh');
  const imgs = await defaultGuestImages({ quiet: true });
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-snapdev-'));
  const p9 = join(dir, 'p9');
  const vfs = join(dir, 'vfs');
  for (const d of [p9, vfs]) { mkdirSync(d); writeFileSync(join(d, 'hello'), `hello from ${d}\n`); }
  const vm = new MicroVM({
    kernel: imgs.kernel, initrd: tools, memoryMiB: 256, vcpus: 1,
    net: [{ tap: 'flsnapA' }], vsock: { guestCid: 7, udsPath: join(dir, 'a.sock') },
    shares: [{ tag: 'p9', path: p9, protocol: '9p' }, { tag: 'vfs', path: vfs, protocol: 'virtiofs' }],
    extraCmdline: `flintvm.mount=9p:p9 flintvm.mount=virtiofs:vfs ${quietCommand(['sh', '-c', DEVICE_GUEST])}`,
  });
  const w = watch(vm);
  t.teardown(() => vm.stop());
  await vm.start();
  await w.waitFor(/DEVICES-UP/);
  // Before the snapshot: the guest reads both shares (so fids and nodes for them exist) and keeps a file open.
  // Markers are printed as "END""1": the console echoes the typed line, which must not match.
  vm.console.write('exec 7</mnt/p9/hello; cat /mnt/vfs/hello; echo "END""1"\n');
  await w.waitFor(/END1/);
  const snap = join(dir, 'snap');
  await vm.snapshot(snap);
  await vm.stop();

  const r = watch(await MicroVM.restore(snap, { net: [{ tap: 'flsnapB' }], vsock: { udsPath: join(dir, 'b.sock'), guestCid: 8 } }));
  t.teardown(() => r.vm.stop());
  await execFileP('ip', ['addr', 'add', '10.0.9.1/24', 'dev', 'flsnapB']);
  await execFileP('ip', ['link', 'set', 'flsnapB', 'up']);
  r.vm.console.write('i=0; until ping -c 1 -W 1 10.0.9.1 >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 30 ] || break; done; ping -c 1 -W 2 10.0.9.1 >/dev/null && echo "PING""OK"; echo "END""2"\n');
  const net = await r.waitFor(/(PINGOK)?\s*END2/);
  t.truthy(net[1], 'the restored guest pings the host through the overridden tap');

  r.vm.console.write('cat <&7; cat /mnt/p9/hello /mnt/vfs/hello; echo from-guest-9p > /mnt/p9/out; echo from-guest-vfs > /mnt/vfs/out; echo "END""3"\n');
  const shares = await r.waitFor(/END3/);
  t.log(r.out().slice(-600));
  t.is(readFileSync(join(p9, 'out'), 'utf8'), 'from-guest-9p\n', 'the 9p share is writable after restore');
  t.is(readFileSync(join(vfs, 'out'), 'utf8'), 'from-guest-vfs\n', 'the virtio-fs share is writable after restore');
  t.regex(r.out(), new RegExp(`hello from ${vfs}`), 'the virtio-fs share reads after restore');
  void shares;

  const echo = await vsockEcho(join(dir, 'b.sock'), 1234, 'over-vsock-after-restore\n');
  t.is(echo, 'over-vsock-after-restore\n', 'a new vsock connection to the restored guest works');
});

/** Hybrid vsock: CONNECT to guest `port` through `uds`, send `text`, resolve with what came back (after the OK line). */
function vsockEcho(uds: string, port: number, text: string, ms = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + ms;
    const attempt = () => {
      const s = netConnect(uds);
      let buf = '';
      let ok = false;
      s.on('connect', () => s.write(`CONNECT ${port}\n`));
      s.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        if (!ok) {
          const nl = buf.indexOf('\n');
          if (nl < 0) return;
          if (!buf.startsWith('OK ')) { s.destroy(); return; }
          ok = true;
          buf = buf.slice(nl + 1);
          s.write(text);
        }
        if (ok && buf.length >= text.length) { s.destroy(); resolve(buf); }
      });
      let retried = false;
      const retry = () => { if (!ok && !retried) { retried = true; if (Date.now() > deadline) reject(new Error(`no vsock echo from port ${port} via ${uds}`)); else setTimeout(attempt, 500); } };
      s.on('error', retry);
      s.on('close', retry);
    };
    attempt();
  });
}
