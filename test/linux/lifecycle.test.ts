/**
 * Lifecycles with real guests (issue #19, item 4): many create-start-stop
 * cycles of the default Linux guest with virtio-blk, virtio-net (a tap),
 * virtio-vsock and a share (9p and virtio-fs in turn), all in this one
 * process, in the real-KVM test host. The guest's command is `true` (kernel
 * `quiet`): it boots, its drivers probe and activate every device, and it
 * exits.
 *
 * Counted before (after one warm-up cycle) and after: open fds, sockets among
 * them, guest-memory mappings (anonymous, VmFlags "dc", "dd" and "nr" in
 * /proc/self/smaps: the test hosts' kernels do not name anonymous mappings)
 * and kvm_run mappings ("anon_inode:kvm"), threads (/proc/self/task), taps (/sys/class/net), the vsock listening socket file.
 * Each must be back to its baseline. Every cycle reuses the same tap name,
 * vsock socket path and disk image (locked while in use), so a leak of any of
 * them also fails the next cycle's start().
 *
 * RSS: the growth from the baseline to the end must stay under
 * RSS_BASE_MIB + RSS_PER_CYCLE_MIB x cycles (see there).
 *
 * Cycles: FLINTVM_LIFECYCLE_CYCLES, default 100. A full cycle (the guest
 * boots, probes every device and exits) takes about 10 s in the x86_64 test
 * host (nested Linux boot under TCG), so every FULL_EVERY-th cycle is a full
 * one and the others stop the VM while its guest is still booting, after a
 * delay that varies from cycle to cycle: teardown then races device
 * activation, which is where a leak would hide. Every cycle starts a VM with
 * all of its devices, workers, tap and sockets.
 */
import test from 'ava';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { MicroVM, defaultGuestImages, guestCommandCmdline, type ShareConfig } from '../../lib/index.js';
import { requireKvm, skipOrFail } from '../helpers/kvm.js';

const CYCLES = Number(process.env.FLINTVM_LIFECYCLE_CYCLES ?? 100);
/** Every FULL_EVERY-th cycle lets the guest boot and exit by itself; the others are stopped mid-boot. */
const FULL_EVERY = 4;
/** The mid-boot stops come after 0 to STOP_SPREAD_MS ms (a different delay each cycle). */
const STOP_SPREAD_MS = 2500;
/**
 * Allowed RSS growth, MiB: RSS_BASE_MIB + RSS_PER_CYCLE_MIB per cycle (after a full GC). It was 2.2 MiB
 * per cycle while koffi's never-unmapped 2 MiB call stack of each ended worker got a huge page (lib/sys.ts);
 * since then about 2 MiB over 20 cycles after the first 10. A rate bound: it catches a leaked guest (64 MiB a
 * cycle), a worker heap, or that stack again.
 */
const RSS_BASE_MIB = 32;
const RSS_PER_CYCLE_MIB = 1;
const MEMORY_MIB = 64;
const MIB = 1024 * 1024;
const TAP = 'fllc0';
const GUEST_CID = 3;
/** One cycle is stopped after this long (a hung guest fails the test rather than ava's timeout). */
const CYCLE_TIMEOUT_MS = 60_000;

interface Counts {
  fds: number;
  sockets: number;
  guestMaps: number;
  kvmMaps: number;
  threads: number;
  taps: string[];
  rssMiB: number;
}

function counts(): Counts {
  const fdNames = readdirSync('/proc/self/fd');
  let sockets = 0;
  for (const f of fdNames) {
    try {
      if (readlinkSync(`/proc/self/fd/${f}`).startsWith('socket:')) sockets++;
    } catch {
      // the fd readdir itself used, closed by now
    }
  }
  const maps = readFileSync('/proc/self/maps', 'utf8').split('\n');
  const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return {
    fds: fdNames.length,
    sockets,
    guestMaps: guestRamMappings(),
    kvmMaps: maps.filter((l) => l.includes('anon_inode:kvm')).length,
    threads: readdirSync('/proc/self/task').length,
    taps: readdirSync('/sys/class/net').filter((n) => n.startsWith('fl')).sort(),
    rssMiB: rss ? Number(rss[1]) / 1024 : 0,
  };
}

/** Mappings of guest RAM: anonymous (inode 0) with VmFlags dc (MADV_DONTFORK), dd (MADV_DONTDUMP) and nr (MAP_NORESERVE), as host-memory.ts maps it; V8's reservations have dc and nr but not dd. */
function guestRamMappings(): number {
  let n = 0;
  let anonymous = false;
  for (const l of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ (\d+)/.exec(l);
    if (head) anonymous = head[1] === '0';
    else if (anonymous && l.startsWith('VmFlags:')) {
      const flags = l.slice('VmFlags:'.length).trim().split(/\s+/);
      if (['dc', 'dd', 'nr'].every((f) => flags.includes(f))) n++;
    }
  }
  return n;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// A full GC before each RSS reading, so garbage not yet collected does not read as growth.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Counts once worker threads that are exiting have gone (up to 5 s). */
async function settledCounts(threads: number): Promise<Counts> {
  gc();
  const end = Date.now() + 5000;
  let c = counts();
  while (c.threads > threads && Date.now() < end) {
    await sleep(20);
    c = counts();
  }
  return c;
}

test.serial(`lifecycle: ${CYCLES} create-start-stop cycles of a Linux guest with blk, net, vsock and a share leak nothing`, async (t) => {
  if (!requireKvm(t)) return;
  if (!existsSync('/dev/net/tun')) return skipOrFail(t, 'no /dev/net/tun in this host (tun.ko not loaded)');
  t.timeout(60 * 60_000);
  const imgs = await defaultGuestImages({ quiet: true });
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-lifecycle-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const disk = join(dir, 'disk.img');
  writeFileSync(disk, Buffer.alloc(4 * 1024 * 1024));
  const shareDir = join(dir, 'share');
  mkdirSync(shareDir);
  writeFileSync(join(shareDir, 'hello.txt'), 'hello\n');
  const udsPath = join(dir, 'vsock.sock');

  let maxBootMs = 0;
  let stoppedMidBoot = 0;
  const cycle = async (i: number, during?: (vm: MicroVM) => void) => {
    // Cycle 0 (the warm-up) and every FULL_EVERY-th one run the guest to its end; the others are stopped early.
    const stopAfterMs = i % FULL_EVERY === 0 ? null : (i * 937) % STOP_SPREAD_MS;
    const protocol: ShareConfig['protocol'] = i % 2 ? '9p' : 'virtiofs';
    const vm = new MicroVM({
      kernel: imgs.vmlinux, initrd: imgs.initrd, memoryMiB: MEMORY_MIB,
      drives: [{ path: disk }],
      net: [{ tap: TAP }],
      vsock: { guestCid: GUEST_CID, udsPath },
      shares: [{ tag: 'share0', path: shareDir, protocol }],
      extraCmdline: `quiet ${guestCommandCmdline(['true'])}`,
    });
    let out = '';
    vm.console.on('data', (c: Buffer) => { out += c.toString(); });
    const t0 = performance.now();
    await vm.start();
    during?.(vm);
    let stopping: Promise<unknown> | undefined;
    const timer = setTimeout(() => { stopping = vm.stop(); }, stopAfterMs ?? CYCLE_TIMEOUT_MS);
    const exit = await vm.wait();
    clearTimeout(timer);
    await stopping;
    if (stopAfterMs !== null) {
      // The guest may have been quicker than the delay: either ending is a clean one.
      if (exit.reason === 'stopped') stoppedMidBoot++;
      else if (exit.reason !== 'guest-exit' || exit.exitStatus !== 0) {
        t.fail(`cycle ${i} (${protocol}, stopped after ${stopAfterMs} ms): ${exit.reason} ${exit.exitStatus ?? ''}\n${out.slice(-2000)}`);
        return false;
      }
      return true;
    }
    maxBootMs = Math.max(maxBootMs, performance.now() - t0);
    if (exit.reason !== 'guest-exit' || exit.exitStatus !== 0) {
      t.fail(`cycle ${i} (${protocol}): ${exit.reason} ${exit.exitStatus ?? ''}\n${out.slice(-2000)}`);
      return false;
    }
    return true;
  };

  // Warm-up: lazily loaded modules, koffi, the kick handler. Also proves the counters see a running VM.
  let running: Counts | null = null;
  t.true(await cycle(0, () => { running = counts(); }));
  const base = await settledCounts(0);
  const during = running as Counts | null;
  t.truthy(during);
  t.is(during!.guestMaps, base.guestMaps + 1, 'the guest-memory counter sees the running guest');
  t.true(during!.kvmMaps > base.kvmMaps, 'the kvm_run counter sees the running vCPU');
  t.true(during!.taps.includes(TAP), 'the tap counter sees the tap');
  t.true(during!.fds > base.fds);

  const t0 = performance.now();
  const rssAt: string[] = [];
  let done = 0;
  for (let i = 1; i <= CYCLES; i++) {
    if (!(await cycle(i))) break;
    done++;
    if (i % Math.max(1, Math.floor(CYCLES / 4)) === 0) {
      gc();
      const m = process.memoryUsage();
      rssAt.push(`${i}: rss ${counts().rssMiB.toFixed(0)} heap ${(m.heapUsed / MIB).toFixed(0)} ext ${(m.external / MIB).toFixed(0)} ab ${(m.arrayBuffers / MIB).toFixed(0)}`);
    }
  }
  const secs = (performance.now() - t0) / 1000;
  const end = await settledCounts(base.threads);
  t.log(`LIFECYCLE ${done} cycles in ${secs.toFixed(1)} s (${(secs / Math.max(done, 1)).toFixed(2)} s/cycle, ${stoppedMidBoot} stopped mid-boot, slowest full boot ${(maxBootMs / 1000).toFixed(1)} s); ` +
    `RSS ${base.rssMiB.toFixed(1)} -> ${end.rssMiB.toFixed(1)} MiB (MiB at cycle ${rssAt.join('; ')}); ` +
    `fds ${base.fds} -> ${end.fds}, sockets ${base.sockets} -> ${end.sockets}, threads ${base.threads} -> ${end.threads}`);
  t.is(done, CYCLES);
  t.true(stoppedMidBoot > 0, 'some cycles were stopped while the guest was still booting');
  t.is(end.fds, base.fds, 'no fd left');
  t.is(end.sockets, base.sockets, 'no socket left');
  t.is(end.guestMaps, base.guestMaps, 'no guest-memory mapping left');
  t.is(end.kvmMaps, base.kvmMaps, 'no kvm_run mapping left');
  t.is(end.threads, base.threads, 'no worker thread left');
  t.deepEqual(end.taps, base.taps, 'no tap left');
  t.false(existsSync(udsPath), 'the vsock socket file is gone');
  const bound = RSS_BASE_MIB + RSS_PER_CYCLE_MIB * done;
  t.true(end.rssMiB - base.rssMiB < bound, `RSS grew by ${(end.rssMiB - base.rssMiB).toFixed(1)} MiB over ${done} cycles (bound ${bound})`);
});
