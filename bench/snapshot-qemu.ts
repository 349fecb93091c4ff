/**
 * The QEMU side of the snapshot benchmark, inside the test host: QEMU 7.2
 * microvm with the Linux-boot bench's machine and devices (serial on stdio,
 * isa-debug-exit), a minimal QMP client, and the three operations measured:
 * boot, `stop` + `migrate` to a file (`exec:cat > FILE`: QEMU 7.2 has no
 * `file:` migration URI), and `-incoming exec:cat FILE` (QEMU starts the guest
 * by itself when the incoming migration completes, since there is no `-S`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { monoMs, qemuMicrovmArgs, smapsRollupKiB } from './common.js';
import { ConsoleWatch, SNAP_CMDLINE, SNAP_EXTRA, SNAP_MEMORY_MIB, SNAP_VCPUS, sleep } from './snapshot-guest.js';

/** Where the QEMU bundle (bench/.host-qemu) lives in the host. */
export interface QemuPaths { bin: string; lib: string; share: string }

export function qemuPaths(dir: string): QemuPaths {
  return { bin: join(dir, 'bin/qemu-system-x86_64'), lib: join(dir, 'lib'), share: join(dir, 'share') };
}

/** The machine: the Linux-boot bench's microvm command line (bench/linux-boot-inner.ts), with the loop guest. */
export function qemuMachineArgs(vmlinux: string, initrd: string, shareDir: string): string[] {
  return qemuMicrovmArgs({ vmlinux, initrd, shareDir, memoryMiB: SNAP_MEMORY_MIB, vcpus: SNAP_VCPUS, append: `${SNAP_CMDLINE} ${SNAP_EXTRA}` });
}

/** A running QEMU with its console watched. */
export interface QemuVm {
  child: ChildProcess;
  watch: ConsoleWatch;
  spawnAt: number;
  closed: Promise<void>;
  stderr: () => string;
}

export function spawnQemu(p: QemuPaths, args: string[]): QemuVm {
  const spawnAt = monoMs();
  const child = spawn(p.bin, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LD_LIBRARY_PATH: p.lib } });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  child.stdin!.on('error', () => { /* QEMU gone: the prober's timeout reports it */ });
  const watch = new ConsoleWatch(child.stdout!, (s) => { child.stdin!.write(s); });
  const closed = new Promise<void>((r) => child.on('close', () => r()));
  return { child, watch, spawnAt, closed, stderr: () => err.slice(-1500) };
}

export async function killQemu(q: QemuVm): Promise<void> {
  if (q.child.exitCode === null && q.child.signalCode === null) q.child.kill('SIGKILL');
  await q.closed;
}

/** Memory of a QEMU process (KiB): RSS and PSS from smaps_rollup. */
export function qemuMemKiB(q: QemuVm): { rss: number; pss: number } {
  const m = smapsRollupKiB(q.child.pid!);
  return { rss: m.rss, pss: m.pss };
}

/** A QMP connection: one command at a time, events skipped. */
export class Qmp {
  private buf = '';
  private waiting: ((v: Record<string, unknown>) => void) | null = null;
  /** Called with every event QEMU sends. */
  onEvent: ((e: { event: string; data?: Record<string, unknown> }) => void) | null = null;
  private constructor(private readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.buf += d;
      let i: number;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i).trim();
        this.buf = this.buf.slice(i + 1);
        if (!line) continue;
        const msg = JSON.parse(line) as Record<string, unknown>;
        if ('event' in msg) { this.onEvent?.(msg as { event: string; data?: Record<string, unknown> }); continue; }
        const w = this.waiting;
        this.waiting = null;
        w?.(msg);
      }
    });
  }

  /** Connects (retrying while QEMU creates the socket) and leaves capabilities negotiation mode. */
  static async open(path: string, timeoutMs = 60_000): Promise<Qmp> {
    const t0 = monoMs();
    for (;;) {
      try {
        const sock = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path, () => resolve(s));
          s.once('error', reject);
        });
        const q = new Qmp(sock);
        await new Promise<void>((r) => { q.waiting = () => r(); }); // the greeting
        await q.cmd('qmp_capabilities');
        return q;
      } catch (e) {
        if (monoMs() - t0 > timeoutMs) throw new Error(`QMP ${path}: ${(e as Error).message}`);
        await sleep(20);
      }
    }
  }

  cmd(execute: string, args?: Record<string, unknown>): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.waiting = (m) => ('error' in m ? reject(new Error(`QMP ${execute}: ${JSON.stringify(m.error)}`)) : resolve(m.return));
      this.sock.write(JSON.stringify({ execute, ...(args ? { arguments: args } : {}) }) + '\n');
    });
  }

  close(): void {
    this.sock.destroy();
  }
}

/**
 * `stop`, then `migrate` to `file` and poll `query-migrate` until it
 * completes. Returns the ms from `stop` to `completed` (QEMU's bandwidth
 * limit is lifted first, as a save to file should be).
 */
export async function qemuMigrateToFile(qmp: Qmp, file: string, timeoutMs = 300_000): Promise<{ ms: number; stopMs: number; info: unknown }> {
  await qmp.cmd('migrate-set-parameters', { 'max-bandwidth': 2 ** 40 });
  const t0 = monoMs();
  await qmp.cmd('stop');
  const stopMs = monoMs() - t0;
  await qmp.cmd('migrate', { uri: `exec:cat > ${file}` });
  for (;;) {
    const info = (await qmp.cmd('query-migrate')) as { status?: string; 'error-desc'?: string };
    if (info.status === 'completed') return { ms: monoMs() - t0, stopMs, info };
    if (info.status === 'failed' || info.status === 'cancelled') throw new Error(`QEMU migrate ${info.status}: ${info['error-desc'] ?? ''}`);
    if (monoMs() - t0 > timeoutMs) throw new Error(`QEMU migrate not completed in ${timeoutMs / 1000} s: ${JSON.stringify(info)}`);
    await sleep(5);
  }
}

/**
 * A QEMU that restores from `file`: spawned with `-incoming defer`, then over
 * QMP the `events` migration capability, `migrate-incoming exec:cat FILE`,
 * and `cont` once the MIGRATION event says completed (the source was
 * stopped, so the destination stays paused until told). Resolves with the
 * running QEMU and the stamp `cont` returned.
 */
export async function qemuIncoming(p: QemuPaths, args: string[], file: string, sock: string, timeoutMs = 480_000): Promise<{ q: QemuVm; runningAt: number }> {
  const q = spawnQemu(p, [...args, '-qmp', `unix:${sock},server=on,wait=off`, '-incoming', 'defer']);
  let qmp: Qmp | undefined;
  try {
    qmp = await Qmp.open(sock, timeoutMs);
    const done = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`incoming migration not completed in ${timeoutMs / 1000} s; stderr: ${q.stderr()}`)), timeoutMs);
      qmp!.onEvent = (e) => {
        const st = e.event === 'MIGRATION' ? String(e.data?.status) : '';
        if (st === 'completed') { clearTimeout(timer); resolve(); }
        if (st === 'failed') { clearTimeout(timer); reject(new Error(`incoming migration failed; stderr: ${q.stderr()}`)); }
      };
    });
    await qmp.cmd('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
    await qmp.cmd('migrate-incoming', { uri: `exec:cat ${file}` });
    await done;
    await qmp.cmd('cont');
    return { q, runningAt: monoMs() };
  } catch (e) {
    await killQemu(q);
    throw e;
  } finally {
    qmp?.close();
  }
}
