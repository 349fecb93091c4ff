/**
 * virtio-blk: flintvm against QEMU microvm's virtio-blk-device, on the same
 * guest (vmlinux + initramfs-bench.cpio.gz, 1 vCPU, 256 MiB), the same raw
 * image and the same host, in the same run, with fio in the guest
 * (libaio, O_DIRECT): sequential read/write in 1 MiB blocks and random
 * read/write in 4 KiB blocks, at iodepth 1 and 16, then the iodepth 1 jobs
 * again with every code path warm (blk-inner.ts `blkJobs` says why).
 *
 * It all runs INSIDE the real-KVM test host (test/hosts/run.ts), because the
 * local /dev/kvm cannot boot Linux (ENVIRONMENT.md §1). That host is a Linux
 * under QEMU's TCG (software) CPU, so everything in it -- both VMMs, the host
 * side of every exit, the guest itself -- runs ~100x slower than on real
 * hardware: the absolute figures say nothing about real throughput; only
 * the flintvm/QEMU ratios, measured side by side, mean something. The image
 * lives on the test host's tmpfs, so host-side I/O is memory copies.
 *
 * This half runs outside: it gets the guest images, bundles this machine's
 * qemu-system-x86_64 with its libraries and the microvm firmware (the test
 * host image has no QEMU), carries them in as the test host's guest dir,
 * runs bench/blk-inner.ts there, parses its result line, prints medians and
 * ratios, and writes bench/results/blk.json.
 *
 * Usage: node dist/bench/blk.js [--reps 5] [--runtime 5] [--ramp 1] [--depths 1,16]
 *          [--no-again] [--no-qemu] [--out bench/results/blk.json] [--timeout-min 90] [--json]
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir, cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { defaultGuestImages } from '../lib/guest-images.js';
import { runInTestHost, findProjectDir } from '../test/hosts/run.js';
import { summarize, type Summary } from './stats.js';
import { RESULT_MARKER, blkJobs, type BlkInnerResult, type JobResult } from './blk-inner.js';
import { findQemu, qemuBundle } from './test-host-bench.js';

const METRICS = ['bwKiBs', 'iops', 'clatUs', 'latUs'] as const;
type Metric = (typeof METRICS)[number];

export interface BlkJobSummary {
  job: string;
  flintvm: Record<Metric, Summary> | null;
  qemu: Record<Metric, Summary> | null;
  /** flintvm median / QEMU median, per metric (> 1 is better for bw/iops, < 1 is better for latency). */
  ratio: Record<Metric, number> | null;
}

export interface BlkResult {
  date: string;
  summary: BlkJobSummary[];
  inner: BlkInnerResult;
  outerHost: { loadavgBefore: number[]; loadavgAfter: number[]; uptimeBefore: string; uptimeAfter: string; cpus: number; qemu: string | null };
  testHostRun: { totalMs: number; bootMs: number; overlayBytes: number };
  notes: string[];
}

function fmt(v: number, digits: number): string {
  return Number.isFinite(v) ? v.toFixed(digits) : '-';
}

export function summarizeBlk(inner: BlkInnerResult): BlkJobSummary[] {
  return inner.jobs.map((j) => {
    const per = (vmm: 'flintvm' | 'qemu'): Record<Metric, Summary> | null => {
      const rs = inner.runs.filter((r) => r.vmm === vmm && r.jobs[j.name]).map((r) => r.jobs[j.name]!);
      if (rs.length === 0) return null;
      return Object.fromEntries(METRICS.map((m) => [m, summarize(rs.map((r: JobResult) => r[m]))])) as Record<Metric, Summary>;
    };
    const f = per('flintvm');
    const q = per('qemu');
    const ratio = f && q ? (Object.fromEntries(METRICS.map((m) => [m, f[m].median / q[m].median])) as Record<Metric, number>) : null;
    return { job: j.name, flintvm: f, qemu: q, ratio };
  });
}

export function formatBlkTable(summary: readonly BlkJobSummary[]): string {
  const rows: string[][] = [['job', 'n', 'flintvm MB/s', 'QEMU MB/s', 'ratio', 'flintvm IOPS', 'QEMU IOPS', 'ratio', 'flintvm clat us', 'QEMU clat us', 'ratio', 'flintvm lat us', 'QEMU lat us', 'ratio']];
  for (const s of summary) {
    const mb = (x: Summary | undefined) => (x ? fmt((x.median * 1024) / 1e6, 1) : '-');
    const n = `${s.flintvm?.iops.n ?? 0}/${s.qemu?.iops.n ?? 0}`;
    rows.push([
      s.job, n,
      mb(s.flintvm?.bwKiBs), mb(s.qemu?.bwKiBs), s.ratio ? fmt(s.ratio.bwKiBs, 2) : '-',
      s.flintvm ? fmt(s.flintvm.iops.median, 0) : '-', s.qemu ? fmt(s.qemu.iops.median, 0) : '-', s.ratio ? fmt(s.ratio.iops, 2) : '-',
      s.flintvm ? fmt(s.flintvm.clatUs.median, 0) : '-', s.qemu ? fmt(s.qemu.clatUs.median, 0) : '-', s.ratio ? fmt(s.ratio.clatUs, 2) : '-',
      s.flintvm ? fmt(s.flintvm.latUs.median, 0) : '-', s.qemu ? fmt(s.qemu.latUs.median, 0) : '-', s.ratio ? fmt(s.ratio.latUs, 2) : '-',
    ]);
  }
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ')).join('\n');
}

export interface BlkOptions {
  reps?: number;
  runtimeS?: number;
  rampS?: number;
  depths?: number[];
  /** Run the first depth's jobs again at the end of each boot (default true). */
  again?: boolean;
  noQemu?: boolean;
  timeoutMin?: number;
  /** Receives the test host's console (progress lines). Default: process.stderr. */
  onOutput?: (chunk: string) => void;
}

export async function benchBlk(o: BlkOptions = {}): Promise<BlkResult> {
  const reps = o.reps ?? 5;
  const runtimeS = o.runtimeS ?? 5;
  const rampS = o.rampS ?? 1;
  const depths = o.depths ?? [1, 16];
  const imgs = await defaultGuestImages({ quiet: true });
  if (!existsSync(imgs.benchInitrd)) throw new Error(`${imgs.benchInitrd} missing: rebuild the guest (bash guest/build.sh)`);
  const qemu = o.noQemu ? null : findQemu();
  if (!o.noQemu && !qemu) throw new Error('qemu-system-x86_64 not on PATH (apt-get install qemu-system-x86), or pass --no-qemu');

  const stage = mkdtempSync(join(tmpdir(), 'flintvm-blk-'));
  try {
    // The test host carries the top-level files of this directory in as /work/guest.
    symlinkSync(imgs.vmlinux, join(stage, 'vmlinux'));
    symlinkSync(imgs.benchInitrd, join(stage, 'initramfs-bench.cpio.gz'));
    if (qemu) qemuBundle(qemu, stage);

    const args = ['--reps', String(reps), '--runtime', String(runtimeS), '--ramp', String(rampS), '--depths', depths.join(',')];
    if (!qemu) args.push('--no-qemu');
    if (o.again === false) args.push('--no-again');
    const uptimeBefore = execFileSync('uptime', { encoding: 'utf8' }).trim();
    const loadavgBefore = loadavg();
    const perBootS = blkJobs(depths, o.again !== false).length * (runtimeS + rampS + 4) + 60;
    const r = await runInTestHost({
      arch: 'x86_64',
      command: ['node', 'dist/bench/blk-inner.js', ...args],
      guestDir: stage,
      timeoutMs: (o.timeoutMin ?? Math.ceil((reps * (qemu ? 2 : 1) * perBootS) / 60) + 15) * 60_000,
      onOutput: o.onOutput ?? ((c) => process.stderr.write(c)),
    });
    const loadavgAfter = loadavg();
    const uptimeAfter = execFileSync('uptime', { encoding: 'utf8' }).trim();
    const line = r.commandOutput.split('\n').find((l) => l.startsWith(RESULT_MARKER));
    if (!line) throw new Error(`no result from the test host (exit ${r.exitCode}${r.error ? `: ${r.error}` : ''})`);
    const inner = JSON.parse(line.slice(RESULT_MARKER.length)) as BlkInnerResult;
    const failed = inner.runs.filter((x) => !x.ok);
    const notes = [
      'Measured inside the real-KVM test host: a Linux L1 under QEMU TCG (software CPU emulating AMD SVM), 1 vCPU. ' +
        'Everything there runs ~100x slower than on hardware; only the flintvm/QEMU ratios are meaningful.',
      'Image: raw, on the test host\'s tmpfs, filled with random data first. flintvm: buffered preadv/pwritev, fdatasync on flush. ' +
        'QEMU: cache=writeback,aio=threads (buffered, thread pool, fdatasync on flush).',
      'fio in the guest: libaio, direct=1, time_based, terse v3; clat = completion latency mean, lat = submission + completion.',
      ...failed.map((x) => `${x.vmm} rep ${x.rep} failed: ${x.error}`),
    ];
    return {
      date: new Date().toISOString(),
      summary: summarizeBlk(inner),
      inner,
      outerHost: { loadavgBefore, loadavgAfter, uptimeBefore, uptimeAfter, cpus: cpus().length, qemu: qemu ? execFileSync(qemu, ['--version'], { encoding: 'utf8' }).split('\n')[0]!.trim() : null },
      testHostRun: { totalMs: r.totalMs, bootMs: r.bootMs, overlayBytes: r.overlayBytes },
      notes,
    };
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      reps: { type: 'string', default: '5' },
      runtime: { type: 'string', default: '5' },
      ramp: { type: 'string', default: '1' },
      depths: { type: 'string', default: '1,16' },
      'no-again': { type: 'boolean', default: false },
      'no-qemu': { type: 'boolean', default: false },
      out: { type: 'string' },
      'timeout-min': { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  const res = await benchBlk({
    reps: Number(values.reps), runtimeS: Number(values.runtime), rampS: Number(values.ramp),
    depths: values.depths.split(',').map(Number), again: !values['no-again'], noQemu: values['no-qemu'],
    timeoutMin: values['timeout-min'] ? Number(values['timeout-min']) : undefined,
  });
  const out = values.out ?? join(findProjectDir(dirname(fileURLToPath(import.meta.url))), 'bench/results/blk.json');
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(res, null, 2) + '\n');
  if (values.json) {
    console.log(JSON.stringify(res, null, 2));
    return;
  }
  console.log(`\nvirtio-blk, fio in the guest, medians of ${res.inner.reps} boots per VMM (${res.inner.runtimeS} s per job after ${res.inner.rampS} s ramp)`);
  console.log('INSIDE the TCG-emulated real-KVM test host: absolute numbers are ~100x below hardware; compare the ratios (flintvm/QEMU).\n');
  console.log(formatBlkTable(res.summary));
  console.log(
    '\nMB/s = 10^6 B/s; n = boots per VMM with a result. Guest-observed latency means (us): clat = fio completion latency\n' +
      '(io_submit returned -> completion), lat = slat + clat. slat covers io_submit, which includes the virtqueue kick; on this\n' +
      '1-vCPU test host the VMM can serve the request before io_submit returns, showing a small clat and a large slat: compare lat.',
  );
  if (res.inner.qemu) console.log(`QEMU: ${res.inner.qemu.version}\n  ${res.inner.qemu.argv.map((a) => (a.length > 120 ? a.slice(0, 117) + '...' : a)).join(' ')}`);
  console.log(`test host load: ${res.inner.testHost.loadavgStart} -> ${res.inner.testHost.loadavgEnd}`);
  console.log(`this machine: ${res.outerHost.uptimeBefore}\n          -> ${res.outerHost.uptimeAfter}`);
  for (const n of res.notes.slice(3)) console.log(`note: ${n}`);
  console.log(`\nwrote ${out}`);
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  main().catch((e: unknown) => {
    console.error(`blk: ${(e as Error).stack ?? String(e)}`);
    process.exit(1);
  });
}
