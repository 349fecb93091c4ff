/**
 * A typed client of the flintvm guest agent (docs/agent-protocol.md) over
 * one Node socket: the VM's hybrid-vsock Unix socket (`CONNECT 1024\n`,
 * `OK <port>\n`, then frames), or the agent's own Unix socket when it runs
 * outside a VM (`flintvm-agent --unix PATH`). Several processes share the
 * connection; each is an {@link AgentProcess} with Node streams for its stdio.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { constants as osConstants } from 'node:os';
import { Readable, Writable } from 'node:stream';
import { log } from '../log.js';
import {
  AGENT_PROTOCOL_VERSION, AGENT_VSOCK_PORT, AgentErrorCode, FrameDecoder, MsgType, STDIO_CHUNK, decodeError, decodeExit, decodeHello,
  decodeStarted, encodeFrame, encodeSignal, encodeStartSpec, encodeWindowSize,
  type AgentErrorReply, type ExitStatus, type Frame, type ProcessSpec,
} from './protocol.js';

const debug = log('agent');

/** An ERROR reply of the agent, or the connection failing. `agentCode` is the reply's code (0: not from the agent). */
export class AgentError extends Error {
  readonly agentCode: number;
  readonly errno: number;
  constructor(message: string, reply?: AgentErrorReply) {
    super(message);
    this.name = 'AgentError';
    this.agentCode = reply?.code ?? 0;
    this.errno = reply?.errno ?? 0;
  }
}

/** How to reach the agent. */
export interface AgentConnectOptions {
  /** The VM's vsock `udsPath` (or, with transport 'unix', the agent's own socket). */
  udsPath: string;
  /** The guest port. Default 1024. */
  port?: number;
  /** 'hybrid-vsock' (default): send `CONNECT <port>\n` first. 'unix': the socket is the agent itself. */
  transport?: 'hybrid-vsock' | 'unix';
  /** Give up after this long (the guest may still be booting). Default 60 s. */
  timeoutMs?: number;
  /** Pause between attempts. Default 50 ms. */
  retryMs?: number;
}

type Attempt = { socket: net.Socket; rest: Buffer } | 'retry';

/** One connection attempt: resolves with the socket once the hybrid handshake (if any) is through, or 'retry'. */
function attempt(o: Required<AgentConnectOptions>, ms: number): Promise<Attempt> {
  return new Promise((resolve) => {
    const socket = net.createConnection({ path: o.udsPath });
    let line = Buffer.alloc(0);
    let done = false;
    const finish = (r: Attempt): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.removeAllListeners('data');
      socket.removeAllListeners('connect');
      socket.removeListener('close', onClose);
      socket.removeListener('error', onError);
      if (r === 'retry') socket.destroy();
      else socket.pause();
      resolve(r);
    };
    const onClose = (): void => finish('retry');
    const onError = (e: Error): void => { debug('connect %s: %s', o.udsPath, e.message); finish('retry'); };
    const timer = setTimeout(() => finish('retry'), ms);
    socket.on('close', onClose);
    socket.on('error', onError);
    if (o.transport === 'unix') {
      socket.on('connect', () => finish({ socket, rest: Buffer.alloc(0) }));
      return;
    }
    socket.on('connect', () => socket.write(`CONNECT ${o.port}\n`));
    socket.on('data', (d: Buffer) => {
      line = Buffer.concat([line, d]);
      const nl = line.indexOf(0x0a);
      if (nl < 0) {
        if (line.length > 64) finish('retry');
        return;
      }
      const ok = /^OK \d+$/.test(line.subarray(0, nl).toString('latin1'));
      if (!ok) debug('unexpected hybrid-vsock reply %j', line.subarray(0, nl).toString('latin1'));
      finish(ok ? { socket, rest: line.subarray(nl + 1) } : 'retry');
    });
  });
}

/** A process the agent runs. Its stdout and stderr end before `wait()` resolves. */
export class AgentProcess extends EventEmitter {
  /** The connection-local id. */
  readonly id: number;
  /** The guest pid. */
  readonly pid: number;
  readonly stdout: Readable;
  readonly stderr: Readable;
  /** Ending it sends STDIN_CLOSE. */
  readonly stdin: Writable;
  /** The exit status once EXIT arrived. */
  exitStatus: ExitStatus | null = null;
  private readonly client: AgentClient;
  private readonly exited: Promise<ExitStatus>;
  /** @internal */
  settle!: (s: ExitStatus | Error) => void;

  /** @internal Made by {@link AgentClient.start}. */
  constructor(client: AgentClient, id: number, pid: number, streams: { stdout: Readable; stderr: Readable }) {
    super();
    this.client = client;
    this.id = id;
    this.pid = pid;
    this.stdout = streams.stdout;
    this.stderr = streams.stderr;
    this.stdin = new Writable({
      write: (chunk: Buffer, _enc, cb) => client.sendStdin(id, chunk, cb),
      final: (cb) => { client.send(MsgType.STDIN_CLOSE, id); cb(); },
    });
    this.exited = new Promise((resolve, reject) => {
      this.settle = (s) => {
        if (s instanceof Error) reject(s);
        else { this.exitStatus = s; resolve(s); this.emit('exit', s); }
      };
    });
    this.exited.catch(() => {}); // a connection failure is reported to whoever awaits wait()
  }

  /** Resolves with the exit status after all its output was delivered; rejects if the connection fails first. */
  wait(): Promise<ExitStatus> {
    return this.exited;
  }

  /** Sends a signal (a number or a name such as 'SIGTERM'); a failure comes back as an 'agent-error' event. */
  signal(sig: number | NodeJS.Signals): void {
    const n = typeof sig === 'number' ? sig : osConstants.signals[sig];
    if (n === undefined) throw new AgentError(`signal: unknown signal ${String(sig)}`);
    this.client.send(MsgType.SIGNAL, this.id, encodeSignal(n));
  }

  /** Sets the terminal's size (a process started with `terminal`). */
  resize(rows: number, cols: number): void {
    this.client.send(MsgType.RESIZE, this.id, encodeWindowSize(rows, cols));
  }
}

/** What the handshake read: the HELLO, the decoder (it may hold part of the next frame) and frames after HELLO. */
interface Hello {
  hello: { version: number; agent: string };
  decoder: FrameDecoder;
  rest: Frame[];
}

interface Pending {
  resolve: (p: AgentProcess) => void;
  reject: (e: Error) => void;
}

/**
 * A connection to the agent. Events: 'agent-error' (an ERROR reply not tied
 * to a pending start: `(reply, id)`), 'close'.
 */
export class AgentClient extends EventEmitter {
  /** The agent's protocol version and name, from its HELLO. */
  readonly agentVersion: number;
  readonly agentName: string;
  private readonly socket: net.Socket;
  private readonly decoder: FrameDecoder;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly procs = new Map<number, AgentProcess>();
  /** Readables that refused more data: the socket is paused until they drain. */
  private readonly full = new Set<Readable>();
  private closedError: Error | null = null;

  private constructor(socket: net.Socket, hello: { version: number; agent: string }, decoder: FrameDecoder, rest: Frame[]) {
    super();
    this.socket = socket;
    this.decoder = decoder;
    this.agentVersion = hello.version;
    this.agentName = hello.agent;
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', (e) => this.fail(new AgentError(`agent connection: ${e.message}`)));
    socket.on('close', () => this.fail(new AgentError('agent connection closed')));
    for (const f of rest) this.onFrame(f);
    socket.resume();
  }

  /**
   * Connects, retrying until the agent listens (the device refuses the
   * hybrid CONNECT while nothing listens on the port) or `timeoutMs` passes,
   * and reads the agent's HELLO.
   */
  static async connect(options: AgentConnectOptions): Promise<AgentClient> {
    const o: Required<AgentConnectOptions> = { port: AGENT_VSOCK_PORT, transport: 'hybrid-vsock', timeoutMs: 60_000, retryMs: 50, ...options };
    const end = Date.now() + o.timeoutMs;
    for (;;) {
      const left = end - Date.now();
      const a = left > 0 ? await attempt(o, Math.min(left, 5000)) : 'retry';
      if (a !== 'retry') {
        const got = await AgentClient.readHello(a.socket, a.rest, Math.max(1000, end - Date.now()));
        if (got) return new AgentClient(a.socket, got.hello, got.decoder, got.rest);
        a.socket.destroy();
      }
      if (Date.now() >= end) throw new AgentError(`no agent answered on ${o.udsPath} port ${o.port} within ${o.timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, o.retryMs));
    }
  }

  private static readHello(socket: net.Socket, first: Buffer, ms: number): Promise<Hello | null> {
    return new Promise((resolve, reject) => {
      const dec = new FrameDecoder();
      const done = (v: Hello | null, e?: Error): void => {
        clearTimeout(timer);
        socket.removeListener('data', onData);
        socket.removeListener('close', onClose);
        socket.pause();
        if (e) reject(e); else resolve(v);
      };
      const onData = (d: Buffer): void => {
        let frames: Frame[];
        try { frames = dec.push(d); } catch { return done(null); }
        if (!frames.length) return;
        const [h, ...rest] = frames;
        if (h!.type !== MsgType.HELLO) return done(null);
        let hello: { version: number; agent: string };
        try { hello = decodeHello(h!.body); } catch { return done(null); }
        if (hello.version !== AGENT_PROTOCOL_VERSION) {
          socket.destroy();
          return done(null, new AgentError(`agent speaks protocol version ${hello.version}, this client ${AGENT_PROTOCOL_VERSION}: use matching agent and host builds`));
        }
        done({ hello, decoder: dec, rest });
      };
      const onClose = (): void => done(null);
      const timer = setTimeout(() => done(null), ms);
      socket.on('data', onData);
      socket.on('close', onClose);
      socket.resume();
      if (first.length) onData(first);
    });
  }

  /** Starts a process; resolves once the agent says it runs, rejects with the agent's ERROR (e.g. exec failed). */
  start(spec: ProcessSpec): Promise<AgentProcess> {
    const body = encodeStartSpec(spec);
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.send(MsgType.START, id, body);
    });
  }

  /** Sends one frame as is (tests and diagnostics use it for malformed requests). */
  send(type: number, id: number, body?: Buffer): boolean {
    if (this.closedError) return false;
    return this.socket.write(encodeFrame(type, id, body));
  }

  /** Sends raw bytes (for tests of the agent's handling of garbage). */
  sendRaw(bytes: Buffer): void {
    if (!this.closedError) this.socket.write(bytes);
  }

  /** @internal STDIN frames of at most STDIO_CHUNK bytes; `cb` once the socket takes more. */
  sendStdin(id: number, chunk: Buffer, cb: (e?: Error | null) => void): void {
    if (this.closedError) return cb(this.closedError);
    let ok = true;
    for (let off = 0; off < chunk.length; off += STDIO_CHUNK) {
      ok = this.socket.write(encodeFrame(MsgType.STDIN, id, chunk.subarray(off, off + STDIO_CHUNK)));
    }
    if (ok) cb();
    else this.socket.once('drain', () => cb());
  }

  /** Closes the connection: the agent kills the processes it started for it. */
  close(): void {
    this.socket.destroy();
  }

  private onData(d: Buffer): void {
    let frames: Frame[];
    try {
      frames = this.decoder.push(d);
    } catch (e) {
      this.fail(new AgentError(`agent sent a malformed frame: ${(e as Error).message}`));
      this.socket.destroy();
      return;
    }
    for (const f of frames) this.onFrame(f);
  }

  private onFrame(f: Frame): void {
    const proc = this.procs.get(f.id);
    switch (f.type) {
      case MsgType.STARTED: {
        const p = this.pending.get(f.id);
        if (!p) return void debug('STARTED for unknown id %d', f.id);
        this.pending.delete(f.id);
        const mk = (): Readable => {
          const r: Readable = new Readable({ read: () => this.unblock(r) });
          return r;
        };
        const ap = new AgentProcess(this, f.id, decodeStarted(f.body), { stdout: mk(), stderr: mk() });
        this.procs.set(f.id, ap);
        p.resolve(ap);
        return;
      }
      case MsgType.STDOUT:
      case MsgType.STDERR: {
        if (!proc) return void debug('output for unknown id %d', f.id);
        const r = f.type === MsgType.STDOUT ? proc.stdout : proc.stderr;
        if (!r.push(f.body)) {
          this.full.add(r);
          this.socket.pause();
        }
        return;
      }
      case MsgType.EXIT: {
        if (!proc) return void debug('EXIT for unknown id %d', f.id);
        this.procs.delete(f.id);
        proc.stdout.push(null);
        proc.stderr.push(null);
        this.full.delete(proc.stdout);
        this.full.delete(proc.stderr);
        if (!this.full.size) this.socket.resume();
        proc.settle(decodeExit(f.body));
        return;
      }
      case MsgType.ERROR: {
        const reply = decodeError(f.body);
        const p = this.pending.get(f.id);
        if (p) {
          this.pending.delete(f.id);
          p.reject(new AgentError(`agent: ${reply.message}`, reply));
          return;
        }
        if (reply.code === AgentErrorCode.NO_SUCH_PROCESS && f.id < this.nextId && !proc && f.id !== 0) {
          // STDIN, STDIN_CLOSE or a signal that crossed the process's EXIT on the wire: not an error of the caller's.
          return void debug('late request for exited process %d: %s', f.id, reply.message);
        }
        debug('agent error for id %d: %s', f.id, reply.message);
        if (proc) proc.emit('agent-error', reply);
        this.emit('agent-error', reply, f.id);
        return;
      }
      default:
        debug('ignoring message type 0x%s', f.type.toString(16));
    }
  }

  private unblock(r: Readable): void {
    if (this.full.delete(r) && this.full.size === 0 && !this.closedError) this.socket.resume();
  }

  private fail(e: Error): void {
    if (this.closedError) return;
    this.closedError = e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
    for (const p of this.procs.values()) {
      // Destroyed without an error (an 'error' nobody listens to would throw): wait() rejects with `e`.
      p.stdout.destroy();
      p.stderr.destroy();
      p.stdin.destroy();
      p.settle(e);
    }
    this.procs.clear();
    this.emit('close');
  }
}
