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
import { compareVmms, formatComparison, type Comparison, type FigureSpec } from './vmm-compare.js';

export interface ShareResult extends InnerRun<ShareInnerResult> {
  date: string;
  package: string;
  /** flintvm-9p vs QEMU-9p, then flintvm-virtiofs (cache 'auto', then 'never') vs QEMU-9p. */
  ninep: Comparison[];
  virtiofs: Comparison[];
  /** Absent in results from before the configuration existed. */
  virtiofsDirect?: Comparison[];
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
  ];
  const side = (x: ShareRun) => x.config;
  const failed = r.inner.runs.filter((x) => !x.ok);
  return {
    ...r,
    date: new Date().toISOString(),
    package: tb.package,
    ninep: compareVmms(r.inner.runs, figures, side, 'flintvm-9p', 'qemu-9p'),
    virtiofs: compareVmms(r.inner.runs, figures, side, 'flintvm-virtiofs', 'qemu-9p'),
    virtiofsDirect: compareVmms(r.inner.runs, figures, side, 'flintvm-virtiofs-direct', 'qemu-9p'),
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

export function formatShare(r: ShareResult): string[] {
  return [
    `Shared directories, ${r.inner.reps} boots per configuration, INSIDE the TCG test host: compare the ratios`,
    '  flintvm virtio-9p vs QEMU virtio-9p-device:',
    ...formatComparison(r.ninep, 'QEMU-9p'),
    '  flintvm virtio-fs vs QEMU virtio-9p-device:',
    ...formatComparison(r.virtiofs, 'QEMU-9p'),
    ...(r.virtiofsDirect ? ["  flintvm virtio-fs, cache 'never' (direct I/O) vs QEMU virtio-9p-device:", ...formatComparison(r.virtiofsDirect, 'QEMU-9p')] : []),
    ...r.notes.map((n) => `  note: ${n}`),
    `  test host load ${r.inner.testHost.loadavgStart} -> ${r.inner.testHost.loadavgEnd}`,
  ];
}

await benchMain(import.meta.url, { reps: '5', mib: '1024', package: 'perl-modules-5.36', steps: 'tar,dd' },
  (v, noQemu) => benchShare({ reps: Number(v.reps), mib: Number(v.mib), pkg: v.package!, noQemu, steps: v.steps! }), formatShare);
