/**
 * Where the CPU of a repeated operation goes, by thread, and what it costs
 * in KVM exits: the measurements behind a latency figure that a wall-clock
 * time alone cannot explain. Linux only (procfs; debugfs for KVM's counters).
 *
 * - {@link sampleThreads} reads utime, stime and guest_time of every thread
 *   of a process (/proc/<pid>/task/<tid>/stat, in clock ticks).
 * - {@link cpuPerOp} turns two samples into microseconds per operation,
 *   summed by a role each thread is put in (its `comm` and whether it ran
 *   guest code say which).
 * - {@link kvmExitStats} sums KVM's per-VM counters of a process from
 *   /sys/kernel/debug/kvm/<pid>-<fd>/ (exits, halt_exits, mmio_exits, ...),
 *   or returns null where debugfs is not there (the bench then reports none).
 *
 * guest_time is a part of utime (the kernel counts a vCPU thread's time in
 * its guest as user time too), so a role's `userUs` includes its `guestUs`.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';

/** One thread's CPU counters, in clock ticks. */
export interface ThreadSample {
  readonly comm: string;
  readonly user: number;
  readonly sys: number;
  readonly guest: number;
}

/** CPU of one role per operation, microseconds (user includes guest). */
export interface RoleCpu {
  userUs: number;
  sysUs: number;
  guestUs: number;
  threads: number;
}

let clockTicks: number | undefined;

/** sysconf(_SC_CLK_TCK): the unit of /proc's CPU counters (100 on Linux unless told otherwise). */
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** Every thread of `pid` now: tid -> counters. Threads that end while it reads are left out. */
export function sampleThreads(pid: number): Map<number, ThreadSample> {
  const out = new Map<number, ThreadSample>();
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
    } catch {
      continue;
    }
    // The comm field is in parentheses and may hold spaces; the fields after it start at state (field 3).
    const close = stat.lastIndexOf(')');
    const f = stat.slice(close + 2).split(' ');
    out.set(Number(t), { comm: stat.slice(stat.indexOf('(') + 1, close), user: Number(f[11]), sys: Number(f[12]), guest: Number(f[40]) });
  }
  return out;
}

/**
 * (after - before) / ops per role, microseconds. `role(tid, sample)` names the
 * role of each thread that exists in `after`; a thread born in between counts
 * from zero.
 */
export function cpuPerOp(before: Map<number, ThreadSample>, after: Map<number, ThreadSample>, ops: number, role: (tid: number, s: ThreadSample) => string): Record<string, RoleCpu> {
  const usPerTick = 1e6 / ticksPerSecond();
  const out: Record<string, RoleCpu> = {};
  for (const [tid, a] of after) {
    const b = before.get(tid) ?? { user: 0, sys: 0, guest: 0 };
    const r = (out[role(tid, a)] ??= { userUs: 0, sysUs: 0, guestUs: 0, threads: 0 });
    r.userUs += ((a.user - b.user) * usPerTick) / ops;
    r.sysUs += ((a.sys - b.sys) * usPerTick) / ops;
    r.guestUs += ((a.guest - b.guest) * usPerTick) / ops;
    r.threads++;
  }
  return out;
}

const KVM_DEBUGFS = '/sys/kernel/debug/kvm';

/** KVM's counters summed over the VMs of `pid` (usually one), or null without debugfs or a VM. */
export function kvmExitStats(pid: number): Record<string, number> | null {
  if (!existsSync(KVM_DEBUGFS)) return null;
  const dirs = readdirSync(KVM_DEBUGFS).filter((d) => d.startsWith(`${pid}-`));
  if (dirs.length === 0) return null;
  const out: Record<string, number> = {};
  for (const d of dirs) {
    for (const f of readdirSync(`${KVM_DEBUGFS}/${d}`)) {
      try {
        const v = Number(readFileSync(`${KVM_DEBUGFS}/${d}/${f}`, 'utf8').trim());
        if (Number.isFinite(v)) out[f] = (out[f] ?? 0) + v;
      } catch {
        // a directory (per-vCPU) or a counter that cannot be read: skip it
      }
    }
  }
  return out;
}

/** (after - before) / ops for each counter in both. */
export function perOp(before: Record<string, number>, after: Record<string, number>, ops: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) if (before[k] !== undefined) out[k] = (v - before[k]!) / ops;
  return out;
}
