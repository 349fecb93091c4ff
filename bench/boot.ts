/**
 * VMM-only boot time on the local /dev/kvm: flintvm and QEMU microvm boot the
 * same tiny ELF (bench/tiny-guest.ts: COM1 byte, boot-timer write, exit-port
 * write), so the time is all VMM + process, no guest kernel.
 *
 * - cold: a fresh `node` process per boot (bench/boot-child.js), timed from the
 *   spawn call in this process, with flintvm's own phase stamps in between;
 * - warm: the 2nd..(N+1)th MicroVM in this one process (the 1st is reported apart);
 * - warm + pool: the same, with the VM's vCPU worker taken from a WorkerPool whose
 *   standby is ready (the pool refills only in pool.warm(), before each run and
 *   outside the timing, so no run shares the CPU with a standby starting): an
 *   embedder that starts VMs now and then, and keeps a pool;
 * - QEMU: `qemu-system-x86_64 -M microvm ... -enable-kvm -kernel tiny.elf` (PVH
 *   entry), timed from spawn to the guest's COM1 byte on its stdout, and to exit.
 * Cold flintvm and QEMU runs are interleaved, so both see the same machine noise.
 *
 * Usage: node dist/bench/boot.js [--runs N] [--json]
 */
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { summarize, type Summary } from './stats.js';
import { isMain, loadInfo, monoMs, nodeChildEnv, parseMarkedJson, round, runTimed, which, type LoadInfo } from './common.js';
import { qemuTinyArgs, SERIAL_MARKER, writeTinyGuests } from './tiny-guest.js';
import { MicroVM, WorkerPool, type BootTimings } from '../lib/index.js';

const CHILD = fileURLToPath(new URL('./boot-child.js', import.meta.url));
const MEMORY_MIB = 128;

/** Cold phases, in order: [name, from stamp, to stamp]. Stamps are keys of ColdStamps. */
// The vCPU workers start before the memory slots and the kernel load (lib/machine.ts), so 'vCPU worker,
// rest of its start' is only the part of a worker's start that the kernel load did not hide.
export const COLD_PHASES = [
  ['exec + node start', 'spawnAt', 'processStart'],
  ['node bootstrap', 'processStart', 'nodeBootstrapped'],
  ['main script', 'nodeBootstrapped', 'mainAt'],
  ['import flintvm + koffi', 'mainAt', 'libLoaded'],
  ['config', 'libLoaded', 'startCalled'],
  ['create VM + memory', 'startCalled', 'vmReady'],
  ['load kernel, set regs', 'vmReady', 'kernelLoaded'],
  ['vCPU worker, rest of its start', 'kernelLoaded', 'workersReady'],
  ['to first KVM_RUN', 'workersReady', 'firstRun'],
  ['guest to boot timer', 'firstRun', 'guestInit'],
  ['guest to exit port', 'guestInit', 'exited'],
  ['release', 'exited', 'released'],
  ['process exit', 'released', 'exitAt'],
] as const;

/** Warm phases: the in-process part of COLD_PHASES. */
export const WARM_PHASES = COLD_PHASES.slice(5, 12);

type Stamps = Record<string, number | undefined>;

export interface PhaseTable {
  /** Median/min/max of each phase's duration (ms), in phase order. */
  phases: Record<string, Summary>;
}

export interface BootResult {
  runs: number;
  memoryMiB: number;
  guest: string;
  flintvmCold: PhaseTable & {
    /** spawn -> guest's boot-timer write, stamped by the vCPU worker (ms). */
    toGuestInit: Summary;
    /** spawn -> the guest's COM1 byte seen on the child's stdout (ms): the same observation as QEMU's. */
    toFirstOutput: Summary;
    /** spawn -> the child process has exited (ms). */
    total: Summary;
  };
  /**
   * The command line, cold: `flintvm run --kernel tiny.elf --pvh --mem N` (bin/flintvm.cjs, through bin/launch.cjs as
   * `npx flintvm` runs it), spawn -> the guest's COM1 byte on its stdout, and -> exit (ms). Interleaved with the
   * library's cold runs above, which time the same boot from `import('flintvm')` in a fresh process.
   */
  cliCold?: { toFirstOutput: Summary; total: Summary };
  /** `node -e 0`, spawn -> exit (ms), interleaved with the cold runs: the floor of any node process. */
  nodeFloor: Summary;
  /**
   * Variables this process had that the timed node children (cold flintvm, the CLI, `node -e 0`) ran without
   * (common.ts's NODE_START_TAXES: they slow every node start, and a fresh machine does not set them), and
   * `node -e 0` timed with them, interleaved with the rest. Absent when there were none.
   */
  nodeStartTaxes?: { removed: Record<string, string>; nodeFloorWith: Summary };
  qemuCold: { toFirstOutput: Summary; total: Summary; command: string } | { error: string };
  flintvmWarm: Record<'pvh' | 'linux64' | 'pooled', PhaseTable & { toGuestInit: Summary; toFirstRun: Summary; total: Summary }> & {
    /** The first VM of the process (lazy module and koffi set-up land on it), PVH. */
    first: { toGuestInit: number; total: number };
  };
  ratios: {
    /** flintvm cold / QEMU: spawn -> first guest output (median / median). */
    coldToFirstOutput?: number;
    /** flintvm cold / QEMU: spawn -> process exit. */
    coldTotal?: number;
    /** flintvm warm start() -> boot timer / QEMU spawn -> first output: what an embedder that keeps node running sees. */
    warmToGuestInitVsQemuCold?: number;
    /** The same with a WorkerPool (PVH). */
    warmPooledToGuestInitVsQemuCold?: number;
    /** flintvm's own part of a cold start (spawn -> first output, minus `node -e 0`) / QEMU's whole cold start. */
    coldOwnToFirstOutput?: number;
    /** `flintvm run` cold / QEMU: spawn -> first guest output. */
    cliToFirstOutput?: number;
    /** The same minus `node -e 0` / QEMU's whole cold start. */
    cliOwnToFirstOutput?: number;
  };
  load: { before: LoadInfo; after: LoadInfo };
}

function phaseTable(runs: Stamps[], phases: ReadonlyArray<readonly [string, string, string]>): PhaseTable {
  const out: Record<string, Summary> = {};
  for (const [name, from, to] of phases) {
    const xs = runs.map((r) => (r[to] ?? NaN) - (r[from] ?? NaN));
    if (xs.some((x) => !Number.isFinite(x))) throw new Error(`phase ${name}: a stamp is missing (${from} -> ${to})`);
    out[name] = summarize(xs.map((x) => round(x, 3)));
  }
  return { phases: out };
}

/** The environment of every timed node child (see NODE_START_TAXES). */
const CHILD_ENV = nodeChildEnv();

async function coldFlintvm(kernel: string): Promise<Stamps & { markerAt?: number }> {
  const r = await runTimed(process.execPath, [CHILD, kernel, 'pvh', String(MEMORY_MIB)], { marker: SERIAL_MARKER, env: CHILD_ENV.env });
  if (r.code !== 0) throw new Error(`boot-child exited ${r.code ?? r.signal}: ${r.stderr.slice(-2000)}`);
  const c = parseMarkedJson<{ processStart: number; nodeBootstrapped: number; mainAt: number; libLoaded: number; timings: BootTimings; reason: string; exitStatus?: number }>(r.stderr, 'BENCH-BOOT-CHILD');
  if (c.reason !== 'guest-exit' || c.exitStatus !== 0) throw new Error(`cold flintvm guest ended ${c.reason} (${c.exitStatus})`);
  if (r.markerAt === undefined) throw new Error(`cold flintvm: no '${SERIAL_MARKER}' on the guest console`);
  return { spawnAt: r.spawnAt, processStart: c.processStart, nodeBootstrapped: c.nodeBootstrapped, mainAt: c.mainAt, libLoaded: c.libLoaded, ...c.timings, exitAt: r.exitAt, markerAt: r.markerAt };
}

/** The CLI as a user runs it (bin/flintvm.cjs: bin/launch.cjs, then the command's bundle). */
const CLI = fileURLToPath(new URL('../../bin/flintvm.cjs', import.meta.url));

async function coldCli(kernel: string): Promise<{ toFirstOutput: number; total: number }> {
  const r = await runTimed(process.execPath, [CLI, 'run', '--kernel', kernel, '--pvh', '--mem', String(MEMORY_MIB)], { marker: SERIAL_MARKER, env: CHILD_ENV.env });
  if (r.code !== 0 || r.markerAt === undefined) throw new Error(`flintvm run exited ${r.code ?? r.signal} (marker ${r.markerAt !== undefined}): ${r.stderr.slice(-2000)}`);
  return { toFirstOutput: r.markerAt - r.spawnAt, total: r.exitAt - r.spawnAt };
}

async function coldQemu(qemu: string, kernel: string): Promise<{ toFirstOutput: number; total: number }> {
  const r = await runTimed(qemu, qemuTinyArgs(kernel, MEMORY_MIB), { marker: SERIAL_MARKER, timeoutMs: 30_000 });
  // isa-debug-exit: QEMU exits with (value << 1) | 1, so status 0 -> 1.
  if (r.code !== 1 || r.markerAt === undefined) throw new Error(`QEMU exited ${r.code ?? r.signal} (marker ${r.markerAt !== undefined}): ${r.stderr.slice(-1000)}`);
  return { toFirstOutput: r.markerAt - r.spawnAt, total: r.exitAt - r.spawnAt };
}

/** `settle`: a pool whose refill must finish first, so no run shares the CPU with a standby booting. */
async function warmFlintvm(kernel: string, protocol: 'pvh' | 'linux64', workerPool?: WorkerPool, settle?: WorkerPool): Promise<Stamps> {
  await (workerPool ?? settle)?.warm();
  const vm = new MicroVM({ kernel, memoryMiB: MEMORY_MIB, vcpus: 1, bootProtocol: protocol, console: 'none', ...(workerPool ? { workerPool } : {}) });
  await vm.start();
  const e = await vm.wait();
  if (e.reason !== 'guest-exit' || e.exitStatus !== 0) throw new Error(`warm flintvm guest ended ${e.reason}`);
  return { ...e.timings };
}

export async function benchBoot(runs = 10, log: (s: string) => void = () => undefined): Promise<BootResult> {
  const before = loadInfo();
  const g = writeTinyGuests();
  const qemu = which('qemu-system-x86_64');

  // Warm first, in this process: one throw-away VM, then N measured per protocol (interleaved).
  const firstStamps = await warmFlintvm(g.bootExit, 'pvh');
  const warm: Record<'pvh' | 'linux64' | 'pooled', Stamps[]> = { pvh: [], linux64: [], pooled: [] };
  const pool = new WorkerPool({ size: 1, refillDelayMs: 600_000 });
  try {
    for (let i = 0; i < runs; i++) {
      warm.pvh.push(await warmFlintvm(g.bootExit, 'pvh', undefined, pool));
      warm.linux64.push(await warmFlintvm(g.bootExit, 'linux64', undefined, pool));
      warm.pooled.push(await warmFlintvm(g.bootExit, 'pvh', pool));
    }
  } finally {
    await pool.close();
  }
  // A start that found no ready standby spawned its own worker, so its figure is not a pooled one. Locally that
  // is a bench bug; inside the TCG test host a standby can take longer to come up than warm() waited (seen there),
  // so the figure is kept, with the count in the log, rather than losing the whole bench.
  if (pool.stats.missed > 0) {
    if (!process.env.FLINTVM_IN_TEST_HOST) throw new Error(`warm + pool: ${pool.stats.missed} starts found no ready standby`);
    process.stderr.write(`boot: warm + pool: ${pool.stats.missed} of ${runs} starts found no ready standby (TCG test host)\n`);
  }
  log(`warm: ${runs} x (2 protocols + pooled) done`);

  const cold: Array<Stamps & { markerAt?: number }> = [];
  const cli: Array<{ toFirstOutput: number; total: number }> = [];
  const q: Array<{ toFirstOutput: number; total: number }> = [];
  const floor: number[] = [];
  const floorWith: number[] = [];
  const taxed = Object.keys(CHILD_ENV.removed).length > 0;
  let qemuError: string | undefined = qemu ? undefined : 'qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)';
  for (let i = 0; i < runs; i++) {
    cold.push(await coldFlintvm(g.bootExit));
    cli.push(await coldCli(g.bootExit));
    const n = await runTimed(process.execPath, ['-e', '0'], { env: CHILD_ENV.env });
    floor.push(n.exitAt - n.spawnAt);
    if (taxed) {
      const w = await runTimed(process.execPath, ['-e', '0']);
      floorWith.push(w.exitAt - w.spawnAt);
    }
    if (qemu && !qemuError) {
      try {
        q.push(await coldQemu(qemu, g.bootExit));
      } catch (e) {
        qemuError = (e as Error).message;
      }
    }
  }
  log(`cold: ${runs} flintvm + ${runs} flintvm run + ${runs} node -e 0 + ${q.length} QEMU boots done`);
  const nodeFloor = summarize(floor.map((x) => round(x, 3)));

  const warmTable = (p: 'pvh' | 'linux64' | 'pooled') => ({
    ...phaseTable(warm[p], WARM_PHASES),
    toGuestInit: summarize(warm[p].map((s) => round(s.guestInit! - s.startCalled!, 3))),
    toFirstRun: summarize(warm[p].map((s) => round(s.firstRun! - s.startCalled!, 3))),
    total: summarize(warm[p].map((s) => round(s.released! - s.startCalled!, 3))),
  });
  const flintvmCold = {
    ...phaseTable(cold, COLD_PHASES),
    toGuestInit: summarize(cold.map((s) => round(s.guestInit! - s.spawnAt!, 3))),
    toFirstOutput: summarize(cold.map((s) => round(s.markerAt! - s.spawnAt!, 3))),
    total: summarize(cold.map((s) => round(s.exitAt! - s.spawnAt!, 3))),
  };
  const cliCold = { toFirstOutput: summarize(cli.map((x) => round(x.toFirstOutput, 3))), total: summarize(cli.map((x) => round(x.total, 3))) };
  const qemuCold: BootResult['qemuCold'] = qemuError !== undefined || q.length === 0
    ? { error: qemuError ?? 'no QEMU runs' }
    : { toFirstOutput: summarize(q.map((x) => round(x.toFirstOutput, 3))), total: summarize(q.map((x) => round(x.total, 3))), command: `qemu-system-x86_64 ${qemuTinyArgs('tiny.elf', MEMORY_MIB).join(' ')}` };
  const warmPvh = warmTable('pvh');
  const warmPooled = warmTable('pooled');
  const ratios: BootResult['ratios'] = {};
  if (!('error' in qemuCold)) {
    ratios.coldToFirstOutput = round(flintvmCold.toFirstOutput.median / qemuCold.toFirstOutput.median, 3);
    ratios.coldTotal = round(flintvmCold.total.median / qemuCold.total.median, 3);
    ratios.warmToGuestInitVsQemuCold = round(warmPvh.toGuestInit.median / qemuCold.toFirstOutput.median, 3);
    ratios.warmPooledToGuestInitVsQemuCold = round(warmPooled.toGuestInit.median / qemuCold.toFirstOutput.median, 3);
    ratios.coldOwnToFirstOutput = round((flintvmCold.toFirstOutput.median - nodeFloor.median) / qemuCold.toFirstOutput.median, 3);
    ratios.cliToFirstOutput = round(cliCold.toFirstOutput.median / qemuCold.toFirstOutput.median, 3);
    ratios.cliOwnToFirstOutput = round((cliCold.toFirstOutput.median - nodeFloor.median) / qemuCold.toFirstOutput.median, 3);
  }
  return {
    runs,
    memoryMiB: MEMORY_MIB,
    guest: 'tiny ELF64 with a PVH note (bench/tiny-guest.ts): COM1 byte, boot-timer 0x600 <- 123, exit port 0x601 <- 0; 1 vCPU',
    flintvmCold,
    cliCold,
    nodeFloor,
    ...(taxed ? { nodeStartTaxes: { removed: CHILD_ENV.removed, nodeFloorWith: summarize(floorWith.map((x) => round(x, 3))) } } : {}),
    qemuCold,
    flintvmWarm: {
      pvh: warmPvh,
      linux64: warmTable('linux64'),
      pooled: warmPooled,
      first: { toGuestInit: round(firstStamps.guestInit! - firstStamps.startCalled!, 3), total: round(firstStamps.released! - firstStamps.startCalled!, 3) },
    },
    ratios,
    load: { before, after: loadInfo() },
  };
}

/** Human-readable lines for a BootResult. */
export function formatBoot(r: BootResult): string[] {
  const f = (s: Summary) => `${s.median.toFixed(1)} [${s.min.toFixed(1)}..${s.max.toFixed(1)}]`;
  const lines = [`Tiny-guest boot on the local KVM, ${r.runs} runs each, ms median [min..max]`];
  lines.push('  flintvm cold (fresh node process) phases:');
  for (const [k, s] of Object.entries(r.flintvmCold.phases)) lines.push(`    ${k.padEnd(26)} ${f(s)}`);
  lines.push(`  flintvm cold spawn -> boot timer        ${f(r.flintvmCold.toGuestInit)}`);
  lines.push(`  flintvm cold spawn -> first guest output ${f(r.flintvmCold.toFirstOutput)}`);
  lines.push(`  flintvm cold spawn -> process exit      ${f(r.flintvmCold.total)}`);
  if (r.cliCold) {
    lines.push(`  flintvm run (CLI) cold spawn -> first guest output ${f(r.cliCold.toFirstOutput)}`);
    lines.push(`  flintvm run (CLI) cold spawn -> process exit       ${f(r.cliCold.total)}`);
  }
  if (r.nodeFloor) lines.push(`  node -e 0 spawn -> exit (the floor)     ${f(r.nodeFloor)}`);
  if (r.nodeStartTaxes) {
    const names = Object.keys(r.nodeStartTaxes.removed).join(', ');
    lines.push(`  node -e 0 with ${names} as this process has it: ${f(r.nodeStartTaxes.nodeFloorWith)} (every timed node child above ran without it)`);
  }
  if ('error' in r.qemuCold) lines.push(`  QEMU: not measured (${r.qemuCold.error})`);
  else {
    lines.push(`  QEMU spawn -> first guest output        ${f(r.qemuCold.toFirstOutput)}`);
    lines.push(`  QEMU spawn -> process exit              ${f(r.qemuCold.total)}`);
  }
  for (const p of ['pvh', 'linux64', 'pooled'] as const) {
    const w = r.flintvmWarm[p];
    if (!w) continue; // results from before the pooled series
    lines.push(`  flintvm warm (${p}) start() -> first KVM_RUN ${f(w.toFirstRun)}, -> boot timer ${f(w.toGuestInit)}, -> released ${f(w.total)}`);
  }
  lines.push(`  flintvm first VM in process: -> boot timer ${r.flintvmWarm.first.toGuestInit.toFixed(1)}, -> released ${r.flintvmWarm.first.total.toFixed(1)}`);
  const x = r.ratios;
  if (x.coldToFirstOutput !== undefined) {
    lines.push(`  ratio flintvm/QEMU cold, spawn -> first guest output: ${x.coldToFirstOutput.toFixed(2)}`);
    lines.push(`  ratio flintvm/QEMU cold, spawn -> exit:               ${x.coldTotal!.toFixed(2)}`);
    lines.push(`  ratio flintvm warm start()->boot timer / QEMU cold spawn->output: ${x.warmToGuestInitVsQemuCold!.toFixed(2)}`);
    if (x.coldOwnToFirstOutput !== undefined) lines.push(`  ratio flintvm's own part (cold - node -e 0) / QEMU cold, spawn -> first output: ${x.coldOwnToFirstOutput.toFixed(2)}`);
    if (x.cliToFirstOutput !== undefined) lines.push(`  ratio flintvm run (CLI) / QEMU cold, spawn -> first output: ${x.cliToFirstOutput.toFixed(2)}; its own part (minus node -e 0): ${x.cliOwnToFirstOutput!.toFixed(2)}`);
    if (x.warmPooledToGuestInitVsQemuCold !== undefined) lines.push(`  ratio flintvm warm + WorkerPool start()->boot timer / QEMU cold spawn->output: ${x.warmPooledToGuestInitVsQemuCold.toFixed(2)}`);
  }
  lines.push(`  load before ${r.load.before.loadavg.join(' ')}, after ${r.load.after.loadavg.join(' ')} (${r.load.after.nproc} CPUs)`);
  return lines;
}

if (isMain(import.meta.url)) {
  const { values } = parseArgs({ options: { runs: { type: 'string' }, json: { type: 'boolean' } } });
  const t0 = monoMs();
  const r = await benchBoot(Number(values.runs ?? 10), (s) => process.stderr.write(`boot: ${s}\n`));
  process.stderr.write(`boot: ${((monoMs() - t0) / 1000).toFixed(1)} s\n`);
  if (values.json) console.log(JSON.stringify(r));
  else console.log(formatBoot(r).join('\n'));
}
