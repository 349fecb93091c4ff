/**
 * The outside half shared by the benchmarks that run in the real-KVM test
 * host (blk, net, vsock, share): the local /dev/kvm cannot boot Linux
 * (ENVIRONMENT.md §1), so each of them stages a guest directory, boots the
 * test host once (test/hosts/run.ts) with a `*-inner.js` command, and parses
 * the one result line that command prints.
 *
 * The staged directory travels as the test host's /work/guest
 * ($FLINTVM_GUEST_DIR inside): the guest images (vmlinux,
 * initramfs-tools.cpio.gz and initramfs.cpio.gz, as symlinks; run.ts copies
 * their targets), and
 * optionally `qemu-bundle.tar` (this machine's qemu-system-x86_64, its `ldd`
 * libraries and the microvm firmware: the test host image has no QEMU) and
 * `host-tools.tar` (programs from the guest's tools initramfs, for the test
 * host's side of a guest benchmark; see initramfs.ts).
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { loadavg, tmpdir, cpus } from 'node:os';
import { basename, join } from 'node:path';
import { parseArgs } from 'node:util';
import { defaultGuestImages } from '../lib/guest-images.js';
import { runInTestHost } from '../test/hosts/run.js';
import { isMain } from './common.js';
import { toolsBundle } from './initramfs.js';

/** qemu-system-x86_64 on PATH, or null. */
export function findQemu(): string | null {
  for (const d of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    const p = join(d, 'qemu-system-x86_64');
    if (d && existsSync(p)) return p;
  }
  return null;
}

/** First line of `qemu --version`. */
export function qemuVersion(qemu: string): string {
  return execFileSync(qemu, ['--version'], { encoding: 'utf8' }).split('\n')[0]!.trim();
}

/** qemu-system-x86_64 + every library ldd lists + the microvm firmware, as `<stage>/qemu-bundle.tar` (uncompressed). */
export function qemuBundle(qemu: string, stage: string): string {
  const root = join(stage, 'qemu-root');
  mkdirSync(join(root, 'bin'), { recursive: true });
  mkdirSync(join(root, 'lib'), { recursive: true });
  mkdirSync(join(root, 'share/qemu'), { recursive: true });
  copyFileSync(qemu, join(root, 'bin/qemu-system-x86_64'));
  const ldd = execFileSync('ldd', [qemu], { encoding: 'utf8' });
  for (const line of ldd.split('\n')) {
    const m = /=>\s+(\/\S+)/.exec(line);
    if (m) copyFileSync(m[1]!, join(root, 'lib', basename(m[1]!))); // copyFileSync follows symlinks
    else if (/not found/.test(line)) throw new Error(`ldd ${qemu}: ${line.trim()}`);
  }
  // microvm's default BIOS (qboot) and the small ROMs a PVH/bzImage boot may ask for.
  for (const f of ['bios-microvm.bin', 'qboot.rom', 'pvh.bin', 'linuxboot_dma.bin', 'kvmvapic.bin']) {
    const src = join('/usr/share/qemu', f);
    if (existsSync(src)) copyFileSync(src, join(root, 'share/qemu', f));
  }
  if (!existsSync(join(root, 'share/qemu/bios-microvm.bin'))) throw new Error('/usr/share/qemu/bios-microvm.bin missing (package qemu-system-data)');
  const tar = join(stage, 'qemu-bundle.tar');
  execFileSync('tar', ['-cf', tar, '-C', root, '.']);
  rmSync(root, { recursive: true, force: true });
  return tar;
}

/** The outside machine around a test-host run: load and uptime before and after. */
export interface OuterHost {
  loadavgBefore: number[];
  loadavgAfter: number[];
  uptimeBefore: string;
  uptimeAfter: string;
  cpus: number;
  qemu: string | null;
}

export interface InnerRun<T> {
  inner: T;
  outerHost: OuterHost;
  testHostRun: { totalMs: number; bootMs: number; overlayBytes: number; memoryMiB: number };
}

export interface InnerBenchOptions {
  /** The inner script and its arguments, e.g. ['dist/bench/net-inner.js', '--reps', '5']. */
  command: string[];
  /** The line prefix (with its trailing space) the inner script prints its JSON after. */
  marker: string;
  /** Bundle this machine's QEMU in (the inner script then finds /work/guest/qemu-bundle.tar). */
  qemu: boolean;
  /** Programs of the tools initramfs to carry in as /work/guest/host-tools.tar. */
  hostTools?: string[];
  /** Extra files to put into the staged guest directory (symlinked). */
  extraFiles?: Record<string, string>;
  timeoutMs: number;
  /** Test host memory, MiB (default: run.ts's, 4096 or $FLINTVM_HOST_MEM). */
  memoryMiB?: number;
  onOutput?: (chunk: string) => void;
  onLog?: (line: string) => void;
}

/**
 * Stages the guest directory, runs `command` in one test host boot and
 * returns the JSON the command printed after `marker`. Throws when there is
 * none (with the test host's own reason, when it has one).
 */
export async function runInnerBench<T>(o: InnerBenchOptions): Promise<InnerRun<T>> {
  const imgs = await defaultGuestImages({ quiet: true });
  if (!existsSync(imgs.toolsInitrd)) throw new Error(`${imgs.toolsInitrd} missing: the benchmark needs the guest tools initramfs (bash guest/build.sh)`);
  const qemu = o.qemu ? findQemu() : null;
  if (o.qemu && !qemu) throw new Error('qemu-system-x86_64 not found (apt-get install qemu-system-x86), or run with --no-qemu');
  const stage = mkdtempSync(join(tmpdir(), 'flintvm-bench-'));
  try {
    symlinkSync(imgs.vmlinux, join(stage, 'vmlinux'));
    symlinkSync(imgs.toolsInitrd, join(stage, 'initramfs-tools.cpio.gz'));
    symlinkSync(imgs.initrd, join(stage, 'initramfs.cpio.gz'));
    for (const [name, path] of Object.entries(o.extraFiles ?? {})) symlinkSync(path, join(stage, name));
    if (qemu) qemuBundle(qemu, stage);
    if (o.hostTools?.length) toolsBundle(imgs.toolsInitrd, o.hostTools, stage);
    const uptimeBefore = execFileSync('uptime', { encoding: 'utf8' }).trim();
    const loadavgBefore = loadavg();
    const memoryMiB = o.memoryMiB ?? (Number(process.env.FLINTVM_HOST_MEM) || 4096);
    const r = await runInTestHost({
      arch: 'x86_64',
      command: ['node', ...o.command],
      guestDir: stage,
      timeoutMs: o.timeoutMs,
      memoryMiB,
      onOutput: o.onOutput ?? ((c) => process.stderr.write(c)),
      ...(o.onLog ? { onLog: o.onLog } : {}),
    });
    const loadavgAfter = loadavg();
    const uptimeAfter = execFileSync('uptime', { encoding: 'utf8' }).trim();
    const line = r.commandOutput.split('\n').find((l) => l.startsWith(o.marker));
    if (!line) throw new Error(`no result from the test host (exit ${r.exitCode}${r.error ? `: ${r.error}` : ''})`);
    return {
      inner: JSON.parse(line.slice(o.marker.length)) as T,
      outerHost: { loadavgBefore, loadavgAfter, uptimeBefore, uptimeAfter, cpus: cpus().length, qemu: qemu ? qemuVersion(qemu) : null },
      testHostRun: { totalMs: r.totalMs, bootMs: r.bootMs, overlayBytes: r.overlayBytes, memoryMiB },
    };
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

/**
 * The command line of an outer bench, when `metaUrl` is the entry script: string options with their
 * defaults, plus --no-qemu and --json; runs `run` and prints its result as JSON (--json) or `format`ted.
 */
export async function benchMain<T>(metaUrl: string, defaults: Record<string, string>, run: (v: Record<string, string>, noQemu: boolean) => Promise<T>, format: (r: T) => string[]): Promise<void> {
  if (!isMain(metaUrl)) return;
  const { values } = parseArgs({
    options: {
      ...Object.fromEntries(Object.entries(defaults).map(([k, d]) => [k, { type: 'string' as const, default: d }])),
      'no-qemu': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
  });
  const res = await run(values as unknown as Record<string, string>, values['no-qemu'] === true);
  console.log(values.json ? JSON.stringify(res) : format(res).join('\n'));
}
