#!/usr/bin/env node
/**
 * flintvm command line: `flintvm run [options] [-- CMD ARGS...]`.
 * Boots a microVM with the console on this terminal.
 *
 * Order of work (fail fast): parse and check every flag, check the whole config (files included),
 * check /dev/kvm, and only then fetch or build the default guest and boot.
 */
import { accessSync, constants, existsSync, readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { MicroVM, type RestoreOverrides, type VmExit } from '../lib/microvm.js';
import { defaultGuestImages } from '../lib/guest-images.js';
import { ENV_NAME_RE, guestCommandCmdline } from '../lib/guest-command.js';
import { ConfigError, FlintvmError, type ConfigProblem } from '../lib/errors.js';
import { MEMORY_ALIGN_MIB, microVMConfigSchema, resolveConfig, type DriveConfig, type MicroVMConfig, type NetConfig, type ShareConfig, type VsockConfig } from '../lib/vm/config.js';
import { closest, type AnySpec } from '../lib/config-schema.js';
import { adoptEarlyStandbys, type WorkerPool } from '../lib/worker-pool.js';
import { takeEarlyStandby } from '../lib/worker-spawn.js';
import { localKvmIsPvm } from '../lib/kvm/pvm.js';
import { runFirecrackerMode } from './firecracker-mode.js';

/** Exit statuses of `flintvm` (also in --help and the README). */
export const EXIT = {
  /** The guest powered off or rebooted (no command given). */
  OK: 0,
  /** A bad command, flag or value, or an invalid config: nothing was started. */
  USAGE: 2,
  /** flintvm itself failed: no usable /dev/kvm, the default guest could not be built, the VM failed to start or crashed, or the guest ended without reporting its command's status. */
  VM_FAILED: 125,
  /** Stopped by Ctrl-A x, SIGINT or SIGTERM. */
  STOPPED: 130,
} as const;

const PKG_ROOT = fileURLToPath(new URL('../../', import.meta.url));

function version(): string {
  return (JSON.parse(readFileSync(`${PKG_ROOT}package.json`, 'utf8')) as { version: string }).version;
}

const F = microVMConfigSchema.fields!;
/** `  --flag ARG   doc` with the doc from the config schema. */
function opt(flag: string, arg: string, doc: string): string {
  const head = `  ${flag}${arg ? ` ${arg}` : ''}`;
  return `${head.padEnd(22)} ${wrap(doc, 23)}`;
}
/** Word-wraps `text` at 100 columns, indenting continuation lines by `indent`. */
function wrap(text: string, indent: number): string {
  const lines: string[] = [];
  let line = '';
  for (const w of text.split(' ')) {
    if (line && indent + line.length + 1 + w.length > 100) { lines.push(line); line = w; } else line = line ? `${line} ${w}` : w;
  }
  lines.push(line);
  return lines.join(`\n${''.padEnd(indent)}`);
}
/** The keys of a spec flag (`path=IMG,ro,...`) from the schema of its items. */
function keysHelp(s: AnySpec): string {
  const item = s.item ?? s;
  return Object.values(item.fields ?? {}).map((f) => `${''.padEnd(25)}${wrap(`${f.type === 'boolean' ? f.cli : `${f.cli}=${f.type.startsWith('integer') ? 'N' : '...'}`}: ${f.doc}`, 27)}`).join('\n');
}

const EXIT_TABLE = `Exit status:
  0      the guest powered off or rebooted (no command given)
  N      with -- CMD: the command's own exit status (0-255)
  ${EXIT.USAGE}      bad command, flag or value, or invalid config: nothing was started
  ${EXIT.VM_FAILED}    flintvm failed: no usable /dev/kvm, the default guest could not be built,
         the VM failed to start or crashed, or the guest ended without reporting
         its command's status
  ${EXIT.STOPPED}    stopped by Ctrl-A x, SIGINT or SIGTERM`;

const TOP_HELP = `Usage: flintvm <command> [options]

Commands:
  run        boot a Linux microVM on KVM (flintvm run --help)
  restore    continue a VM from a snapshot directory (flintvm restore --help)
  help CMD   show the help of CMD
  version    print the version (also: flintvm --version)

${EXIT_TABLE}`;

const RUN_HELP = `Usage: flintvm run [options] [-- CMD [ARGS...]]

Boot a Linux microVM on KVM with its serial console on this terminal. With
"-- CMD ARGS", the default guest runs that command instead of a shell and
flintvm exits with the command's status (like "docker run").

VM options:
${opt(F.kernel!.cli!, 'PATH', `${F.kernel!.doc} Default: the default guest, built on first use into ~/.cache/flintvm (about 10 minutes).`)}
${opt(F.initrd!.cli!, 'PATH', `${F.initrd!.doc} Default: the default guest's, when --kernel is not given.`)}
${opt(F.cmdline!.cli!, 'STRING', F.cmdline!.doc)}
${opt(F.extraCmdline!.cli!, 'STRING', F.extraCmdline!.doc)}
${opt(F.memoryMiB!.cli!, 'MIB', `${F.memoryMiB!.doc} A decimal integer, a multiple of ${MEMORY_ALIGN_MIB}. Default ${F.memoryMiB!.default}.`)}
${opt(F.vcpus!.cli!, 'N', `${F.vcpus!.doc} Default ${F.vcpus!.default}.`)}
${opt(F.vcpuNice!.cli!, 'N', `${F.vcpuNice!.doc} Default ${F.vcpuNice!.default}.`)}
${opt(F.bootProtocol!.cli!, '', 'x86_64: boot an ELF vmlinux through its PVH entry point.')}
${opt(F.rng!.cli!, '', F.rng!.doc)}
${opt(F.drives!.cli!, 'SPEC', `${F.drives!.doc} Repeatable; SPEC is comma-separated keys (a bare first word is the path):`)}
${keysHelp(F.drives!)}
${opt(F.shares!.cli!, 'SPEC', `${F.shares!.doc} Repeatable; keys:`)}
${keysHelp(F.shares!)}
${''.padEnd(25)}mount: the default guest mounts it at /mnt/TAG
${opt(F.net!.cli!, 'SPEC', `${F.net!.doc} Repeatable; keys:`)}
${keysHelp(F.net!)}
${opt(F.vsock!.cli!, 'SPEC', `${F.vsock!.doc} Keys:`)}
${keysHelp(F.vsock!)}

Command options (with -- CMD):
  -e, --env KEY=VAL      set an environment variable for the command (repeatable)
  -w, --workdir DIR      run the command in DIR (in the guest)
  -t, --tty              give the command the console as its terminal, and this
                         terminal's keys raw (Ctrl-C goes to the guest); needs a TTY
  -i, --interactive      pass this terminal's input to the command
  -v, --verbose          show the kernel's boot messages

Snapshots:
  --snapshot-on-signal DIR
                         on SIGUSR1, write a snapshot of the running VM into DIR
                         (the VM pauses for it, then runs on); continue it later
                         with: flintvm restore DIR

  -h, --help             show this help

Without a command you get the guest's shell; type Ctrl-A then x to stop the VM.
Environment: DEBUG=flintvm:* for logs; FLINTVM_GUEST_DIR for prebuilt guest images.

${EXIT_TABLE}`;

const RESTORE_HELP = `Usage: flintvm restore DIR [options]

Continue a VM from a snapshot directory (written by --snapshot-on-signal, or by
MicroVM.snapshot() in the API) with its serial console on this terminal. The
guest continues where it was: its memory is the snapshot's memory file, mapped
copy-on-write, so many restores of one snapshot share it.

Host resources two live VMs cannot share can be replaced, in config order:
  --drive PATH           the next drive's image (repeat for drive 1, 2, ...;
                         "-" keeps that drive's own)
  --tap NAME             the next NIC's tap device (repeat; "-" keeps one)
  --vsock-uds PATH       the vsock device's host socket path
  --cid N                the vsock device's guest CID
  --snapshot-on-signal DIR
                         on SIGUSR1, snapshot the restored VM into DIR
  -h, --help             show this help

Type Ctrl-A then x to stop the VM. The exit status is as for flintvm run.`;

const RESTORE_OPTIONS = {
  drive: { type: 'string', multiple: true }, tap: { type: 'string', multiple: true }, 'vsock-uds': { type: 'string' }, cid: { type: 'string' },
  'snapshot-on-signal': { type: 'string' }, help: { type: 'boolean', short: 'h' },
} as const;

/** A usage error: printed with a pointer to the help, exit status 2. */
class UsageError extends Error {}

const CTRL_A = 0x01;
const RUN_OPTIONS = {
  kernel: { type: 'string' }, initrd: { type: 'string' }, cmdline: { type: 'string' }, append: { type: 'string' },
  mem: { type: 'string' }, cpus: { type: 'string' }, 'vcpu-nice': { type: 'string' }, pvh: { type: 'boolean' },
  drive: { type: 'string', multiple: true }, rng: { type: 'boolean' }, net: { type: 'string', multiple: true },
  share: { type: 'string', multiple: true }, vsock: { type: 'string' },
  env: { type: 'string', short: 'e', multiple: true }, workdir: { type: 'string', short: 'w' }, tty: { type: 'boolean', short: 't' },
  interactive: { type: 'boolean', short: 'i' }, verbose: { type: 'boolean', short: 'v' }, help: { type: 'boolean', short: 'h' },
  'snapshot-on-signal': { type: 'string' },
} as const;

/**
 * The command. The vCPU worker bin/launch.cjs started before this command loaded (for `flintvm run`, when it
 * could) goes to the VM through a pool of its own, and whatever happens it is ended before this returns, unless
 * the VM took it: a process that exits while a worker is still loading koffi's addon can abort in the addon's
 * init, and `close()` waits for that.
 */
async function main(argv: string[]): Promise<number> {
  const early = takeEarlyStandby();
  const pool = early ? adoptEarlyStandbys([early]) : undefined;
  try {
    return await command(argv, pool);
  } finally {
    await pool?.close();
  }
}

async function command(argv: string[], pool: WorkerPool | undefined): Promise<number> {
  // Firecracker's command line (--config-file / --api-sock): see bin/firecracker-mode.ts.
  if (argv.some((a) => /^--(config-file|api-sock)(=|$)/.test(a))) return runFirecrackerMode(argv);
  const [sub, ...rest] = argv;
  if (sub === undefined) {
    console.error(TOP_HELP);
    return EXIT.USAGE;
  }
  if (sub === '-h' || sub === '--help') { console.log(TOP_HELP); return EXIT.OK; }
  if (sub === '--version' || sub === '-V' || sub === 'version') { console.log(version()); return EXIT.OK; }
  if (sub === 'help') {
    if (rest[0] === undefined) { console.log(TOP_HELP); return EXIT.OK; }
    if (rest[0] === 'run') { console.log(RUN_HELP); return EXIT.OK; }
    if (rest[0] === 'restore') { console.log(RESTORE_HELP); return EXIT.OK; }
    throw new UsageError(`unknown command '${rest[0]}'`);
  }
  if (sub === 'restore') return restore(rest);
  if (sub !== 'run') {
    const near = closest(sub, ['run', 'restore', 'help', 'version']);
    throw new UsageError(`unknown command '${sub}'${near ? `; did you mean '${near}'?` : ''}`);
  }
  return run(rest, pool);
}

/** Parses `flintvm run` flags; throws UsageError or ConfigError (naming flags) before anything starts. */
function parseRun(args: string[]) {
  const dashdash = args.indexOf('--');
  const opts = dashdash >= 0 ? args.slice(0, dashdash) : args;
  const command = dashdash >= 0 ? args.slice(dashdash + 1) : [];
  let values;
  try {
    ({ values } = parseArgs({ args: opts, options: RUN_OPTIONS, strict: true, allowPositionals: false }));
  } catch (e) {
    const m = /'([^']+)'/.exec((e as Error).message);
    const code = (e as { code?: string }).code;
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && m) {
      const flags = Object.keys(RUN_OPTIONS).map((k) => `--${k}`);
      const near = closest(m[1]!, flags);
      throw new UsageError(`run: unknown option '${m[1]}'${near ? `; did you mean '${near}'?` : ''}`);
    }
    if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL' && m) throw new UsageError(`run: unexpected argument '${m[1]}' (put the guest command after --, e.g. flintvm run -- ${m[1]})`);
    throw new UsageError(`run: ${(e as Error).message}`);
  }
  return { values, command };
}

/** `flintvm run`; `pool` holds the vCPU worker bin/launch.cjs started before this command loaded, if it did. */
async function run(args: string[], pool: WorkerPool | undefined): Promise<number> {
  const { values, command } = parseRun(args);
  if (values.help) { console.log(RUN_HELP); return EXIT.OK; }

  // 1. Flags: every problem, named as typed.
  const problems: ConfigProblem[] = [];
  const tryParse = <T>(f: () => T): T | undefined => {
    try { return f(); } catch (e) {
      if (e instanceof ConfigError) { problems.push(...e.problems); return undefined; }
      throw e;
    }
  };
  const mem = tryParse(() => decimal('--mem', values.mem));
  const cpus = tryParse(() => decimal('--cpus', values.cpus));
  const vcpuNice = tryParse(() => decimal('--vcpu-nice', values['vcpu-nice']));
  const drives = (values.drive ?? []).map((s) => tryParse(() => parseDrive(s)));
  const nets = (values.net ?? []).map((s) => tryParse(() => parseNet(s)));
  const shares = (values.share ?? []).map((s) => tryParse(() => parseShare(s)));
  const vsock = values.vsock === undefined ? undefined : tryParse(() => parseVsock(values.vsock!));
  const env: Record<string, string> = {};
  for (const kv of values.env ?? []) {
    const eq = kv.indexOf('=');
    const key = eq < 0 ? kv : kv.slice(0, eq);
    if (eq < 0 || !ENV_NAME_RE.test(key)) problems.push({ field: '-e', message: `must be KEY=VALUE with KEY made of letters, digits and _ (not starting with a digit), got '${kv}'`, value: kv });
    else env[key] = kv.slice(eq + 1);
  }
  if (!command.length) {
    for (const [flag, set] of [['-e', values.env !== undefined], ['-w', values.workdir !== undefined], ['-t', values.tty], ['-i', values.interactive]] as const) {
      if (set) problems.push({ field: flag, message: 'applies to a guest command: add -- CMD [ARGS...]' });
    }
  }
  if (values.workdir === '') problems.push({ field: '-w', message: 'must be a directory path in the guest, got an empty string' });
  if (values.tty && !process.stdin.isTTY) problems.push({ field: '-t', message: 'the input is not a terminal; drop -t' });

  // 2. The config, with the kernel and initrd left out when the default guest will provide them.
  const sharesOk = shares.filter((s) => s !== undefined);
  const extra = [values.append ?? '', ...sharesOk.filter((s) => s.mount).map((s) => `flintvm.mount=${s.share.protocol}:${s.share.tag}`)];
  if (command.length && values.workdir !== '') {
    extra.push(guestCommandCmdline(command, { env, cwd: values.workdir, tty: values.tty }));
    if (!values.verbose) extra.push('quiet');
  }
  const useDefaultGuest = values.kernel === undefined;
  const config: MicroVMConfig = {
    kernel: values.kernel ?? '(default guest)', initrd: values.initrd, cmdline: values.cmdline, extraCmdline: extra.join(' ').trim() || undefined,
    memoryMiB: mem, vcpus: cpus, vcpuNice, bootProtocol: values.pvh ? 'pvh' : undefined, rng: values.rng || undefined,
    drives: drives.filter((d) => d !== undefined), net: nets.filter((n) => n !== undefined),
    shares: sharesOk.map((s) => s.share), vsock,
  };
  for (const k of Object.keys(config) as (keyof MicroVMConfig)[]) if (config[k] === undefined) delete config[k];
  tryParse(() => resolveConfig(config, { cli: true, skip: useDefaultGuest ? ['kernel', 'initrd'] : [] }));
  if (problems.length) throw ConfigError.fromProblems(problems);

  // 3. KVM, before any image is built.
  const kvm = kvmProblem();
  if (kvm) {
    console.error(`flintvm: ${kvm}`);
    return EXIT.VM_FAILED;
  }
  if (useDefaultGuest && localKvmIsPvm()) {
    console.error(pvmMessage('the default guest is not one (give --kernel a kernel built for PVM to run it here)'));
    return EXIT.VM_FAILED;
  }

  // 4. Images (the default guest's first build takes minutes; its script prints progress).
  if (useDefaultGuest) {
    const slow = setTimeout(() => console.error('flintvm: preparing the default guest (the first run builds it: about 10 minutes on 2 cores; cached in ~/.cache/flintvm)...'), 1000);
    try {
      const imgs = await defaultGuestImages();
      config.kernel = imgs.kernel;
      config.initrd ??= imgs.initrd;
    } finally {
      clearTimeout(slow);
    }
  }
  // The pool starts no other worker; closed once the VM has its workers.
  if (pool) config.workerPool = pool;
  const vm = new MicroVM(config);
  const start = async () => {
    try {
      await vm.start();
    } finally {
      await pool?.close();
    }
    return vm;
  };
  return boot(start, command.length > 0, { interactive: values.interactive === true, tty: values.tty === true, snapshotDir: values['snapshot-on-signal'] });
}

/** `flintvm restore DIR [options]`: restores a snapshot with the console on this terminal. */
async function restore(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args, options: RESTORE_OPTIONS, strict: true, allowPositionals: true });
  } catch (e) {
    throw new UsageError(`restore: ${(e as Error).message}`);
  }
  const { values, positionals } = parsed;
  if (values.help) { console.log(RESTORE_HELP); return EXIT.OK; }
  if (positionals.length !== 1) throw new UsageError(`restore: give one snapshot directory (got ${positionals.length ? positionals.join(' ') : 'none'})`);
  const keep = <T>(v: string, make: (x: string) => T): T | null => (v === '-' ? null : make(v));
  const cid = values.cid === undefined ? undefined : decimal('--cid', values.cid);
  const overrides: RestoreOverrides = {
    ...(values.drive ? { drives: values.drive.map((p) => keep(p, (path) => ({ path }))) } : {}),
    ...(values.tap ? { net: values.tap.map((n) => keep(n, (tap) => ({ tap }))) } : {}),
    ...(values['vsock-uds'] !== undefined || cid !== undefined ? { vsock: { ...(values['vsock-uds'] !== undefined ? { udsPath: values['vsock-uds'] } : {}), ...(cid !== undefined ? { guestCid: cid } : {}) } } : {}),
  };
  const kvm = kvmProblem();
  if (kvm) {
    console.error(`flintvm: ${kvm}`);
    return EXIT.VM_FAILED;
  }
  const dir = positionals[0]!;
  // A guest that ran a command (flintvm.cmd= on its command line) reports that command's exit status.
  const ranCommand = /flintvm\.cmd=/.test(readFileSync(`${dir}/state.json`, 'utf8').slice(0, 1 << 20));
  return boot(() => MicroVM.restore(dir, overrides), ranCommand, { interactive: true, tty: false, snapshotDir: values['snapshot-on-signal'] });
}

/** Starts a VM with `start` (boot or restore), the console on this terminal, and returns the exit status. */
async function boot(start: () => Promise<MicroVM>, ranCommand: boolean, o: { interactive: boolean; tty: boolean; snapshotDir?: string | undefined }): Promise<number> {
  const interactive = !ranCommand || o.interactive || o.tty;
  const raw = process.stdin.isTTY && (!ranCommand || o.tty);
  let vm: MicroVM | null = null;
  let sawCtrlA = false;
  let stopped = false;
  const stop = () => { stopped = true; void vm?.stop(); };
  const onInput = (chunk: Buffer) => {
    if (!raw) { vm!.console.write(chunk); return; }
    // Ctrl-A x stops the VM (as in QEMU); Ctrl-A Ctrl-A sends one Ctrl-A.
    for (const b of chunk) {
      if (sawCtrlA) {
        sawCtrlA = false;
        if (b === 0x78 /* x */) { stop(); return; }
        if (b !== CTRL_A) vm!.console.write(Buffer.of(CTRL_A));
      } else if (b === CTRL_A) { sawCtrlA = true; continue; }
      vm!.console.write(Buffer.of(b));
    }
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    vm = await start();
  } catch (e) {
    console.error(`flintvm: the VM failed to start: ${(e as Error).message}`);
    return e instanceof ConfigError ? EXIT.USAGE : EXIT.VM_FAILED;
  }
  // SIGINT/SIGTERM while it was starting: stop it now.
  if (stopped) void vm.stop();
  vm.console.pipe(process.stdout, { end: false });
  const running = vm;
  const snapshotDir = o.snapshotDir;
  const onSnapshotSignal = () => {
    if (!snapshotDir) return;
    running.snapshot(snapshotDir).then(
      (i) => console.error(`\r\nflintvm: snapshot written to ${snapshotDir} in ${i.ms.toFixed(0)} ms (${(i.memoryWritten / 1048576).toFixed(1)} of ${(i.memoryBytes / 1048576).toFixed(0)} MiB of memory); continue it with: flintvm restore ${snapshotDir}\r`),
      (e: unknown) => console.error(`\r\nflintvm: snapshot failed: ${(e as Error).message}\r`),
    );
  };
  if (snapshotDir) process.on('SIGUSR1', onSnapshotSignal);
  if (interactive) {
    if (raw) process.stdin.setRawMode(true);
    process.stdin.on('data', onInput);
  }
  const exit = await vm.wait();
  process.off('SIGUSR1', onSnapshotSignal);
  if (raw) process.stdin.setRawMode(false);
  process.stdin.off('data', onInput);
  process.stdin.pause();
  // A TTY or pipe stdin keeps the process alive; a file or /dev/null stdin has no unref.
  (process.stdin as { unref?: () => void }).unref?.();
  return stopped ? EXIT.STOPPED : exitCode(exit, ranCommand);
}

/** Why /dev/kvm cannot be used here, with every fix; undefined when it can. */
export function kvmProblem(path = '/dev/kvm'): string | undefined {
  let why: string;
  try {
    const st = statSync(path);
    if (!st.isCharacterDevice()) throw Object.assign(new Error('not a device'), { code: 'ENODEV' });
    accessSync(path, constants.R_OK | constants.W_OK);
    return undefined;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    why = code === 'ENOENT' ? `${path} does not exist` : code === 'EACCES' || code === 'EPERM' ? `no permission to open ${path}` : `${path} is not usable (${code ?? 'error'})`;
  }
  const clone = existsSync(`${PKG_ROOT}test/hosts`);
  return [
    `cannot use KVM: ${why}. Fixes:`,
    `  - no permission: add your user to the kvm group (sudo usermod -aG kvm $USER, then log in again), or run as root;`,
    `  - no ${path}: load KVM (sudo modprobe kvm_intel, or kvm_amd) and enable virtualization in the firmware or hypervisor;`,
    `  - in a container: start it with --device /dev/kvm (docker run / podman run);`,
    clone
      ? `  - no KVM on this machine: from this clone, run it inside the real-KVM test host: npm run test:host -- --arch x86_64 -- flintvm run ...`
      : `  - no KVM on this machine: from a flintvm clone, the real-KVM test host runs it: npm run test:host -- --arch x86_64 -- flintvm run ...`,
  ].join('\n');
}

/** A non-negative decimal integer flag (`0x10`, `1e3`, `16.0` are refused). */
function decimal(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^[0-9]+$/.test(v) || !Number.isSafeInteger(Number(v))) throw new ConfigError(flag, `must be a decimal integer, got '${v}'`, v);
  return Number(v);
}

/** Splits `k=v,flag,k2=v2` into [key, value | undefined] pairs. */
function specParts(spec: string): [string, string | undefined][] {
  return spec.split(',').map((part) => {
    const eq = part.indexOf('=');
    return eq < 0 ? [part, undefined] : [part.slice(0, eq), part.slice(eq + 1)];
  });
}

function unknownKey(flag: string, k: string, v: string | undefined, spec: AnySpec, extra: string[] = []): ConfigError {
  const keys = [...Object.values(spec.fields ?? {}).map((f) => f.cli!), ...extra];
  const near = closest(k, keys);
  return new ConfigError(flag, `unknown key '${k}${v === undefined ? '' : `=${v}`}'${near ? `; did you mean '${near}'?` : ''} (keys: ${keys.join(', ')})`, k);
}

/** `tag=T,path=DIR[,ro][,proto=9p|virtiofs][,cache=auto|never][,mount]`. */
export function parseShare(spec: string): { share: ShareConfig; mount: boolean } {
  const share: ShareConfig = { tag: '', path: '', protocol: '9p' };
  let mount = false;
  for (const [k, v] of specParts(spec)) {
    if (k === 'tag' && v) share.tag = v;
    else if (k === 'path' && v) share.path = v;
    else if (k === 'ro' && v === undefined) share.readOnly = true;
    else if (k === 'proto' && (v === '9p' || v === 'virtiofs')) share.protocol = v;
    else if (k === 'proto') throw new ConfigError('--share proto', `must be 9p or virtiofs, got '${v ?? ''}'`, v);
    else if (k === 'cache' && (v === 'auto' || v === 'never')) share.cache = v;
    else if (k === 'cache') throw new ConfigError('--share cache', `must be auto or never, got '${v ?? ''}'`, v);
    else if (k === 'mount' && v === undefined) mount = true;
    else throw unknownKey('--share', k, v, F.shares!.item!, ['mount']);
  }
  if (!share.tag || !share.path) throw new ConfigError('--share', `'${spec}' needs tag=T and path=DIR`, spec);
  if (mount && !/^[A-Za-z0-9_.-]+$/.test(share.tag)) throw new ConfigError('--share', `'${spec}': with mount, the tag may only use letters, digits, '_', '.', '-'`, spec);
  return { share, mount };
}

/** `cid=N,uds=PATH`. */
export function parseVsock(spec: string): VsockConfig {
  let guestCid: number | undefined;
  let udsPath = '';
  for (const [k, v] of specParts(spec)) {
    if (k === 'cid' && v !== undefined) guestCid = decimal('--vsock cid', v);
    else if ((k === 'uds' || k === 'path') && v) udsPath = v;
    else throw unknownKey('--vsock', k, v, F.vsock!);
  }
  if (guestCid === undefined || !udsPath) throw new ConfigError('--vsock', `'${spec}' needs cid=N (3 or more) and uds=PATH`, spec);
  return { guestCid, udsPath };
}

/** `tap=NAME[,mac=MAC]`. */
export function parseNet(spec: string): NetConfig {
  const net: NetConfig = { tap: '' };
  for (const [k, v] of specParts(spec)) {
    if (k === 'tap' && v) net.tap = v;
    else if (k === 'mac' && v) net.mac = v;
    else throw unknownKey('--net', k, v, F.net!.item!);
  }
  if (!net.tap) throw new ConfigError('--net', `'${spec}' needs tap=NAME`, spec);
  return net;
}

/** `path=IMG[,ro][,root][,serial=S]` (a bare first word is taken as the path). */
export function parseDrive(spec: string): DriveConfig {
  const drive: DriveConfig = { path: '' };
  for (const [i, [k, v]] of specParts(spec).entries()) {
    if (k === 'path' && v !== undefined) drive.path = v;
    else if (i === 0 && v === undefined && !['ro', 'root'].includes(k)) drive.path = k;
    else if (k === 'ro' && v === undefined) drive.readOnly = true;
    else if (k === 'root' && v === undefined) drive.root = true;
    else if (k === 'serial' && v !== undefined) drive.serial = v;
    else throw unknownKey('--drive', k, v, F.drives!.item!);
  }
  if (!drive.path) throw new ConfigError('--drive', `'${spec}' needs path=IMG`, spec);
  return drive;
}

/**
 * Why a guest may have ended with an emulation failure on this machine, or undefined: a /dev/kvm that is
 * the nested kvm_pvm module runs only guest kernels built for PVM, and stops any other at an instruction it
 * cannot emulate (KVM_EXIT_INTERNAL_ERROR), the default guest included.
 */
function pvmHint(exit: VmExit): string | undefined {
  if (exit.reason !== 'internal-error' || !localKvmIsPvm()) return undefined;
  return pvmMessage('stopped this one with an emulation failure');
}

function pvmMessage(what: string): string {
  const where = existsSync(`${PKG_ROOT}test/hosts`) ? 'from this clone' : 'from a flintvm clone';
  return `flintvm: this machine's /dev/kvm is the nested kvm_pvm module, which runs only guest kernels built for PVM `
    + `and ${what}. Run it in the real-KVM test host instead (${where}): npm run test:host -- --arch x86_64 -- flintvm run ...`;
}

function exitCode(exit: VmExit, ranCommand: boolean): number {
  if (exit.reason === 'guest-exit' && exit.exitStatus !== undefined) return exit.exitStatus;
  if (exit.reason === 'stopped') return EXIT.STOPPED;
  const hint = pvmHint(exit);
  if (hint) console.error(hint);
  if (ranCommand) {
    console.error(`flintvm: the guest ended (${exit.reason}) without reporting the command's exit status`);
    return EXIT.VM_FAILED;
  }
  if (exit.reason === 'reset' || exit.reason === 'poweroff' || exit.reason === 'halt') return EXIT.OK;
  console.error(`flintvm: the guest ended with ${exit.reason}${exit.detail ? ` ${JSON.stringify(exit.detail, (_k, v: unknown) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v))}` : ''}`);
  return EXIT.VM_FAILED;
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e: unknown) => {
    if (e instanceof UsageError) {
      console.error(`flintvm: ${e.message}\nSee 'flintvm --help' or 'flintvm run --help'.`);
      process.exitCode = EXIT.USAGE;
    } else if (e instanceof ConfigError) {
      console.error(`flintvm: invalid configuration:\n${e.problems.map((p) => `  ${p.field}: ${p.message}`).join('\n')}`);
      process.exitCode = EXIT.USAGE;
    } else {
      console.error(`flintvm: ${e instanceof Error ? e.message : String(e)}`);
      process.exitCode = e instanceof FlintvmError && e.code === 'FLINTVM_E_CONFIG' ? EXIT.USAGE : EXIT.VM_FAILED;
    }
  },
);
