/**
 * Shared directories: flintvm's virtio-9p and virtio-fs shares against QEMU
 * microvm's virtio-9p-device (`-fsdev local,security_model=none`), on the same
 * kind of host directory (the test host's tmpfs /tmp), same guest, same test
 * host run: extraction of a real tarball (a Debian package's data archive,
 * decompressed here so the guest's time is filesystem work, not xz), and a
 * sequential write then read of `--mib` MiB with dd, caches dropped between
 * (bench/share-inner.ts has the details). Ratios: flintvm-9p / QEMU-9p and
 * flintvm-virtiofs / QEMU-9p (QEMU 7.2 has virtio-fs only with an external
 * virtiofsd, which Debian 12 does not ship with it).
 *
 * Runs INSIDE the real-KVM test host (a Linux on QEMU's TCG CPU): absolute
 * figures are far below hardware; compare the ratios.
 *
 * `--steps dd` times only the write and read (no extraction: QEMU's 9p takes minutes a run at it).
 *
 * Usage: node dist/bench/share.js [--reps 5] [--mib 1024] [--package perl-modules-5.36] [--steps tar,dd] [--no-qemu] [--json]
 */
import { debianTarball } from './share-fixture.js';
import { benchMain, runInnerBench, type InnerRun } from './test-host-bench.js';
import { SHARE_BENCH_TARBALL, SHARE_MARKER, type ShareInnerResult, type ShareRun } from './share-inner.js';
import { summarize, type Summary } from './stats.js';
import type { RoleCpu } from './thread-cpu.js';
import { compareVmms, formatComparison, type Comparison, type FigureSpec } from './vmm-compare.js';

export interface ShareResult extends InnerRun<ShareInnerResult> {
  date: string;
  package: string;
  /** flintvm-9p vs QEMU-9p, then flintvm-virtiofs (cache 'auto', then 'never') vs QEMU-9p. */
  ninep: Comparison[];
  virtiofs: Comparison[];
  /** Absent in results from before the configuration existed. */
  virtiofsDirect?: Comparison[];
  /** On the test host itself (no VM): dd of `mib` MiB onto its tmpfs and back, seconds; absent in older results. */
  hostFloor?: { write: Summary; read: Summary };
  notes: string[];
}

export async function benchShare(o: { reps: number; mib: number; pkg: string; noQemu: boolean; steps?: string }): Promise<ShareResult> {
  const tb = debianTarball(o.pkg);
  const configs = `flintvm-9p,flintvm-virtiofs,flintvm-virtiofs-direct${o.noQemu ? '' : ',qemu-9p'}`;
  const boots = o.reps * configs.split(',').length;
  const r = await runInnerBench<ShareInnerResult>({
    command: ['dist/bench/share-inner.js', '--reps', String(o.reps), '--mib', String(o.mib), '--configs', configs, '--steps', o.steps ?? 'tar,dd'],
    marker: SHARE_MARKER, qemu: !o.noQemu, extraFiles: { [SHARE_BENCH_TARBALL]: tb.tar },
    // Measured: a boot with tzdata and 1 GiB took 1-4 minutes (9p extraction is the slow part).
    timeoutMs: (boots * (240 + o.mib / 4) + 600) * 1000,
  });
  const mibs = r.inner.mib;
  const figures: FigureSpec<ShareRun>[] = [
    ['tar -x + sync', 's', 'lower', (x) => x.tarS],
    [`write ${mibs} MiB (dd, fsync)`, 's', 'lower', (x) => x.writeS],
    [`read ${mibs} MiB (dd, cold cache)`, 's', 'lower', (x) => x.readS],
    ['write throughput', 'MiB/s', 'higher', (x) => (x.writeS ? mibs / x.writeS : undefined)],
    ['read throughput', 'MiB/s', 'higher', (x) => (x.readS ? mibs / x.readS : undefined)],
    [`guest floor: dd ${mibs} MiB /dev/zero -> /dev/null`, 's', 'lower', (x) => x.zeroS],
    ...cpuFigures('write'),
    ...cpuFigures('read'),
  ];
  const side = (x: ShareRun) => x.config;
  const failed = r.inner.runs.filter((x) => !x.ok);
  const floors = r.inner.hostFloor ?? [];
  return {
    ...r,
    date: new Date().toISOString(),
    package: tb.package,
    ninep: compareVmms(r.inner.runs, figures, side, 'flintvm-9p', 'qemu-9p'),
    virtiofs: compareVmms(r.inner.runs, figures, side, 'flintvm-virtiofs', 'qemu-9p'),
    virtiofsDirect: compareVmms(r.inner.runs, figures, side, 'flintvm-virtiofs-direct', 'qemu-9p'),
    ...(floors.length ? { hostFloor: { write: summarize(floors.map((f) => f.writeS)), read: summarize(floors.map((f) => f.readS)) } } : {}),
    notes: [
      'Inside the real-KVM test host (Linux on QEMU TCG, 1 vCPU); the shared directory is on its tmpfs /tmp; guest 1 vCPU, ' +
        `${r.inner.memoryMiB} MiB, busybox initramfs; times by the guest's clock (/proc/uptime, 10 ms).`,
      `Tarball: ${tb.package}'s data.tar (decompressed on the build machine), ${(r.inner.tarball.bytes / 1048576).toFixed(1)} MiB, ` +
        `${r.inner.tarball.entries} entries; extracted from the guest's RAM with busybox tar.`,
      '9p: trans=virtio,version=9p2000.L,msize=262144, default cache (none), both VMMs; QEMU -fsdev local,security_model=none. virtio-fs: flintvm only, default mount, with the share\'s cache \'auto\' (guest page cache) and \'never\' (FOPEN_DIRECT_IO).',
      ...failed.map((x) => `${x.config} rep ${x.rep} failed: ${x.error}`),
    ],
  };
}

/** CPU seconds of one role over a step (user + sys, or guest time alone), from the run's thread samples. */
function roleS(x: ShareRun, step: 'write' | 'read', roles: readonly string[], get: (c: RoleCpu) => number): number | undefined {
  const all = x.cpu?.[step];
  if (!all) return undefined;
  return roles.reduce((a, k) => a + (all[k] ? get(all[k]) : 0), 0) / 1e6;
}

/** Where a step's CPU went in the VMM's process, by thread role (bench/share-inner.ts samples them). */
function cpuFigures(step: 'write' | 'read'): FigureSpec<ShareRun>[] {
  const nonGuest = (c: RoleCpu) => c.userUs - c.guestUs + c.sysUs;
  return [
    [`${step}: CPU of the VMM's process, guest time included`, 's', 'lower', (x) => roleS(x, step, ['vcpu', 'io', 'main', 'helpers'], (c) => c.userUs + c.sysUs)],
    [`${step}:   vCPU thread, in the guest`, 's', 'lower', (x) => roleS(x, step, ['vcpu'], (c) => c.guestUs)],
    [`${step}:   vCPU thread, outside the guest (user + sys)`, 's', 'lower', (x) => roleS(x, step, ['vcpu'], nonGuest)],
    [`${step}:   the other threads, user (device emulation)`, 's', 'lower', (x) => roleS(x, step, ['io', 'main', 'helpers'], (c) => c.userUs - c.guestUs)],
    [`${step}:   the other threads, sys (file copies, eventfds)`, 's', 'lower', (x) => roleS(x, step, ['io', 'main', 'helpers'], (c) => c.sysUs)],
  ];
}

export function formatShare(r: ShareResult): string[] {
  return [
    `Shared directories, ${r.inner.reps} boots per configuration, INSIDE the TCG test host: compare the ratios`,
    '  flintvm virtio-9p vs QEMU virtio-9p-device:',
    ...formatComparison(r.ninep, 'QEMU-9p'),
    '  flintvm virtio-fs vs QEMU virtio-9p-device:',
    ...formatComparison(r.virtiofs, 'QEMU-9p'),
    ...(r.virtiofsDirect ? ["  flintvm virtio-fs, cache 'never' (direct I/O) vs QEMU virtio-9p-device:", ...formatComparison(r.virtiofsDirect, 'QEMU-9p')] : []),
    ...(r.hostFloor ? [`  host floor (the test host itself, no VM): dd ${r.inner.mib} MiB onto its tmpfs ${r.hostFloor.write.median.toFixed(2)} s, back ${r.hostFloor.read.median.toFixed(2)} s (medians of ${r.hostFloor.write.n})`] : []),
    ...r.notes.map((n) => `  note: ${n}`),
    `  test host load ${r.inner.testHost.loadavgStart} -> ${r.inner.testHost.loadavgEnd}`,
  ];
}

await benchMain(import.meta.url, { reps: '5', mib: '1024', package: 'perl-modules-5.36', steps: 'tar,dd' },
  (v, noQemu) => benchShare({ reps: Number(v.reps), mib: Number(v.mib), pkg: v.package!, noQemu, steps: v.steps! }), formatShare);
