/**
 * arm64 Linux boot time, flintvm vs QEMU `-M virt -accel kvm`, measured inside
 * the arm64 real-KVM test host (test/hosts/run.ts: an arm64 L1 Linux under
 * qemu-system-aarch64 TCG with EL2, whose /dev/kvm is arm64 KVM with a GICv3
 * vgic). Everything runs in ONE test-host boot: the inside half is
 * bench/linux-boot-arm64-inner.ts.
 *
 * The test host's image has no QEMU, so bench/host-qemu-arm64.sh builds (once,
 * cached) a bundle of Debian's arm64 qemu-system-aarch64 and the libraries it
 * links; it is carried into the host as bench/.host-qemu-arm64-<pid> (a symlink
 * to the cached bundle, made here and removed afterwards; run.ts copies what it
 * points to).
 *
 * Same kernel Image, initramfs, memory (256 MiB), vCPUs (1) and command line for
 * both VMMs (`<console> earlycon panic=1 flintvm.cmd=... quiet`; the console is
 * ttyS0 on flintvm's 16550 and ttyAMA0 on virt's PL011; `quiet` is what
 * `flintvm run -- CMD` adds, so both get it). The guest runs
 * `sh -c 'echo FLINTVM-BENCH-MARK; cat /proc/uptime'`. Four kinds of boot,
 * interleaved, N of each: QEMU, `flintvm run` and a MicroVM in a fresh node
 * process (all three timed from spawn to init's banner, to the marker, to process
 * exit), and MicroVM after MicroVM in one process (timed from start()). The
 * headline ratio is `flintvm run` spawn -> marker over QEMU spawn -> marker: the
 * same stamp, taken the same way, for both. TCG distorts the
 * absolute figures, and it distorts the two VMMs differently (node's start-up
 * and JIT run on the emulated CPU too): read the ratios as "in this test host".
 *
 * Usage: node dist/bench/linux-boot-arm64.js [--reps N] [--json] [--out FILE]
 *   --reps N     boots of each kind (default 5)
 *   --json       print the JSON instead of the table
 *   --out FILE   where the JSON goes (default bench/results/linux-boot-arm64.json; '-' for nowhere)
 * Guest images: $FLINTVM_ARM64_GUEST_DIR, else the last line of `bash guest/build.sh --arch arm64`.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { gitCommit, isMain, loadInfo, monoMs, parseMarkedJson, round, type LoadInfo } from './common.js';
import type { LinuxArm64InnerResult } from './linux-boot-arm64-inner.js';
import { runInTestHost, findProjectDir } from '../test/hosts/run.js';

export interface LinuxBootArm64Result {
  bench: 'linux-boot-arm64';
  at: string;
  commit: string;
  inner?: LinuxArm64InnerResult;
  error?: string;
  qemuBundle: { dir: string; manifest: string[] };
  guestDir: string;
  testHost: { bootMs: number; totalMs: number; overlayMiB: number; exitCode: number; cpus: number; memoryMiB: number };
  /** flintvm median / QEMU median. */
  ratios: {
    /** `flintvm run` (new node process), spawn -> the command's marker line: the headline figure. */
    runToMark?: number;
    /** `flintvm run`, spawn -> init's banner line. */
    runToBanner?: number;
    /** `flintvm run`, spawn -> process exit. */
    runToExit?: number;
    /** The guest's own uptime when its command ran under `flintvm run` (guest-side boot speed). */
    guestUptime?: number;
    /** flintvm child (MicroVM in a new node process), spawn -> marker. */
    childToMark?: number;
    /** flintvm warm start() -> marker / QEMU spawn -> marker. */
    warmToMarkVsQemu?: number;
    /** flintvm warm start() -> boot timer (guestInit) / QEMU spawn -> banner (its nearest "init reached" stamp). */
    warmGuestInitVsQemuBanner?: number;
  };
  outsideLoad: { before: LoadInfo; after: LoadInfo };
}

const log = (s: string) => process.stderr.write(`linux-boot-arm64: ${s}\n`);

/** Runs bench/host-qemu-arm64.sh: the cached QEMU bundle's directory. */
export function qemuArm64Bundle(projectDir: string): string {
  const out = execFileSync('bash', [join(projectDir, 'bench/host-qemu-arm64.sh')], { cwd: projectDir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const dir = out.trim().split('\n').pop()?.trim() ?? '';
  if (!dir || !existsSync(join(dir, 'bin/qemu-system-aarch64'))) throw new Error(`bench/host-qemu-arm64.sh printed ${JSON.stringify(dir)}, which has no bin/qemu-system-aarch64`);
  return dir;
}

/** The arm64 guest images: $FLINTVM_ARM64_GUEST_DIR, else `bash guest/build.sh --arch arm64` (cached). */
export function arm64GuestDir(projectDir: string): string {
  let dir = process.env.FLINTVM_ARM64_GUEST_DIR;
  if (!dir) {
    const out = execFileSync('bash', [join(projectDir, 'guest/build.sh'), '--arch', 'arm64'], { cwd: projectDir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    dir = out.trim().split('\n').pop()?.trim() ?? '';
  }
  for (const f of ['Image', 'initramfs.cpio.gz']) {
    if (!existsSync(join(dir, f))) throw new Error(`arm64 guest directory ${JSON.stringify(dir)} has no ${f}`);
  }
  return resolve(dir);
}

export async function benchLinuxBootArm64(reps = 5): Promise<LinuxBootArm64Result> {
  const before = loadInfo();
  const projectDir = findProjectDir(dirname(fileURLToPath(import.meta.url)));
  const bundle = qemuArm64Bundle(projectDir);
  const guestDir = arm64GuestDir(projectDir);
  const manifest = readFileSync(join(bundle, 'manifest.txt'), 'utf8').split('\n').filter((l) => /^(key|deb qemu-system-arm) /.test(l));
  // A per-process name: another run of this bench at the same time keeps its own link.
  const rel = `bench/.host-qemu-arm64-${process.pid}`;
  const link = join(projectDir, rel);
  rmSync(link, { recursive: true, force: true });
  mkdirSync(dirname(link), { recursive: true });
  symlinkSync(bundle, link);
  const cpus = 1;
  const memoryMiB = 4096;
  let output = '';
  try {
    const r = await runInTestHost({
      arch: 'arm64',
      command: `node dist/bench/linux-boot-arm64-inner.js --reps ${reps} --qemu-dir /work/project/${rel}`,
      extraPaths: [rel],
      guestDir,
      // ~30-60 s a rep (flintvm run + QEMU + flintvm child + flintvm warm) on a loaded 2-core machine, plus the host's boot.
      timeoutMs: Math.max(15 * 60_000, reps * 120_000),
      cpus,
      memoryMiB,
      onOutput: (c) => {
        output += c;
        for (const l of c.split('\n')) if (l.startsWith('linux-boot-arm64:')) log(`(in host) ${l.slice(18)}`);
      },
      onLog: (l) => log(`host: ${l}`),
    });
    const testHost = { bootMs: round(r.bootMs, 0), totalMs: round(r.totalMs, 0), overlayMiB: round(r.overlayBytes / 1048576, 1), exitCode: r.exitCode, cpus, memoryMiB };
    const res: LinuxBootArm64Result = {
      bench: 'linux-boot-arm64', at: new Date().toISOString(), commit: gitCommit(projectDir),
      qemuBundle: { dir: bundle, manifest }, guestDir, testHost, ratios: {}, outsideLoad: { before, after: loadInfo() },
    };
    try {
      res.inner = parseMarkedJson<LinuxArm64InnerResult>(r.commandOutput || output, 'BENCH-LINUX-ARM64-JSON');
    } catch (e) {
      res.error = `${r.error ?? ''} ${(e as Error).message}`.trim().slice(-3000);
      return res;
    }
    const i = res.inner;
    const q = i.qemu;
    if (!('error' in q)) {
      const x = res.ratios;
      const ratio = (a: { median: number }, b: { median: number }) => round(a.median / b.median, 3);
      if (!('error' in i.flintvmRun)) {
        const f = i.flintvmRun;
        x.runToMark = ratio(f.toMark, q.toMark);
        x.runToBanner = ratio(f.toBanner, q.toBanner);
        x.runToExit = ratio(f.toExit, q.toExit);
        x.guestUptime = ratio(f.guestUptime, q.guestUptime);
      }
      if (!('error' in i.flintvmChild)) x.childToMark = ratio(i.flintvmChild.toMark, q.toMark);
      if (!('error' in i.flintvmWarm)) {
        x.warmToMarkVsQemu = ratio(i.flintvmWarm.toMark, q.toMark);
        x.warmGuestInitVsQemuBanner = ratio(i.flintvmWarm.toGuestInit, q.toBanner);
      }
    }
    return res;
  } finally {
    rmSync(link, { force: true });
  }
}

export function formatLinuxBootArm64(r: LinuxBootArm64Result): string[] {
  const lines = ['arm64 Linux boot of the default arm64 guest (Image + initramfs, `sh -c "echo MARK; cat /proc/uptime"`) INSIDE the arm64 TCG test host (arm64 KVM under TCG), ms'];
  if (!r.inner) return [...lines, `  not measured: ${r.error}`];
  const i = r.inner;
  type S = { median: number; samples: number[] };
  const row = (name: string, s: S | undefined) =>
    lines.push(`    ${name.padEnd(46)} ${s ? `${s.median.toFixed(0).padStart(6)}  [${s.samples.map((x) => x.toFixed(0)).join(', ')}]` : '-'}`);
  lines.push(`  ${i.reps} reps of each kind, interleaved; ${i.memoryMiB} MiB, ${i.vcpus} vCPU; columns: median  [all samples in run order]`);
  lines.push(`  flintvm cmdline: ${i.flintvmCmdline}`);
  lines.push(`  QEMU cmdline:    ${i.qemuCmdline}`);
  lines.push(`  ${i.qemuVersion}`);
  const cold = (label: string, c: LinuxArm64InnerResult['flintvmRun']) => {
    lines.push(`  ${label}:`);
    if ('error' in c) { lines.push(`    failed: ${c.error.slice(-600)}`); return false; }
    row('spawn -> init banner', c.toBanner);
    row('spawn -> command marker', c.toMark);
    row('spawn -> process exit', c.toExit);
    row('guest uptime at its command (guest clock)', c.guestUptime);
    return true;
  };
  cold('QEMU -M virt -accel kvm (new process per boot)', i.qemu);
  cold('flintvm run (the CLI, new node process per boot)', i.flintvmRun);
  const c = i.flintvmChild;
  if (cold('flintvm child (MicroVM API, new node process per boot)', c) && !('error' in c)) {
    row('spawn -> node process start', c.toProcessStart);
    row('spawn -> main script', c.toMain);
    row('spawn -> flintvm+koffi imported', c.toFlintvmImported);
    row('spawn -> start()', c.toStartCalled);
    row('spawn -> first KVM_RUN', c.toFirstRun);
    row('spawn -> boot timer (guestInit)', c.toGuestInit);
    row('spawn -> exit status', c.toExitStatus);
    row('start() -> boot timer', c.startToGuestInit);
    row('start() -> command marker', c.startToMark);
    lines.push('    phases from start():');
    for (const [k, s] of Object.entries(c.phases)) row(`  ${k}`, s);
  }
  lines.push('  flintvm warm (MicroVM after MicroVM in one node process):');
  const w = i.flintvmWarm;
  if ('error' in w) lines.push(`    failed: ${w.error.slice(-600)}`);
  else {
    row('start() -> first KVM_RUN', w.toFirstRun);
    row('start() -> boot timer (guestInit)', w.toGuestInit);
    row('start() -> init banner', w.toBanner);
    row('start() -> command marker', w.toMark);
    row('start() -> exit status', w.toExit);
    row('start() -> released', w.total);
    row('guest uptime at its command (guest clock)', w.guestUptime);
    if (w.first) lines.push(`    (throw-away first boot: boot timer ${w.first.toGuestInit.toFixed(0)}, marker ${w.first.toMark.toFixed(0)}, released ${w.first.total.toFixed(0)})`);
    lines.push('    phases:');
    for (const [k, s] of Object.entries(w.phases)) row(`  ${k}`, s);
  }
  const x = r.ratios;
  const fx = (v: number | undefined) => (v === undefined ? '-' : v.toFixed(2));
  lines.push(`  ratio flintvm/QEMU (medians, in the TCG host):`);
  lines.push(`    flintvm run vs QEMU, spawn -> marker ${fx(x.runToMark)}, -> banner ${fx(x.runToBanner)}, -> exit ${fx(x.runToExit)}; guest uptime at command ${fx(x.guestUptime)}`);
  lines.push(`    flintvm child vs QEMU, spawn -> marker ${fx(x.childToMark)}`);
  lines.push(`    flintvm warm start() -> marker vs QEMU spawn -> marker ${fx(x.warmToMarkVsQemu)}; warm start() -> boot timer vs QEMU spawn -> banner ${fx(x.warmGuestInitVsQemuBanner)}`);
  lines.push(`  test host: ${r.testHost.cpus} vCPU TCG, ready after ${(r.testHost.bootMs / 1000).toFixed(1)} s, whole call ${(r.testHost.totalMs / 1000).toFixed(1)} s; load inside ${i.load.before.loadavg[0]} -> ${i.load.after.loadavg[0]}, outside ${r.outsideLoad.before.loadavg[0]} -> ${r.outsideLoad.after.loadavg[0]} (${r.outsideLoad.before.nproc} CPUs)`);
  return lines;
}

if (isMain(import.meta.url)) {
  const { values } = parseArgs({ options: { reps: { type: 'string' }, runs: { type: 'string' }, json: { type: 'boolean' }, out: { type: 'string' } } });
  const reps = Number(values.reps ?? values.runs ?? 5);
  if (!Number.isInteger(reps) || reps < 1) {
    process.stderr.write(`linux-boot-arm64: --reps must be a positive integer\n`);
    process.exit(2);
  }
  const t0 = monoMs();
  const r = await benchLinuxBootArm64(reps);
  log(`${((monoMs() - t0) / 1000).toFixed(1)} s`);
  const out = values.out ?? join(findProjectDir(dirname(fileURLToPath(import.meta.url))), 'bench/results/linux-boot-arm64.json');
  if (out !== '-') {
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, JSON.stringify(r, null, 2) + '\n');
    log(`wrote ${out}`);
  }
  if (values.json) console.log(JSON.stringify(r));
  else console.log(formatLinuxBootArm64(r).join('\n'));
  if (!r.inner || (['qemu', 'flintvmRun', 'flintvmChild', 'flintvmWarm'] as const).some((k) => 'error' in r.inner![k])) process.exitCode = 1;
}
