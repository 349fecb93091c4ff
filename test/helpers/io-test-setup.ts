/**
 * I/O worker setup module for test/unit/lib/io/event-loop.test.ts. Runs on
 * the I/O worker. The test drives it through a command eventfd: it writes
 * [op, a, b, seq] into `cmd`, signals `cmdFd`, and the command callback does
 * the op on the loop and posts { kind: 'ack', seq, result }. Callbacks report
 * what they see with ctx.post, so the test observes the loop from outside.
 */
import * as E from '../../lib/io/epoll.js';
import type { EventLoop } from '../../lib/io/event-loop.js';
import type { IoWorkerContext } from '../../lib/io/io-worker.js';
import { readFd } from './io-fds.js';

export const OP_WATCH = 1;          // a=fd: read the eventfd, post { kind: 'fd', fd, value, events }
export const OP_UNWATCH = 2;        // a=fd
export const OP_THROW = 3;          // a=fd, b=1|0: the fd's callback throws after posting
export const OP_TIMER = 4;          // a=ms, b=repeat: result = timer id; posts { kind: 'timer', id, n }
export const OP_CANCEL = 5;         // a=timer id
export const OP_WATCH_PIPE = 6;     // a=read end (nonblocking): posts { kind: 'pipe', fd, events, bytes }; unwatches on EPOLLHUP
export const OP_GATE = 7;           // acks, then blocks in the callback until gate[0] != 0 (then resets it)
export const OP_PONG = 8;           // a=fd, b=reply fd: each readiness reads a and signals b
export const OP_COUNT = 9;          // a=fd, b=target: sums counters, posts { kind: 'count', total, callbacks } at target
export const OP_BLOCKING_READ = 10; // a=blocking fd: read(2) inside the command callback; result = bytes or -errno
export const OP_STATS = 11;         // result = loop.stats.errors
export const OP_EXIT = 12;          // process.exit(a) on the worker

export const CMD_OP = 0;
export const CMD_A = 1;
export const CMD_B = 2;
export const CMD_SEQ = 3;
export const CMD_WORDS = 4;

export interface IoTestData {
  readonly cmd: SharedArrayBuffer;
  readonly cmdFd: number;
  readonly gate: SharedArrayBuffer;
  /** Make setupIoWorker throw (to test start() failure). */
  readonly failSetup?: boolean;
}

const GATE_TIMEOUT_MS = 10_000;

export function setupIoWorker(data: IoTestData, loop: EventLoop, ctx: IoWorkerContext): () => void {
  if (data.failSetup) throw new Error('setup failed on purpose');
  const cmd = new Int32Array(data.cmd);
  const gate = new Int32Array(data.gate);
  const throwing = new Set<number>();
  const timers = new Map<number, () => void>();
  let nextTimer = 1;
  const scratch = new Uint8Array(256);

  const ops: Record<number, (a: number, b: number) => number> = {
    [OP_WATCH]: (fd) => {
      loop.watch(fd, E.EPOLLIN, (events) => {
        const value = Number(E.readEventfd(fd));
        ctx.post({ kind: 'fd', fd, value, events });
        if (throwing.has(fd)) throw new Error(`callback for fd ${fd} throws on purpose`);
      });
      return 0;
    },
    [OP_UNWATCH]: (fd) => { loop.unwatch(fd); return 0; },
    [OP_THROW]: (fd, on) => { if (on) throwing.add(fd); else throwing.delete(fd); return 0; },
    [OP_TIMER]: (ms, repeat) => {
      const id = nextTimer++;
      timers.set(id, loop.addTimer(ms, (n) => ctx.post({ kind: 'timer', id, n, t: performance.now() }), { repeat: repeat !== 0 }));
      return id;
    },
    [OP_CANCEL]: (id) => { timers.get(id)?.(); timers.delete(id); return 0; },
    [OP_WATCH_PIPE]: (fd) => {
      loop.watch(fd, E.EPOLLIN, (events) => {
        let bytes = 0;
        for (let n; (n = readFd(fd, scratch)) > 0;) bytes += n;
        ctx.post({ kind: 'pipe', fd, events, bytes });
        if (events & E.EPOLLHUP) loop.unwatch(fd);
      });
      return 0;
    },
    [OP_GATE]: () => {
      ctx.post({ kind: 'gated' });
      Atomics.wait(gate, 0, 0, GATE_TIMEOUT_MS);
      Atomics.store(gate, 0, 0);
      return 0;
    },
    [OP_PONG]: (fd, reply) => {
      loop.watch(fd, E.EPOLLIN, () => {
        if (E.readEventfd(fd) !== 0n) E.signalEventfd(reply);
      });
      return 0;
    },
    [OP_COUNT]: (fd, target) => {
      let total = 0;
      let callbacks = 0;
      loop.watch(fd, E.EPOLLIN, () => {
        total += Number(E.readEventfd(fd));
        callbacks++;
        if (total >= target) {
          ctx.post({ kind: 'count', total, callbacks });
          loop.unwatch(fd);
        }
      });
      return 0;
    },
    [OP_BLOCKING_READ]: (fd) => readFd(fd, scratch),
    [OP_STATS]: () => loop.stats.errors,
    [OP_EXIT]: (code) => process.exit(code),
  };

  loop.watch(data.cmdFd, E.EPOLLIN, () => {
    if (E.readEventfd(data.cmdFd) === 0n) return;
    const op = Atomics.load(cmd, CMD_OP);
    const seq = Atomics.load(cmd, CMD_SEQ);
    const fn = ops[op];
    if (!fn) throw new Error(`unknown test op ${op}`);
    const result = fn(Atomics.load(cmd, CMD_A), Atomics.load(cmd, CMD_B));
    ctx.post({ kind: 'ack', seq, result });
  });
  ctx.post({ kind: 'setup' });
  return () => ctx.post({ kind: 'teardown', errors: loop.stats.errors });
}
