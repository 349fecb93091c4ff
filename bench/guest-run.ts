/**
 * The inside half shared by the benchmarks that run in the real-KVM test
 * host (net, vsock, share): unpacking what bench/test-host-bench.ts carried
 * into /work/guest, and booting the default guest with the tools initramfs
 * under flintvm (MicroVM, in this process) or QEMU microvm (a child), with
 * its console collected so the host side can follow the guest script.
 *
 * Both VMMs get the same kernel, initrd, memory, vCPUs and guest command:
 * flintvm's default command line plus `quiet flintvm.cmd=...`, and for QEMU
 * that default without the i8042 knobs (microvm has no i8042) plus the same.
 * QEMU gets isa-debug-exit on 0x601, so the guest's exit-status write ends
 * it with status (s << 1) | 1, as it ends flintvm with s.
 */
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { MicroVM, type MicroVMConfig } from '../lib/index.js';
import { guestCommandCmdline } from '../lib/guest-command.js';
import { bundledCommand } from './initramfs.js';

export type Vmm = 'flintvm' | 'qemu';

/** Kernel parameters both VMMs get after their own (flintvm's default comes first on its side). */
export const COMMON_CMDLINE = 'quiet';
/** QEMU's side: flintvm's default line (arch/x86_64/boot.ts) minus the i8042 knobs, with reboot=t (see guest/README.md). */
export const QEMU_CMDLINE = 'console=ttyS0 reboot=t panic=1 pci=off tsc=reliable';

/** What test-host-bench.ts carried in ($FLINTVM_GUEST_DIR): the kernel, the tools initramfs (`initrd`) and the busybox one. */
export function guestFiles(): { dir: string; kernel: string; initrd: string; busyboxInitrd: string } {
  const dir = process.env.FLINTVM_GUEST_DIR ?? '/work/guest';
  const kernel = join(dir, 'vmlinux');
  const initrd = join(dir, 'initramfs-tools.cpio.gz');
  const busyboxInitrd = join(dir, 'initramfs.cpio.gz');
  for (const f of [kernel, initrd, busyboxInitrd]) if (!existsSync(f)) throw new Error(`${f} missing (carry the guest images in; see bench/test-host-bench.ts)`);
  return { dir, kernel, initrd, busyboxInitrd };
}

/** QEMU unpacked from qemu-bundle.tar: how to run it. */
export interface QemuBin {
  bin: string;
  env: NodeJS.ProcessEnv;
  dataDir: string;
  version: string;
}

/** Unpacks `<guestDir>/qemu-bundle.tar` at `dest`. */
export function unpackQemu(guestDir: string, dest = '/tmp/flintvm-bench-qemu'): QemuBin {
  const bundle = join(guestDir, 'qemu-bundle.tar');
  if (!existsSync(bundle)) throw new Error(`${bundle} missing; run with --no-qemu or carry it in (bench/test-host-bench.ts does)`);
  rmSync(dest, { recursive: true, force: true });
  mkdirSync(dest, { recursive: true });
  execFileSync('tar', ['-xf', bundle, '-C', dest]);
  const env = { ...process.env, LD_LIBRARY_PATH: join(dest, 'lib') };
  const bin = join(dest, 'bin/qemu-system-x86_64');
  const version = execFileSync(bin, ['--version'], { env, encoding: 'utf8' }).split('\n')[0]!.trim();
  return { bin, env, dataDir: join(dest, 'share/qemu'), version };
}

/** Unpacks `<guestDir>/host-tools.tar` at `dest`; returns a function giving the argv prefix of one of its programs. */
export function unpackHostTools(guestDir: string, dest = '/tmp/flintvm-bench-tools'): (prog: string) => string[] {
  const bundle = join(guestDir, 'host-tools.tar');
  if (!existsSync(bundle)) throw new Error(`${bundle} missing (bench/test-host-bench.ts carries it with hostTools)`);
  rmSync(dest, { recursive: true, force: true });
  mkdirSync(dest, { recursive: true });
  execFileSync('tar', ['-xf', bundle, '-C', dest]);
  return (prog) => bundledCommand(dest, prog);
}

/** QEMU microvm arguments for the guest, before any device: same memory, vCPUs, kernel, initrd as flintvm's side. */
export function qemuGuestArgs(o: { kernel: string; initrd: string; memoryMiB: number; vcpus: number; dataDir: string; guestCommand: string }): string[] {
  return [
    '-M', 'microvm,x-option-roms=off,rtc=off,isa-serial=on,acpi=off',
    // -nodefaults drops the serial backend -nographic would add, so the console goes to stdout explicitly.
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot', '-serial', 'stdio',
    '-enable-kvm', '-cpu', 'host', '-smp', String(o.vcpus), '-m', String(o.memoryMiB),
    '-device', 'isa-debug-exit,iobase=0x601,iosize=1',
    '-L', o.dataDir,
    '-kernel', o.kernel, '-initrd', o.initrd,
    '-append', `${QEMU_CMDLINE} ${COMMON_CMDLINE} ${guestCommandCmdline(['sh', '-c', o.guestCommand])}`,
  ];
}

/** flintvm's extraCmdline for the same guest command. */
export function flintvmExtraCmdline(guestCommand: string): string {
  return `${COMMON_CMDLINE} ${guestCommandCmdline(['sh', '-c', guestCommand])}`;
}

/** How a guest run ended. */
export interface GuestEnd {
  /** Set when the VM did not end with the guest command's status 0. */
  error?: string;
  /** From starting the VMM to its end, ms. */
  wallMs: number;
}

/** A running guest: its console so far, and the end of the run. */
export interface GuestHandle {
  readonly vmm: Vmm;
  /** The process the VMM runs in: this one for flintvm, the child for QEMU (undefined before it started). */
  readonly pid: number | undefined;
  output(): string;
  /** Resolves with the first match of `re` on the console; rejects after `ms`, or if the VM ends first. */
  waitFor(re: RegExp, ms: number): Promise<RegExpExecArray>;
  readonly end: Promise<GuestEnd>;
}

/**
 * A handle over a console that `feed(listener)` reports chunk by chunk.
 * waitFor() checks on each chunk, not on a timer: a poll would add wakeups to
 * the process it measures (flintvm runs in this one).
 */
function handle(vmm: Vmm, pid: number | undefined, get: () => string, end: Promise<GuestEnd>, feed: (listener: () => void) => void): GuestHandle {
  let ended = false;
  const listeners = new Set<() => void>();
  feed(() => { for (const l of [...listeners]) l(); });
  void end.then(() => { ended = true; for (const l of [...listeners]) l(); });
  return {
    vmm,
    pid,
    output: get,
    end,
    waitFor: (re, ms) => new Promise((resolve, reject) => {
      const done = (): void => { listeners.delete(check); clearTimeout(timer); };
      const check = (): void => {
        const m = re.exec(get());
        if (m) { done(); resolve(m); return; }
        if (ended) { done(); reject(new Error(`${vmm}: no ${re} on the console before the VM ended; console tail:\n${consoleTail(get())}`)); }
      };
      const timer = setTimeout(() => { done(); reject(new Error(`${vmm}: no ${re} on the console within ${ms} ms; console tail:\n${consoleTail(get())}`)); }, ms);
      listeners.add(check);
      check();
    }),
  };
}

/** The last `lines` lines of a console, CRs removed. */
export function consoleTail(out: string, lines = 15): string {
  return out.replace(/\r/g, '').trim().split('\n').slice(-lines).join('\n');
}

/** Boots `config` with flintvm in this process; the VM is stopped after `timeoutS`. */
export async function startFlintvm(config: MicroVMConfig, timeoutS: number): Promise<GuestHandle> {
  const t0 = performance.now();
  const vm = new MicroVM(config);
  let out = '';
  let onData = (): void => {};
  vm.console.on('data', (c: Buffer) => { out += c.toString('latin1'); onData(); });
  const end = (async (): Promise<GuestEnd> => {
    let error: string | undefined;
    try {
      await vm.start();
      const timer = setTimeout(() => { error = `timed out after ${timeoutS} s`; void vm.stop(); }, timeoutS * 1000);
      const exit = await vm.wait();
      clearTimeout(timer);
      if (exit.reason !== 'guest-exit' || exit.exitStatus !== 0) error ??= `VM ended ${exit.reason} status ${String(exit.exitStatus)}`;
    } catch (e) {
      error = (e as Error).message;
      if (vm.state !== 'exited') await vm.stop().catch(() => {});
    }
    return { ...(error ? { error } : {}), wallMs: performance.now() - t0 };
  })();
  return handle('flintvm', process.pid, () => out, end, (l) => { onData = l; });
}

/** Boots QEMU with `args` (qemuGuestArgs + devices); killed after `timeoutS`. */
export function startQemu(qemu: QemuBin, args: string[], timeoutS: number): GuestHandle {
  const t0 = performance.now();
  const child = spawn(qemu.bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: qemu.env });
  let out = '';
  let err = '';
  let onData = (): void => {};
  child.stdout.on('data', (c: Buffer) => { out += c.toString('latin1'); onData(); });
  child.stderr.on('data', (c: Buffer) => { err = (err + c.toString()).slice(-2000); });
  const end = new Promise<GuestEnd>((resolve) => {
    let error: string | undefined;
    const timer = setTimeout(() => { error = `timed out after ${timeoutS} s`; child.kill('SIGKILL'); }, timeoutS * 1000);
    child.on('error', (e) => { error ??= e.message; });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      // isa-debug-exit: the guest's status s ends QEMU with (s << 1) | 1.
      if (code !== 1) error ??= `qemu ended ${signal ?? `with ${String(code)}`}${code !== null && code & 1 ? ` (guest status ${code >> 1})` : ''}: ${err.trim().split('\n').slice(-3).join(' | ')}`;
      resolve({ ...(error ? { error } : {}), wallMs: performance.now() - t0 });
    });
  });
  return handle('qemu', child.pid, () => out, end, (l) => { onData = l; });
}

/** Waits until network interface `name` exists (a VMM creating its tap), for up to `ms`. */
export async function waitForInterface(name: string, ms: number): Promise<void> {
  const t0 = Date.now();
  while (!existsSync(`/sys/class/net/${name}`)) {
    if (Date.now() - t0 > ms) throw new Error(`interface ${name} did not appear within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The test host's state for the result: load at start/end, kernel and CPU count. */
export function testHostInfo(loadavgStart: string): { loadavgStart: string; loadavgEnd: string; kernel: string; cpus: number; memTotalMiB: number } {
  return {
    loadavgStart,
    loadavgEnd: readFileSync('/proc/loadavg', 'utf8').trim(),
    kernel: readFileSync('/proc/version', 'utf8').trim(),
    cpus: Number(execFileSync('nproc', { encoding: 'utf8' }).trim()),
    memTotalMiB: Math.round(Number(/MemTotal:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1]) / 1024),
  };
}

/** Runs `main` as the entry script: exit 0 when it resolves, 1 (with the stack) when it throws. */
export function runMain(metaUrl: string, name: string, main: () => Promise<void>): void {
  if (!process.argv[1] || metaUrl !== new URL(`file://${process.argv[1]}`).href) return;
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      console.error(`${name}: ${(e as Error).stack ?? String(e)}`);
      process.exit(1);
    },
  );
}
