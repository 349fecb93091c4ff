/**
 * `flintvm-oci`: the runc command line, so that podman (through conmon) and
 * other OCI tools can run a container in a flintvm microVM.
 *
 *   flintvm-oci [--root DIR] [--log FILE] [--log-format text|json] [--debug] COMMAND ...
 *
 * Commands: create, start, state, kill, delete, run, exec, features, --version.
 * `create` checks the bundle, then starts the holder (lib/oci/holder.ts) as a
 * detached process with this process's stdio, waits until its VM is up and
 * its mounts are in place, writes `--pid-file` with the holder's pid and
 * returns. Exit status: 0 on success, 1 on any error (the message names the
 * flag, field or container); `run` exits with the container's status.
 */
import type { spawn as Spawn } from 'node:child_process';
import { appendFileSync, closeSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { connect as Connect } from 'node:net';
import { constants as osConstants } from 'node:os';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { flintvmVersion } from '../version.js';
import { GUEST_ROOTFS, OciError, loadBundle, parseBundle, type OciBundle } from './bundle.js';
// The VM side (holder.js: MicroVM and every device; the agent client; koffi) is imported where it is used:
// `state`, `start`, `kill` and `delete`, which podman calls often, then load no more than they need.
import type { Holder } from './holder.js';
import {
  DEFAULT_ROOT, alive, checkId, containerDir, controlSocket, ociState, readState, vsockSocket, writeState, type ContainerState,
} from './state.js';

// node:child_process (only `create`, `run -d` and `exec` start processes) and node:net (only `start`, `kill`
// and `exec` talk to a holder) are required where used: with net, stream and dgram they are 29 of the 94
// modules node loads, and podman calls `state` and `delete`, which need neither, several times a container.
const requireHere = createRequire(import.meta.url);
const childProcess = (): { spawn: typeof Spawn } => requireHere('node:child_process') as { spawn: typeof Spawn };
const connect = (path: string): ReturnType<typeof Connect> => (requireHere('node:net') as { connect: typeof Connect }).connect(path);

const SPEC_VERSION = '1.2.0';
const HOLDER_READY_TIMEOUT_MS = 6 * 60_000;
/** The command as installed (the package's bin/flintvm-oci.cjs, which runs the bundled CLI when it is current). */
const CLI = fileURLToPath(new URL('../../../bin/flintvm-oci.cjs', import.meta.url));

interface Globals {
  root: string;
  log?: string;
  logFormat: 'text' | 'json';
  debug: boolean;
}

/** Flags podman, conmon or containerd pass that change nothing for a VM runtime (with whether they take a value). */
const IGNORED_GLOBAL: Record<string, boolean> = { '--systemd-cgroup': false, '--rootless': true, '--criu': true, '--cgroup-manager': true };
const IGNORED_CREATE: Record<string, boolean> = { '--no-pivot': false, '--no-new-keyring': false, '--preserve-fds': true, '--notify-socket': true };

/** Splits `--flag value`, `--flag=value` and bare flags; `known` maps each flag to whether it takes a value. */
function takeFlags(args: string[], known: Record<string, boolean>, where: string): { flags: Map<string, string>; rest: string[] } {
  const flags = new Map<string, string>();
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') { rest.push(...args.slice(i + 1)); break; }
    if (!a.startsWith('-') || a === '-' || rest.length > 0) { rest.push(a); continue; }
    const eq = a.indexOf('=');
    const name = eq > 0 ? a.slice(0, eq) : a;
    if (!(name in known)) throw new OciError(`${where}: unknown flag ${name} (see flintvm-oci --help)`);
    if (known[name]) {
      const v = eq > 0 ? a.slice(eq + 1) : args[++i];
      if (v === undefined) throw new OciError(`${where}: ${name} needs a value`);
      flags.set(name, v);
    } else flags.set(name, 'true');
  }
  return { flags, rest };
}

const USAGE = `flintvm-oci: an OCI runtime that runs each container in its own flintvm microVM (runc's command line)

usage: flintvm-oci [--root DIR] [--log FILE] [--log-format text|json] [--debug] COMMAND [ARGS]

  create [--bundle DIR] [--pid-file FILE] [--console-socket SOCK] ID
                                               start the container's VM; the process waits for start
                                               (a terminal's pty master goes to SOCK, as runc does)
  start ID                                     run the container's process
  state ID                                     print the OCI state (JSON)
  kill [--all] ID [SIGNAL]                     send a signal (default SIGTERM)
  delete [--force] ID                          remove a stopped container (--force: stop it first)
  run [--bundle DIR] [--pid-file FILE] [--detach] ID   create, start, and (without --detach) wait and delete
  exec [--process FILE] [--pid-file FILE] [--detach] [--tty] [--console-socket SOCK] ID [ARGS...]
                                               run another process in a running container
  features                                     print what this runtime supports (JSON)
  --version                                    print the version

The state lives under --root (default ${DEFAULT_ROOT}). Annotations io.flintvm.memory_mib and io.flintvm.vcpus size the VM;
io.flintvm.net.tap (with .address, .gateway, .mac) gives it a NIC on a tap in the host network namespace.
`;

/** Runs the CLI; resolves with the exit status. */
export async function main(argv: string[]): Promise<number> {
  const g: Globals = { root: DEFAULT_ROOT, logFormat: 'text', debug: false };
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('-')) break;
    const eq = a.indexOf('=');
    const name = eq > 0 ? a.slice(0, eq) : a;
    const value = () => {
      const v = eq > 0 ? a.slice(eq + 1) : argv[++i];
      if (v === undefined) throw new OciError(`${name} needs a value`);
      return v;
    };
    try {
      if (name === '--root') g.root = resolve(value());
      else if (name === '--log') g.log = value();
      else if (name === '--log-format') {
        const f = value();
        if (f !== 'text' && f !== 'json') throw new OciError(`--log-format must be text or json, got ${JSON.stringify(f)}`);
        g.logFormat = f;
      } else if (name === '--debug') g.debug = true;
      else if (name === '--version' || name === '-v') return print(`flintvm-oci version ${flintvmVersion()}\nspec: ${SPEC_VERSION}\n`);
      else if (name === '--help' || name === '-h') return print(USAGE);
      else if (name in IGNORED_GLOBAL) { if (IGNORED_GLOBAL[name]) value(); } else throw new OciError(`unknown global flag ${name} (see flintvm-oci --help)`);
    } catch (e) {
      return fail(g, e);
    }
  }
  const [cmd, ...args] = argv.slice(i);
  try {
    switch (cmd) {
      case 'create': return await create(g, args);
      case 'start': return await start(g, args);
      case 'state': return state(g, args);
      case 'kill': return await kill(g, args);
      case 'delete': return await del(g, args);
      case 'run': return await run(g, args);
      case 'exec': return await exec(g, args);
      case 'features': return print(`${JSON.stringify(features(), null, 2)}\n`);
      case '__holder': return await holder(g, args);
      case '__exec': return await execHolder(g, args);
      case undefined: throw new OciError('missing a command (see flintvm-oci --help)');
      default: throw new OciError(`unknown command ${JSON.stringify(cmd)} (create, start, state, kill, delete, run, exec, features)`);
    }
  } catch (e) {
    return fail(g, e);
  }
}

function print(s: string): number {
  writeOut(1, s);
  return 0;
}

/**
 * Writes to fd 1 or 2 directly: node makes `process.stdout` (or `stderr`) on a pipe, which is what podman
 * and conmon give a runtime, a net.Socket, and loading net and streams for one line is most of what a
 * `state` or `delete` does beyond node's own start. A full or non-blocking pipe (EAGAIN) falls back to the stream.
 */
function writeOut(fd: 1 | 2, s: string): void {
  const bytes = Buffer.from(s, 'utf8');
  let done = 0;
  try {
    while (done < bytes.length) done += writeSync(fd, bytes, done);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
    (fd === 1 ? process.stdout : process.stderr).write(bytes.subarray(done));
  }
}

/** Reports an error on stderr and, with --log, in the log file (runc's JSON lines with --log-format json). */
function fail(g: Globals, e: unknown): number {
  const msg = e instanceof OciError ? e.message : (e as Error)?.stack ?? String(e);
  try { writeOut(2, `flintvm-oci: ${msg}\n`); } catch { /* stderr closed: the exit status still says it */ }
  if (g.log) {
    const line = g.logFormat === 'json' ? JSON.stringify({ level: 'error', msg, time: new Date().toISOString() }) : `time="${new Date().toISOString()}" level=error msg=${JSON.stringify(msg)}`;
    try { appendFileSync(g.log, `${line}\n`); } catch { /* the log is best effort */ }
  }
  return 1;
}

function bundleAndId(args: string[], extra: Record<string, boolean>, where: string): { bundle: OciBundle; id: string; flags: Map<string, string> } {
  const { flags, rest } = takeFlags(args, { '--bundle': true, '-b': true, '--pid-file': true, '--console-socket': true, ...IGNORED_CREATE, ...extra }, where);
  if (rest.length > 1) throw new OciError(`${where}: one container ID expected, got ${rest.join(' ')}`);
  const id = checkId(rest[0]);
  const bundle = loadBundle(flags.get('--bundle') ?? flags.get('-b') ?? '.');
  return { bundle, id, flags };
}

/** Makes the state directory of a new container; an existing one is an error. */
function newContainer(g: Globals, id: string, bundle: OciBundle): void {
  mkdirSync(g.root, { recursive: true });
  try {
    mkdirSync(containerDir(g.root, id));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new OciError(`container ${id} already exists (under --root ${g.root}): delete it first`);
    throw e;
  }
  const s: ContainerState = { ociVersion: bundle.ociVersion, id, status: 'creating', pid: 0, bundle: bundle.dir, annotations: bundle.annotations, created: new Date().toISOString() };
  writeState(g.root, s);
}

async function create(g: Globals, args: string[]): Promise<number> {
  const { bundle, id, flags } = bundleAndId(args, {}, 'create');
  newContainer(g, id, bundle);
  await createDetached(g, id, flags.get('--pid-file'), flags.get('--console-socket'));
  return 0;
}

/** Starts the holder of a new container (its state directory made) and writes the pid file; on failure removes the directory. */
async function createDetached(g: Globals, id: string, pidFile: string | undefined, consoleSocket: string | undefined): Promise<void> {
  let pid: number;
  try {
    pid = await spawnDetached(g, ['__holder', id, ...(consoleSocket ? [resolve(consoleSocket)] : [])], `container ${id}`);
  } catch (e) {
    rmSync(containerDir(g.root, id), { recursive: true, force: true });
    throw e;
  }
  if (pidFile) writeFileSync(pidFile, String(pid));
}

/**
 * Starts a detached process of ours (`__holder ID` or `__exec SPEC`) with our stdio and fd 3 as its ready
 * pipe; resolves with its pid once it says it is ready, rejects with what it says otherwise.
 */
function spawnDetached(g: Globals, args: string[], what: string): Promise<number> {
  const child = childProcess().spawn(process.execPath, [CLI, '--root', g.root, ...(g.log ? ['--log', g.log, '--log-format', g.logFormat] : []), ...args], {
    detached: true, stdio: ['inherit', 'inherit', 'inherit', 'pipe'],
  });
  return new Promise((resolvePid, reject) => {
    let text = '';
    const ready = child.stdio[3] as NodeJS.ReadableStream;
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new OciError(`${what}: not ready within ${HOLDER_READY_TIMEOUT_MS / 1000} s`)); }, HOLDER_READY_TIMEOUT_MS);
    ready.setEncoding('utf8');
    ready.on('data', (d: string) => { text += d; });
    ready.on('end', () => {
      clearTimeout(timer);
      let msg: { ok?: boolean; error?: string } = {};
      try { msg = JSON.parse(text) as typeof msg; } catch { /* the holder died before it could say */ }
      if (msg.ok) {
        child.unref();
        (child.stdio[3] as unknown as { destroy(): void }).destroy();
        resolvePid(child.pid!);
      } else {
        child.kill('SIGKILL');
        reject(new OciError(msg.error ?? `${what}: its process ended before it was ready (see above)`));
      }
    });
  });
}

/** The holder process: builds the container and serves it (see holder.ts). Fd 3 gets one JSON line. */
async function holder(g: Globals, args: string[]): Promise<number> {
  const id = checkId(args[0]);
  const s = readState(g.root, id);
  const say = (m: object) => { try { writeFileSync(3, JSON.stringify(m)); } catch { /* run mode: no fd 3 */ } };
  // Closing fd 3 ends the ready pipe `create` reads.
  const closeReady = () => { try { closeSync(3); } catch { /* run mode: no fd 3 */ } };
  const { Holder } = await import('./holder.js');
  let h: Holder;
  try {
    h = await Holder.create(g.root, id, parseBundle(JSON.parse(readFileSync(`${s.bundle}/config.json`, 'utf8')), s.bundle), args[1]);
  } catch (e) {
    say({ error: (e as Error).message });
    closeReady();
    return 1;
  }
  say({ ok: true });
  closeReady();
  forwardSignals(h);
  return h.done;
}

/** Signals the holder gets go to the container process. */
function forwardSignals(h: Holder): void {
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'] as const) {
    process.on(sig, () => {
      try { h.kill(osConstants.signals[sig]); } catch { /* not started yet and already ending */ }
    });
  }
}

/** One request to a container's holder. */
function control(g: Globals, id: string, req: object): Promise<void> {
  const s = readState(g.root, id);
  if (s.status === 'stopped') throw new OciError(`container ${id} is stopped`);
  return new Promise((resolveReq, reject) => {
    const sock = connect(controlSocket(g.root, id));
    let text = '';
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(`${JSON.stringify(req)}\n`));
    sock.on('data', (d: string) => { text += d; });
    sock.on('error', (e) => reject(new OciError(`container ${id}: its holder (pid ${s.pid}) does not answer: ${e.message}`)));
    sock.on('end', () => {
      let r: { ok?: boolean; error?: string } = {};
      try { r = JSON.parse(text) as typeof r; } catch { /* reported below */ }
      if (r.ok) resolveReq();
      else reject(new OciError(`container ${id}: ${r.error ?? 'no answer from its holder'}`));
    });
  });
}

async function start(g: Globals, args: string[]): Promise<number> {
  const { rest } = takeFlags(args, {}, 'start');
  await control(g, checkId(rest[0]), { cmd: 'start' });
  return 0;
}

function state(g: Globals, args: string[]): number {
  const { rest } = takeFlags(args, {}, 'state');
  return print(`${JSON.stringify(ociState(readState(g.root, checkId(rest[0]))), null, 2)}\n`);
}

/** A signal by number or name (TERM, SIGTERM). */
export function parseSignal(s: string | undefined): number {
  if (s === undefined) return osConstants.signals.SIGTERM;
  if (/^\d+$/.test(s)) {
    const n = Number(s);
    if (n >= 1 && n <= 64) return n;
  } else {
    const name = (s.toUpperCase().startsWith('SIG') ? s.toUpperCase() : `SIG${s.toUpperCase()}`) as keyof typeof osConstants.signals;
    const n = osConstants.signals[name];
    if (n !== undefined) return n;
  }
  throw new OciError(`kill: ${JSON.stringify(s)} is not a signal (a number from 1 to 64, or a name such as TERM or SIGKILL)`);
}

async function kill(g: Globals, args: string[]): Promise<number> {
  const { rest } = takeFlags(args, { '--all': false, '-a': false }, 'kill');
  const id = checkId(rest[0]);
  await control(g, id, { cmd: 'kill', signal: parseSignal(rest[1]) });
  return 0;
}

async function del(g: Globals, args: string[]): Promise<number> {
  const { flags, rest } = takeFlags(args, { '--force': false, '-f': false }, 'delete');
  const id = checkId(rest[0]);
  const s = readState(g.root, id);
  const force = flags.has('--force') || flags.has('-f');
  if (s.status === 'running' && !force) throw new OciError(`container ${id} is running: stop it (flintvm-oci kill) or use delete --force`);
  if (s.pid > 0 && alive(s.pid)) {
    process.kill(s.pid, 'SIGKILL');
    for (let i = 0; i < 100 && alive(s.pid); i++) await new Promise((r) => setTimeout(r, 50));
  }
  rmSync(containerDir(g.root, id), { recursive: true, force: true });
  return 0;
}

async function run(g: Globals, args: string[]): Promise<number> {
  const { bundle, id, flags } = bundleAndId(args, { '--detach': false, '-d': false }, 'run');
  newContainer(g, id, bundle);
  if (flags.has('--detach') || flags.has('-d')) {
    await createDetached(g, id, flags.get('--pid-file'), flags.get('--console-socket'));
    await control(g, id, { cmd: 'start' });
    return 0;
  }
  // In the foreground this process is the holder; the container is deleted when it ends.
  try {
    const { Holder } = await import('./holder.js');
    const h = await Holder.create(g.root, id, bundle, flags.get('--console-socket'));
    const pidFile = flags.get('--pid-file');
    if (pidFile) writeFileSync(pidFile, String(process.pid));
    forwardSignals(h);
    h.start();
    return await h.done;
  } finally {
    rmSync(containerDir(g.root, id), { recursive: true, force: true });
  }
}

/** What `exec` runs: the process (config.json's rules) in a running container. */
interface ExecSpec {
  id: string;
  process: OciBundle['process'];
  /** Where the terminal's master goes, when process.terminal is set. */
  consoleSocket?: string;
}

/**
 * Another process in a running container, through its own agent connection. In the foreground it uses this
 * process's stdio and exits with the process's status. With --detach (what conmon passes) a detached
 * process of ours stands for it: it gets our stdio, --pid-file names it, and it exits with the process's
 * status; we return once the process has started.
 */
async function exec(g: Globals, args: string[]): Promise<number> {
  const { flags, rest } = takeFlags(args, { '--process': true, '-p': true, '--pid-file': true, '--console-socket': true, '--detach': false, '-d': false, '--tty': false, '-t': false, '--cwd': true, '--env': true, '-e': true }, 'exec');
  const id = checkId(rest[0]);
  const s = readState(g.root, id);
  if (s.status !== 'running') throw new OciError(`container ${id} is ${s.status}: exec needs a running container`);
  const bundle = parseBundle(JSON.parse(readFileSync(`${s.bundle}/config.json`, 'utf8')), s.bundle);
  let p = bundle.process;
  const procFile = flags.get('--process') ?? flags.get('-p');
  if (procFile) {
    let json: unknown;
    try { json = JSON.parse(readFileSync(procFile, 'utf8')); } catch (e) { throw new OciError(`--process ${procFile}: ${(e as Error).message}`); }
    // The process file is config.json's `process`: check it with the same rules, against the container's root.
    p = parseBundle({ ociVersion: bundle.ociVersion, process: json, root: { path: bundle.root.path } }, bundle.dir).process;
  } else {
    if (rest.length < 2) throw new OciError('exec: give the command after the ID, or --process FILE');
    p = { ...p, args: rest.slice(1), terminal: flags.has('--tty') || flags.has('-t') };
  }
  const consoleSocket = flags.get('--console-socket');
  const spec: ExecSpec = { id, process: p, ...(consoleSocket ? { consoleSocket: resolve(consoleSocket) } : {}) };
  const pidFile = flags.get('--pid-file');
  if (flags.has('--detach') || flags.has('-d')) {
    const pid = await spawnDetached(g, ['__exec', JSON.stringify(spec)], `exec in container ${id}`);
    if (pidFile) writeFileSync(pidFile, String(pid));
    return 0;
  }
  if (pidFile) writeFileSync(pidFile, String(process.pid));
  return runExec(g, spec, () => undefined);
}

/** The detached side of `exec --detach`: argv[0] is the ExecSpec as JSON; fd 3 gets one JSON line once the process runs. */
async function execHolder(g: Globals, args: string[]): Promise<number> {
  const spec = JSON.parse(args[0] ?? '{}') as ExecSpec;
  // Once: after the close, fd 3 may be reused by anything this process opens.
  let said = false;
  const say = (m: object) => {
    if (said) return;
    said = true;
    try { writeFileSync(3, JSON.stringify(m)); closeSync(3); } catch { /* no fd 3 */ }
  };
  try {
    return await runExec(g, spec, () => say({ ok: true }));
  } catch (e) {
    say({ error: (e as Error).message });
    return 1;
  }
}

/** Runs `spec` on this process's stdio; `started` is called once the agent has started it. Resolves with its status. */
async function runExec(g: Globals, spec: ExecSpec, started: () => void): Promise<number> {
  const p = spec.process;
  const [{ AgentClient }, { openTerminal }, { drained, relayStdio }] = await Promise.all([import('../agent/client.js'), import('./console.js'), import('./holder.js')]);
  const term = p.terminal ? openTerminal(spec.consoleSocket) : null;
  const client = await AgentClient.connect({ udsPath: vsockSocket(g.root, spec.id), timeoutMs: 10_000 });
  try {
    const proc = await client.start({
      args: p.args, env: p.env, cwd: p.cwd, uid: p.uid, gid: p.gid, additionalGids: p.additionalGids, rlimits: p.rlimits, rootfs: GUEST_ROOTFS,
      ...(term ? { terminal: term.size() } : {}),
    });
    started();
    relayStdio(proc, term);
    for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'] as const) process.on(sig, () => proc.signal(sig));
    const st = await proc.wait();
    await Promise.all([drained(proc.stdout), drained(proc.stderr)]);
    process.stdin.unpipe();
    process.stdin.pause();
    return st.code ?? 128 + (st.signal ?? 0);
  } finally {
    term?.close();
    client.close();
  }
}

/** `features` (runtime-spec features.md): what this runtime takes. */
export function features(): Record<string, unknown> {
  return {
    ociVersionMin: '1.0.0',
    ociVersionMax: SPEC_VERSION,
    hooks: [],
    mountOptions: ['ro', 'rw', 'bind', 'rbind', 'nosuid', 'nodev', 'noexec', 'relatime', 'noatime', 'strictatime', 'mode', 'size', 'newinstance', 'ptmxmode', 'gid'],
    linux: { namespaces: [], capabilities: [], cgroup: { v1: false, v2: false }, seccomp: { enabled: false }, apparmor: { enabled: false }, selinux: { enabled: false } },
    annotations: {
      'io.flintvm.memory_mib': 'guest memory in MiB (default 256)',
      'io.flintvm.vcpus': 'vCPUs (default 1)',
      'io.flintvm.net.tap': 'a tap in the host network namespace for the VM (made when missing); no network without it',
      'io.flintvm.net.address': "the guest's eth0 address, IPv4 CIDR (10.0.2.15/24)",
      'io.flintvm.net.gateway': "the guest's default route (IPv4)",
      'io.flintvm.net.mac': "the guest NIC's MAC",
      'org.opencontainers.runtime-spec.features.isolation': 'vm',
    },
  };
}

/** Lists the containers under --root (for tests and debugging). */
export function listContainers(root: string): string[] {
  try {
    return readdirSync(root).filter((d) => statSync(`${root}/${d}`).isDirectory());
  } catch {
    return [];
  }
}
