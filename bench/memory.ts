/**
 * Host memory per running microVM (local /dev/kvm): k tiny VMs (1 vCPU,
 * 128 MiB, guest RAM untouched) running at once in this one node process, for
 * k = 1, 8, 32. Per VM = (process memory with k VMs - the same process with
 * none) / k, from VmRSS (/proc/self/status) and PSS (/proc/self/smaps_rollup).
 * flintvm's PSS/VM is the growth of Pss_Anon + Pss_Shmem: a VM maps no new
 * files once one VM has run (the baseline), and the file part of node's PSS
 * moves whenever another node process on the machine starts or ends (other
 * engineers' jobs), which swamped the figure in trials.
 *
 * The peer: k QEMU microvm processes running the same guest; per VM = the sum
 * of their RSS (or whole PSS) / k. PSS is the fair sum for separate processes
 * (their shared libraries are split between them); RSS counts them in every
 * process.
 *
 * The guest writes COM1 and the boot timer, then halts with interrupts off, so
 * a VM is "running" (vCPU in KVM_RUN) without burning a CPU on this shared
 * 2-core machine. `--guest spin` uses `jmp $` instead (same memory, busy CPUs).
 *
 * Each figure is the median of `--reps` repetitions (default 5; memory is
 * steady, the spread is printed).
 *
 * Usage: node [--expose-gc] dist/bench/memory.js [--counts 1,8,32] [--reps 5] [--guest halt|spin] [--json]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { parseArgs } from 'node:util';
import { isMain, withTimeout, loadInfo, procStatusKiB, procStatusNumber, round, sleep, smapsRollupKiB, which, type LoadInfo } from './common.js';
import { qemuTinyArgs, SERIAL_MARKER, writeTinyGuests } from './tiny-guest.js';
import { MicroVM } from '../lib/index.js';
import { summarize } from './stats.js';

const MEMORY_MIB = 128;
const SETTLE_MS = 300;

export interface MemoryPoint {
  vms: number;
  /** Repetitions behind the medians. */
  reps: number;
  /** min..max of the per-VM PSS over the repetitions (MiB). */
  pssPerVmRange: [number, number];
  /** Added per VM (MiB). */
  rssPerVmMiB: number;
  pssPerVmMiB: number;
  /** The whole process (flintvm) or all k processes (QEMU), MiB. */
  rssTotalMiB: number;
  pssTotalMiB: number;
  /** OS threads of the process (flintvm) or of all processes (QEMU). */
  threads: number;
}

export interface MemoryResult {
  guest: 'halt' | 'spin';
  memoryMiB: number;
  flintvm: {
    baseline: { rssMiB: number; pssMiB: number; pssAnonMiB: number; threads: number };
    points: MemoryPoint[];
    /** The 1-VM point of the first repetition (a fresh process; later repetitions keep freed heap and malloc arenas). */
    fresh1?: MemoryPoint;
  };
  qemu: { points: MemoryPoint[] } | { error: string };
  /** flintvm per-VM PSS / QEMU per-VM PSS, per k. */
  ratios: Array<{ vms: number; pss: number; rss: number }>;
  /**
   * A whole flintvm process running one VM (node + flintvm + the VM; first repetition, when the process
   * is fresh) vs one QEMU process. RSS is the steady one; flintvm's whole PSS depends on how many other
   * node processes share node's pages.
   */
  singleProcessRatio?: { rss: number; pss: number };
  load: { before: LoadInfo; after: LoadInfo };
}

const mib = (kib: number) => round(kib / 1024, 1);
const gc = () => (globalThis as { gc?: () => void }).gc?.();

function selfSample(): { rss: number; pss: number; pssAnon: number; threads: number } {
  const { pss, pssAnon } = smapsRollupKiB('self');
  return { rss: procStatusKiB('VmRSS'), pss, pssAnon, threads: procStatusNumber('Threads') };
}

async function settle(): Promise<void> {
  gc();
  await sleep(SETTLE_MS);
  gc();
}

const INIT_TIMEOUT_MS = 60_000;

async function startRunning(kernel: string): Promise<MicroVM> {
  const vm = new MicroVM({ kernel, memoryMiB: MEMORY_MIB, vcpus: 1, bootProtocol: 'pvh', console: 'none' });
  let timer: NodeJS.Timeout | undefined;
  const init = new Promise<void>((resolve, reject) => {
    vm.once('guest-init', () => resolve());
    void vm.wait().then((e) => reject(new Error(`a VM ended (${e.reason}) before its boot timer`)));
    timer = setTimeout(() => reject(new Error(`a VM did not reach its boot timer in ${INIT_TIMEOUT_MS / 1000} s (state ${vm.state})`)), INIT_TIMEOUT_MS);
  });
  try {
    await withTimeout(vm.start(), INIT_TIMEOUT_MS, 'MicroVM.start()');
    await init;
  } catch (e) {
    await vm.stop().catch(() => undefined);
    throw e;
  } finally {
    clearTimeout(timer);
  }
  return vm;
}

async function flintvmPoints(kernel: string, counts: number[], log: (s: string) => void): Promise<MemoryResult['flintvm']> {
  // One VM first, so lazily loaded modules, koffi types and the signal handler are in the baseline.
  const warm = await startRunning(kernel);
  await withTimeout(warm.stop(), 60_000, 'stopping the warm-up VM');
  await settle();
  const b = selfSample();
  const points: MemoryPoint[] = [];
  for (const k of counts) {
    await settle();
    const base = selfSample();
    const vms: MicroVM[] = [];
    for (let i = 0; i < k; i++) vms.push(await startRunning(kernel));
    await settle();
    const s = selfSample();
    const pssPerVm = mib((s.pssAnon - base.pssAnon) / k);
    points.push({
      vms: k, reps: 1, pssPerVmRange: [pssPerVm, pssPerVm], rssPerVmMiB: mib((s.rss - base.rss) / k), pssPerVmMiB: pssPerVm,
      rssTotalMiB: mib(s.rss), pssTotalMiB: mib(s.pss), threads: s.threads,
    });
    log(`flintvm: ${k} VMs measured; stopping them`);
    await withTimeout(Promise.all(vms.map((v) => v.stop())), 60_000, `stopping ${k} VMs`);
  }
  return { baseline: { rssMiB: mib(b.rss), pssMiB: mib(b.pss), pssAnonMiB: mib(b.pssAnon), threads: b.threads }, points };
}

function startQemu(qemu: string, kernel: string): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(qemu, qemuTinyArgs(kernel, MEMORY_MIB), { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error('QEMU did not print the guest marker in 20 s')); }, 20_000);
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString('latin1');
      if (out.includes(SERIAL_MARKER)) { clearTimeout(timer); resolve(child); }
    });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`QEMU exited ${code}: ${err.slice(-500)}`)); });
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

async function qemuPoints(qemu: string, kernel: string, counts: number[], log: (s: string) => void): Promise<MemoryPoint[]> {
  const points: MemoryPoint[] = [];
  for (const k of counts) {
    const kids: ChildProcess[] = [];
    try {
      for (let i = 0; i < k; i++) kids.push(await startQemu(qemu, kernel));
      await sleep(SETTLE_MS);
      let rss = 0;
      let pss = 0;
      let threads = 0;
      for (const c of kids) {
        rss += procStatusKiB('VmRSS', c.pid!);
        pss += smapsRollupKiB(c.pid!).pss;
        threads += procStatusNumber('Threads', c.pid!);
      }
      log(`QEMU: ${k} processes measured`);
      points.push({ vms: k, reps: 1, pssPerVmRange: [mib(pss / k), mib(pss / k)], rssPerVmMiB: mib(rss / k), pssPerVmMiB: mib(pss / k), rssTotalMiB: mib(rss), pssTotalMiB: mib(pss), threads });
    } finally {
      await Promise.all(kids.map((c) => new Promise<void>((r) => {
        if (c.exitCode !== null || c.signalCode !== null) return r();
        c.removeAllListeners('exit');
        c.once('exit', () => r());
        c.kill('SIGKILL');
      })));
    }
  }
  return points;
}

/** Per k, the median of each field over repetitions (and the PSS/VM range). */
function medianPoints(reps: MemoryPoint[][]): MemoryPoint[] {
  const med = (xs: number[]) => summarize(xs).median;
  return reps[0]!.map((p0, i) => {
    const ps = reps.map((r) => r[i]!);
    const pss = ps.map((p) => p.pssPerVmMiB);
    return {
      vms: p0.vms, reps: ps.length, pssPerVmRange: [Math.min(...pss), Math.max(...pss)],
      rssPerVmMiB: round(med(ps.map((p) => p.rssPerVmMiB)), 1), pssPerVmMiB: round(med(pss), 1),
      rssTotalMiB: round(med(ps.map((p) => p.rssTotalMiB)), 1), pssTotalMiB: round(med(ps.map((p) => p.pssTotalMiB)), 1),
      threads: med(ps.map((p) => p.threads)),
    };
  });
}

export async function benchMemory(counts = [1, 8, 32], guest: 'halt' | 'spin' = 'halt', reps = 5, log: (s: string) => void = () => undefined): Promise<MemoryResult> {
  const before = loadInfo();
  const g = writeTinyGuests();
  const kernel = guest === 'halt' ? g.bootHalt : g.bootSpin;
  const fReps: MemoryResult['flintvm'][] = [];
  for (let i = 0; i < reps; i++) fReps.push(await flintvmPoints(kernel, counts, log));
  const fresh1 = fReps[0]!.points.find((p) => p.vms === 1);
  const flintvm = { baseline: fReps[0]!.baseline, points: medianPoints(fReps.map((r) => r.points)), ...(fresh1 ? { fresh1 } : {}) };
  const qemuBin = which('qemu-system-x86_64');
  let qemu: MemoryResult['qemu'];
  try {
    if (!qemuBin) qemu = { error: 'qemu-system-x86_64 is not installed' };
    else {
      const qReps: MemoryPoint[][] = [];
      for (let i = 0; i < reps; i++) qReps.push(await qemuPoints(qemuBin, kernel, counts, log));
      qemu = { points: medianPoints(qReps) };
    }
  } catch (e) {
    qemu = { error: (e as Error).message };
  }
  const ratios: MemoryResult['ratios'] = [];
  let singleProcessRatio: MemoryResult['singleProcessRatio'];
  if ('points' in qemu) {
    for (const p of flintvm.points) {
      const q = qemu.points.find((x) => x.vms === p.vms);
      if (q) ratios.push({ vms: p.vms, pss: round(p.pssPerVmMiB / q.pssPerVmMiB, 3), rss: round(p.rssPerVmMiB / q.rssPerVmMiB, 3) });
    }
    const f1 = flintvm.fresh1;
    const q1 = qemu.points.find((p) => p.vms === 1);
    if (f1 && q1) singleProcessRatio = { rss: round(f1.rssTotalMiB / q1.rssTotalMiB, 3), pss: round(f1.pssTotalMiB / q1.pssTotalMiB, 3) };
  }
  return { guest, memoryMiB: MEMORY_MIB, flintvm, qemu, ratios, ...(singleProcessRatio ? { singleProcessRatio } : {}), load: { before, after: loadInfo() } };
}

export function formatMemory(r: MemoryResult): string[] {
  const lines = [`Host memory per running tiny VM (1 vCPU, ${r.memoryMiB} MiB guest RAM untouched, guest ${r.guest}), MiB`];
  lines.push(`  flintvm process baseline (no VM, after one): RSS ${r.flintvm.baseline.rssMiB}, PSS ${r.flintvm.baseline.pssMiB} (anon+shmem ${r.flintvm.baseline.pssAnonMiB}), ${r.flintvm.baseline.threads} threads`);
  lines.push('  (flintvm PSS/VM = growth of Pss_Anon+Pss_Shmem; QEMU PSS/VM = whole PSS of its processes / k)');
  for (const p of r.flintvm.points) {
    lines.push(`  flintvm ${String(p.vms).padStart(2)} VMs in one process: +${p.rssPerVmMiB} RSS/VM, +${p.pssPerVmMiB} PSS/VM [${p.pssPerVmRange.join('..')}] (process ${p.rssTotalMiB} RSS, ${p.threads} threads)`);
  }
  if ('error' in r.qemu) lines.push(`  QEMU: not measured (${r.qemu.error})`);
  else for (const p of r.qemu.points) lines.push(`  QEMU    ${String(p.vms).padStart(2)} processes: ${p.rssPerVmMiB} RSS/VM, ${p.pssPerVmMiB} PSS/VM [${p.pssPerVmRange.join('..')}] (${p.threads} threads in all)`);
  for (const x of r.ratios) lines.push(`  ratio flintvm/QEMU per VM, ${x.vms} VMs: PSS ${x.pss.toFixed(2)}, RSS ${x.rss.toFixed(2)}`);
  const f1 = r.flintvm.fresh1;
  const q1 = 'points' in r.qemu ? r.qemu.points.find((p) => p.vms === 1) : undefined;
  if (f1 && q1 && r.singleProcessRatio) {
    lines.push(`  one whole flintvm process with 1 VM (fresh): RSS ${f1.rssTotalMiB}, PSS ${f1.pssTotalMiB}; one QEMU process: RSS ${q1.rssTotalMiB}, PSS ${q1.pssTotalMiB}; ratio RSS ${r.singleProcessRatio.rss.toFixed(2)}, PSS ${r.singleProcessRatio.pss.toFixed(2)}`);
  }
  lines.push(`  load before ${r.load.before.loadavg.join(' ')}, after ${r.load.after.loadavg.join(' ')}`);
  return lines;
}

if (isMain(import.meta.url)) {
  const { values } = parseArgs({ options: { counts: { type: 'string' }, guest: { type: 'string' }, reps: { type: 'string' }, json: { type: 'boolean' } } });
  const counts = (values.counts ?? '1,8,32').split(',').map(Number);
  const guest = values.guest === 'spin' ? 'spin' : 'halt';
  const r = await benchMemory(counts, guest, Number(values.reps ?? 5), (s) => process.stderr.write(`memory: ${s}\n`));
  if (values.json) console.log(JSON.stringify(r));
  else console.log(formatMemory(r).join('\n'));
}
