/**
 * Start density on the local /dev/kvm: N tiny VMs (1 vCPU, 128 MiB; guest:
 * COM1 byte, boot timer, exit) started at once in one warm node process, for
 * N = 8 and 32, several repetitions each.
 *
 * Per VM: time to first instruction (`firstRun - startCalled`: vCPU 0 entered
 * KVM_RUN) and to the boot timer (`guestInit - startCalled`). Per batch:
 * VMs/second = N / (last boot timer - the moment the batch was started).
 * p50/p99 are nearest-rank over all VMs of all repetitions; VMs/s is the median
 * over repetitions.
 *
 * The peer: N QEMU microvm processes spawned at once with the same guest; per
 * VM, spawn -> the guest's COM1 byte on its stdout (QEMU has no boot timer).
 *
 * Usage: node dist/bench/density.js [--counts 8,32] [--reps 5] [--json]
 */
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { summarize, type Summary } from './stats.js';
import { isMain, withTimeout, loadInfo, monoMs, percentile, round, runTimed, which, type LoadInfo } from './common.js';
import { qemuTinyArgs, SERIAL_MARKER, writeTinyGuests } from './tiny-guest.js';
import { MicroVM } from '../lib/index.js';

const MEMORY_MIB = 128;
const now = () => performance.timeOrigin + performance.now();

export interface DensityPoint {
  vms: number;
  reps: number;
  flintvm: {
    vmsPerSecond: Summary;
    firstRunMs: { p50: number; p99: number; max: number };
    guestInitMs: { p50: number; p99: number; max: number };
    /** Batch start -> every VM released (ms), median over repetitions. */
    allReleasedMs: Summary;
  };
  qemu?: {
    vmsPerSecond: Summary;
    firstOutputMs: { p50: number; p99: number; max: number };
  };
  /** flintvm VMs/s / QEMU VMs/s (medians), and flintvm p50 boot timer / QEMU p50 first output. */
  ratios?: { vmsPerSecond: number; p50ToGuest: number; p99ToGuest: number };
}

export interface DensityResult {
  points: DensityPoint[];
  qemuError?: string;
  load: { before: LoadInfo; after: LoadInfo };
}

const pct = (xs: number[]) => ({ p50: round(percentile(xs, 50), 2), p99: round(percentile(xs, 99), 2), max: round(Math.max(...xs), 2) });

async function flintvmBatch(kernel: string, n: number): Promise<{ vmsPerSecond: number; firstRun: number[]; guestInit: number[]; allReleased: number }> {
  const vms = Array.from({ length: n }, () => new MicroVM({ kernel, memoryMiB: MEMORY_MIB, vcpus: 1, bootProtocol: 'pvh', console: 'none' }));
  const t0 = now();
  // Inside the TCG test host every worker start costs a second or more of emulated CPU.
  const limit = (30_000 + n * 2_000) * (process.env.FLINTVM_IN_TEST_HOST ? 10 : 1);
  await withTimeout(Promise.all(vms.map((v) => v.start())), limit, `starting ${n} VMs`);
  const exits = await withTimeout(Promise.all(vms.map((v) => v.wait())), limit, `${n} VMs booting and exiting`);
  const allReleased = now() - t0;
  for (const e of exits) if (e.reason !== 'guest-exit') throw new Error(`density: a VM ended ${e.reason}`);
  const firstRun = exits.map((e) => e.timings.firstRun! - e.timings.startCalled!);
  const guestInit = exits.map((e) => e.timings.guestInit! - e.timings.startCalled!);
  const last = Math.max(...exits.map((e) => e.timings.guestInit!));
  return { vmsPerSecond: (n * 1000) / (last - t0), firstRun, guestInit, allReleased };
}

async function qemuBatch(qemu: string, kernel: string, n: number): Promise<{ vmsPerSecond: number; firstOutput: number[] }> {
  const t0 = monoMs();
  const runs = await Promise.all(Array.from({ length: n }, () => runTimed(qemu, qemuTinyArgs(kernel, MEMORY_MIB), { marker: SERIAL_MARKER, timeoutMs: 60_000 })));
  for (const r of runs) if (r.markerAt === undefined || r.code !== 1) throw new Error(`QEMU exited ${r.code ?? r.signal} without the marker: ${r.stderr.slice(-500)}`);
  const last = Math.max(...runs.map((r) => r.markerAt!));
  return { vmsPerSecond: (n * 1000) / (last - t0), firstOutput: runs.map((r) => r.markerAt! - r.spawnAt) };
}

export async function benchDensity(counts = [8, 32], reps = 5, log: (s: string) => void = () => undefined): Promise<DensityResult> {
  const before = loadInfo();
  const g = writeTinyGuests();
  const qemu = which('qemu-system-x86_64');
  let qemuError: string | undefined = qemu ? undefined : 'qemu-system-x86_64 is not installed';
  // Warm the process: modules, koffi types and the kick signal handler.
  const w = new MicroVM({ kernel: g.bootExit, memoryMiB: MEMORY_MIB, bootProtocol: 'pvh', console: 'none' });
  await w.start();
  await w.wait();
  const points: DensityPoint[] = [];
  for (const n of counts) {
    const fr: number[] = [];
    const gi: number[] = [];
    const rate: number[] = [];
    const rel: number[] = [];
    const qRate: number[] = [];
    const qOut: number[] = [];
    for (let i = 0; i < reps; i++) {
      const b = await flintvmBatch(g.bootExit, n);
      fr.push(...b.firstRun);
      gi.push(...b.guestInit);
      rate.push(round(b.vmsPerSecond, 2));
      rel.push(round(b.allReleased, 1));
      if (qemu && !qemuError) {
        try {
          const q = await qemuBatch(qemu, g.bootExit, n);
          qRate.push(round(q.vmsPerSecond, 2));
          qOut.push(...q.firstOutput);
        } catch (e) {
          qemuError = (e as Error).message;
        }
      }
    }
    log(`${n} VMs x ${reps} done`);
    const p: DensityPoint = {
      vms: n,
      reps,
      flintvm: { vmsPerSecond: summarize(rate), firstRunMs: pct(fr), guestInitMs: pct(gi), allReleasedMs: summarize(rel) },
    };
    if (qRate.length === reps) {
      p.qemu = { vmsPerSecond: summarize(qRate), firstOutputMs: pct(qOut) };
      p.ratios = {
        vmsPerSecond: round(p.flintvm.vmsPerSecond.median / p.qemu.vmsPerSecond.median, 3),
        p50ToGuest: round(p.flintvm.guestInitMs.p50 / p.qemu.firstOutputMs.p50, 3),
        p99ToGuest: round(p.flintvm.guestInitMs.p99 / p.qemu.firstOutputMs.p99, 3),
      };
    }
    points.push(p);
  }
  return { points, ...(qemuError ? { qemuError } : {}), load: { before, after: loadInfo() } };
}

export function formatDensity(r: DensityResult): string[] {
  const lines = ['Start density: N tiny VMs started at once (flintvm: one warm process; QEMU: N processes)'];
  for (const p of r.points) {
    const f = p.flintvm;
    lines.push(`  ${String(p.vms).padStart(2)} VMs x ${p.reps}: flintvm ${f.vmsPerSecond.median.toFixed(1)} VMs/s [${f.vmsPerSecond.min.toFixed(1)}..${f.vmsPerSecond.max.toFixed(1)}], ` +
      `first KVM_RUN p50 ${f.firstRunMs.p50.toFixed(0)} / p99 ${f.firstRunMs.p99.toFixed(0)} ms, boot timer p50 ${f.guestInitMs.p50.toFixed(0)} / p99 ${f.guestInitMs.p99.toFixed(0)} ms, all released ${f.allReleasedMs.median.toFixed(0)} ms`);
    if (p.qemu) {
      lines.push(`           QEMU    ${p.qemu.vmsPerSecond.median.toFixed(1)} VMs/s [${p.qemu.vmsPerSecond.min.toFixed(1)}..${p.qemu.vmsPerSecond.max.toFixed(1)}], first output p50 ${p.qemu.firstOutputMs.p50.toFixed(0)} / p99 ${p.qemu.firstOutputMs.p99.toFixed(0)} ms`);
      lines.push(`           ratio flintvm/QEMU: VMs/s ${p.ratios!.vmsPerSecond.toFixed(2)}, p50 to guest ${p.ratios!.p50ToGuest.toFixed(2)}, p99 to guest ${p.ratios!.p99ToGuest.toFixed(2)}`);
    }
  }
  if (r.qemuError) lines.push(`  QEMU: not measured (${r.qemuError})`);
  lines.push(`  load before ${r.load.before.loadavg.join(' ')}, after ${r.load.after.loadavg.join(' ')}`);
  return lines;
}

if (isMain(import.meta.url)) {
  const { values } = parseArgs({ options: { counts: { type: 'string' }, reps: { type: 'string' }, json: { type: 'boolean' } } });
  const r = await benchDensity((values.counts ?? '8,32').split(',').map(Number), Number(values.reps ?? 5), (s) => process.stderr.write(`density: ${s}\n`));
  if (values.json) console.log(JSON.stringify(r));
  else console.log(formatDensity(r).join('\n'));
}
