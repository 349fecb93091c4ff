/**
 * Linux boot time, flintvm vs QEMU microvm, measured inside the real-KVM test
 * host (test/hosts/run.ts: an L1 Linux under QEMU TCG whose /dev/kvm is kvm_amd
 * on an emulated CPU). Everything runs in ONE test-host boot: the inside half
 * is bench/linux-boot-inner.ts.
 *
 * QEMU is not part of the test host's base image, so this script carries this
 * machine's qemu-system-x86_64, the libraries `ldd` lists for it and the
 * firmware microvm needs (qboot, pvh.bin) into the host as an extra path
 * (bench/.host-qemu/, made here from symlinks and removed afterwards).
 *
 * TCG distorts the absolute figures (every guest instruction that exits, and
 * every host instruction of the L1, is emulated), and it distorts the two VMMs
 * differently: node's start-up and JIT run on the emulated CPU too. Read the
 * ratio as "in this test host", not as a bare-metal ratio.
 *
 * Usage: node dist/bench/linux-boot.js [--runs N] [--json]
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, symlinkSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { isMain, loadInfo, monoMs, parseMarkedJson, round, which, type LoadInfo } from './common.js';
import type { LinuxInnerResult } from './linux-boot-inner.js';
import { runInTestHost, findProjectDir } from '../test/hosts/run.js';

/** Repository-relative directory of the QEMU bundle carried into the host. */
export const HOST_QEMU_REL = 'bench/.host-qemu';
/** Firmware files QEMU microvm reads (qboot is its BIOS; pvh.bin its PVH option ROM). */
const QEMU_FIRMWARE = ['bios-microvm.bin', 'qboot.rom', 'pvh.bin', 'linuxboot_dma.bin', 'kvmvapic.bin'];

export interface LinuxBootResult {
  inner?: LinuxInnerResult;
  error?: string;
  testHost: { bootMs: number; totalMs: number; overlayMiB: number; exitCode: number; cpus: number; memoryMiB: number };
  ratios: {
    /** flintvm cold / QEMU cold, spawn -> init's banner (medians). */
    coldToBanner?: number;
    /** flintvm cold / QEMU cold, spawn -> process exit. */
    coldTotal?: number;
    /** flintvm warm (PVH) start() -> banner / QEMU cold spawn -> banner. */
    warmToBannerVsQemuCold?: number;
    /** The same with the vCPU worker from a WorkerPool. */
    warmPooledToBannerVsQemuCold?: number;
    /** The guest's own uptime at its command, flintvm cold / QEMU cold: guest-side boot speed. */
    guestUptime?: number;
  };
  outsideLoad: { before: LoadInfo; after: LoadInfo };
}

/** Builds bench/.host-qemu/{bin,lib,share} from symlinks to this machine's QEMU (run.ts copies their targets). */
export function makeQemuBundle(projectDir: string): string {
  const qemu = which('qemu-system-x86_64');
  if (!qemu) throw new Error('qemu-system-x86_64 is not installed here (apt-get install qemu-system-x86)');
  const dir = join(projectDir, HOST_QEMU_REL);
  rmSync(dir, { recursive: true, force: true });
  for (const d of ['bin', 'lib', 'share']) mkdirSync(join(dir, d), { recursive: true });
  symlinkSync(qemu, join(dir, 'bin', basename(qemu)));
  const ldd = execFileSync('ldd', [qemu], { encoding: 'utf8' });
  for (const line of ldd.split('\n')) {
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m && !existsSync(join(dir, 'lib', basename(m[1]!)))) symlinkSync(m[1]!, join(dir, 'lib', basename(m[1]!)));
  }
  const share = '/usr/share/qemu';
  for (const f of QEMU_FIRMWARE) if (existsSync(join(share, f))) symlinkSync(join(share, f), join(dir, 'share', f));
  return dir;
}

export async function benchLinuxBoot(runs = 5, log: (s: string) => void = (s) => process.stderr.write(`linux-boot: ${s}\n`)): Promise<LinuxBootResult> {
  const before = loadInfo();
  const projectDir = findProjectDir(dirname(fileURLToPath(import.meta.url)));
  const bundle = makeQemuBundle(projectDir);
  const cpus = 1;
  const memoryMiB = 4096;
  let output = '';
  try {
    const r = await runInTestHost({
      arch: 'x86_64',
      command: `node dist/bench/linux-boot-inner.js --runs ${runs} --qemu-dir /work/project/${HOST_QEMU_REL}`,
      extraPaths: [HOST_QEMU_REL],
      timeoutMs: 9.5 * 60_000,
      cpus,
      memoryMiB,
      onOutput: (c) => {
        output += c;
        for (const l of c.split('\n')) if (l.startsWith('linux-boot:')) log(`(in host) ${l.slice(12)}`);
      },
      onLog: (l) => log(`host: ${l}`),
    });
    const testHost = { bootMs: round(r.bootMs, 0), totalMs: round(r.totalMs, 0), overlayMiB: round(r.overlayBytes / 1048576, 1), exitCode: r.exitCode, cpus, memoryMiB };
    const res: LinuxBootResult = { testHost, ratios: {}, outsideLoad: { before, after: loadInfo() } };
    try {
      res.inner = parseMarkedJson<LinuxInnerResult>(r.commandOutput || output, 'BENCH-LINUX-JSON');
    } catch (e) {
      res.error = `${r.error ?? ''} ${(e as Error).message}`.trim().slice(-3000);
      return res;
    }
    const i = res.inner;
    if (!('error' in i.flintvmCold) && !('error' in i.qemuCold)) {
      res.ratios.coldToBanner = round(i.flintvmCold.toBanner.median / i.qemuCold.toBanner.median, 3);
      res.ratios.coldTotal = round(i.flintvmCold.total.median / i.qemuCold.total.median, 3);
      res.ratios.guestUptime = round(i.flintvmCold.guestUptime.median / i.qemuCold.guestUptime.median, 3);
    }
    if (!('error' in i.flintvmWarm.pvh) && !('error' in i.qemuCold)) {
      res.ratios.warmToBannerVsQemuCold = round(i.flintvmWarm.pvh.toBanner.median / i.qemuCold.toBanner.median, 3);
    }
    const pooled = i.flintvmWarm.pooled;
    if (pooled && !('error' in pooled) && !('error' in i.qemuCold)) {
      res.ratios.warmPooledToBannerVsQemuCold = round(pooled.toBanner.median / i.qemuCold.toBanner.median, 3);
    }
    return res;
  } finally {
    rmSync(bundle, { recursive: true, force: true });
  }
}

export function formatLinuxBoot(r: LinuxBootResult): string[] {
  const lines = ['Linux boot of the default guest (vmlinux PVH + initramfs, `cat /proc/uptime`) INSIDE the TCG test host (kvm_amd under TCG), ms median [min..max]'];
  if (!r.inner) return [...lines, `  not measured: ${r.error}`];
  const i = r.inner;
  const f = (s: { median: number; min: number; max: number }) => `${s.median.toFixed(0)} [${s.min.toFixed(0)}..${s.max.toFixed(0)}]`;
  lines.push(`  ${i.runs} runs each; ${i.memoryMiB} MiB, ${i.vcpus} vCPU; cmdline: ${i.cmdline}`);
  if ('error' in i.flintvmCold) lines.push(`  flintvm cold: failed: ${i.flintvmCold.error.slice(-300)}`);
  else lines.push(`  flintvm cold (flintvm run --pvh -- cat /proc/uptime): spawn -> banner ${f(i.flintvmCold.toBanner)}, -> exit ${f(i.flintvmCold.total)}; guest uptime at its command ${f(i.flintvmCold.guestUptime)}`);
  if ('error' in i.qemuCold) lines.push(`  QEMU cold: failed: ${i.qemuCold.error.slice(-300)}`);
  else lines.push(`  QEMU microvm cold:                                    spawn -> banner ${f(i.qemuCold.toBanner)}, -> exit ${f(i.qemuCold.total)}; guest uptime at its command ${f(i.qemuCold.guestUptime)}`);
  for (const p of ['pvh', 'linux64', 'pooled'] as const) {
    const w = i.flintvmWarm[p];
    if (!w) continue;
    if ('error' in w) lines.push(`  flintvm warm ${p}: failed: ${w.error.slice(-300)}`);
    else lines.push(`  flintvm warm ${p.padEnd(7)} start() -> first KVM_RUN ${f(w.toFirstRun)}, -> boot timer ${f(w.toGuestInit)}, -> banner ${f(w.toBanner)}, -> exit ${f(w.toExit)}, -> released ${f(w.total)}; guest uptime at command ${f(w.guestUptime)}`);
  }
  const wp = i.flintvmWarm.pvh;
  if (!('error' in wp)) {
    lines.push('  flintvm warm pvh phases:');
    for (const [k, s] of Object.entries(wp.phases)) lines.push(`    ${k.padEnd(30)} ${f(s)}`);
  }
  const x = r.ratios;
  if (x.coldToBanner !== undefined) lines.push(`  ratio flintvm/QEMU cold (in the TCG host): spawn -> banner ${x.coldToBanner.toFixed(2)}, spawn -> exit ${x.coldTotal!.toFixed(2)}, guest uptime at command ${x.guestUptime!.toFixed(2)}`);
  if (x.warmToBannerVsQemuCold !== undefined) lines.push(`  ratio flintvm warm start()->banner / QEMU cold spawn->banner: ${x.warmToBannerVsQemuCold.toFixed(2)}`);
  if (x.warmPooledToBannerVsQemuCold !== undefined) lines.push(`  ratio flintvm warm + WorkerPool start()->banner / QEMU cold spawn->banner: ${x.warmPooledToBannerVsQemuCold.toFixed(2)}`);
  lines.push(`  test host: ${r.testHost.cpus} vCPU TCG, boot ${(r.testHost.bootMs / 1000).toFixed(1)} s, whole call ${(r.testHost.totalMs / 1000).toFixed(1)} s; load inside ${i.load.before.loadavg[0]} -> ${i.load.after.loadavg[0]}, outside ${r.outsideLoad.before.loadavg[0]} -> ${r.outsideLoad.after.loadavg[0]}`);
  return lines;
}

if (isMain(import.meta.url)) {
  const { values } = parseArgs({ options: { runs: { type: 'string' }, json: { type: 'boolean' } } });
  const t0 = monoMs();
  const r = await benchLinuxBoot(Number(values.runs ?? 5));
  process.stderr.write(`linux-boot: ${((monoMs() - t0) / 1000).toFixed(1)} s\n`);
  if (values.json) console.log(JSON.stringify(r));
  else console.log(formatLinuxBoot(r).join('\n'));
}
