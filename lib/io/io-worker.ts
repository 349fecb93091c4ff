/**
 * Main-thread handle on the I/O worker (ARCHITECTURE.md §3): one
 * worker_thread blocked in an {@link EventLoop}. What the loop watches is
 * decided by a setup module that the worker imports, so device wiring lives
 * with the builder, not here:
 *
 * ```ts
 * // my-io-setup.ts (runs on the I/O worker)
 * export function setupIoWorker(data: MyData, loop: EventLoop, ctx: IoWorkerContext) {
 *   loop.watch(data.notifyFd, EPOLLIN, () => { ... ctx.post({ type: 'log', ... }); });
 *   return () => { ... };   // optional teardown, run on the worker after the loop stops
 * }
 * ```
 */
import type { Worker } from 'node:worker_threads';
import { EventEmitter } from 'node:events';
import { isAbsolute } from 'node:path';
import { pathToFileURL } from 'node:url';
import { log } from '../log.js';
import { ConfigError, IoWorkerError } from '../errors.js';
import { installKickHandler, kickThread } from '../vcpu/kick.js';
import { startWorker, type WorkerPool } from '../worker-pool.js';
import { CTL_LOOP_STATE, EventLoop, LOOP_RETURNED, type StopSignal } from './event-loop.js';

const debug = log('io');
const ENTRY_URL = new URL('./io-worker-entry.js', import.meta.url);
/** How long stop() lets the stop eventfd work before kicking, and then how often it re-kicks. */
const KICK_RETRY_MS = 5;
/** After this long without the loop returning (a callback stuck in JS), stop() terminates the worker anyway. */
const STOP_GIVE_UP_MS = 2000;
/** How long stop() waits, after the loop returned, for the worker's teardown and fd closing. */
const TEARDOWN_GRACE_MS = 2000;

/** Given to the setup module's `setupIoWorker` on the I/O worker. */
export interface IoWorkerContext {
  /** Sends `msg` (structured-cloneable) to the main thread, where the IoWorker emits it as 'message'. Works from loop callbacks. */
  post(msg: unknown): void;
}

/**
 * The export a setup module must provide. Runs on the I/O worker before the
 * loop starts; may be async (its promise settles before the loop blocks the
 * thread). It may return a teardown function, called on the worker after the
 * loop returns and before the loop is closed. Throwing makes `IoWorker.start` reject.
 * Loop callbacks run while the worker's Node event loop is blocked: promise
 * continuations, Node timers and incoming messages do not progress in them
 * (use `loop.addTimer`; `ctx.post` works). Code running on this thread may be
 * kicked by stop() (EINTR from a blocking call), so backends retry EINTR.
 */
export type SetupIoWorker<D = unknown> = (data: D, loop: EventLoop, ctx: IoWorkerContext) =>
  void | (() => void) | Promise<void | (() => void)>;

export interface IoWorkerOptions {
  /** The setup module: a file: URL (string or URL) or an absolute path to a compiled .js file exporting `setupIoWorker`. */
  readonly module: string | URL;
  /** Passed to `setupIoWorker`; structured-cloneable (SharedArrayBuffers are shared, fd numbers stay valid). */
  readonly data: unknown;
  /** Take the worker from this pool when it has one ready. */
  readonly pool?: WorkerPool;
}

/** Worker -> main messages. */
export type IoWorkerMessage =
  | { readonly type: 'ready'; readonly tid: number }
  | { readonly type: 'message'; readonly data: unknown }
  | { readonly type: 'fatal'; readonly message: string; readonly stack?: string }
  | { readonly type: 'closed' };

/** What the entry gets in `workerData`. */
export interface IoWorkerData {
  readonly module: string;
  readonly data: unknown;
  readonly stop: StopSignal;
}

export interface IoWorkerEvents {
  /**
   * A message the setup code posted with `ctx.post`. Messages posted during
   * setup are held and emitted on the macrotask after `start()` resolves, so a
   * listener attached right after `await IoWorker.start()` sees them all, in order.
   */
  message: [unknown];
  /** The worker died (setup/loop error or an unexpected exit) outside stop(). Unhandled, it throws, as Node's 'error' events do. */
  error: [Error];
  /** The worker thread is gone (after stop() or a death), with its exit code. */
  exit: [number];
}

/**
 * Main-thread handle on the I/O worker. Main thread only.
 * Lifecycle: `await IoWorker.start()` -> running -> `await stop()` (idempotent).
 */
export class IoWorker extends EventEmitter<IoWorkerEvents> {
  private readonly control: Int32Array;
  private tid = 0;
  private isReady = false;
  private exited = false;
  private closedSeen = false;
  private deathReported = false;
  /** Messages posted before the caller could listen (during setup), until flushed after ready. */
  private early: unknown[] | null = [];
  private stopping: Promise<void> | null = null;
  private readonly ready: Promise<void>;
  private readonly exitedPromise: Promise<void>;
  private readonly closedPromise: Promise<void>;
  private resolveClosed!: () => void;

  private constructor(private readonly worker: Worker, private readonly stopSignal: StopSignal) {
    super();
    this.control = new Int32Array(stopSignal.control);
    this.closedPromise = new Promise((r) => { this.resolveClosed = r; });
    this.exitedPromise = new Promise((resolve) => {
      worker.once('exit', (code) => {
        this.exited = true;
        resolve();
        if (this.isReady && !this.stopping) this.died(new IoWorkerError(`I/O worker exited unexpectedly (code ${code})`));
        this.emit('exit', code);
      });
    });
    this.ready = new Promise((resolve, reject) => {
      worker.on('message', (m: IoWorkerMessage) => {
        switch (m.type) {
          case 'ready':
            this.tid = m.tid;
            this.isReady = true;
            resolve();
            // The caller attaches listeners after `await start()`: its continuation runs before this macrotask.
            setImmediate(() => this.flushEarly());
            break;
          case 'message':
            if (this.early) this.early.push(m.data);
            else this.emit('message', m.data);
            break;
          case 'closed':
            this.closedSeen = true;
            this.resolveClosed();
            // The loop returned and its fds are closed although nobody asked: the devices are gone.
            if (this.isReady && !this.stopping) this.died(new IoWorkerError('I/O worker loop ended unexpectedly'));
            break;
          case 'fatal': {
            const e = Object.assign(new IoWorkerError(`I/O worker failed: ${m.message}`), m.stack ? { workerStack: m.stack } : {});
            if (this.isReady) this.died(e);
            else reject(e);
            break;
          }
        }
      });
      worker.once('error', (e) => {
        if (this.isReady) this.died(e);
        else reject(e);
      });
      worker.once('exit', (code) => reject(new IoWorkerError(`I/O worker exited during setup (code ${code})`)));
    });
  }

  /**
   * Spawns the I/O worker, runs the setup module's `setupIoWorker(data, loop,
   * ctx)` there, and resolves once the loop is about to run (50-65 ms: worker
   * start-up and koffi). Rejects, with the worker gone and no fd left open,
   * if the module cannot be imported or its setup throws. Throws ConfigError
   * for a relative module path, HostError if the stop eventfd cannot be made.
   */
  static async start(opts: IoWorkerOptions): Promise<IoWorker> {
    const module = moduleUrl(opts.module);
    // Process-wide disposition for the kick signal: without it, a kick would kill the process.
    installKickHandler();
    const stop = EventLoop.createStopSignal();
    const wd: IoWorkerData = { module, data: opts.data, stop };
    let worker: Worker;
    try {
      worker = startWorker(ENTRY_URL, wd, opts.pool);
    } catch (e) {
      EventLoop.closeStopSignal(stop);
      throw e;
    }
    const io = new IoWorker(worker, stop);
    try {
      await io.ready;
    } catch (e) {
      await io.stop();
      throw e;
    }
    debug('I/O worker ready (tid %d)', io.tid);
    return io;
  }

  /** Linux thread id of the worker's loop thread (0 before ready). */
  get threadTid(): number {
    return this.tid;
  }

  /** True once the worker thread has exited. */
  get hasExited(): boolean {
    return this.exited;
  }

  /**
   * Stops the loop and terminates the worker; resolves when the thread is
   * gone and the stop eventfd closed. Idempotent (later calls share the first
   * call's promise). Sets the stop flag and writes the stop eventfd; if the
   * loop has not returned within a few ms (its thread blocked in some other
   * native call), kicks the thread with KICK_SIGNAL every few ms. A loop
   * stuck in JavaScript is terminated after 2 s.
   */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  private async shutdown(): Promise<void> {
    const t0 = performance.now();
    let kicks = 0;
    let ackMs = 0;
    // Before ready there is no loop to stop yet: the setup failed, terminate() is enough.
    if (!this.exited && this.isReady) {
      EventLoop.requestStop(this.stopSignal);
      while (!this.exited && !this.closedSeen && Atomics.load(this.control, CTL_LOOP_STATE) !== LOOP_RETURNED) {
        const seen = Atomics.load(this.control, CTL_LOOP_STATE);
        const w = Atomics.waitAsync(this.control, CTL_LOOP_STATE, seen, KICK_RETRY_MS);
        if (w.async) await w.value;
        if (Atomics.load(this.control, CTL_LOOP_STATE) === LOOP_RETURNED || this.exited) break;
        if (performance.now() - t0 > STOP_GIVE_UP_MS) {
          debug('I/O loop did not return within %d ms; terminating the worker', STOP_GIVE_UP_MS);
          break;
        }
        // Only a live thread: a tid is reused once its thread is gone.
        if (this.tid && !this.exited) {
          kickThread(this.tid);
          kicks++;
        }
      }
      ackMs = performance.now() - t0;
      // Let the entry run the teardown and close the loop's fds before the thread goes
      // (not when we gave up on a loop stuck in JavaScript: it will not get there).
      if (this.closedSeen || Atomics.load(this.control, CTL_LOOP_STATE) === LOOP_RETURNED) {
        await raceTimeout(Promise.race([this.closedPromise, this.exitedPromise]), TEARDOWN_GRACE_MS);
      }
    }
    await this.worker.terminate();
    if (!this.exited) await this.exitedPromise;
    EventLoop.closeStopSignal(this.stopSignal);
    debug('I/O worker stopped in %s ms (loop returned after %s ms, %d kicks)', (performance.now() - t0).toFixed(2), ackMs.toFixed(3), kicks);
  }

  /**
   * Test hook, not part of the API and not reachable from any config: makes
   * the worker end as if it had died, while its owner still expects it to
   * run. Asks the loop to return (without marking a stop), so the worker runs
   * its teardown, closes its fds and exits; the exit is then reported as a
   * death ('error'), exactly as an unexpected end of the thread is.
   * @internal
   */
  endUnexpectedlyForTest(): void {
    if (this.isReady && !this.exited && !this.stopping) EventLoop.requestStop(this.stopSignal);
  }

  private flushEarly(): void {
    const early = this.early ?? [];
    this.early = null;
    for (const m of early) this.emit('message', m);
  }

  private died(e: Error): void {
    // During stop() (e.g. a failing teardown) the caller is already tearing down: log only.
    if (this.stopping) return void debug('I/O worker error while stopping: %O', e);
    if (this.deathReported) return;
    this.deathReported = true;
    debug('I/O worker died: %O', e);
    this.emit('error', e);
  }
}

function moduleUrl(m: string | URL): string {
  if (m instanceof URL) return m.href;
  if (m.startsWith('file:')) return m;
  if (isAbsolute(m)) return pathToFileURL(m).href;
  throw new ConfigError('module', 'the I/O worker setup module must be a file: URL or an absolute path', m);
}

function raceTimeout(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<void>((r) => { timer = setTimeout(r, ms); })]).finally(() => clearTimeout(timer));
}
