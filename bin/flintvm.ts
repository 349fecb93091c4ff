#!/usr/bin/env node
/**
 * flintvm command line: `flintvm run [options] [-- CMD ARGS...]`.
 * Boots a microVM with the console on this terminal.
 */
import { parseArgs } from 'node:util';
import { MicroVM, type VmExit } from '../lib/microvm.js';
import { defaultGuestImages } from '../lib/guest-images.js';
import { guestCommandCmdline } from '../lib/guest-command.js';
import { FlintvmError } from '../lib/errors.js';
import type { DriveConfig, NetConfig, ShareConfig, VsockConfig } from '../lib/config.js';
import { runFirecrackerMode } from './firecracker-mode.js';

const HELP = `Usage: flintvm run [options] [-- CMD [ARGS...]]

Boot a Linux microVM on KVM with its serial console on this terminal.

Options:
  --kernel PATH      guest kernel: ELF vmlinux or bzImage on x86_64, Image or
                     Image.gz on arm64. Default: the default guest, built on
                     first use into ~/.cache/flintvm (minutes).
  --initrd PATH      initramfs. Default: the default guest's, when --kernel is not given.
  --cmdline STRING   replace the kernel command line
                     (default: console=ttyS0 reboot=k panic=1 ... on x86_64,
                     console=ttyS0 earlycon panic=1 on arm64)
  --append STRING    append to the kernel command line
  --mem MIB          guest memory in MiB, a multiple of 2 (default 256)
  --cpus N           number of vCPUs (default 1)
  --pvh              x86_64: boot an ELF vmlinux through its PVH entry point
  --drive SPEC       add a virtio-blk disk (repeatable): path=IMG[,ro][,root][,serial=S]
                     the guest sees /dev/vda, /dev/vdb, ... in order; root boots from it
  --rng              add a virtio-rng device (the guest's /dev/hwrng)
  --share SPEC       share a host directory (repeatable):
                     tag=T,path=DIR[,ro][,proto=9p|virtiofs][,mount]
                     (default proto 9p; with mount, the default guest mounts it at /mnt/T)
  --vsock SPEC       add a virtio-vsock device: cid=N,uds=PATH (host clients connect to
                     PATH and send "CONNECT <port>"; guest connections to host port P
                     go to PATH_P)
  --net SPEC         add a virtio-net NIC on a host TAP (repeatable): tap=NAME[,mac=MAC]
                     (attached if NAME exists, created otherwise; needs CAP_NET_ADMIN)
  -i, --interactive  with a command: also pass this terminal's input to it
  -v, --verbose      with a command: show the kernel's boot messages
  -h, --help         show this help

With "-- CMD ARGS", the default guest runs that command instead of a shell,
and flintvm exits with the command's exit status (like "docker run").
Otherwise the exit status says how the guest ended: 0 for a reboot or
power-off, 1 for a crash or an error.

In an interactive session, type Ctrl-A then x to stop the VM.
Environment: DEBUG=flintvm:* for logs; FLINTVM_GUEST_DIR for prebuilt guest images.`;

const CTRL_A = 0x01;

async function main(argv: string[]): Promise<number> {
  // Firecracker's command line (--config-file / --api-sock): see bin/firecracker-mode.ts.
  if (argv.some((a) => /^--(config-file|api-sock)(=|$)/.test(a))) return runFirecrackerMode(argv);
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '-h' || sub === '--help' || sub === 'help') {
    console.log(HELP);
    return sub === undefined ? 2 : 0;
  }
  if (sub !== 'run') {
    console.error(`flintvm: unknown command '${sub}'. Try 'flintvm --help'.`);
    return 2;
  }
  const dashdash = rest.indexOf('--');
  const opts = dashdash >= 0 ? rest.slice(0, dashdash) : rest;
  const command = dashdash >= 0 ? rest.slice(dashdash + 1) : [];
  const { values } = parseArgs({
    args: opts,
    options: {
      kernel: { type: 'string' }, initrd: { type: 'string' }, cmdline: { type: 'string' }, append: { type: 'string' },
      mem: { type: 'string' }, cpus: { type: 'string' }, pvh: { type: 'boolean' },
      drive: { type: 'string', multiple: true }, rng: { type: 'boolean' }, net: { type: 'string', multiple: true }, share: { type: 'string', multiple: true }, vsock: { type: 'string' },
      interactive: { type: 'boolean', short: 'i' }, verbose: { type: 'boolean', short: 'v' }, help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const num = (flag: string, v: string | undefined) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n)) throw new FlintvmError('FLINTVM_E_CONFIG', `--${flag} must be an integer, got '${v}'`);
    return n;
  };

  let kernel = values.kernel;
  let initrd = values.initrd;
  if (!kernel) {
    const imgs = await defaultGuestImages();
    kernel = imgs.kernel;
    initrd ??= imgs.initrd;
  }
  const shares = (values.share ?? []).map(parseShare);
  const extra = [values.append ?? '', ...shares.filter((s) => s.mount).map((s) => `flintvm.mount=${s.share.protocol}:${s.share.tag}`)];
  if (command.length) {
    extra.push(guestCommandCmdline(command));
    if (!values.verbose) extra.push('quiet');
  }
  const vm = new MicroVM({
    kernel, initrd, cmdline: values.cmdline, extraCmdline: extra.join(' ').trim() || undefined,
    memoryMiB: num('mem', values.mem), vcpus: num('cpus', values.cpus), bootProtocol: values.pvh ? 'pvh' : 'linux64',
    drives: (values.drive ?? []).map(parseDrive), rng: values.rng ?? false, net: (values.net ?? []).map(parseNet),
    shares: shares.map((s) => s.share),
    ...(values.vsock ? { vsock: parseVsock(values.vsock) } : {}),
  });

  const interactive = command.length === 0 || values.interactive === true;
  const tty = process.stdin.isTTY && interactive;
  vm.console.pipe(process.stdout, { end: false });
  let sawCtrlA = false;
  const onInput = (chunk: Buffer) => {
    if (tty) {
      // Ctrl-A x stops the VM (as in QEMU); Ctrl-A Ctrl-A sends one Ctrl-A.
      for (const b of chunk) {
        if (sawCtrlA) {
          sawCtrlA = false;
          if (b === 0x78 /* x */) { void vm.stop(); return; }
          if (b !== CTRL_A) vm.console.write(Buffer.of(CTRL_A));
        } else if (b === CTRL_A) { sawCtrlA = true; continue; }
        vm.console.write(Buffer.of(b));
      }
    } else {
      vm.console.write(chunk);
    }
  };
  const onSignal = () => { void vm.stop(); };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  await vm.start();
  if (interactive) {
    if (tty) process.stdin.setRawMode(true);
    process.stdin.on('data', onInput);
  }
  const exit = await vm.wait();
  if (tty) process.stdin.setRawMode(false);
  process.stdin.off('data', onInput);
  process.stdin.pause();
  // A TTY or pipe stdin keeps the process alive; a file or /dev/null stdin has no unref.
  (process.stdin as { unref?: () => void }).unref?.();
  return exitCode(exit, command.length > 0);
}

/** Splits `k=v,flag,k2=v2` into [key, value | undefined] pairs. */
function specParts(spec: string): [string, string | undefined][] {
  return spec.split(',').map((part) => {
    const eq = part.indexOf('=');
    return eq < 0 ? [part, undefined] : [part.slice(0, eq), part.slice(eq + 1)];
  });
}

/** `tag=T,path=DIR[,ro][,proto=9p|virtiofs][,mount]`. */
export function parseShare(spec: string): { share: ShareConfig; mount: boolean } {
  const share: ShareConfig = { tag: '', path: '', protocol: '9p' };
  let mount = false;
  for (const [k, v] of specParts(spec)) {
    if (k === 'tag' && v) share.tag = v;
    else if (k === 'path' && v) share.path = v;
    else if (k === 'ro' && v === undefined) share.readOnly = true;
    else if (k === 'proto' && (v === '9p' || v === 'virtiofs')) share.protocol = v;
    else if (k === 'mount' && v === undefined) mount = true;
    else throw new FlintvmError('FLINTVM_E_CONFIG', `--share: unknown option '${k}${v === undefined ? '' : `=${v}`}' (use tag=T,path=DIR[,ro][,proto=9p|virtiofs][,mount])`);
  }
  if (!share.tag || !share.path) throw new FlintvmError('FLINTVM_E_CONFIG', `--share ${spec}: needs tag=T and path=DIR`);
  if (mount && !/^[A-Za-z0-9_.-]+$/.test(share.tag)) throw new FlintvmError('FLINTVM_E_CONFIG', `--share ${spec}: with mount, the tag may only use letters, digits, '_', '.', '-'`);
  return { share, mount };
}

/** `cid=N,uds=PATH`. */
export function parseVsock(spec: string): VsockConfig {
  let guestCid = NaN;
  let udsPath = '';
  for (const [k, v] of specParts(spec)) {
    if (k === 'cid' && v !== undefined) guestCid = Number(v);
    else if ((k === 'uds' || k === 'path') && v) udsPath = v;
    else throw new FlintvmError('FLINTVM_E_CONFIG', `--vsock: unknown option '${k}${v === undefined ? '' : `=${v}`}' (use cid=N,uds=PATH)`);
  }
  if (!Number.isInteger(guestCid) || !udsPath) throw new FlintvmError('FLINTVM_E_CONFIG', `--vsock ${spec}: needs cid=N (>= 3) and uds=PATH`);
  return { guestCid, udsPath };
}

/** `tap=NAME[,mac=MAC]`. */
export function parseNet(spec: string): NetConfig {
  const net: NetConfig = { tap: '' };
  for (const [k, v] of specParts(spec)) {
    if (k === 'tap' && v) net.tap = v;
    else if (k === 'mac' && v) net.mac = v;
    else throw new FlintvmError('FLINTVM_E_CONFIG', `--net: unknown option '${k}${v === undefined ? '' : `=${v}`}' (use tap=NAME[,mac=MAC])`);
  }
  if (!net.tap) throw new FlintvmError('FLINTVM_E_CONFIG', `--net ${spec}: missing tap=NAME`);
  return net;
}

/** `path=IMG[,ro][,root][,serial=S]` (a bare first word is taken as the path). */
export function parseDrive(spec: string): DriveConfig {
  const drive: DriveConfig = { path: '' };
  specParts(spec).forEach(([k, v], i) => {
    const part = v === undefined ? k : `${k}=${v}`;
    if (k === 'path' && v !== undefined) drive.path = v;
    else if (i === 0 && v === undefined) drive.path = k;
    else if (k === 'ro' && v === undefined) drive.readOnly = true;
    else if (k === 'root' && v === undefined) drive.root = true;
    else if (k === 'serial' && v !== undefined) drive.serial = v;
    else throw new FlintvmError('FLINTVM_E_CONFIG', `--drive: unknown option '${part}' (use path=IMG[,ro][,root][,serial=S])`);
  });
  if (!drive.path) throw new FlintvmError('FLINTVM_E_CONFIG', `--drive ${spec}: missing path=IMG`);
  return drive;
}

function exitCode(exit: VmExit, ranCommand: boolean): number {
  if (exit.reason === 'guest-exit') return exit.exitStatus ?? 1;
  if (exit.reason === 'stopped') return 130;
  if (ranCommand) {
    console.error(`flintvm: the guest ended (${exit.reason}) without reporting the command's exit status`);
    return 1;
  }
  if (exit.reason === 'reset' || exit.reason === 'poweroff' || exit.reason === 'halt') return 0;
  console.error(`flintvm: the guest ended with ${exit.reason}${exit.detail ? ` ${JSON.stringify(exit.detail, (_k, v: unknown) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v))}` : ''}`);
  return 1;
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e: unknown) => {
    console.error(`flintvm: ${e instanceof Error ? e.message : String(e)}`);
    process.exitCode = e instanceof FlintvmError && e.code === 'FLINTVM_E_CONFIG' ? 2 : 1;
  },
);
