/**
 * What both halves of the snapshot benchmark share inside the test host: the
 * guest (the default kernel + initramfs running a shell loop that answers
 * lines typed on its console), the console prober that decides when a guest
 * "answers", and small /proc and file-size readers.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { guestCommandCmdline } from '../lib/index.js';
import { LINUX_BENCH_CMDLINE } from './linux-boot-inner.js';
import { monoMs } from './clock.js';

/** The marker before the inner half's one JSON line. */
export const SNAPSHOT_MARKER = 'BENCH-SNAPSHOT-JSON';
export const SNAP_MEMORY_MIB = 256;
export const SNAP_VCPUS = 1;
/** What init prints before it runs the command (bench/linux-boot-inner.ts's LINUX_BANNER). */
export const SNAP_BANNER = 'flintvm guest:';

/**
 * The guest's loop: counts, and answers every line typed on the console with
 * `got <line> <count>`. `read -t 1` keeps it counting when nothing is typed.
 */
export const SNAP_LOOP = 'i=0; while :; do i=$((i+1)); if read -t 1 v; then echo "got $v $i"; fi; done';
/** The kernel command line both VMMs get (the Linux-boot bench's, plus the loop). */
export const SNAP_CMDLINE = LINUX_BENCH_CMDLINE;
export const SNAP_EXTRA = `${guestCommandCmdline(['sh', '-c', SNAP_LOOP])} quiet`;

/**
 * A guest console seen from the host: everything it printed, and a way to wait
 * until the guest answers a probe. Probes are `<tag><k>` lines, typed at once
 * and again every `intervalMs` until a `got <tag>` line arrives (a probe typed
 * while a restoring QEMU is still loading its state may be lost; the tag is
 * unique per wait, so a line typed into the VM a snapshot came from never
 * counts).
 */
export class ConsoleWatch {
  private out = '';
  private readonly listeners = new Set<() => void>();

  constructor(source: NodeJS.EventEmitter, private readonly write: (s: string) => void) {
    source.on('data', (c: Buffer | string) => {
      this.out += typeof c === 'string' ? c : c.toString('latin1');
      for (const l of [...this.listeners]) l();
    });
  }

  tail(n = 1500): string {
    return this.out.slice(-n);
  }

  /**
   * Resolves with the monoMs stamp of the guest's answer; rejects after
   * `timeoutMs`. With `after`, probing starts only once that text has
   * appeared on the console (a boot: no input typed while the kernel boots).
   */
  answer(tag: string, intervalMs: number, timeoutMs: number, after?: string): Promise<number> {
    const from = this.out.length;
    const re = new RegExp(`got ${tag}\\d+ \\d+`);
    let k = 0;
    let tick: NodeJS.Timeout | undefined;
    return new Promise((resolve, reject) => {
      const probe = () => { try { this.write(`${tag}${k++}\n`); } catch { /* the process is gone; the timeout reports it */ } };
      const done = (f: () => void) => { clearInterval(tick); clearTimeout(timer); this.listeners.delete(check); f(); };
      const check = () => {
        if (tick === undefined && (after === undefined || this.out.includes(after))) { tick = setInterval(probe, intervalMs); probe(); }
        if (re.test(this.out.slice(from))) { const t = monoMs(); done(() => resolve(t)); }
      };
      const timer = setTimeout(() => done(() => reject(new Error(`no answer to '${tag}' probes in ${timeoutMs / 1000} s; console: ${this.tail(600)}`))), timeoutMs);
      this.listeners.add(check);
      check();
    });
  }
}

/** Bytes a directory's (or file's) blocks take on disk, `du` style (a sparse file counts only what is allocated). */
export function diskBytes(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return st.blocks * 512;
  return readdirSync(path).reduce((s, n) => s + diskBytes(join(path, n)), 0);
}

/** Apparent size: the sum of file lengths. */
export function apparentBytes(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return st.size;
  return readdirSync(path).reduce((s, n) => s + apparentBytes(join(path, n)), 0);
}

/** MemAvailable of /proc/meminfo, MiB. */
export function memAvailableMiB(): number {
  return Number(/MemAvailable:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? NaN) / 1024;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
