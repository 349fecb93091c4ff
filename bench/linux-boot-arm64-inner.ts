/**
 * The arm64 Linux-boot benchmark's inside half: runs INSIDE the arm64 real-KVM
 * test host (started by bench/linux-boot-arm64.ts through test/hosts/run.ts), an
 * arm64 Linux under qemu-system-aarch64 TCG with EL2 whose /dev/kvm is arm64 KVM
 * (VHE, GICv3 vgic) on an emulated CPU. It boots the default arm64 guest (Image +
 * initramfs, running `sh -c 'echo MARK; cat /proc/uptime'`) N times each way,
 * interleaved, in this order per repetition:
 * - flintvm run: `node bin/flintvm.cjs run ... -- sh -c '...'`, the CLI, a
 *   fresh node process per boot;
 * - QEMU: qemu-system-aarch64 -M virt,gic-version=3 -accel kvm -cpu host, the
 *   same Image, initramfs, memory, vCPUs and command line (but console=ttyAMA0,
 *   virt's PL011, where flintvm has a 16550 on ttyS0); the guest's
 *   `poweroff -f` (PSCI SYSTEM_OFF) ends QEMU;
 * - flintvm child: this script with --child, a fresh node process per boot that
 *   imports flintvm, boots one MicroVM with its console on stdout and reports its
 *   own stamps (process start, import done, start(), first KVM_RUN, boot timer,
 *   ...), all on CLOCK_MONOTONIC, so a cold boot splits into node + VMM + guest;
 * - flintvm warm: MicroVM after MicroVM in this process (one throw-away first).
 * The cold kinds are timed from spawn to init's banner line on the child's
 * stdout (`flintvm guest: ...`, printed by /init right after its boot-timer
 * write), to the command's marker line, and to process exit: QEMU's virt board
 * has nothing at flintvm's guest-control address (0x09020000), so console lines
 * are the only stamps both have. The guest's own uptime when its command runs
 * (kernel start to the command, by the guest's clock) is read from the console,
 * so guest time and VMM time can be told apart.
 * Prints `BENCH-LINUX-ARM64-JSON {json}` on one line.
 *
 * Usage (inside the host): node dist/bench/linux-boot-arm64-inner.js [--reps N] --qemu-dir DIR
 *                          node dist/bench/linux-boot-arm64-inner.js --child IMAGE INITRD
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { summarize, type Summary } from './stats.js';
import { loadInfo, machineInfo, monoMs, round, wallToMonoOffset } from './common.js';
import { guestCommandCmdline } from '../lib/guest-command.js';
// MicroVM (and koffi with it) is imported dynamically: the per-boot child times that import as a phase.
import type { BootTimings } from '../lib/index.js';

/** The marker the guest command prints first. */
export const ARM64_MARK = 'FLINTVM-BENCH-MARK';
/** The guest command: the marker, then the guest's uptime (s) when it runs. */
export const ARM64_BENCH_COMMAND = ['sh', '-c', `echo ${ARM64_MARK}; cat /proc/uptime`];
/** flintvm's arm64 default command line (arch/arm64/boot.ts): its 16550 is ttyS0. */
export const FLINTVM_ARM64_CMDLINE = 'console=ttyS0 earlycon panic=1';
/** The same for QEMU virt, whose console UART is a PL011 (ttyAMA0); earlycon finds it through the FDT's stdout-path. */
export const QEMU_ARM64_CMDLINE = 'console=ttyAMA0 earlycon panic=1';
/** What `flintvm run -- CMD` appends (QEMU gets the same): the command, and `quiet`. */
export const ARM64_BENCH_EXTRA = `${guestCommandCmdline(ARM64_BENCH_COMMAND)} quiet`;
export const ARM64_BANNER = 'flintvm guest:';
export const ARM64_MEMORY_MIB = 256;
export const ARM64_VCPUS = 1;
/** `/proc/uptime`'s line: uptime and idle time, in seconds. */
const UPTIME_RE = /^(\d+\.\d+) \d+\.\d+\s*$/m;
const CHILD_TAG = 'BENCH-ARM64-CHILD';
const BOOT_TIMEOUT_MS = 240_000;

// The command as users run it: the package's bin/flintvm.cjs, which runs the bundled CLI (bin/launch.cjs).
const FLINTVM_BIN = fileURLToPath(new URL('../../bin/flintvm.cjs', import.meta.url));
const SELF = fileURLToPath(import.meta.url);

/** The guest's uptime (ms) printed after the marker, or NaN. */
function guestUptimeMs(console: string): number {
  const i = console.indexOf(ARM64_MARK);
  if (i < 0) return NaN;
  const m = UPTIME_RE.exec(console.slice(i + ARM64_MARK.length));
  return m ? Number(m[1]) * 1000 : NaN;
}

/** A VMM process per boot, timed from the spawn call (ms). */
export interface ColdArm64 {
  /** spawn -> init's banner line on the child's stdout. */
  toBanner: Summary;
  /** spawn -> the command's marker line. */
  toMark: Summary;
  /** spawn -> process exit. */
  toExit: Summary;
  /** The guest's uptime when its command ran (guest clock). */
  guestUptime: Summary;
}

/** The flintvm child's own stamps, cumulative from the parent's spawn call (ms). */
export interface ChildArm64 extends ColdArm64 {
  toProcessStart: Summary;
  toMain: Summary;
  toFlintvmImported: Summary;
  toStartCalled: Summary;
  toFirstRun: Summary;
  toGuestInit: Summary;
  toExitStatus: Summary;
  /** In the child: start() -> boot timer and start() -> marker (what a fresh process's first VM costs from start()). */
  startToGuestInit: Summary;
  startToMark: Summary;
}

export interface WarmArm64 {
  toFirstRun: Summary; toGuestInit: Summary; toBanner: Summary; toMark: Summary; toExit: Summary; total: Summary;
  guestUptime: Summary;
  phases: Record<string, Summary>;
}

/** Phases of one in-process boot: [name, from, to] over BootTimings plus `banner` and `mark`. */
export const ARM64_PHASES = [
  ['create VM + memory', 'startCalled', 'vmReady'],
  ['load Image+initrd+FDT, set regs', 'vmReady', 'kernelLoaded'],
  ['vCPU worker, rest of its start', 'kernelLoaded', 'workersReady'],
  ['to first KVM_RUN', 'workersReady', 'firstRun'],
  ['guest kernel to init (boot timer)', 'firstRun', 'guestInit'],
  ['init to banner on console', 'guestInit', 'banner'],
  ['banner to command marker', 'banner', 'mark'],
  ['marker to exit status', 'mark', 'exited'],
  ['release', 'exited', 'released'],
] as const;

export interface LinuxArm64InnerResult {
  reps: number;
  memoryMiB: number;
  vcpus: number;
  guestCommand: string[];
  flintvmCmdline: string;
  qemuCmdline: string;
  machine: ReturnType<typeof machineInfo>;
  qemuVersion: string;
  flintvmRun: (ColdArm64 & { command: string }) | { error: string };
  flintvmChild: (ChildArm64 & { phases: Record<string, Summary>; command: string }) | { error: string };
  qemu: (ColdArm64 & { command: string }) | { error: string };
  flintvmWarm: (WarmArm64 & { first?: { toGuestInit: number; toMark: number; total: number } }) | { error: string };
  load: { before: ReturnType<typeof loadInfo>; after: ReturnType<typeof loadInfo> };
}

export function qemuArm64Args(image: string, initrd: string): string[] {
  return [
    '-M', 'virt,gic-version=3', '-accel', 'kvm', '-cpu', 'host',
    '-m', String(ARM64_MEMORY_MIB), '-smp', String(ARM64_VCPUS),
    '-nographic', '-nodefaults', '-no-user-config', '-no-reboot',
    '-serial', 'stdio',
    '-kernel', image, '-initrd', initrd,
    '-append', `${QEMU_ARM64_CMDLINE} ${ARM64_BENCH_EXTRA}`,
  ];
}

export function flintvmArm64Args(image: string, initrd: string): string[] {
  return ['run', '--kernel', image, '--initrd', initrd, '--mem', String(ARM64_MEMORY_MIB), '--cpus', String(ARM64_VCPUS), '--cmdline', FLINTVM_ARM64_CMDLINE, '--', ...ARM64_BENCH_COMMAND];
}

const shownArgs = (args: readonly string[]) => args.map((a) => (/[\s;']/.test(a) ? `'${a.replace(/'/g, `'\\''`)}'` : a)).join(' ');

// ---------------------------------------------------------------------------- one boot in this process

/** Stamps of one in-process boot, all monoMs (CLOCK_MONOTONIC, comparable across processes). */
type VmStamps = { [K in keyof BootTimings]-?: number } & { banner: number; mark: number; guestUptime: number };

async function bootInProcess(image: string, initrd: string, toStdout: boolean): Promise<VmStamps> {
  const { MicroVM } = await import('../lib/index.js');
  const offset = wallToMonoOffset(); // BootTimings are timeOrigin-based: subtract to get monoMs
  const vm = new MicroVM({
    kernel: image, initrd, memoryMiB: ARM64_MEMORY_MIB, vcpus: ARM64_VCPUS,
    cmdline: FLINTVM_ARM64_CMDLINE, extraCmdline: ARM64_BENCH_EXTRA,
  });
  let out = '';
  let banner: number | undefined;
  let mark: number | undefined;
  vm.console.on('data', (c: Buffer) => {
    const t = monoMs();
    out += c.toString('latin1');
    if (banner === undefined && out.includes(ARM64_BANNER)) banner = t;
    if (mark === undefined && out.includes(ARM64_MARK)) mark = t;
  });
  if (toStdout) vm.console.pipe(process.stdout, { end: false });
  const timer = setTimeout(() => { void vm.stop(); }, BOOT_TIMEOUT_MS);
  await vm.start();
  const e = await vm.wait();
  clearTimeout(timer);
  const ok = (e.reason === 'guest-exit' && e.exitStatus === 0) || e.reason === 'poweroff';
  if (!ok) throw new Error(`boot ended ${e.reason} (${e.exitStatus}): ${out.slice(-1500)}`);
  if (banner === undefined || mark === undefined) throw new Error(`no '${banner === undefined ? ARM64_BANNER : ARM64_MARK}' line: ${out.slice(-1500)}`);
  const t = e.timings;
  const keys = ['startCalled', 'vmReady', 'kernelLoaded', 'workersReady', 'firstRun', 'guestInit', 'exited', 'released'] as const;
  const missing = keys.filter((k) => t[k] === undefined);
  if (missing.length) throw new Error(`boot timings lack ${missing.join(', ')} (the guest never wrote the boot timer?): ${out.slice(-1500)}`);
  const mono = Object.fromEntries(keys.map((k) => [k, t[k]! - offset])) as { [K in (typeof keys)[number]]: number };
  return { ...mono, banner, mark, guestUptime: guestUptimeMs(out) };
}

/** --child: one boot, console on stdout, stamps on stderr as `BENCH-ARM64-CHILD {json}`. */
async function childMain(image: string, initrd: string): Promise<void> {
  const mainAt = monoMs();
  const processStart = performance.timeOrigin - wallToMonoOffset();
  await import('../lib/index.js');
  const imported = monoMs();
  try {
    const s = await bootInProcess(image, initrd, true);
    process.stderr.write(`${CHILD_TAG} ${JSON.stringify({ processStart, mainAt, imported, ...s })}\n`);
  } catch (e) {
    process.stderr.write(`flintvm child: ${(e as Error).message}\n`);
    process.exitCode = 1;
  }
}

// ---------------------------------------------------------------------------- one VMM process per boot

type ColdStamps = { spawnAt: number; toBanner: number; toMark: number; toExit: number; guestUptime: number; stderr: string };

/**
 * Spawns `cmd args` and stamps (monoMs): the spawn call, the first appearance of
 * the banner and of the marker on its stdout (as this event loop sees them), and
 * its exit. (bench/common.ts's runTimed stamps only one marker.)
 */
function coldBoot(cmd: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv; stdinPipe?: boolean }): Promise<ColdStamps> {
  return new Promise((resolve, reject) => {
    const spawnAt = monoMs();
    // stdinPipe: an already-ended pipe (`flintvm run` calls process.stdin.unref(), which a /dev/null stdin lacks).
    const child = spawn(cmd, args, { stdio: [opts.stdinPipe ? 'pipe' : 'ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
    child.stdin?.end();
    let stdout = '';
    let stderr = '';
    let bannerAt: number | undefined;
    let markAt: number | undefined;
    let exitAt = 0;
    child.stdout!.setEncoding('latin1');
    child.stdout!.on('data', (d: string) => {
      const t = monoMs();
      stdout += d;
      if (bannerAt === undefined && stdout.includes(ARM64_BANNER)) bannerAt = t;
      if (markAt === undefined && stdout.includes(ARM64_MARK)) markAt = t;
    });
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), BOOT_TIMEOUT_MS);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('exit', () => { exitAt = monoMs(); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      exitAt ||= monoMs();
      if (code !== 0 || bannerAt === undefined || markAt === undefined) {
        reject(new Error(`${cmd} exited ${code ?? signal}${bannerAt === undefined ? ', no banner' : ''}${markAt === undefined ? ', no marker' : ''}: ${(stdout + stderr).slice(-1500)}`));
        return;
      }
      resolve({ spawnAt, toBanner: bannerAt - spawnAt, toMark: markAt - spawnAt, toExit: exitAt - spawnAt, guestUptime: guestUptimeMs(stdout), stderr });
    });
  });
}

type ChildStamps = ColdStamps & { child: VmStamps & { processStart: number; mainAt: number; imported: number } };

function parseChild(c: ColdStamps): ChildStamps {
  const line = c.stderr.split('\n').find((l) => l.startsWith(CHILD_TAG + ' '));
  if (!line) throw new Error(`the flintvm child printed no ${CHILD_TAG} line: ${c.stderr.slice(-1500)}`);
  return { ...c, child: JSON.parse(line.slice(CHILD_TAG.length + 1)) };
}

// ---------------------------------------------------------------------------- summaries

const sum = <T>(xs: T[], f: (t: T) => number): Summary => summarize(xs.map((t) => round(f(t), 1)));

function summarizeCold(xs: ColdStamps[]): ColdArm64 {
  return { toBanner: sum(xs, (t) => t.toBanner), toMark: sum(xs, (t) => t.toMark), toExit: sum(xs, (t) => t.toExit), guestUptime: sum(xs, (t) => t.guestUptime) };
}

function phasesOf(xs: VmStamps[]): Record<string, Summary> {
  const phases: Record<string, Summary> = {};
  for (const [name, from, to] of ARM64_PHASES) phases[name] = sum(xs, (t) => t[to] - t[from]);
  return phases;
}

function summarizeChild(xs: ChildStamps[]): ChildArm64 & { phases: Record<string, Summary> } {
  const c = (f: (s: VmStamps & { processStart: number; mainAt: number; imported: number }) => number) => sum(xs, (x) => f(x.child) - x.spawnAt);
  return {
    ...summarizeCold(xs),
    toProcessStart: c((s) => s.processStart),
    toMain: c((s) => s.mainAt),
    toFlintvmImported: c((s) => s.imported),
    toStartCalled: c((s) => s.startCalled),
    toFirstRun: c((s) => s.firstRun),
    toGuestInit: c((s) => s.guestInit),
    toExitStatus: c((s) => s.exited),
    startToGuestInit: sum(xs, (x) => x.child.guestInit - x.child.startCalled),
    startToMark: sum(xs, (x) => x.child.mark - x.child.startCalled),
    phases: phasesOf(xs.map((x) => x.child)),
  };
}

function summarizeWarm(xs: VmStamps[]): WarmArm64 {
  return {
    phases: phasesOf(xs),
    toFirstRun: sum(xs, (t) => t.firstRun - t.startCalled),
    toGuestInit: sum(xs, (t) => t.guestInit - t.startCalled),
    toBanner: sum(xs, (t) => t.banner - t.startCalled),
    toMark: sum(xs, (t) => t.mark - t.startCalled),
    toExit: sum(xs, (t) => t.exited - t.startCalled),
    total: sum(xs, (t) => t.released - t.startCalled),
    guestUptime: sum(xs, (t) => t.guestUptime),
  };
}

// ---------------------------------------------------------------------------- main

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { reps: { type: 'string' }, 'qemu-dir': { type: 'string' } } });
  const reps = Number(values.reps ?? 5);
  if (!Number.isInteger(reps) || reps < 1) throw new Error(`--reps must be a positive integer, got ${values.reps}`);
  const before = loadInfo();
  const guestDir = process.env.FLINTVM_GUEST_DIR ?? '/work/guest';
  const image = join(guestDir, 'Image');
  const initrd = join(guestDir, 'initramfs.cpio.gz');
  const qemuDir = values['qemu-dir'] ?? '/work/project/bench/.host-qemu-arm64';
  const qemuBin = join(qemuDir, 'bin/qemu-system-aarch64');
  const qemuEnv = { ...process.env, LD_LIBRARY_PATH: join(qemuDir, 'lib') };
  const log = (s: string) => console.log(`linux-boot-arm64: ${s}`);

  let qemuVersion = 'unknown';
  const err: Partial<Record<'run' | 'child' | 'qemu' | 'warm', string>> = {};
  if (!existsSync(qemuBin)) err.qemu = `no QEMU bundle at ${qemuBin}`;
  else {
    try {
      qemuVersion = execFileSync(qemuBin, ['--version'], { env: qemuEnv, encoding: 'utf8' }).split('\n')[0]!.trim();
    } catch (e) {
      err.qemu = `${qemuBin} --version failed: ${(e as Error).message}`;
    }
  }
  log(`${qemuVersion}; ${reps} reps of flintvm run, QEMU, flintvm child, flintvm warm (interleaved)`);

  // One throw-away warm boot: lazy module set-up, JIT, and the page cache for Image and initrd.
  let first: { toGuestInit: number; toMark: number; total: number } | undefined;
  try {
    const f = await bootInProcess(image, initrd, false);
    first = { toGuestInit: round(f.guestInit - f.startCalled, 1), toMark: round(f.mark - f.startCalled, 1), total: round(f.released - f.startCalled, 1) };
    log(`throw-away warm boot: start() -> boot timer ${first.toGuestInit} ms, -> marker ${first.toMark} ms`);
  } catch (e) {
    err.warm = (e as Error).message;
  }

  const runS: ColdStamps[] = [];
  const qemuS: ColdStamps[] = [];
  const childS: ChildStamps[] = [];
  const warmS: VmStamps[] = [];
  const runArgs = [FLINTVM_BIN, ...flintvmArm64Args(image, initrd)];
  const qArgs = qemuArm64Args(image, initrd);
  const childArgs = [SELF, '--child', image, initrd];
  const fmt = (s: { toBanner: number; toMark: number; toExit: number }) => `${s.toBanner.toFixed(0)}/${s.toMark.toFixed(0)}/${s.toExit.toFixed(0)}`;
  for (let i = 0; i < reps; i++) {
    const got: string[] = [];
    if (!err.run) {
      try {
        const s = await coldBoot(process.execPath, runArgs, { stdinPipe: true });
        runS.push(s);
        got.push(`flintvm run ${fmt(s)}`);
      } catch (e) {
        err.run = (e as Error).message;
      }
    }
    if (!err.qemu) {
      try {
        const s = await coldBoot(qemuBin, qArgs, { env: qemuEnv });
        qemuS.push(s);
        got.push(`QEMU ${fmt(s)}`);
      } catch (e) {
        err.qemu = (e as Error).message;
      }
    }
    if (!err.child) {
      try {
        const s = parseChild(await coldBoot(process.execPath, childArgs, {}));
        childS.push(s);
        got.push(`flintvm child ${fmt(s)} (boot timer at ${(s.child.guestInit - s.spawnAt).toFixed(0)})`);
      } catch (e) {
        err.child = (e as Error).message;
      }
    }
    if (!err.warm) {
      try {
        const s = await bootInProcess(image, initrd, false);
        warmS.push(s);
        got.push(`flintvm warm from start(): timer ${(s.guestInit - s.startCalled).toFixed(0)}, ${fmt({ toBanner: s.banner - s.startCalled, toMark: s.mark - s.startCalled, toExit: s.exited - s.startCalled })}`);
      } catch (e) {
        err.warm = (e as Error).message;
      }
    }
    log(`rep ${i + 1}/${reps} (ms to banner/marker/exit): ${got.join('; ') || 'nothing ran'}`);
  }
  for (const [k, v] of Object.entries(err)) log(`${k} failed: ${v.slice(-300)}`);

  const result: LinuxArm64InnerResult = {
    reps,
    memoryMiB: ARM64_MEMORY_MIB,
    vcpus: ARM64_VCPUS,
    guestCommand: ARM64_BENCH_COMMAND,
    flintvmCmdline: `${FLINTVM_ARM64_CMDLINE} ${ARM64_BENCH_EXTRA}`,
    qemuCmdline: `${QEMU_ARM64_CMDLINE} ${ARM64_BENCH_EXTRA}`,
    machine: machineInfo(),
    qemuVersion,
    flintvmRun: err.run ? { error: err.run } : { ...summarizeCold(runS), command: `node bin/flintvm.cjs ${shownArgs(flintvmArm64Args('Image', 'initramfs.cpio.gz'))}` },
    flintvmChild: err.child ? { error: err.child } : { ...summarizeChild(childS), command: 'node dist/bench/linux-boot-arm64-inner.js --child Image initramfs.cpio.gz' },
    qemu: err.qemu ? { error: err.qemu } : { ...summarizeCold(qemuS), command: `qemu-system-aarch64 ${shownArgs(qemuArm64Args('Image', 'initramfs.cpio.gz'))}` },
    flintvmWarm: err.warm ? { error: err.warm } : { ...summarizeWarm(warmS), ...(first ? { first } : {}) },
    load: { before, after: loadInfo() },
  };
  console.log(`BENCH-LINUX-ARM64-JSON ${JSON.stringify(result)}`);
}

if (process.argv[1] && SELF === process.argv[1]) {
  if (process.argv[2] === '--child') {
    const [image, initrd] = process.argv.slice(3);
    if (!image || !initrd) throw new Error('usage: linux-boot-arm64-inner.js --child IMAGE INITRD');
    await childMain(image, initrd);
  } else {
    const t0 = monoMs();
    await main();
    console.log(`linux-boot-arm64: inner part took ${((monoMs() - t0) / 1000).toFixed(1)} s`);
  }
}
