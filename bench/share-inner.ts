/**
 * The inner half of bench/share.ts. It runs INSIDE the real-KVM test host:
 * per boot, the default (busybox) guest mounts one shared directory on the
 * test host's /tmp (tmpfs) and, timed by its own clock (/proc/uptime):
 *
 * 1. `tar -xf` of a real tarball (a Debian package's data archive, already
 *    in the guest's RAM) onto the share, plus `sync`;
 * 2. `dd if=/dev/zero of=/mnt/big bs=1M count=N conv=fsync`, plus `sync`;
 * 3. after `echo 3 > /proc/sys/vm/drop_caches`, `dd if=/mnt/big of=/dev/null bs=1M`.
 *
 * Around steps 2 and 3 it samples the CPU of every thread of the VMM's
 * process (/proc/PID/task, at console markers), by role: the vCPU thread
 * (with its guest time), the I/O thread(s) (flintvm's I/O worker; QEMU's
 * thread-pool workers, which make 9p's file syscalls), the main thread, and
 * the process's other threads. Two floors say what no VMM can take away: in
 * the guest, `dd if=/dev/zero of=/dev/null` of N MiB (the zeroing step 2's dd
 * does before any byte reaches the share), and once per repetition, on the
 * test host itself, dd of N MiB onto its tmpfs and back (the copies into and
 * out of the host's page cache that steps 2 and 3 need).
 *
 * The caches are dropped before each step. Four configurations, in a
 * rotating order per repetition: flintvm's 9p share, flintvm's virtio-fs
 * share (default `cache: 'auto'`), the same with `cache: 'never'` (direct I/O,
 * no guest page cache: what 9p's cache=none does), and QEMU microvm's `-fsdev local,security_model=none -device
 * virtio-9p-device` (QEMU 7.2 microvm has no virtio-fs without an external
 * virtiofsd). Both 9p mounts use `trans=virtio,version=9p2000.L,msize=262144`
 * with the default cache mode (none); virtio-fs mounts with its defaults.
 *
 * Prints one line `FLINTVM-SHARE-RESULT <json>` (ShareInnerResult).
 *
 * `--steps dd` leaves out step 1 (QEMU's 9p extraction takes minutes a run) to time only the streaming.
 *
 * Usage: node dist/bench/share-inner.js [--reps 5] [--mib 1024] [--memory-mib 256] [--configs flintvm-9p,flintvm-virtiofs,flintvm-virtiofs-direct,qemu-9p] [--steps tar,dd]
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { cpuPerOp, sampleThreads, type RoleCpu, type ThreadSample } from './thread-cpu.js';
import {
  consoleTail, flintvmExtraCmdline, guestFiles, qemuGuestArgs, runMain, startFlintvm, startQemu, testHostInfo, unpackQemu,
  type GuestHandle, type QemuBin, type Vmm,
} from './guest-run.js';

export const SHARE_MARKER = 'FLINTVM-SHARE-RESULT ';
/** The tarball, as the outer half stages it in the guest directory. */
export const SHARE_BENCH_TARBALL = 'share-bench.tar';

export const SHARE_CONFIGS = ['flintvm-9p', 'flintvm-virtiofs', 'flintvm-virtiofs-direct', 'qemu-9p'] as const;
export type ShareConfigName = (typeof SHARE_CONFIGS)[number];

const TAG = 'benchshare';
const BASE = '/tmp/flintvm-share-bench';

export interface ShareRun {
  config: ShareConfigName;
  vmm: Vmm;
  rep: number;
  wallMs: number;
  ok: boolean;
  error?: string;
  /** Guest seconds: tar -x + sync; dd write + sync; dd read. */
  tarS?: number;
  writeS?: number;
  readS?: number;
  /** Guest seconds of `dd if=/dev/zero of=/dev/null` of the same size: the write's guest-side floor. */
  zeroS?: number;
  /** CPU of the VMM's threads by role (vcpu, io, main, helpers) over the write and the read, µs in all. */
  cpu?: { write?: Record<string, RoleCpu>; read?: Record<string, RoleCpu> };
  /** Entries the guest found under the extraction directory (find | wc -l), for a sanity check. */
  entries?: number;
}

export interface ShareInnerResult {
  reps: number;
  mib: number;
  memoryMiB: number;
  tarball: { bytes: number; entries: number };
  qemu: { argv: string[]; version: string } | null;
  runs: ShareRun[];
  /** Per repetition, on the test host itself: dd of `mib` MiB from /dev/zero onto its tmpfs (fsync), and back to /dev/null; seconds. */
  hostFloor?: { writeS: number; readS: number }[];
  testHost: ReturnType<typeof testHostInfo>;
}

function mountCommand(config: ShareConfigName): string {
  return config.endsWith('-9p') ? `mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 ${TAG} /mnt` : `mount -t virtiofs ${TAG} /mnt`;
}

/** The workload, read from the share (the kernel command line is too short for it). */
export function shareWorkload(mib: number, tar = true): string {
  return `
up() { cut -d' ' -f1 /proc/uptime; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
${tar ? `cp /mnt/.t.tar /tmp/t.tar && mkdir /mnt/x || exit 3
drop; a=$(up); tar -xf /tmp/t.tar -C /mnt/x || exit 4; sync; echo "SHRES tar $a $(up)"
echo "SHRES entries $(find /mnt/x | wc -l)"
rm /tmp/t.tar` : ''}
a=$(up); dd if=/dev/zero of=/dev/null bs=1M count=${mib} 2>/dev/null; echo "SHRES zero $a $(up)"
drop; echo SHMARK write; a=$(up); dd if=/dev/zero of=/mnt/big bs=1M count=${mib} conv=fsync 2>/dev/null || exit 5; sync; echo "SHRES write $a $(up)"
drop; echo SHMARK read; a=$(up); dd if=/mnt/big of=/dev/null bs=1M 2>/dev/null || exit 6; echo "SHRES read $a $(up)"
cd / && umount /mnt && echo SHDONE
`;
}

/** SHRES lines -> seconds per step and the entry count. */
export function parseShareRes(out: string): Pick<ShareRun, 'tarS' | 'writeS' | 'readS' | 'zeroS' | 'entries'> {
  const r: Pick<ShareRun, 'tarS' | 'writeS' | 'readS' | 'zeroS' | 'entries'> = {};
  for (const m of out.replace(/\r/g, '').matchAll(/^SHRES (tar|write|read|zero) ([\d.]+) ([\d.]+)\s*$/gm)) {
    r[`${m[1] as 'tar' | 'write' | 'read' | 'zero'}S`] = Number(m[3]) - Number(m[2]);
  }
  const e = /^SHRES entries (\d+)/m.exec(out.replace(/\r/g, ''));
  if (e) r.entries = Number(e[1]);
  return r;
}

interface Ctx {
  kernel: string;
  initrd: string;
  memoryMiB: number;
  mib: number;
  tarball: string;
  /** Run step 1, the tarball extraction. */
  tar: boolean;
  qemu: QemuBin | null;
  timeoutS: number;
}

function qemuShareArgs(c: Ctx, dir: string, guestCommand: string): string[] {
  return [
    ...qemuGuestArgs({ kernel: c.kernel, initrd: c.initrd, memoryMiB: c.memoryMiB, vcpus: 1, dataDir: c.qemu!.dataDir, guestCommand }),
    '-fsdev', `local,id=f0,path=${dir},security_model=none`,
    '-device', `virtio-9p-device,fsdev=f0,mount_tag=${TAG}`,
  ];
}

/** A thread's role in the VMM's process `pid`: its comm, whether it ran guest code, whether it is the main thread. */
export function shareThreadRole(pid: number) {
  return (tid: number, s: ThreadSample): string => {
    if (s.guest > 0 || s.comm.startsWith('flintvm-vcpu')) return 'vcpu';
    if (tid === pid) return 'main';
    // flintvm's I/O worker; QEMU's other threads are its thread pool (9p's file syscalls) and its RCU thread.
    if (s.comm === 'flintvm-io' || pid !== process.pid) return 'io';
    return 'helpers';
  };
}

/**
 * Samples the VMM's threads when the guest announces each step (`SHMARK step`)
 * and when it reports it done (`SHRES step`). Resolves with what it got; a
 * step it could not follow (the VM ended, a marker never came) is left out.
 */
async function probeSteps(g: GuestHandle, steps: readonly ('write' | 'read')[], timeoutMs: number): Promise<NonNullable<ShareRun['cpu']>> {
  const out: NonNullable<ShareRun['cpu']> = {};
  const pid = g.pid;
  if (pid === undefined) return out;
  try {
    for (const step of steps) {
      await g.waitFor(new RegExp(`^SHMARK ${step}\\s*$`, 'm'), timeoutMs);
      const before = sampleThreads(pid);
      await g.waitFor(new RegExp(`^SHRES ${step} `, 'm'), timeoutMs);
      out[step] = cpuPerOp(before, sampleThreads(pid), 1, shareThreadRole(pid));
    }
  } catch {
    // the run's own checks report a VM that ended early
  }
  return out;
}

/** dd of `mib` MiB onto the test host's tmpfs and back: the host-side copies a share's write and read need at least. */
function hostFloor(mib: number): { writeS: number; readS: number } {
  const f = join(BASE, 'floor');
  mkdirSync(BASE, { recursive: true });
  const time = (args: string[]): number => {
    const t0 = performance.now();
    execFileSync('dd', args, { stdio: 'ignore' });
    return (performance.now() - t0) / 1000;
  };
  try {
    return {
      writeS: time(['if=/dev/zero', `of=${f}`, 'bs=1M', `count=${mib}`, 'conv=fsync']),
      readS: time([`if=${f}`, 'of=/dev/null', 'bs=1M']),
    };
  } finally {
    rmSync(f, { force: true });
  }
}

async function oneRun(config: ShareConfigName, rep: number, c: Ctx): Promise<ShareRun> {
  const dir = join(BASE, `${config}-${rep}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  if (c.tar) copyFileSync(c.tarball, join(dir, '.t.tar'));
  writeFileSync(join(dir, '.bench.sh'), shareWorkload(c.mib, c.tar));
  const cmd = `mkdir -p /mnt && ${mountCommand(config)} && cp /mnt/.bench.sh /tmp/b.sh && exec sh /tmp/b.sh || exit 2`;
  const vmm: Vmm = config.startsWith('qemu') ? 'qemu' : 'flintvm';
  const g: GuestHandle = vmm === 'flintvm'
    ? await startFlintvm({
      kernel: c.kernel, initrd: c.initrd, memoryMiB: c.memoryMiB, vcpus: 1,
      shares: [config === 'flintvm-9p' ? { tag: TAG, path: dir, protocol: '9p' }
        : { tag: TAG, path: dir, protocol: 'virtiofs', cache: config === 'flintvm-virtiofs-direct' ? 'never' : 'auto' }],
      extraCmdline: flintvmExtraCmdline(cmd),
    }, c.timeoutS)
    : startQemu(c.qemu!, qemuShareArgs(c, dir, cmd), c.timeoutS);
  const cpu = probeSteps(g, ['write', 'read'], c.timeoutS * 1000);
  const end = await g.end;
  const out = g.output();
  const run: ShareRun = { config, vmm, rep, wallMs: end.wallMs, ok: false, ...parseShareRes(out), cpu: await cpu };
  const big = join(dir, 'big');
  const errs = [
    end.error,
    /^SHDONE/m.test(out.replace(/\r/g, '')) ? undefined : 'no SHDONE from the guest',
    existsSync(big) && statSync(big).size === c.mib * 1048576 ? undefined : `${big} is not ${c.mib} MiB on the host`,
  ].filter(Boolean);
  run.ok = errs.length === 0;
  if (errs.length) {
    run.error = errs.join('; ');
    console.log(`share: ${config} rep ${rep} FAILED: ${run.error}\n--- guest console tail ---\n${consoleTail(out)}\n---`);
  }
  rmSync(dir, { recursive: true, force: true });
  const s = (x?: number) => (x === undefined ? '-' : `${x.toFixed(2)} s`);
  console.log(`share: ${config} rep ${rep}: ${(run.wallMs / 1000).toFixed(1)} s; tar ${s(run.tarS)} (${run.entries ?? '?'} entries), write ${c.mib} MiB ${s(run.writeS)}, read ${s(run.readS)}`);
  return run;
}

/** Entries (files, links, directories and the top directory) of the tarball, as `find x | wc -l` counts them after extraction. */
function tarEntries(tar: string): number {
  const dir = join(BASE, 'count');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  // The test host's busybox tar and find: the same tools as the guest's.
  const out = execFileSync('sh', ['-c', 'tar -xf "$1" -C "$2" && find "$2" | wc -l', 'sh', tar, dir], { encoding: 'utf8' });
  rmSync(dir, { recursive: true, force: true });
  return Number(out.trim());
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      reps: { type: 'string', default: '5' },
      mib: { type: 'string', default: '1024' },
      'memory-mib': { type: 'string', default: '256' },
      configs: { type: 'string', default: SHARE_CONFIGS.join(',') },
      steps: { type: 'string', default: 'tar,dd' },
    },
  });
  const steps = values.steps.split(',');
  for (const s of steps) if (s !== 'tar' && s !== 'dd') throw new Error(`unknown step ${s} (tar, dd)`);
  const reps = Number(values.reps);
  const mib = Number(values.mib);
  const memoryMiB = Number(values['memory-mib']);
  const configs = values.configs.split(',') as ShareConfigName[];
  for (const c of configs) if (!SHARE_CONFIGS.includes(c)) throw new Error(`unknown config ${c} (${SHARE_CONFIGS.join(', ')})`);
  const { dir, kernel, busyboxInitrd } = guestFiles();
  const tarball = join(dir, SHARE_BENCH_TARBALL);
  if (!existsSync(tarball)) throw new Error(`${tarball} missing (bench/share.ts stages it)`);
  const loadavgStart = readFileSync('/proc/loadavg', 'utf8').trim();
  const qemu = configs.some((x) => x.startsWith('qemu')) ? unpackQemu(dir) : null;
  const entries = tarEntries(tarball);
  const c: Ctx = { kernel, initrd: busyboxInitrd, memoryMiB, mib, tarball, tar: steps.includes('tar'), qemu, timeoutS: 900 + mib };
  console.log(`share: ${reps} reps of ${configs.join(', ')}; tarball ${(statSync(tarball).size / 1048576).toFixed(1)} MiB, ${entries} entries; ${mib} MiB write/read`);
  const runs: ShareRun[] = [];
  const floors: { writeS: number; readS: number }[] = [];
  for (let rep = 0; rep < reps; rep++) {
    if (steps.includes('dd')) {
      floors.push(hostFloor(mib));
      console.log(`share: host floor rep ${rep}: dd ${mib} MiB onto tmpfs ${floors.at(-1)!.writeS.toFixed(2)} s, back ${floors.at(-1)!.readS.toFixed(2)} s`);
    }
    // Rotate the order, so slow drift of the host hits every configuration alike.
    const order = configs.map((_, i) => configs[(i + rep) % configs.length]!);
    for (const config of order) runs.push(await oneRun(config, rep, c));
  }
  const result: ShareInnerResult = {
    reps, mib, memoryMiB, tarball: { bytes: statSync(tarball).size, entries },
    qemu: qemu ? { argv: ['qemu-system-x86_64', ...qemuShareArgs(c, join(BASE, 'DIR'), '<command>')], version: qemu.version } : null,
    runs, ...(floors.length ? { hostFloor: floors } : {}), testHost: testHostInfo(loadavgStart),
  };
  console.log(SHARE_MARKER + JSON.stringify(result));
}

runMain(import.meta.url, 'share-inner', main);
