/**
 * `flintvm --config-file vm.json` and `flintvm --api-sock PATH`: Firecracker's
 * command line, config file and REST API in front of a {@link MicroVM}.
 *
 * - `--config-file F` boots the VM described by Firecracker's JSON config at once;
 * - `--api-sock P` serves Firecracker's REST API on the Unix socket P (with
 *   `--config-file` too, the API serves the booted VM);
 * - the guest's serial console is this process's stdin/stdout;
 * - the process exits when the VM does: 0 after a guest reboot or power-off,
 *   the command's status when the default guest ran one, 1 on a crash, 2 on a bad
 *   flag or config (before anything starts).
 */
import { parseArgs } from 'node:util';
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { MicroVM, type VmExit } from '../lib/microvm.js';
import type { MicroVMConfig } from '../lib/vm/config.js';
import { FlintvmError } from '../lib/errors.js';
import { enableLogs } from '../lib/log.js';
import { parseLogger, parseVmConfigFile, type FcLogger, type FcLogLevel } from '../lib/firecracker/config.js';
import { FirecrackerApi, type FcInstanceState, type VmController } from '../lib/firecracker/api-server.js';

const HELP = `Usage: flintvm --api-sock PATH [--config-file FILE] [options]
       flintvm --config-file FILE [options]

Firecracker-compatible mode: Firecracker's JSON config file and REST API.

Options:
  --api-sock PATH      serve Firecracker's REST API on the Unix socket PATH
                       (PATH must not exist yet)
  --config-file FILE   boot the VM described by FILE (Firecracker's format) at once
  --no-api             accepted for compatibility: the API is served only with --api-sock
  --id ID              instance id reported by GET / (default anonymous-instance)
  --log-path FILE      write log lines to FILE (as PUT /logger's log_path)
  --level LEVEL        Off, Error, Warning, Info (default), Debug or Trace
  --show-level, --show-log-origin
                       accepted: add the level / origin to each log line
  --version            print the version
  -h, --help           show this help

The guest's serial console is this terminal. The process exits when the VM
does: 0 after a reboot or power-off, 1 on a crash or an error, 2 on a bad flag
or config. Not supported: rate limiters, snapshots, balloon, MMDS, metrics,
CPU templates, SMT, vhost-user drives (each is refused with its field name).`;

/** The package's version (Firecracker's `vmm_version`). */
function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

const LEVEL_RANK: Record<FcLogLevel, number> = { Off: 0, Error: 1, Warning: 2, Info: 3, Debug: 4, Trace: 5 };

/** Log lines of this mode: to the logger's file once configured, else nowhere. */
class FcLog {
  private fd: number | null = null;
  private settings: FcLogger = { level: 'Info' };

  constructor(private readonly id: string) {}

  configure(logger: FcLogger): void {
    const next = { ...this.settings, ...logger };
    if (logger.log_path !== undefined) {
      let fd: number;
      try {
        fd = openSync(logger.log_path, 'a');
      } catch (e) {
        throw new FlintvmError('FLINTVM_E_CONFIG', `logger.log_path: cannot open ${logger.log_path} (${(e as NodeJS.ErrnoException).code ?? 'error'}): check the path`);
      }
      if (this.fd !== null) closeSync(this.fd);
      this.fd = fd;
    }
    this.settings = next;
    if (this.fd !== null && LEVEL_RANK[next.level ?? 'Info'] >= LEVEL_RANK.Debug) {
      // flintvm's own debug output (main thread) follows the logger; workers inherit DEBUG and write to stderr.
      process.env.DEBUG = [process.env.DEBUG, 'flintvm:*'].filter(Boolean).join(',');
      const fd = this.fd;
      enableLogs(process.env.DEBUG, (line) => { this.write(fd, line); });
    }
  }

  line(level: FcLogLevel, origin: string, message: string): void {
    if (this.fd === null || LEVEL_RANK[level] > LEVEL_RANK[this.settings.level ?? 'Info'] || level === 'Off') return;
    const tags = [this.id, ...(this.settings.show_level ? [level.toUpperCase()] : []), ...(this.settings.show_log_origin ? [origin] : [])];
    this.write(this.fd, `${new Date().toISOString()} [${tags.join(':')}] ${message}`);
  }

  private write(fd: number, text: string): void {
    try { writeSync(fd, text + '\n'); } catch { /* a full pipe loses a line rather than blocking */ }
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

/** The real VM behind the API: one {@link MicroVM} with its console on stdin/stdout. */
class MicroVMController implements VmController {
  vm: MicroVM | null = null;
  private readonly exited: Promise<VmExit>;
  private onExit!: (e: VmExit) => void;

  constructor() {
    this.exited = new Promise((r) => { this.onExit = r; });
  }

  get state(): FcInstanceState {
    const s = this.vm?.state;
    if (s === 'running' || s === 'stopping' || s === 'exited') return 'Running';
    if (s === 'paused') return 'Paused';
    return 'Not started';
  }

  async start(config: MicroVMConfig): Promise<void> {
    const vm = new MicroVM(config);
    vm.console.pipe(process.stdout, { end: false });
    const input = (chunk: Buffer) => vm.console.write(chunk);
    this.vm = vm;
    void vm.wait().then((e) => {
      process.stdin.off('data', input);
      process.stdin.pause();
      (process.stdin as { unref?: () => void }).unref?.();
      this.onExit(e);
    });
    await vm.start();
    process.stdin.on('data', input);
  }

  async pause(): Promise<void> { await this.vm!.pause(); }
  async resume(): Promise<void> { await this.vm!.resume(); }

  async snapshot(statePath: string, memoryPath: string): Promise<void> {
    await this.vm!.snapshot({ statePath, memoryPath });
  }

  async load(statePath: string, memoryPath: string, resume: boolean, taps: ReadonlyMap<number, string>): Promise<void> {
    const net: ({ tap: string } | null)[] = [];
    for (const [i, tap] of taps) net[i] = { tap };
    const vm = await MicroVM.restore({ statePath, memoryPath }, taps.size ? { net: Array.from(net, (n) => n ?? null) } : {}, { paused: !resume });
    this.adopt(vm);
  }

  /** Wires a started VM's console to this terminal and its exit to wait(). */
  private adopt(vm: MicroVM): void {
    this.vm = vm;
    vm.console.pipe(process.stdout, { end: false });
    const input = (chunk: Buffer) => vm.console.write(chunk);
    void vm.wait().then((e) => {
      process.stdin.off('data', input);
      process.stdin.pause();
      (process.stdin as { unref?: () => void }).unref?.();
      this.onExit(e);
    });
    process.stdin.on('data', input);
  }

  /** Resolves when the VM has exited. */
  wait(): Promise<VmExit> { return this.exited; }
}

function exitCode(exit: VmExit): number {
  if (exit.reason === 'guest-exit') return exit.exitStatus ?? 1;
  if (exit.reason === 'reset' || exit.reason === 'poweroff' || exit.reason === 'halt' || exit.reason === 'stopped') return 0;
  console.error(`flintvm: the guest ended with ${exit.reason}${exit.detail ? ` ${JSON.stringify(exit.detail, (_k, v: unknown) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v))}` : ''}`);
  return 1;
}

/** Runs Firecracker mode with these arguments (everything after `flintvm`); resolves with the exit status. */
export async function runFirecrackerMode(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        'api-sock': { type: 'string' }, 'config-file': { type: 'string' }, 'no-api': { type: 'boolean' }, id: { type: 'string' },
        'log-path': { type: 'string' }, level: { type: 'string' }, 'show-level': { type: 'boolean' }, 'show-log-origin': { type: 'boolean' },
        version: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      },
      strict: true, allowPositionals: false,
    }));
  } catch (e) {
    console.error(`flintvm: ${(e as Error).message} (Firecracker mode; see 'flintvm --api-sock PATH --help')`);
    return 2;
  }
  if (values.help) { console.log(HELP); return 0; }
  if (values.version) { console.log(`flintvm ${version()}`); return 0; }
  const id = values.id ?? 'anonymous-instance';
  const fcLog = new FcLog(id);
  const controller = new MicroVMController();
  let api: FirecrackerApi | null = null;
  try {
    if (values['log-path'] !== undefined || values.level !== undefined) {
      fcLog.configure(parseLogger({
        log_path: values['log-path'], level: values.level, show_level: values['show-level'], show_log_origin: values['show-log-origin'],
      }, '--log-path/--level'));
    }
    const fileConfig = values['config-file'] === undefined ? undefined : parseVmConfigFile(readConfigFile(values['config-file']));
    if (fileConfig?.logger) fcLog.configure(fileConfig.logger);
    api = new FirecrackerApi(controller, {
      id, vmmVersion: version(),
      onLogger: (l) => fcLog.configure(l),
      onRequest: (method, path, status, faultMessage) => {
        fcLog.line(status < 300 ? 'Info' : 'Error', 'api', `${method} ${path} ${status}${faultMessage ? ` ${faultMessage}` : ''}`);
      },
    });
    if (fileConfig) api.load(fileConfig);
    if (values['api-sock'] !== undefined) await api.listen(values['api-sock']);
    fcLog.line('Info', 'main', `Running flintvm v${version()} (Firecracker mode)`);
    if (fileConfig) await api.instanceStart();
  } catch (e) {
    await api?.close();
    fcLog.close();
    console.error(`flintvm: ${(e as Error).message}`);
    // A failed InstanceStart carries the MicroVM's error as its cause: a ConfigError there is a config error too.
    const reason = e instanceof Error && e.cause instanceof FlintvmError ? e.cause : e;
    return reason instanceof FlintvmError && reason.code === 'FLINTVM_E_CONFIG' ? 2 : 1;
  }

  const stop = () => {
    if (controller.vm) void controller.vm.stop();
    else void api!.close().then(() => { fcLog.close(); process.exit(0); });
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const exit = await controller.wait();
  fcLog.line('Info', 'main', `the VM exited: ${exit.reason}`);
  process.off('SIGINT', stop);
  process.off('SIGTERM', stop);
  await api.close();
  fcLog.close();
  return exitCode(exit);
}

function readConfigFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new FlintvmError('FLINTVM_E_CONFIG', `--config-file: cannot read ${path} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new FlintvmError('FLINTVM_E_CONFIG', `--config-file ${path}: not valid JSON: ${(e as Error).message}`);
  }
}
