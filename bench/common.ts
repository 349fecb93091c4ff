/**
 * Shared plumbing of the boot, memory and density benchmarks: one clock for
 * every process, timed child processes, /proc readers, and a description of
 * the machine the figures came from.
 */
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import { performance } from 'node:perf_hooks';

export { monoMs, wallToMonoOffset } from './clock.js';
import { monoMs } from './clock.js';

/** Nearest-rank percentile (p in 0..100) of a non-empty sample. */
export function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i]!;
}

/** What a timed child process did. All stamps are {@link monoMs}. */
export interface TimedRun {
  spawnAt: number;
  /** When `marker` first appeared on the child's stdout; undefined if it never did. */
  markerAt?: number;
  exitAt: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Variables that make node itself slower to start, whatever the script: with NODE_EXTRA_CA_CERTS set, node
 * builds its whole TLS root store (its ~140 bundled certificates, then the file's) before it runs any
 * JavaScript, about 90 ms here. flintvm makes no TLS connection, and a fresh Debian machine does not set it
 * (the machines these benches run on do). Timed node children run without them, the floor (`node -e 0`)
 * included; the boot bench also times that floor with them, to show what they cost.
 */
export const NODE_START_TAXES = ['NODE_EXTRA_CA_CERTS'] as const;

/** This process's environment without {@link NODE_START_TAXES}, and the ones it removed (name -> value). */
export function nodeChildEnv(): { env: NodeJS.ProcessEnv; removed: Record<string, string> } {
  const env = { ...process.env };
  const removed: Record<string, string> = {};
  for (const k of NODE_START_TAXES) {
    const v = env[k];
    if (v !== undefined) {
      removed[k] = v;
      delete env[k];
    }
  }
  return { env, removed };
}

/**
 * Spawns `cmd args` and stamps: the spawn call, the first appearance of
 * `marker` on its stdout (as this process's event loop sees it), and its exit.
 * Kills it (SIGKILL) after `timeoutMs`.
 */
export function runTimed(cmd: string, args: readonly string[], opts: { marker?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv; stdinPipe?: boolean } = {}): Promise<TimedRun> {
  return new Promise((resolve, reject) => {
    const spawnAt = monoMs();
    // stdinPipe: an already-ended pipe instead of /dev/null (a node child's process.stdin is then a socket).
    const child = spawn(cmd, args, { stdio: [opts.stdinPipe ? 'pipe' : 'ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
    child.stdin?.end();
    let stdout = '';
    let stderr = '';
    let markerAt: number | undefined;
    let exitAt = 0;
    child.stdout!.setEncoding('latin1');
    child.stdout!.on('data', (d: string) => {
      const t = monoMs();
      stdout += d;
      if (markerAt === undefined && opts.marker !== undefined && stdout.includes(opts.marker)) markerAt = t;
    });
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('exit', () => { exitAt = monoMs(); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ spawnAt, markerAt, exitAt: exitAt || monoMs(), code, signal, stdout, stderr });
    });
  });
}

/** Parses the JSON that follows `marker ` on one line of `text`. */
export function parseMarkedJson<T>(text: string, marker: string): T {
  const line = text.split('\n').find((l) => l.startsWith(marker + ' '));
  if (!line) throw new Error(`no ${marker} line in: ${text.slice(-2000)}`);
  return JSON.parse(line.slice(marker.length + 1)) as T;
}

/** A field of /proc/<pid>/status in KiB (VmRSS, VmHWM…). */
export function procStatusKiB(field: string, pid: number | 'self' = 'self'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`/proc/${pid}/status has no ${field}`);
  return Number(m[1]);
}

/** A plain number field of /proc/<pid>/status (Threads…). */
export function procStatusNumber(field: string, pid: number | 'self' = 'self'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`/proc/${pid}/status has no ${field}`);
  return Number(m[1]);
}

/**
 * Memory of a process from /proc/<pid>/smaps_rollup, in KiB: Rss; Pss; its
 * anonymous + shmem part (pages no other program maps, so other processes on
 * the machine cannot move it); its file part (shared libraries and binaries,
 * which drops when other processes map the same files); and Private (USS).
 */
export function smapsRollupKiB(pid: number | 'self' = 'self'): { rss: number; pss: number; pssAnon: number; pssFile: number; uss: number } {
  const t = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const get = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(t)?.[1] ?? NaN);
  return {
    rss: get('Rss'), pss: get('Pss'), pssAnon: get('Pss_Anon') + get('Pss_Shmem'), pssFile: get('Pss_File'),
    uss: get('Private_Clean') + get('Private_Dirty'),
  };
}

/** Which KVM this is: the local nested kvm_pvm, or kvm_amd/kvm_intel (under TCG inside a test host). */
export function kvmKind(): string {
  if (!existsSync('/dev/kvm')) return 'none (no /dev/kvm)';
  const mods = ['kvm_pvm', 'kvm_amd', 'kvm_intel'].filter((m) => existsSync(`/sys/module/${m}`));
  const m = mods[0] ?? (existsSync('/dev/kvm') ? 'kvm (module unknown)' : 'none');
  if (process.env.FLINTVM_IN_TEST_HOST === '1') return `${m} under TCG (test host)`;
  if (m === 'kvm_pvm') return 'nested kvm_pvm';
  return m;
}

/** The machine a result came from. */
export interface MachineInfo {
  nproc: number;
  model: string;
  kernel: string;
  kvm: string;
  node: string;
  memTotalMiB: number;
}

export function machineInfo(): MachineInfo {
  let memTotalMiB = NaN;
  try {
    memTotalMiB = Math.round(Number(/MemTotal:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1]) / 1024);
  } catch { /* not Linux */ }
  return { nproc: cpus().length, model: cpus()[0]?.model ?? 'unknown', kernel: release(), kvm: kvmKind(), node: process.version, memTotalMiB };
}

/** The host's load when a figure was taken: 1/5/15-minute averages and how many CPUs share it. */
export interface LoadInfo {
  at: string;
  loadavg: [number, number, number];
  nproc: number;
}

export function loadInfo(): LoadInfo {
  const [a, b, c] = loadavg();
  return { at: new Date().toISOString(), loadavg: [round(a!, 2), round(b!, 2), round(c!, 2)], nproc: cpus().length };
}

export function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** `git rev-parse HEAD` of `dir` (plus "-dirty" when the work tree has changes), or "unknown". */
export function gitCommit(dir: string): string {
  try {
    const head = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: dir, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: dir, encoding: 'utf8' }).trim() !== '';
    return dirty ? `${head}-dirty` : head;
  } catch {
    return 'unknown';
  }
}

/** Absolute path of an executable on PATH, or null. */
export function which(cmd: string): string | null {
  for (const d of (process.env.PATH ?? '').split(':')) {
    if (d && existsSync(`${d}/${cmd}`)) return `${d}/${cmd}`;
  }
  return null;
}

/** Rejects with "`what` did not finish in N s" if `p` takes longer than `ms` (a hang becomes a reported error). */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} did not finish in ${ms / 1000} s`)), ms); });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** Sleep. */
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** True when this module's caller is the entry script (`node dist/bench/x.js`). */
export function isMain(metaUrl: string): boolean {
  return metaUrl === `file://${process.argv[1]}`;
}

/**
 * QEMU's microvm command line for the Linux benches (linux-boot, snapshot): the same machine and devices
 * for every QEMU figure, so their peers compare.
 */
export function qemuMicrovmArgs(o: { vmlinux: string; initrd: string; shareDir: string; memoryMiB: number; vcpus: number; append: string }): string[] {
  return [
    '-M', 'microvm,x-option-roms=off,rtc=off,isa-serial=on,acpi=off',
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-enable-kvm', '-cpu', 'host', '-m', String(o.memoryMiB), '-smp', String(o.vcpus),
    '-serial', 'stdio',
    '-device', 'isa-debug-exit,iobase=0x601,iosize=1',
    '-L', o.shareDir,
    '-kernel', o.vmlinux, '-initrd', o.initrd,
    '-append', o.append,
  ];
}
