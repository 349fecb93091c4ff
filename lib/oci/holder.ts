/**
 * The holder: one host process per container, what `--pid-file` names. It
 * runs the container's microVM (the default guest kernel, the guest agent's
 * initramfs, the rootfs and bind mounts through virtio-fs, vsock to the
 * agent), mounts everything in the guest, and then waits on `ctl.sock` for
 * `start` and `kill`. Once started, the container process's stdout and
 * stderr are the holder's own (the fds the caller of `create` had: conmon's
 * pipes under podman), its stdin is forwarded, signals the holder gets are
 * passed on, and the holder exits with the process's status (128 + signal
 * when it was killed), after stopping the VM.
 *
 * Control protocol (`ctl.sock`, one JSON line each way per connection):
 * `{"cmd":"start"}`, `{"cmd":"kill","signal":15}` → `{"ok":true}` or
 * `{"error":"..."}`.
 */
import { execFileSync } from 'node:child_process';
import { appendFileSync, copyFileSync, existsSync, lstatSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentClient, type AgentProcess } from '../agent/client.js';
import { MicroVM } from '../microvm.js';
import { defaultGuestImages } from '../guest-images.js';
import { log } from '../log.js';
import { GUEST_ROOTFS, OciError, ROOTFS_TAG, planMounts, type OciBundle } from './bundle.js';
import { openTerminal, type TerminalIo } from './console.js';
import { containerDir, controlSocket, readState, vsockSocket, writeState, type ContainerState } from './state.js';

const debug = log('oci:holder');

/** How long the guest may take to boot and start its agent (an emulated test host is slow). */
const AGENT_TIMEOUT_MS = 5 * 60_000;
const GUEST_CID = 3;
const AGENT_BUILD = fileURLToPath(new URL('../../../guest/agent/build.sh', import.meta.url));

/** The agent's initramfs: $FLINTVM_AGENT_DIR, else what guest/agent/build.sh prints (a cache hit after the first build). */
export function agentInitramfs(): string {
  let dir = process.env.FLINTVM_AGENT_DIR;
  if (!dir) {
    try {
      dir = execFileSync('bash', [AGENT_BUILD], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim().split('\n').pop();
    } catch (e) {
      const err = (e as { stderr?: string }).stderr?.trim().split('\n').pop() ?? (e as Error).message;
      throw new OciError(`the guest agent is not built and did not build: ${err} (run: bash ${AGENT_BUILD}; it needs the Debian package musl-tools)`);
    }
  }
  const f = join(dir ?? '', 'initramfs-agent.cpio.gz');
  if (!existsSync(f)) throw new OciError(`FLINTVM_AGENT_DIR=${dir} has no initramfs-agent.cpio.gz: rebuild it with bash ${AGENT_BUILD}`);
  return f;
}

/** Where a container's time went (ms): VM start, agent ready and mounts done from the holder's start; then the process. */
export interface HolderPhases {
  id: string;
  vmStartMs?: number;
  agentReadyMs?: number;
  mountedMs?: number;
  /** From `start` to the agent's STARTED. */
  processStartMs?: number;
  /** From STARTED to its exit and the last output. */
  processRunMs?: number;
  vmStopMs?: number;
}

/** The running holder's pieces, released by {@link Holder.close}. */
export class Holder {
  private proc: AgentProcess | null = null;
  private server: Server | null = null;
  private finish!: (code: number) => void;
  /** Resolves with the holder's exit status once the container has ended and the VM is stopped. */
  readonly done: Promise<number>;
  private ended = false;

  private constructor(
    private readonly root: string,
    private readonly bundle: OciBundle,
    private state: ContainerState,
    private readonly vm: MicroVM,
    private readonly client: AgentClient,
    private readonly terminal: TerminalIo | null,
    private readonly phases: HolderPhases,
  ) {
    this.done = new Promise((r) => { this.finish = r; });
    void vm.wait().then((exit) => {
      if (!this.ended) void this.end(255, `the VM ended (${exit.reason}) before the container did`);
    });
  }

  /**
   * Boots the container's VM and mounts its filesystems; the process is not started. The state directory and
   * state.json (status 'creating') must exist. Throws an OciError (and leaves nothing running) on failure.
   */
  static async create(root: string, id: string, bundle: OciBundle, consoleSocket?: string): Promise<Holder> {
    const t0 = performance.now();
    const phases: HolderPhases = { id };
    const dir = containerDir(root, id);
    const plan = planMounts(bundle, (p) => statSync(p, { throwIfNoEntry: false })?.isDirectory() ?? false);
    for (const i of plan.ignored) debug('mount ignored: %s', i);
    const files = join(dir, 'files');
    if (plan.fileCopies.length) {
      mkdirSync(files, { recursive: true });
      for (const c of plan.fileCopies) {
        try {
          copyFileSync(c.source, join(files, c.name));
        } catch (e) {
          throw new OciError(`config.json: bind mount source ${c.source}: ${(e as Error).message}`);
        }
      }
    }
    makeMountpoints(bundle, plan.fileCopies.map((c) => c.destination));
    const initrd = agentInitramfs();
    const imgs = await defaultGuestImages({ quiet: true });
    const udsPath = vsockSocket(root, id);
    rmSync(udsPath, { force: true });
    const vm = new MicroVM({
      kernel: imgs.kernel, initrd, memoryMiB: bundle.memoryMiB, vcpus: bundle.vcpus, console: 'none', extraCmdline: 'quiet',
      vsock: { guestCid: GUEST_CID, udsPath },
      ...(bundle.net ? { net: [{ tap: bundle.net.tap, ...(bundle.net.mac ? { mac: bundle.net.mac } : {}) }] } : {}),
      shares: [
        { tag: ROOTFS_TAG, path: bundle.root.path, protocol: 'virtiofs', readOnly: bundle.root.readonly },
        ...plan.dirShares.map((s) => ({ tag: s.tag, path: s.path, protocol: 'virtiofs' as const, readOnly: s.readOnly })),
        ...(plan.fileCopies.length ? [{ tag: plan.filesTag, path: files, protocol: 'virtiofs' as const, readOnly: true }] : []),
      ],
    });
    await vm.start();
    phases.vmStartMs = performance.now() - t0;
    let client: AgentClient | null = null;
    try {
      client = await AgentClient.connect({ udsPath, timeoutMs: AGENT_TIMEOUT_MS });
      phases.agentReadyMs = performance.now() - t0;
      const setup = await client.start({ args: ['/bin/sh', '-c', plan.script] });
      let err = '';
      setup.stderr.on('data', (d: Buffer) => { err += d.toString(); });
      setup.stdout.resume();
      const st = await setup.wait();
      if (st.code !== 0) throw new OciError(`mounting the container's filesystems in the VM failed (${st.code ?? `signal ${st.signal}`}): ${err.trim().slice(-500)}`);
      phases.mountedMs = performance.now() - t0;
    } catch (e) {
      client?.close();
      await vm.stop().catch(() => undefined);
      throw e;
    }
    let terminal: TerminalIo | null = null;
    try {
      // The terminal's master goes to the console socket now, during create, as runc does.
      if (bundle.process.terminal) terminal = openTerminal(consoleSocket);
    } catch (e) {
      client.close();
      await vm.stop().catch(() => undefined);
      throw e;
    }
    const state: ContainerState = { ...readState(root, id), status: 'created', pid: process.pid };
    writeState(root, state);
    const h = new Holder(root, bundle, state, vm, client, terminal, phases);
    await h.listen();
    return h;
  }

  private listen(): Promise<void> {
    const path = controlSocket(this.root, this.state.id);
    rmSync(path, { force: true });
    this.server = createServer((sock) => {
      let line = '';
      sock.setEncoding('utf8');
      sock.on('data', (d: string) => {
        line += d;
        const nl = line.indexOf('\n');
        if (nl < 0) return;
        let reply: Record<string, unknown>;
        try {
          const req = JSON.parse(line.slice(0, nl)) as { cmd?: string; signal?: number };
          if (req.cmd === 'start') this.start();
          else if (req.cmd === 'kill') this.kill(Number(req.signal));
          else throw new OciError(`unknown control command ${JSON.stringify(req.cmd)}`);
          reply = { ok: true };
        } catch (e) {
          reply = { error: (e as Error).message };
        }
        sock.end(`${JSON.stringify(reply)}\n`);
      });
      sock.on('error', () => undefined);
    });
    return new Promise((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(path, () => resolve());
    });
  }

  /** Starts the container process (once). */
  start(): void {
    if (this.state.status !== 'created') throw new OciError(`container ${this.state.id} is ${this.state.status}, not created: it can be started once`);
    const p = this.bundle.process;
    this.setStatus('running');
    const term = this.terminal;
    const tStart = performance.now();
    this.client.start({
      args: p.args, env: p.env, cwd: p.cwd, uid: p.uid, gid: p.gid, additionalGids: p.additionalGids, rlimits: p.rlimits,
      rootfs: GUEST_ROOTFS, ...(this.bundle.hostname ? { hostname: this.bundle.hostname } : {}),
      ...(term ? { terminal: term.size() } : {}),
    }).then((proc) => {
      this.proc = proc;
      this.phases.processStartMs = performance.now() - tStart;
      relayStdio(proc, term);
      return proc.wait().then(async (st) => {
        // Let the last output reach our fds before we go.
        await Promise.all([drained(proc.stdout), drained(proc.stderr)]);
        this.phases.processRunMs = performance.now() - tStart - (this.phases.processStartMs ?? 0);
        this.state.exit = st;
        await this.end(st.code ?? 128 + (st.signal ?? 0));
      });
    }, (e: Error) => {
      process.stderr.write(`flintvm-oci: starting ${JSON.stringify(p.args[0])} in the container failed: ${e.message}\n`);
      void this.end(127);
    });
  }

  /** Sends a signal to the container process; before start, any signal ends the container. */
  kill(signal: number): void {
    if (!Number.isInteger(signal) || signal < 1 || signal > 64) throw new OciError(`signal ${signal} is out of range (1-64)`);
    if (this.state.status === 'created') {
      this.state.exit = { code: null, signal };
      void this.end(128 + signal);
      return;
    }
    if (this.proc) this.proc.signal(signal);
    else if (this.state.status === 'running') throw new OciError('the container process is still starting: try again');
  }

  private setStatus(status: ContainerState['status']): void {
    this.state = { ...this.state, status };
    writeState(this.root, this.state);
  }

  private async end(code: number, why?: string): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    if (why) process.stderr.write(`flintvm-oci: ${why}\n`);
    this.state = { ...this.state, status: 'stopped', pid: 0 };
    if (existsSync(containerDir(this.root, this.state.id))) writeState(this.root, this.state);
    this.server?.close();
    this.client.close();
    this.terminal?.close();
    process.stdin.unpipe();
    process.stdin.pause();
    const tStop = performance.now();
    await this.vm.stop().catch(() => undefined);
    this.phases.vmStopMs = performance.now() - tStop;
    rmSync(controlSocket(this.root, this.state.id), { force: true });
    // For bench/oci.ts: one JSON line per container, when $FLINTVM_OCI_TIMINGS names a file.
    const timings = process.env.FLINTVM_OCI_TIMINGS;
    if (timings) try { appendFileSync(timings, `${JSON.stringify(this.phases)}\n`); } catch { /* best effort */ }
    this.finish(code);
  }
}

/**
 * Creates the mountpoints that the rootfs lacks, on the host, before the VM starts (as runc does before it
 * makes the root read-only): a read-only root could not get them from inside the guest. Only plain
 * directories are walked: a `..` or a symlink anywhere on the way (the image's own, which could point out of
 * the rootfs) leaves that mountpoint to the guest, which resolves it in its own namespace.
 */
function makeMountpoints(bundle: OciBundle, fileDestinations: readonly string[]): void {
  for (const m of bundle.mounts) {
    const parts = m.destination.split('/').filter(Boolean);
    if (parts.length === 0 || parts.includes('..')) continue;
    const isFile = fileDestinations.includes(m.destination);
    let at = bundle.root.path;
    try {
      for (const [i, part] of parts.entries()) {
        at = join(at, part);
        const st = lstatSync(at, { throwIfNoEntry: false });
        const last = i === parts.length - 1;
        if (st?.isSymbolicLink()) break;
        if (st) { if (!last && !st.isDirectory()) break; continue; }
        if (last && isFile) writeFileSync(at, '', { flag: 'wx' });
        else mkdirSync(at);
      }
    } catch (e) {
      debug('mountpoint %s: %s', m.destination, (e as Error).message);
    }
  }
}

/**
 * Relays a container process's stdio. With a terminal (its pty in the guest): output, input (the terminal's
 * end of input is its EOF character, not a close) and size changes go to and from `term`. Without one: its
 * stdout and stderr to ours, apart, and our stdin to it (unless ours is a terminal).
 */
export function relayStdio(proc: AgentProcess, term: TerminalIo | null): void {
  if (term) {
    proc.stdout.pipe(term.output, { end: false });
    proc.stderr.resume();
    term.input.pipe(proc.stdin, { end: false });
    term.onResize((rows, cols) => {
      try { proc.resize(rows, cols); } catch { /* the process has ended */ }
    });
    return;
  }
  proc.stdout.pipe(process.stdout, { end: false });
  proc.stderr.pipe(process.stderr, { end: false });
  if (!process.stdin.isTTY) {
    process.stdin.on('error', () => undefined);
    process.stdin.pipe(proc.stdin);
  } else proc.stdin.end();
}

/** Resolves when `r` has ended or closed. */
export function drained(r: NodeJS.ReadableStream): Promise<void> {
  return new Promise((resolve) => {
    if ((r as { readableEnded?: boolean }).readableEnded) return resolve();
    r.once('end', () => resolve());
    r.once('close', () => resolve());
  });
}

