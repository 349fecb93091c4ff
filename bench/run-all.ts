/**
 * Runs every benchmark, each in its own node process (so one bench's modules,
 * workers and heap do not colour the next one's figures, and each has its own
 * 10-minute limit), then writes:
 * - bench/results/latest.json: every figure with its peer's figure, the ratio,
 *   n and median/min/max, plus the git commit, the machine and the load;
 * - bench/results/boot.svg: the boot breakdown, flintvm vs QEMU;
 * and prints the per-bench reports and a summary table.
 *
 * Usage: node dist/bench/run-all.js [--only exits,boot,memory,density,linux-boot,net,vsock,share,blk,linux-boot-arm64,snapshot,oci] [--all] [--skip linux-boot] [--out DIR] [--merge] [--help]
 *
 * The test-host I/O benches (net, vsock, share), snapshot and oci run only when named in --only, or with --all: each boots
 * guests for many minutes inside the TCG test host (share alone takes about an hour).
 *
 * --merge keeps the other benches of the existing latest.json and replaces only the ones run now (to
 * re-run a noisy or failed bench); each bench's entry under `runs` records when, at which commit and
 * under which load it ran.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { gitCommit, loadInfo, machineInfo, monoMs, round, type LoadInfo } from './common.js';
import type { Summary } from './stats.js';
import type { ExitsResult } from './exits.js';
import { formatBoot, type BootResult } from './boot.js';
import { formatMemory, type MemoryResult } from './memory.js';
import { formatDensity, type DensityResult } from './density.js';
import { formatLinuxBoot, type LinuxBootResult } from './linux-boot.js';
import { formatNet, type NetResult } from './net.js';
import { formatVsock, type VsockResult } from './vsock.js';
import { formatOci, type OciResult } from './oci.js';
import { formatShare, type ShareResult } from './share.js';
import { formatBlkTable, type BlkResult } from './blk.js';
import type { LinuxBootArm64Result } from './linux-boot-arm64.js';
import { formatSnapshot, type SnapshotResult } from './snapshot.js';
import type { Comparison } from './vmm-compare.js';
import { bootSvg } from './svg.js';
import { findProjectDir } from '../test/hosts/run.js';
import { haveKvm } from '../test/helpers/kvm.js';
import { runLocalBenchesInTestHost } from './host-local.js';

const HERE = dirname(fileURLToPath(import.meta.url));
/** A bench's time limit unless it names its own (the test-host I/O benches boot a guest per repetition). */
const BENCH_TIMEOUT_MIN = 10;

/** How run-all runs one bench: its script, node flags and arguments, its time limit (minutes), and whether it needs --only/--all. */
interface BenchSpec {
  script: string;
  flags: string[];
  args: string[];
  timeoutMin?: number;
  optIn?: boolean;
}

/** The benches, in run order. */
const BENCHES = {
  exits: { script: 'exits.js', flags: [], args: ['--runs', '5'] },
  boot: { script: 'boot.js', flags: [], args: ['--runs', '10'] },
  memory: { script: 'memory.js', flags: ['--expose-gc'], args: ['--counts', '1,8,32', '--reps', '5'] },
  density: { script: 'density.js', flags: [], args: ['--counts', '8,32', '--reps', '5'] },
  'linux-boot': { script: 'linux-boot.js', flags: [], args: ['--runs', '5'] },
  net: { script: 'net.js', flags: [], args: ['--reps', '5', '--seconds', '5', '--rtts', '500'], timeoutMin: 30, optIn: true },
  vsock: { script: 'vsock.js', flags: [], args: ['--reps', '5', '--mib', '32', '--connects', '200'], timeoutMin: 20, optIn: true },
  share: { script: 'share.js', flags: [], args: ['--reps', '5', '--mib', '1024', '--steps', 'dd'], timeoutMin: 150, optIn: true },
  blk: { script: 'blk.js', flags: [], args: ['--reps', '5'], timeoutMin: 90, optIn: true },
  'linux-boot-arm64': { script: 'linux-boot-arm64.js', flags: [], args: ['--reps', '5'], timeoutMin: 20, optIn: true },
  snapshot: { script: 'snapshot.js', flags: [], args: ['--reps', '5', '--clones', '16,64', '--clone-reps', '5,3'], timeoutMin: 60, optIn: true },
  oci: { script: 'oci.js', flags: [], args: ['--reps', '5'], timeoutMin: 30, optIn: true },
} satisfies Record<string, BenchSpec>;
type BenchName = keyof typeof BENCHES;

/** The benches that need a local KVM; without one they run inside the x86_64 test host (bench/host-local.ts). */
const USAGE = `Usage: node dist/bench/run-all.js [--only NAME,...] [--all] [--skip NAME,...] [--out DIR] [--merge]

Runs the benchmarks, each beside its peer (QEMU from Debian, or a C loop) in the same run, and writes
bench/results/latest.json and bench/results/boot.svg (bench/README.md explains each figure).

  --only NAME,...  run only these: exits, boot, memory, density, linux-boot, linux-boot-arm64, net, vsock,
                   share, blk, snapshot, oci
  --all            also those that otherwise run only when named (linux-boot-arm64, net, vsock, share, blk,
                   snapshot, oci: each boots a test host for many minutes)
  --skip NAME,...  leave these out
  --out DIR        write the results there (default bench/results)
  --merge          keep the other benches of the existing latest.json, replace only the ones run now
  -h, --help       this text
`;

const LOCAL_KVM_BENCHES: readonly BenchName[] = ['exits', 'boot', 'memory', 'density'];

/**
 * Their arguments inside the test host, where every VM start costs a second or more of emulated CPU:
 * smaller counts, with minute limits to match (measured: see bench/README.md). Five repetitions each, the
 * least #18 asks a median of: memory took about 35 s and density about 16 s a repetition there.
 */
const IN_HOST: Partial<Record<BenchName, { args: string[]; timeoutMin: number }>> = {
  exits: { args: ['--runs', '5'], timeoutMin: 10 },
  boot: { args: ['--runs', '5'], timeoutMin: 20 },
  memory: { args: ['--counts', '1,8', '--reps', '5'], timeoutMin: 20 },
  density: { args: ['--counts', '8', '--reps', '5'], timeoutMin: 20 },
};

/** Where a bench's figures were taken. */
export type Where = 'local' | 'x86_64 test host' | 'arm64 test host';

/** Where each bench runs: the test-host benches always in theirs, the local ones here only with a usable x86_64 /dev/kvm. */
function whereOf(name: BenchName, localKvm: boolean): Where {
  if (name === 'linux-boot-arm64') return 'arm64 test host';
  if (LOCAL_KVM_BENCHES.includes(name) && localKvm) return 'local';
  return 'x86_64 test host';
}

/** One row of the summary: a flintvm figure, its peer's, and flintvm/peer. */
export interface Figure {
  bench: BenchName;
  /** Where it was measured (and so on which machine: `machine.local`, or the test host on it). */
  where?: Where;
  name: string;
  unit: string;
  /** Which way is better: for 'lower', a ratio above 1 means flintvm is slower/bigger. */
  better: 'lower' | 'higher';
  flintvm: { median: number; min?: number; max?: number; n: number };
  peer?: { name: string; median: number; min?: number; max?: number; n: number };
  /** flintvm median / peer median. */
  ratio?: number;
  note?: string;
}

const sum = (s: Summary) => ({ median: s.median, min: s.min, max: s.max, n: s.n });

function runBench(name: BenchName, log: (s: string) => void): Promise<{ json?: unknown; error?: string; seconds: number; load: { before: LoadInfo; after: LoadInfo } }> {
  const b: BenchSpec = BENCHES[name];
  const before = loadInfo();
  const t0 = monoMs();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...b.flags, join(HERE, b.script), ...b.args, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      for (const l of d.toString().split('\n')) if (l.trim()) log(`  ${l}`);
    });
    const limitMin = b.timeoutMin ?? BENCH_TIMEOUT_MIN;
    const timer = setTimeout(() => child.kill('SIGKILL'), limitMin * 60_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const seconds = round((monoMs() - t0) / 1000, 1);
      const load = { before, after: loadInfo() };
      if (code === 0) {
        // The JSON is the whole stdout (exits.js pretty-prints it) or its last line.
        for (const text of [out.trim(), out.trim().split('\n').pop() ?? '']) {
          try {
            return resolve({ json: JSON.parse(text), seconds, load });
          } catch { /* try the next form */ }
        }
      }
      resolve({ error: `${name} exited ${code ?? signal}${signal === 'SIGKILL' ? ` (${limitMin}-minute limit)` : ''}: ${(err + out).trim().slice(-1500)}`, seconds, load });
    });
  });
}

type Results = {
  exits?: ExitsResult; boot?: BootResult; memory?: MemoryResult; density?: DensityResult; 'linux-boot'?: LinuxBootResult;
  net?: NetResult; vsock?: VsockResult; share?: ShareResult; 'linux-boot-arm64'?: LinuxBootArm64Result; snapshot?: SnapshotResult;
  oci?: OciResult; blk?: BlkResult;
};

/** Figures of a flintvm-vs-peer comparison (vmm-compare.ts), named `prefix: <figure>`. */
function comparisonFigures(bench: BenchName, prefix: string, cs: readonly Comparison[], peer: string, note?: string): Figure[] {
  return cs.filter((c) => c.flintvm).map((c, i) => ({
    bench, name: `${prefix}: ${c.name}`, unit: c.unit, better: c.better, flintvm: sum(c.flintvm!),
    ...(c.qemu ? { peer: { name: peer, ...sum(c.qemu) }, ratio: round(c.ratio!, 3) } : {}),
    ...(i === 0 && note ? { note } : {}),
  }));
}

function figures(r: Results): Figure[] {
  const f: Figure[] = [];
  const QEMU = 'QEMU 7.2 microvm';
  if (r.exits) {
    const e = r.exits;
    f.push({ bench: 'exits', name: 'PIO exit round trip', unit: 'us', better: 'lower',
      flintvm: { ...sum(e.flintvmNsPerExit), median: round(e.flintvmNsPerExit.median / 1000, 2), min: round(e.flintvmNsPerExit.min / 1000, 2), max: round(e.flintvmNsPerExit.max / 1000, 2) },
      peer: { name: 'C KVM_RUN loop', n: e.cNsPerExit.n, median: round(e.cNsPerExit.median / 1000, 2), min: round(e.cNsPerExit.min / 1000, 2), max: round(e.cNsPerExit.max / 1000, 2) },
      ratio: round(e.ratio, 3), note: `${e.exitsPerRun} exits per run` });
    if (e.koffiFloorNsPerExit) {
      const fl = e.koffiFloorNsPerExit;
      f.push({ bench: 'exits', name: 'PIO exit round trip: koffi floor (KVM_RUN from a bare JS loop)', unit: 'us', better: 'lower',
        flintvm: { ...sum(fl), median: round(fl.median / 1000, 2), min: round(fl.min / 1000, 2), max: round(fl.max / 1000, 2) },
        peer: { name: 'C KVM_RUN loop', n: e.cNsPerExit.n, median: round(e.cNsPerExit.median / 1000, 2), min: round(e.cNsPerExit.min / 1000, 2), max: round(e.cNsPerExit.max / 1000, 2) },
        ratio: round(e.floorRatio!, 3), note: 'the same guest and ioctl through koffi with no decode, bus or device: the least a koffi VMM pays' });
    }
  }
  if (r.boot) {
    const b = r.boot;
    const q = 'error' in b.qemuCold ? undefined : b.qemuCold;
    f.push({ bench: 'boot', name: 'tiny guest cold: spawn -> first guest output', unit: 'ms', better: 'lower', flintvm: sum(b.flintvmCold.toFirstOutput),
      ...(q ? { peer: { name: QEMU, ...sum(q.toFirstOutput) }, ratio: b.ratios.coldToFirstOutput } : {}), note: 'same ELF, PVH entry; the COM1 byte seen on the child\'s stdout' });
    f.push({ bench: 'boot', name: 'tiny guest cold: spawn -> process exit', unit: 'ms', better: 'lower', flintvm: sum(b.flintvmCold.total),
      ...(q ? { peer: { name: QEMU, ...sum(q.total) }, ratio: b.ratios.coldTotal } : {}) });
    if (b.nodeFloor) {
      f.push({ bench: 'boot', name: 'tiny guest cold, flintvm\'s own part: spawn -> first output minus `node -e 0`', unit: 'ms', better: 'lower',
        flintvm: { median: round(b.flintvmCold.toFirstOutput.median - b.nodeFloor.median, 3), n: b.flintvmCold.toFirstOutput.n },
        ...(q ? { peer: { name: `${QEMU} (whole cold start)`, ...sum(q.toFirstOutput) }, ratio: b.ratios.coldOwnToFirstOutput } : {}) });
      f.push({ bench: 'boot', name: '`node -e 0`: spawn -> exit (the floor of any node process)', unit: 'ms', better: 'lower', flintvm: sum(b.nodeFloor) });
      if (b.nodeStartTaxes) {
        const names = Object.keys(b.nodeStartTaxes.removed).join(', ');
        f.push({ bench: 'boot', name: `\`node -e 0\` with ${names} set as on this machine (the timed node children ran without it)`, unit: 'ms', better: 'lower',
          flintvm: sum(b.nodeStartTaxes.nodeFloorWith), note: 'node builds its TLS root store at start-up when the variable is set; flintvm makes no TLS connection' });
      }
    }
    if (b.cliCold) {
      f.push({ bench: 'boot', name: 'tiny guest cold, the CLI (`flintvm run --kernel`): spawn -> first guest output', unit: 'ms', better: 'lower', flintvm: sum(b.cliCold.toFirstOutput),
        ...(q ? { peer: { name: QEMU, ...sum(q.toFirstOutput) }, ratio: b.ratios.cliToFirstOutput } : {}), note: 'bin/flintvm.cjs as npx runs it; its vCPU worker starts before the command loads' });
      if (b.nodeFloor) {
        f.push({ bench: 'boot', name: 'tiny guest cold, the CLI\'s own part: minus `node -e 0`', unit: 'ms', better: 'lower',
          flintvm: { median: round(b.cliCold.toFirstOutput.median - b.nodeFloor.median, 3), n: b.cliCold.toFirstOutput.n },
          ...(q ? { peer: { name: `${QEMU} (whole cold start)`, ...sum(q.toFirstOutput) }, ratio: b.ratios.cliOwnToFirstOutput } : {}) });
      }
    }
    f.push({ bench: 'boot', name: 'tiny guest cold: spawn -> boot timer (worker stamp)', unit: 'ms', better: 'lower', flintvm: sum(b.flintvmCold.toGuestInit) });
    for (const [k, s] of Object.entries(b.flintvmCold.phases)) f.push({ bench: 'boot', name: `  cold phase: ${k}`, unit: 'ms', better: 'lower', flintvm: sum(s) });
    f.push({ bench: 'boot', name: 'tiny guest warm: start() -> first KVM_RUN', unit: 'ms', better: 'lower', flintvm: sum(b.flintvmWarm.pvh.toFirstRun) });
    f.push({ bench: 'boot', name: 'tiny guest warm: start() -> boot timer', unit: 'ms', better: 'lower', flintvm: sum(b.flintvmWarm.pvh.toGuestInit),
      ...(q ? { peer: { name: `${QEMU} (cold: no warm mode)`, ...sum(q.toFirstOutput) }, ratio: b.ratios.warmToGuestInitVsQemuCold } : {}) });
    f.push({ bench: 'boot', name: 'tiny guest warm + WorkerPool: start() -> boot timer', unit: 'ms', better: 'lower', flintvm: sum(b.flintvmWarm.pooled.toGuestInit),
      ...(q ? { peer: { name: `${QEMU} (cold: no warm mode)`, ...sum(q.toFirstOutput) }, ratio: b.ratios.warmPooledToGuestInitVsQemuCold } : {}) });
    f.push({ bench: 'boot', name: 'tiny guest warm: start() -> released', unit: 'ms', better: 'lower', flintvm: sum(b.flintvmWarm.pvh.total) });
    f.push({ bench: 'boot', name: 'tiny guest warm (linux64 entry): start() -> boot timer', unit: 'ms', better: 'lower', flintvm: sum(b.flintvmWarm.linux64.toGuestInit) });
  }
  const li = r['linux-boot']?.inner;
  if (li) {
    const q = 'error' in li.qemuCold ? undefined : li.qemuCold;
    const x = r['linux-boot']!.ratios;
    if (!('error' in li.flintvmCold)) {
      f.push({ bench: 'linux-boot', name: 'Linux (TCG host) cold: spawn -> init banner', unit: 'ms', better: 'lower', flintvm: sum(li.flintvmCold.toBanner),
        ...(q ? { peer: { name: QEMU, ...sum(q.toBanner) }, ratio: x.coldToBanner } : {}), note: 'inside the TCG test host: ratio distorted by TCG' });
      f.push({ bench: 'linux-boot', name: 'Linux (TCG host) cold: spawn -> exit', unit: 'ms', better: 'lower', flintvm: sum(li.flintvmCold.total),
        ...(q ? { peer: { name: QEMU, ...sum(q.total) }, ratio: x.coldTotal } : {}) });
      f.push({ bench: 'linux-boot', name: 'Linux (TCG host) cold: guest uptime at its command', unit: 'ms', better: 'lower', flintvm: sum(li.flintvmCold.guestUptime),
        ...(q ? { peer: { name: QEMU, ...sum(q.guestUptime) }, ratio: x.guestUptime } : {}), note: 'by the guest clock: kernel start to userspace command' });
    }
    const w = li.flintvmWarm.pvh;
    if (!('error' in w)) {
      f.push({ bench: 'linux-boot', name: 'Linux (TCG host) warm PVH: start() -> init banner', unit: 'ms', better: 'lower', flintvm: sum(w.toBanner),
        ...(q ? { peer: { name: `${QEMU} (cold: no warm mode)`, ...sum(q.toBanner) }, ratio: x.warmToBannerVsQemuCold } : {}) });
      f.push({ bench: 'linux-boot', name: 'Linux (TCG host) warm PVH: start() -> first KVM_RUN', unit: 'ms', better: 'lower', flintvm: sum(w.toFirstRun) });
      f.push({ bench: 'linux-boot', name: 'Linux (TCG host) warm PVH: guest first KVM_RUN -> boot timer', unit: 'ms', better: 'lower', flintvm: sum(w.phases['guest kernel to init']!) });
    }
    const wp = li.flintvmWarm.pooled;
    if (wp && !('error' in wp)) {
      f.push({ bench: 'linux-boot', name: 'Linux (TCG host) warm PVH + WorkerPool: start() -> init banner', unit: 'ms', better: 'lower', flintvm: sum(wp.toBanner),
        ...(q ? { peer: { name: `${QEMU} (cold: no warm mode)`, ...sum(q.toBanner) }, ratio: x.warmPooledToBannerVsQemuCold } : {}) });
    }
    const w64 = li.flintvmWarm.linux64;
    if (!('error' in w64)) f.push({ bench: 'linux-boot', name: 'Linux (TCG host) warm linux64: start() -> init banner', unit: 'ms', better: 'lower', flintvm: sum(w64.toBanner) });
  }
  if (r.memory) {
    const m = r.memory;
    const qp = 'points' in m.qemu ? m.qemu.points : [];
    for (const p of m.flintvm.points) {
      const q = qp.find((x) => x.vms === p.vms);
      const ratio = m.ratios.find((x) => x.vms === p.vms);
      f.push({ bench: 'memory', name: `memory per VM, ${p.vms} running: PSS`, unit: 'MiB', better: 'lower', flintvm: { median: p.pssPerVmMiB, min: p.pssPerVmRange[0], max: p.pssPerVmRange[1], n: p.reps },
        ...(q ? { peer: { name: `${QEMU} (${p.vms} processes)`, median: q.pssPerVmMiB, min: q.pssPerVmRange[0], max: q.pssPerVmRange[1], n: q.reps }, ratio: ratio?.pss } : {}),
        note: 'flintvm: growth of one process (anon+shmem PSS); QEMU: whole PSS / k' });
      f.push({ bench: 'memory', name: `memory per VM, ${p.vms} running: RSS`, unit: 'MiB', better: 'lower', flintvm: { median: p.rssPerVmMiB, n: p.reps },
        ...(q ? { peer: { name: `${QEMU} (${p.vms} processes)`, median: q.rssPerVmMiB, n: q.reps }, ratio: ratio?.rss } : {}) });
    }
    const p1 = m.flintvm.fresh1;
    const q1 = qp.find((x) => x.vms === 1);
    if (p1) {
      f.push({ bench: 'memory', name: 'whole process with 1 VM: RSS', unit: 'MiB', better: 'lower', flintvm: { median: p1.rssTotalMiB, n: 1 },
        ...(q1 ? { peer: { name: QEMU, median: q1.rssTotalMiB, n: q1.reps }, ratio: m.singleProcessRatio?.rss } : {}), note: 'node + flintvm + 1 VM (fresh process) vs one QEMU process' });
    }
  }
  const TCG = 'inside the TCG test host: read the ratio, not the absolute figure';
  if (r.net) f.push(...comparisonFigures('net', 'net (TCG host)', r.net.figures, `${QEMU} virtio-net-device, tap, vhost=off`, TCG));
  if (r.oci) {
    const o = r.oci;
    const crun = 'crun 1.8 (no VM), same podman';
    const note = `${TCG}; through podman and conmon`;
    if (o.trueMs.flintvm) f.push({ bench: 'oci', name: 'OCI (TCG host): podman run --rm IMG true', unit: 'ms', better: 'lower', flintvm: sum(o.trueMs.flintvm),
      ...(o.trueMs.crun ? { peer: { name: crun, ...sum(o.trueMs.crun) }, ratio: round(o.trueMs.ratio!, 3) } : {}), note });
    if (o.streamMs.flintvm) f.push({ bench: 'oci', name: 'OCI (TCG host): podman run, 16 MiB stdout', unit: 'ms', better: 'lower', flintvm: sum(o.streamMs.flintvm),
      ...(o.streamMs.crun ? { peer: { name: crun, ...sum(o.streamMs.crun) }, ratio: round(o.streamMs.ratio!, 3) } : {}) });
    const ph = o.phases;
    if (ph.agentReadyMs) f.push({ bench: 'oci', name: 'OCI (TCG host): flintvm-oci holder start -> agent ready', unit: 'ms', better: 'lower', flintvm: sum(ph.agentReadyMs) });
    if (ph.mountedMs) f.push({ bench: 'oci', name: 'OCI (TCG host): flintvm-oci holder start -> mounts done', unit: 'ms', better: 'lower', flintvm: sum(ph.mountedMs) });
    if (ph.processStartMs) f.push({ bench: 'oci', name: 'OCI (TCG host): flintvm-oci start -> process running', unit: 'ms', better: 'lower', flintvm: sum(ph.processStartMs) });
  }
  if (r.vsock) {
    const v = r.vsock;
    const note = `${TCG}; flintvm only (no hybrid vsock in QEMU)`;
    if (v.hostToGuestMiBs) f.push({ bench: 'vsock', name: `vsock (TCG host): host -> guest, ${v.inner.mib} MiB`, unit: 'MiB/s', better: 'higher', flintvm: sum(v.hostToGuestMiBs), note });
    if (v.guestToHostMiBs) f.push({ bench: 'vsock', name: `vsock (TCG host): guest -> host, ${v.inner.mib} MiB`, unit: 'MiB/s', better: 'higher', flintvm: sum(v.guestToHostMiBs) });
    if (v.connectUs) f.push({ bench: 'vsock', name: 'vsock (TCG host): host CONNECT -> OK', unit: 'us', better: 'lower', flintvm: sum(v.connectUs) });
  }
  const a = r['linux-boot-arm64']?.inner;
  if (a && !('error' in a.flintvmRun) && !('error' in a.qemu)) {
    const x = r['linux-boot-arm64']!.ratios;
    const QA = 'QEMU 7.2 virt, -accel kvm';
    f.push({ bench: 'linux-boot-arm64', name: 'arm64 Linux (TCG host): flintvm run spawn -> command output', unit: 'ms', better: 'lower', flintvm: sum(a.flintvmRun.toMark),
      peer: { name: QA, ...sum(a.qemu.toMark) }, ...(x.runToMark !== undefined ? { ratio: x.runToMark } : {}), note: 'inside the arm64 TCG test host: node start and worker spawn are slow there' });
    f.push({ bench: 'linux-boot-arm64', name: 'arm64 Linux (TCG host): guest uptime at its command', unit: 'ms', better: 'lower', flintvm: sum(a.flintvmRun.guestUptime),
      peer: { name: QA, ...sum(a.qemu.guestUptime) }, ...(x.guestUptime !== undefined ? { ratio: x.guestUptime } : {}) });
    if (!('error' in a.flintvmWarm)) {
      f.push({ bench: 'linux-boot-arm64', name: 'arm64 Linux (TCG host) warm: start() -> command output', unit: 'ms', better: 'lower', flintvm: sum(a.flintvmWarm.toMark),
        peer: { name: `${QA} (spawn; no warm mode)`, ...sum(a.qemu.toMark) }, ...(x.warmToMarkVsQemu !== undefined ? { ratio: x.warmToMarkVsQemu } : {}) });
    }
  }
  if (r.share) {
    f.push(...comparisonFigures('share', 'share 9p (TCG host)', r.share.ninep, `${QEMU} virtio-9p-device`, `${TCG}; tarball ${r.share.package}`));
    f.push(...comparisonFigures('share', 'share virtio-fs (TCG host)', r.share.virtiofs, `${QEMU} virtio-9p-device`, 'flintvm virtio-fs against QEMU 9p (QEMU 7.2 has no built-in virtio-fs)'));
    if (r.share.virtiofsDirect) f.push(...comparisonFigures('share', "share virtio-fs cache 'never' (TCG host)", r.share.virtiofsDirect, `${QEMU} virtio-9p-device`, "the share's cache: 'never' (FOPEN_DIRECT_IO, no guest page cache, as 9p cache=none)"));
    if (r.share.hostFloor) {
      const mib = r.share.inner.mib;
      f.push({ bench: 'share', name: `share floor (TCG host, no VM): dd ${mib} MiB /dev/zero onto its tmpfs`, unit: 's', better: 'lower', flintvm: sum(r.share.hostFloor.write), note: 'the host-side copy a share write needs at least' });
      f.push({ bench: 'share', name: `share floor (TCG host, no VM): dd ${mib} MiB from its tmpfs to /dev/null`, unit: 's', better: 'lower', flintvm: sum(r.share.hostFloor.read), note: 'the host-side copy a share read needs at least' });
    }
  }
  if (r.blk) {
    const QB = `${QEMU} virtio-blk-device`;
    for (const [i, j] of r.blk.summary.entries()) {
      if (!j.flintvm) continue;
      const mib = (x: Summary) => ({ median: round(x.median / 1024, 2), min: round(x.min / 1024, 2), max: round(x.max / 1024, 2), n: x.n });
      f.push({ bench: 'blk', name: `blk (TCG host): fio ${j.job}`, unit: 'MiB/s', better: 'higher', flintvm: mib(j.flintvm.bwKiBs),
        ...(j.qemu && j.ratio ? { peer: { name: QB, ...mib(j.qemu.bwKiBs) }, ratio: round(j.ratio.bwKiBs, 3) } : {}),
        ...(i === 0 ? { note: `${TCG}; fio libaio O_DIRECT in the guest, raw image on the host's tmpfs` } : {}) });
    }
  }
  if (r.snapshot) f.push(...comparisonFigures('snapshot', 'snapshot (TCG host)', r.snapshot.figures, `${QEMU} migrate to file / -incoming`, TCG));
  if (r.density) {
    for (const p of r.density.points) {
      const q = p.qemu;
      f.push({ bench: 'density', name: `density ${p.vms} at once: VMs/s to boot timer`, unit: 'VMs/s', better: 'higher', flintvm: sum(p.flintvm.vmsPerSecond),
        ...(q ? { peer: { name: `${QEMU} (${p.vms} processes)`, ...sum(q.vmsPerSecond) }, ratio: p.ratios!.vmsPerSecond } : {}) });
      f.push({ bench: 'density', name: `density ${p.vms} at once: p50 start -> first KVM_RUN`, unit: 'ms', better: 'lower', flintvm: { median: p.flintvm.firstRunMs.p50, n: p.vms * p.reps } });
      f.push({ bench: 'density', name: `density ${p.vms} at once: p99 start -> first KVM_RUN`, unit: 'ms', better: 'lower', flintvm: { median: p.flintvm.firstRunMs.p99, n: p.vms * p.reps } });
      f.push({ bench: 'density', name: `density ${p.vms} at once: p50 start -> boot timer`, unit: 'ms', better: 'lower', flintvm: { median: p.flintvm.guestInitMs.p50, n: p.vms * p.reps },
        ...(q ? { peer: { name: `${QEMU}: spawn -> first output`, median: q.firstOutputMs.p50, n: p.vms * p.reps }, ratio: p.ratios!.p50ToGuest } : {}) });
      f.push({ bench: 'density', name: `density ${p.vms} at once: p99 start -> boot timer`, unit: 'ms', better: 'lower', flintvm: { median: p.flintvm.guestInitMs.p99, n: p.vms * p.reps },
        ...(q ? { peer: { name: `${QEMU}: spawn -> first output`, median: q.firstOutputMs.p99, n: p.vms * p.reps }, ratio: p.ratios!.p99ToGuest } : {}) });
    }
  }
  return f;
}

/** The summary table, one line per figure. */
export function formatTable(fs: Figure[]): string[] {
  const num = (x: number | undefined) => (x === undefined ? '' : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
  const range = (v: { median: number; min?: number; max?: number }) => `${num(v.median)}${v.min !== undefined && v.max !== undefined && v.min !== v.max ? ` [${num(v.min)}..${num(v.max)}]` : ''}`;
  const rows = fs.map((f) => [f.name, f.unit, range(f.flintvm), String(f.flintvm.n), f.peer ? range(f.peer) : '-', f.peer?.name ?? '', f.ratio !== undefined ? f.ratio.toFixed(2) : '', f.where ?? '']);
  const head = ['figure', 'unit', 'flintvm median [min..max]', 'n', 'peer median', 'peer', 'flintvm/peer', 'where'];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i === 1 || i === 3 ? c.padStart(w[i]!) : c.padEnd(w[i]!))).join('  ').trimEnd();
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)];
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { only: { type: 'string' }, all: { type: 'boolean' }, skip: { type: 'string' }, out: { type: 'string' }, merge: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  for (const [flag, list] of [['--only', values.only], ['--skip', values.skip]] as const) {
    const unknown = (list ?? '').split(',').filter((n) => n !== '' && !(n in BENCHES));
    if (unknown.length > 0) {
      process.stderr.write(`bench: ${flag}: no bench named ${unknown.join(', ')}; the benches are ${Object.keys(BENCHES).join(', ')} (--help)\n`);
      process.exitCode = 2;
      return;
    }
  }
  const projectDir = findProjectDir(HERE);
  const outDir = values.out ?? join(projectDir, 'bench/results');
  const all = Object.keys(BENCHES) as BenchName[];
  const only = values.only ? values.only.split(',') : all.filter((n) => values.all || !(BENCHES[n] as BenchSpec).optIn);
  const skip = (values.skip ?? '').split(',');
  const chosen = all.filter((n) => only.includes(n) && !skip.includes(n));
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const startLoad = loadInfo();
  log(`bench: running ${chosen.join(', ')} (load ${startLoad.loadavg.join(' ')} on ${startLoad.nproc} CPUs)`);

  type RunInfo = { seconds: number; commit: string; load: { before: LoadInfo; after: LoadInfo }; where?: Where; error?: string };
  const results: Record<string, unknown> = {};
  const runs: Record<string, RunInfo> = {};
  const latestPath = join(outDir, 'latest.json');
  if (values.merge && existsSync(latestPath)) {
    const old = JSON.parse(readFileSync(latestPath, 'utf8')) as {
      commit?: string; load?: { start: LoadInfo; end: LoadInfo }; benches?: Record<string, unknown>; runs?: Record<string, RunInfo>;
    };
    for (const [k, v] of Object.entries(old.benches ?? {})) {
      if (chosen.includes(k as BenchName)) continue;
      results[k] = v;
      // Older files have no `runs` entry, or one without its commit: the bench ran at the file's commit.
      const r = old.runs?.[k];
      runs[k] = r ? { ...r, commit: r.commit ?? old.commit ?? 'unknown' } : { seconds: NaN, commit: old.commit ?? 'unknown', load: { before: old.load!.start, after: old.load!.end } };
    }
    log(`bench: merging with ${latestPath} (keeping ${Object.keys(results).join(', ') || 'nothing'})`);
  }
  const commit = gitCommit(projectDir);
  const localKvm = haveKvm() && process.arch === 'x64';
  let testHostMachine: unknown;
  const where: Record<string, Where> = {};
  // Without a local KVM, the local benches go to the x86_64 test host together, in one boot.
  const toHost = localKvm ? [] : chosen.filter((n) => LOCAL_KVM_BENCHES.includes(n));
  if (toHost.length) {
    log(`bench: ${toHost.join(', ')} inside the x86_64 test host (no usable /dev/kvm here), with their peers beside them ...`);
    const t0 = monoMs();
    const { outcomes, hostMachine } = await runLocalBenchesInTestHost(projectDir, toHost.map((n) => {
      const b: BenchSpec = BENCHES[n];
      return { name: n, script: b.script, flags: b.flags, args: IN_HOST[n]!.args, timeoutMin: IN_HOST[n]!.timeoutMin };
    }), log);
    const seconds = round((monoMs() - t0) / 1000, 1);
    if (hostMachine) testHostMachine = hostMachine;
    for (const n of toHost) {
      const o = outcomes[n]!;
      runs[n] = { seconds, commit, load: o.load, where: 'x86_64 test host', ...(o.error ? { error: o.error } : {}) };
      if (o.json !== undefined) results[n] = o.json;
      where[n] = 'x86_64 test host';
      log(`bench: ${n} ${o.error ? 'FAILED' : 'done'} (in the test host)${o.error ? `: ${o.error.slice(0, 400)}` : ''}`);
    }
  }
  for (const name of chosen.filter((n) => !toHost.includes(n))) {
    log(`bench: ${name} ...`);
    const r = await runBench(name, log);
    where[name] = whereOf(name, localKvm);
    runs[name] = { seconds: r.seconds, commit, load: r.load, where: where[name], ...(r.error ? { error: r.error } : {}) };
    if (r.json !== undefined) results[name] = r.json;
    log(`bench: ${name} ${r.error ? 'FAILED' : 'done'} in ${r.seconds} s${r.error ? `: ${r.error.slice(0, 400)}` : ''}`);
  }
  // Merged benches keep where they ran; older records without it ran before the machines lost /dev/kvm.
  for (const [n, r] of Object.entries(runs)) where[n] ??= r.where ?? (LOCAL_KVM_BENCHES.includes(n as BenchName) ? 'local' : whereOf(n as BenchName, true));

  const typed = results as Results;
  const figs = figures(typed).map((f) => ({ ...f, where: where[f.bench] ?? whereOf(f.bench, localKvm) }));
  const machine = machineInfo();
  const latest = {
    generated: new Date().toISOString(),
    commit,
    machine: {
      /** The machine run-all ran on; 'x86_64 test host' rows ran in a TCG L1 (kvm_amd) booted on it. */
      local: machine,
      ...(typed['linux-boot']?.inner ? { testHost: typed['linux-boot'].inner.machine } : testHostMachine ? { testHost: testHostMachine } : {}),
    },
    load: { start: startLoad, end: loadInfo() },
    ratioConvention: 'ratio = flintvm median / peer median; for times and memory above 1 means flintvm is slower/bigger, for VMs/s above 1 means flintvm is faster',
    figures: figs,
    runs,
    benches: results,
  };
  mkdirSync(outDir, { recursive: true });
  writeFileSync(latestPath, JSON.stringify(latest, null, 2) + '\n');
  if (typed.boot) {
    const lb = typed.boot.load;
    const ll = typed['linux-boot']?.outsideLoad;
    const sub = `commit ${(runs.boot?.commit ?? latest.commit).slice(0, 12)}, ${latest.generated}; ${machine.nproc} x ${machine.model}; ` +
      `1-min load ${lb.before.loadavg[0]}..${lb.after.loadavg[0]} (tiny guest)${ll ? `, ${ll.before.loadavg[0]}..${ll.after.loadavg[0]} (Linux)` : ''}; stacked medians of each phase`;
    writeFileSync(join(outDir, 'boot.svg'), bootSvg(typed.boot, typed['linux-boot'], sub));
  }

  const out: string[] = [];
  if (typed.boot) out.push(...formatBoot(typed.boot), '');
  if (typed.memory) out.push(...formatMemory(typed.memory), '');
  if (typed.density) out.push(...formatDensity(typed.density), '');
  if (typed['linux-boot']) out.push(...formatLinuxBoot(typed['linux-boot']), '');
  if (typed.net) out.push(...formatNet(typed.net), '');
  if (typed.vsock) out.push(...formatVsock(typed.vsock), '');
  if (typed.oci) out.push(...formatOci(typed.oci), '');
  if (typed.share) out.push(...formatShare(typed.share), '');
  if (typed.blk) out.push(formatBlkTable(typed.blk.summary), '');
  if (typed.snapshot) out.push(...formatSnapshot(typed.snapshot), '');
  out.push(`Summary (commit ${latest.commit.slice(0, 12)}; ${machine.nproc} CPUs ${machine.model}; kernel ${machine.kernel}; KVM ${machine.kvm})`);
  out.push(`1-min load before..after each bench: ${Object.entries(runs).map(([n, r]) => `${n} ${r.load.before.loadavg[0]}..${r.load.after.loadavg[0]}`).join(', ')} (${machine.nproc} CPUs)`);
  out.push(...formatTable(figs));
  for (const [n, r] of Object.entries(runs)) if (r.error) out.push(`${n}: FAILED: ${r.error.slice(0, 600)}`);
  out.push('', `wrote ${join(outDir, 'latest.json')}${typed.boot ? ` and ${join(outDir, 'boot.svg')}` : ''}`);
  console.log(out.join('\n'));
  if (Object.values(runs).some((r) => r.error)) process.exitCode = 1;
}

await main();
