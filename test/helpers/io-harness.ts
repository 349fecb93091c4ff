/**
 * Main-thread side of the I/O loop tests: starts an IoWorker with
 * io-test-setup.ts, sends it commands and waits for the messages its
 * callbacks post.
 */
import { IoWorker } from '../../lib/io/io-worker.js';
import * as E from '../../lib/io/epoll.js';
import { CMD_A, CMD_B, CMD_OP, CMD_SEQ, CMD_WORDS, type IoTestData } from './io-test-setup.js';

const SETUP_MODULE = new URL('./io-test-setup.js', import.meta.url);
const DEFAULT_WAIT_MS = 5000;

export interface IoTestMessage {
  readonly kind: string;
  readonly [key: string]: unknown;
}

interface Waiter {
  readonly pred: (m: IoTestMessage) => boolean;
  readonly resolve: (m: IoTestMessage) => void;
}

export class IoHarness {
  /** Messages received and not yet taken by next()/take(). */
  readonly inbox: IoTestMessage[] = [];
  private readonly waiters: Waiter[] = [];
  private readonly cmd = new Int32Array(new SharedArrayBuffer(CMD_WORDS * 4));
  private readonly gate = new Int32Array(new SharedArrayBuffer(4));
  private readonly cmdFd: number;
  private io!: IoWorker;
  private seq = 0;
  private cmdOpen = true;
  errors: Error[] = [];

  private constructor() {
    this.cmdFd = E.createEventfd();
  }

  static async start(opts: { failSetup?: boolean } = {}): Promise<IoHarness> {
    const h = new IoHarness();
    const data: IoTestData = { cmd: h.cmd.buffer as SharedArrayBuffer, cmdFd: h.cmdFd, gate: h.gate.buffer as SharedArrayBuffer, ...opts };
    try {
      h.io = await IoWorker.start({ module: SETUP_MODULE, data });
    } catch (e) {
      E.closeFd(h.cmdFd);
      throw e;
    }
    h.io.on('message', (m) => h.deliver(m as IoTestMessage));
    h.io.on('error', (e) => h.errors.push(e));
    return h;
  }

  get worker(): IoWorker {
    return this.io;
  }

  private deliver(m: IoTestMessage): void {
    const i = this.waiters.findIndex((w) => w.pred(m));
    if (i >= 0) this.waiters.splice(i, 1)[0]!.resolve(m);
    else this.inbox.push(m);
  }

  /** The first message (already received or still to come) matching `pred`; taken out of the inbox. Rejects after `ms`. */
  next(pred: (m: IoTestMessage) => boolean, ms = DEFAULT_WAIT_MS): Promise<IoTestMessage> {
    const i = this.inbox.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.inbox.splice(i, 1)[0]!);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const at = this.waiters.indexOf(w);
        if (at >= 0) this.waiters.splice(at, 1);
        reject(new Error(`no matching I/O worker message within ${ms} ms`));
      }, ms);
      const w: Waiter = { pred, resolve: (m) => { clearTimeout(timer); resolve(m); } };
      this.waiters.push(w);
    });
  }

  /** Takes every message in the inbox matching `pred`. */
  take(pred: (m: IoTestMessage) => boolean): IoTestMessage[] {
    const out: IoTestMessage[] = [];
    for (let i = 0; i < this.inbox.length;) {
      if (pred(this.inbox[i]!)) out.push(this.inbox.splice(i, 1)[0]!);
      else i++;
    }
    return out;
  }

  /** Sends one command without waiting; returns its sequence number. One command in flight at a time. */
  send(op: number, a = 0, b = 0): number {
    const seq = ++this.seq;
    Atomics.store(this.cmd, CMD_OP, op);
    Atomics.store(this.cmd, CMD_A, a);
    Atomics.store(this.cmd, CMD_B, b);
    Atomics.store(this.cmd, CMD_SEQ, seq);
    E.signalEventfd(this.cmdFd);
    return seq;
  }

  /** Sends a command and resolves with its result once the worker acknowledged it. */
  async command(op: number, a = 0, b = 0): Promise<number> {
    const seq = this.send(op, a, b);
    const ack = await this.next((m) => m.kind === 'ack' && m.seq === seq);
    return ack.result as number;
  }

  /** Releases a worker parked by OP_GATE. */
  openGate(): void {
    Atomics.store(this.gate, 0, 1);
    Atomics.notify(this.gate, 0);
  }

  /** Stops the worker and closes the command eventfd. */
  async stop(): Promise<void> {
    await this.io.stop();
    if (this.cmdOpen) E.closeFd(this.cmdFd);
    this.cmdOpen = false;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
