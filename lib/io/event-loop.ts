/**
 * The I/O worker's event loop: one epoll set, level-triggered, with a
 * callback per fd (ARCHITECTURE.md §3). It watches ioeventfds, backend fds
 * (taps, sockets) and timerfds, and runs every callback synchronously on the
 * thread that called {@link EventLoop.run}.
 *
 * `run()` blocks that thread in epoll_wait, so while it runs the thread's own
 * Node event loop does not turn: no promise continuations, Node timers or
 * incoming worker messages. Callbacks must be synchronous; use
 * {@link EventLoop.addTimer} for timers. Posting messages *out*
 * (`parentPort.postMessage`) works.
 *
 * Stopping: a {@link StopSignal} (an eventfd plus a flag word in a
 * SharedArrayBuffer) that any thread may fire with
 * {@link EventLoop.requestStop}. The loop watches the eventfd, and an EINTR
 * from a kick signal (lib/vcpu/kick.ts) just re-checks the flag.
 */
import type { FdWatcher } from './fd-watcher.js';
import { HostError, StateError } from '../errors.js';
import { log } from '../log.js';
import * as ffi from '../kvm/ffi.js';
import {
  EBADF, ENOENT, EPOLLIN, EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD, EPOLL_EVENT_DATA, EPOLL_EVENT_SIZE,
  closeFd, createEventfd, createTimerfd, epollCreate, epollCtl, epollWait, readEventfd, readTimerfd, setTimerfd,
  signalEventfd,
} from './epoll.js';

const debug = log('io');

// Words (Int32) of a stop signal's control SharedArrayBuffer.
/** Non-zero once a stop was requested. */
export const CTL_STOP = 0;
/** One of LOOP_IDLE / LOOP_RUNNING / LOOP_RETURNED; notified on change. */
export const CTL_LOOP_STATE = 1;
/** Linux thread id of the thread inside run() (0 before the first run()). */
export const CTL_TID = 2;
export const CTL_WORDS = 4;

export const LOOP_IDLE = 0;
export const LOOP_RUNNING = 1;
export const LOOP_RETURNED = 2;

/** Default bound on the events handled per epoll_wait (per wakeup). */
export const DEFAULT_MAX_EVENTS = 64;
/** At most this many callback errors are logged per window; the rest are counted. */
const ERROR_LOG_BURST = 5;
const ERROR_LOG_WINDOW_MS = 1000;
const WAIT_FOREVER = -1;

/**
 * How to stop a loop from another thread: structured-cloneable (the
 * SharedArrayBuffer is shared, the fd number is valid process-wide), so it
 * can travel in `workerData`.
 */
export interface StopSignal {
  /** CTL_WORDS Int32 words: CTL_STOP, CTL_LOOP_STATE, CTL_TID. */
  readonly control: SharedArrayBuffer;
  /** A nonblocking eventfd the loop watches; writing it wakes the loop and stops it. */
  readonly fd: number;
}

/** Called with the ready bits (EPOLLIN/EPOLLOUT, and EPOLLERR/EPOLLHUP, which are always reported). */
export type ReadyCallback = (events: number) => void;

export interface TimerOptions {
  /** Fire every `ms` until cancelled (default: once). */
  readonly repeat?: boolean;
}

export interface EventLoopOptions {
  /** Stop signal shared with other threads; by default the loop makes (and owns, and closes) its own. */
  readonly stop?: StopSignal;
  /** Events handled per wakeup (default 64). */
  readonly maxEvents?: number;
  /** Also told about every callback error (after the rate-limited log). Must not throw. */
  readonly onError?: (error: unknown, fd: number) => void;
}

/** Counters, for tests and diagnostics. */
export interface EventLoopStats {
  /** epoll_wait calls that returned (events, or EINTR). */
  wakeups: number;
  /** Callbacks invoked. */
  dispatched: number;
  /** Callbacks that threw. */
  errors: number;
}

interface Watch {
  readonly fd: number;
  /** Stored in the high half of epoll data, so an event queued for an fd number that was since closed and reused is dropped. */
  readonly gen: number;
  readonly onReady: ReadyCallback;
}

/**
 * An epoll loop. Create, watch, run and close it on one thread (the I/O
 * worker); only {@link EventLoop.requestStop} is meant for other threads.
 * Implements {@link FdWatcher} (the interface devices use to watch backend fds).
 */
export class EventLoop implements FdWatcher {
  private readonly epfd: number;
  private readonly stopSignal: StopSignal;
  private readonly ownsStop: boolean;
  private readonly control: Int32Array;
  private readonly maxEvents: number;
  private readonly events: Uint8Array;
  private readonly eventsView: DataView;
  private readonly watches = new Map<number, Watch>();
  private readonly timers = new Set<() => void>();
  private readonly onError?: (error: unknown, fd: number) => void;
  private nextGen = 1;
  private running = false;
  private closed = false;
  private errorWindowStart = 0;
  private errorsInWindow = 0;
  private suppressedErrors = 0;
  readonly stats: EventLoopStats = { wakeups: 0, dispatched: 0, errors: 0 };

  /** A fresh stop signal (an eventfd and its control words). Any thread; close it with {@link closeStopSignal}. */
  static createStopSignal(): StopSignal {
    return { control: new SharedArrayBuffer(CTL_WORDS * Int32Array.BYTES_PER_ELEMENT), fd: createEventfd() };
  }

  /**
   * Asks the loop using `signal` to return from run() (after the batch of
   * callbacks it is in). Any thread; idempotent. Sets the flag first, then
   * writes the eventfd, so the woken loop always sees the flag.
   */
  static requestStop(signal: StopSignal): void {
    Atomics.store(new Int32Array(signal.control), CTL_STOP, 1);
    signalEventfd(signal.fd);
  }

  /** Closes a stop signal's eventfd. Only once no loop uses it (the loop's thread has finished). */
  static closeStopSignal(signal: StopSignal): void {
    closeFd(signal.fd);
  }

  /** Throws HostError if epoll_create1 or the stop eventfd cannot be made. */
  constructor(opts: EventLoopOptions = {}) {
    this.maxEvents = opts.maxEvents ?? DEFAULT_MAX_EVENTS;
    if (!Number.isInteger(this.maxEvents) || this.maxEvents < 1) throw new RangeError(`maxEvents must be a positive integer, got ${opts.maxEvents}`);
    if (opts.onError) this.onError = opts.onError;
    this.events = new Uint8Array(this.maxEvents * EPOLL_EVENT_SIZE);
    this.eventsView = new DataView(this.events.buffer);
    this.ownsStop = opts.stop === undefined;
    this.stopSignal = opts.stop ?? EventLoop.createStopSignal();
    this.control = new Int32Array(this.stopSignal.control);
    try {
      this.epfd = epollCreate();
    } catch (e) {
      if (this.ownsStop) EventLoop.closeStopSignal(this.stopSignal);
      throw e;
    }
    // The stop eventfd is an ordinary watch; reading it also covers a bare eventfd write without the flag.
    this.watch(this.stopSignal.fd, EPOLLIN, () => {
      readEventfd(this.stopSignal.fd);
      Atomics.store(this.control, CTL_STOP, 1);
    });
  }

  /** This loop's stop signal (to hand to another thread). */
  get signal(): StopSignal {
    return this.stopSignal;
  }

  /** True once a stop was requested (from any thread). */
  get stopRequested(): boolean {
    return Atomics.load(this.control, CTL_STOP) !== 0;
  }

  /** Number of fds watched, the stop eventfd and timers included. */
  get size(): number {
    return this.watches.size;
  }

  /**
   * Calls `onReady(events)` whenever `fd` is ready for `events` (level-
   * triggered: until the callback drains it). EPOLLERR and EPOLLHUP are
   * always reported; a callback that sees EPOLLHUP on a pipe or socket should
   * unwatch it, or it will be called again at once. Replaces an earlier watch
   * of the same fd. The fd stays the caller's: the loop never closes it, and
   * the caller should unwatch it before closing it.
   * Throws HostError('epoll_ctl') (EPERM for a regular file), StateError once closed.
   */
  watch(fd: number, events: number, onReady: ReadyCallback): void {
    this.assertOpen();
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`not an fd: ${fd}`);
    const gen = this.nextGen;
    this.nextGen = (this.nextGen + 1) >>> 0 || 1;
    if (this.watches.has(fd)) {
      try {
        epollCtl(this.epfd, EPOLL_CTL_MOD, fd, events, fd, gen);
      } catch (e) {
        // The fd was closed (so epoll dropped it) and its number reused: add it afresh.
        if (!(e instanceof HostError && e.errno === ENOENT)) throw e;
        epollCtl(this.epfd, EPOLL_CTL_ADD, fd, events, fd, gen);
      }
    } else {
      epollCtl(this.epfd, EPOLL_CTL_ADD, fd, events, fd, gen);
    }
    this.watches.set(fd, { fd, gen, onReady });
  }

  /**
   * Stops watching `fd`; no callback for it runs after this returns, even one
   * already queued in the current batch. No-op for an fd not watched. An fd
   * already closed is fine (epoll dropped it then). Throws HostError('epoll_ctl') otherwise.
   */
  unwatch(fd: number): void {
    if (!this.watches.delete(fd) || this.closed) return;
    try {
      epollCtl(this.epfd, EPOLL_CTL_DEL, fd, 0);
    } catch (e) {
      if (!(e instanceof HostError && (e.errno === ENOENT || e.errno === EBADF))) throw e;
    }
  }

  /**
   * Calls `cb(expirations)` after `ms` milliseconds (CLOCK_MONOTONIC, on a
   * timerfd), and every `ms` after that with `{ repeat: true }`.
   * `expirations` > 1 means the loop fell behind. Returns an idempotent
   * cancel function; a one-shot timer cancels itself before its callback runs.
   * Throws RangeError for a bad `ms`, HostError if the timerfd cannot be made.
   */
  addTimer(ms: number, cb: (expirations: number) => void, opts: TimerOptions = {}): () => void {
    this.assertOpen();
    const repeat = opts.repeat ?? false;
    if (!Number.isFinite(ms) || ms < 0 || (repeat && ms === 0)) throw new RangeError(`timer period must be a finite number of ms (> 0 when repeating), got ${ms}`);
    const fd = createTimerfd();
    let active = true;
    const cancel = (): void => {
      if (!active) return;
      active = false;
      this.timers.delete(cancel);
      this.unwatch(fd);
      closeFd(fd);
    };
    try {
      this.watch(fd, EPOLLIN, () => {
        const n = readTimerfd(fd);
        if (n === 0n) return;
        if (!repeat) cancel();
        cb(Number(n));
      });
      setTimerfd(fd, ms, repeat ? ms : 0);
    } catch (e) {
      active = false;
      this.unwatch(fd);
      closeFd(fd);
      throw e;
    }
    this.timers.add(cancel);
    return cancel;
  }

  /**
   * Blocks the calling thread, dispatching callbacks, until a stop is
   * requested (then returns after finishing the current batch of at most
   * `maxEvents` callbacks). Returns at once if a stop was already requested.
   * A callback that throws is logged (rate-limited) and counted; the loop
   * goes on. Throws StateError if already running or closed, HostError if
   * epoll_wait fails with anything but EINTR.
   */
  run(): void {
    this.assertOpen();
    if (this.running) throw new StateError('EventLoop.run() is already running on this loop');
    this.running = true;
    Atomics.store(this.control, CTL_TID, ffi.gettid());
    setState(this.control, LOOP_RUNNING);
    try {
      while (Atomics.load(this.control, CTL_STOP) === 0) {
        // EINTR (a kick) comes back as 0 events: the loop condition re-checks the flag.
        const n = epollWait(this.epfd, this.events, this.maxEvents, WAIT_FOREVER);
        this.stats.wakeups++;
        if (n > 0) this.dispatch(n);
      }
    } finally {
      this.running = false;
      setState(this.control, LOOP_RETURNED);
    }
  }

  /** Same-thread stop (e.g. from a callback): run() returns after the current batch. */
  stop(): void {
    Atomics.store(this.control, CTL_STOP, 1);
  }

  /**
   * Cancels every timer and closes the epoll fd (and the stop eventfd if the
   * loop made it). Watched fds are not closed: they belong to their owners.
   * Idempotent. Throws StateError from inside run().
   */
  close(): void {
    if (this.closed) return;
    if (this.running) throw new StateError('EventLoop.close() called from inside run()');
    for (const cancel of [...this.timers]) cancel();
    this.closed = true;
    this.watches.clear();
    closeFd(this.epfd);
    if (this.ownsStop) EventLoop.closeStopSignal(this.stopSignal);
  }

  private dispatch(n: number): void {
    const view = this.eventsView;
    for (let i = 0; i < n; i++) {
      const at = i * EPOLL_EVENT_SIZE;
      const bits = view.getUint32(at, true);
      const fd = view.getUint32(at + EPOLL_EVENT_DATA, true);
      const gen = view.getUint32(at + EPOLL_EVENT_DATA + 4, true);
      const w = this.watches.get(fd);
      // Unwatched (or re-watched under a new generation) earlier in this batch.
      if (w === undefined || w.gen !== gen) continue;
      this.stats.dispatched++;
      try {
        w.onReady(bits);
      } catch (e) {
        this.callbackFailed(e, fd);
      }
    }
  }

  private callbackFailed(error: unknown, fd: number): void {
    this.stats.errors++;
    const now = Date.now();
    if (now - this.errorWindowStart >= ERROR_LOG_WINDOW_MS) {
      if (this.suppressedErrors > 0) debug('%d more callback errors were not logged', this.suppressedErrors);
      this.errorWindowStart = now;
      this.errorsInWindow = 0;
      this.suppressedErrors = 0;
    }
    if (this.errorsInWindow++ < ERROR_LOG_BURST) debug('callback for fd %d threw: %O', fd, error);
    else this.suppressedErrors++;
    try {
      this.onError?.(error, fd);
    } catch (e) {
      debug('onError threw: %O', e);
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new StateError('EventLoop is closed');
  }
}

function setState(control: Int32Array, state: number): void {
  Atomics.store(control, CTL_LOOP_STATE, state);
  Atomics.notify(control, CTL_LOOP_STATE);
}
