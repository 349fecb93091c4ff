/**
 * The Linux-boot benchmark's inside half: runs INSIDE the real-KVM test host
 * (started by bench/linux-boot.ts through test/hosts/run.ts), where /dev/kvm is
 * kvm_amd on a TCG-emulated CPU. It boots the default guest (vmlinux through
 * PVH + initramfs, running `cat /proc/uptime`) N times each way, interleaved:
 * - flintvm cold: `flintvm run --pvh ... -- true`, a fresh node process per boot;
 * - QEMU cold: qemu-system-x86_64 -M microvm ... -enable-kvm -cpu host, same
 *   kernel, initrd, memory, vCPUs and command line (the guest's exit-port write
 *   ends it through isa-debug-exit on port 0x601, as it ends flintvm);
 * - flintvm warm: MicroVM after MicroVM in this process (one throw-away first),
 *   with the PVH and the Linux 64-bit entry, and PVH with the vCPU worker
 *   from a WorkerPool (`pooled`).
 * Both cold kinds are timed from spawn to the init's banner line on the console
 * (`flintvm guest: ...`, printed right after init writes the boot timer) and to
 * process exit. The guest's own uptime when its command runs (the guest-side
 * boot time: kernel start to userspace command, by the guest's clock) is read
 * from the console, so guest time and VMM time can be told apart for both.
 * Prints `BENCH-LINUX-JSON {json}` on one line.
 *
 * Usage (inside the host): node dist/bench/linux-boot-inner.js [--runs N] [--qemu-dir DIR]
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { summarize, type Summary } from './stats.js';
import { loadInfo, machineInfo, monoMs, qemuMicrovmArgs, round, runTimed, wallToMonoOffset } from './common.js';
import { MicroVM, WorkerPool, guestCommandCmdline, type BootTimings } from '../lib/index.js';

/** The one command line both VMMs get (flintvm's default, with reboot=t, which ends a VM on any VMM). */
export const LINUX_BENCH_CMDLINE = 'console=ttyS0 reboot=t panic=1 pci=off i8042.noaux i8042.nomux i8042.dumbkbd tsc=reliable';
/** The guest command: prints the guest's uptime (s) when it runs. */
export const LINUX_BENCH_COMMAND = ['cat', '/proc/uptime'];
/** What `flintvm run -- cat /proc/uptime` appends to it. */
export const LINUX_BENCH_EXTRA = `${guestCommandCmdline(LINUX_BENCH_COMMAND)} quiet`;
/** `/proc/uptime`'s line: uptime and idle time, in seconds. */
const UPTIME_RE = /^(\d+\.\d+) \d+\.\d+\s*$/m;

/** The guest's uptime (ms) printed after the banner, or NaN. */
function guestUptimeMs(console: string): number {
  const after = console.slice(console.indexOf(LINUX_BANNER));
  const m = UPTIME_RE.exec(after);
  return m ? Number(m[1]) * 1000 : NaN;
}
export const LINUX_BANNER = 'flintvm guest:';
export const LINUX_MEMORY_MIB = 256;
export const LINUX_VCPUS = 1;

// The command as users run it: the package's bin/flintvm.cjs, which runs the bundled CLI (bin/launch.cjs).
const FLINTVM_BIN = fileURLToPath(new URL('../../bin/flintvm.cjs', import.meta.url));

/** Warm boots: cumulative times from start() (ms), and each phase's own duration. */
export interface WarmLinux {
  toFirstRun: Summary; toGuestInit: Summary; toBanner: Summary; toExit: Summary; total: Summary;
  /** The guest's uptime when its command ran (ms, guest clock). */
  guestUptime: Summary;
  phases: Record<string, Summary>;
}

/** Warm phases of a Linux boot: [name, from, to] over BootTimings plus `banner`. */
export const LINUX_WARM_PHASES = [
  ['create VM + memory', 'startCalled', 'vmReady'],
  ['load kernel+initrd, set regs', 'vmReady', 'kernelLoaded'],
  ['vCPU worker, rest of its start', 'kernelLoaded', 'workersReady'],
  ['to first KVM_RUN', 'workersReady', 'firstRun'],
  ['guest kernel to init', 'firstRun', 'guestInit'],
  ['init to banner on console', 'guestInit', 'banner'],
  ['banner to exit port', 'banner', 'exited'],
  ['release', 'exited', 'released'],
] as const;

export interface LinuxInnerResult {
  runs: number;
  cmdline: string;
  memoryMiB: number;
  vcpus: number;
  machine: ReturnType<typeof machineInfo>;
  flintvmCold: { toBanner: Summary; total: Summary; guestUptime: Summary } | { error: string };
  qemuCold: { toBanner: Summary; total: Summary; guestUptime: Summary; command: string } | { error: string };
  flintvmWarm: Record<'pvh' | 'linux64', WarmLinux | { error: string }> & {
    /** PVH with the vCPU worker from a WorkerPool (absent in results from before it existed). */
    pooled?: WarmLinux | { error: string };
    first?: { toBanner: number; total: number };
  };
  load: { before: ReturnType<typeof loadInfo>; after: ReturnType<typeof loadInfo> };
}

function qemuArgs(vmlinux: string, initrd: string, shareDir: string): string[] {
  return qemuMicrovmArgs({ vmlinux, initrd, shareDir, memoryMiB: LINUX_MEMORY_MIB, vcpus: LINUX_VCPUS, append: `${LINUX_BENCH_CMDLINE} ${LINUX_BENCH_EXTRA}` });
}

type WarmStamps = BootTimings & { banner?: number; guestUptime?: number };

/** `pool`: take the vCPU worker from it. Either way the pool's refill has finished first, so no boot shares the CPU with a standby starting. */
async function warmBoot(vmlinux: string, initrd: string, protocol: 'pvh' | 'linux64', pool: WorkerPool, usePool = false): Promise<WarmStamps> {
  await pool.warm();
  const offset = wallToMonoOffset();
  const vm = new MicroVM({
    kernel: vmlinux, initrd, memoryMiB: LINUX_MEMORY_MIB, vcpus: LINUX_VCPUS, bootProtocol: protocol,
    cmdline: LINUX_BENCH_CMDLINE, extraCmdline: LINUX_BENCH_EXTRA, ...(usePool ? { workerPool: pool } : {}),
  });
  let out = '';
  let banner: number | undefined;
  vm.console.on('data', (c: Buffer) => {
    out += c.toString('latin1');
    if (banner === undefined && out.includes(LINUX_BANNER)) banner = monoMs() + offset; // back to the timings' (wall) clock
  });
  const timer = setTimeout(() => { void vm.stop(); }, 120_000);
  await vm.start();
  const e = await vm.wait();
  clearTimeout(timer);
  if (e.reason !== 'guest-exit' || e.exitStatus !== 0) throw new Error(`warm ${protocol} boot ended ${e.reason} (${e.exitStatus}): ${out.slice(-1500)}`);
  if (banner === undefined) throw new Error(`warm ${protocol} boot: no '${LINUX_BANNER}' line: ${out.slice(-1500)}`);
  return { ...e.timings, banner, guestUptime: guestUptimeMs(out) };
}

function summarizeWarm(xs: WarmStamps[]): WarmLinux {
  const d = (f: (t: WarmStamps) => number) => summarize(xs.map((t) => round(f(t), 1)));
  const phases: Record<string, Summary> = {};
  for (const [name, from, to] of LINUX_WARM_PHASES) phases[name] = d((t) => t[to]! - t[from]!);
  return {
    phases,
    toFirstRun: d((t) => t.firstRun! - t.startCalled!),
    toGuestInit: d((t) => t.guestInit! - t.startCalled!),
    toBanner: d((t) => t.banner! - t.startCalled!),
    toExit: d((t) => t.exited! - t.startCalled!),
    total: d((t) => t.released! - t.startCalled!),
    guestUptime: d((t) => t.guestUptime!),
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string' }, 'qemu-dir': { type: 'string' } } });
  const runs = Number(values.runs ?? 5);
  const before = loadInfo();
  const guestDir = process.env.FLINTVM_GUEST_DIR ?? '/work/guest';
  const vmlinux = join(guestDir, 'vmlinux');
  const initrd = join(guestDir, 'initramfs.cpio.gz');
  const qemuDir = values['qemu-dir'] ?? '/work/project/bench/.host-qemu';
  const qemuBin = join(qemuDir, 'bin/qemu-system-x86_64');
  const log = (s: string) => console.log(`linux-boot: ${s}`);

  // Warm (in this process) first: one throw-away boot, then N of each protocol, interleaved.
  const warm: Record<'pvh' | 'linux64' | 'pooled', WarmStamps[]> = { pvh: [], linux64: [], pooled: [] };
  const warmErr: Partial<Record<'pvh' | 'linux64' | 'pooled', string>> = {};
  let first: { toBanner: number; total: number } | undefined;
  const pool = new WorkerPool({ size: 1, refillDelayMs: 600_000 });
  try {
    const f = await warmBoot(vmlinux, initrd, 'pvh', pool);
    first = { toBanner: round(f.banner! - f.startCalled!, 1), total: round(f.released! - f.startCalled!, 1) };
  } catch (e) {
    warmErr.pvh = (e as Error).message;
  }
  for (let i = 0; i < runs; i++) {
    for (const p of ['pvh', 'linux64', 'pooled'] as const) {
      if (warmErr[p]) continue;
      try {
        warm[p].push(await warmBoot(vmlinux, initrd, p === 'pooled' ? 'pvh' : p, pool, p === 'pooled'));
      } catch (e) {
        warmErr[p] = (e as Error).message;
      }
    }
  }
  await pool.close();
  if (pool.stats.missed > 0) warmErr.pooled ??= `${pool.stats.missed} pooled starts found no ready standby`;
  log(`warm done (${warm.pvh.length} pvh, ${warm.linux64.length} linux64, ${warm.pooled.length} pooled)`);

  // Cold, interleaved.
  const fCold: Array<{ toBanner: number; total: number; guestUptime: number }> = [];
  const qCold: Array<{ toBanner: number; total: number; guestUptime: number }> = [];
  let fErr: string | undefined;
  let qErr: string | undefined = existsSync(qemuBin) ? undefined : `no QEMU bundle at ${qemuBin}`;
  const qemuEnv = { ...process.env, LD_LIBRARY_PATH: join(qemuDir, 'lib') };
  const flintvmArgs = [FLINTVM_BIN, 'run', '--kernel', vmlinux, '--initrd', initrd, '--mem', String(LINUX_MEMORY_MIB), '--cpus', String(LINUX_VCPUS), '--pvh', '--cmdline', LINUX_BENCH_CMDLINE, '--', ...LINUX_BENCH_COMMAND];
  for (let i = 0; i < runs; i++) {
    if (!fErr) {
      // stdin as an ended pipe: `flintvm run` calls process.stdin.unref(), which a /dev/null stdin (an fs stream) lacks.
      const r = await runTimed(process.execPath, flintvmArgs, { marker: LINUX_BANNER, timeoutMs: 180_000, stdinPipe: true });
      if (r.code === 0 && r.markerAt !== undefined) fCold.push({ toBanner: r.markerAt - r.spawnAt, total: r.exitAt - r.spawnAt, guestUptime: guestUptimeMs(r.stdout) });
      else fErr = `flintvm run exited ${r.code ?? r.signal}: ${(r.stdout + r.stderr).slice(-1500)}`;
    }
    if (!qErr) {
      const r = await runTimed(qemuBin, qemuArgs(vmlinux, initrd, join(qemuDir, 'share')), { marker: LINUX_BANNER, timeoutMs: 180_000, env: qemuEnv });
      // isa-debug-exit: status 0 -> QEMU exit status 1.
      if (r.code === 1 && r.markerAt !== undefined) qCold.push({ toBanner: r.markerAt - r.spawnAt, total: r.exitAt - r.spawnAt, guestUptime: guestUptimeMs(r.stdout) });
      else qErr = `QEMU exited ${r.code ?? r.signal}: ${(r.stdout + r.stderr).slice(-1500)}`;
    }
  }
  log(`cold done (${fCold.length} flintvm, ${qCold.length} QEMU)`);

  const cold = (xs: Array<{ toBanner: number; total: number; guestUptime: number }>) => ({
    toBanner: summarize(xs.map((x) => round(x.toBanner, 1))), total: summarize(xs.map((x) => round(x.total, 1))),
    guestUptime: summarize(xs.map((x) => round(x.guestUptime, 1))),
  });
  const result: LinuxInnerResult = {
    runs,
    cmdline: `${LINUX_BENCH_CMDLINE} ${LINUX_BENCH_EXTRA}`,
    memoryMiB: LINUX_MEMORY_MIB,
    vcpus: LINUX_VCPUS,
    machine: machineInfo(),
    flintvmCold: fErr ? { error: fErr } : cold(fCold),
    qemuCold: qErr ? { error: qErr } : { ...cold(qCold), command: `qemu-system-x86_64 ${qemuArgs('vmlinux', 'initramfs.cpio.gz', 'share').join(' ')}` },
    flintvmWarm: {
      pvh: warmErr.pvh ? { error: warmErr.pvh } : summarizeWarm(warm.pvh),
      linux64: warmErr.linux64 ? { error: warmErr.linux64 } : summarizeWarm(warm.linux64),
      pooled: warmErr.pooled ? { error: warmErr.pooled } : summarizeWarm(warm.pooled),
      ...(first ? { first } : {}),
    },
    load: { before, after: loadInfo() },
  };
  console.log(`BENCH-LINUX-JSON ${JSON.stringify(result)}`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const t0 = monoMs();
  await main();
  console.log(`linux-boot: inner part took ${((monoMs() - t0) / 1000).toFixed(1)} s`);
}
