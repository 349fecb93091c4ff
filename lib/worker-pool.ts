/**
 * Standby workers, so that a VM's start() does not wait for worker threads to
 * boot. Starting a worker_thread and importing koffi and the KVM bindings in
 * it is most of a warm start() (about 45 ms of 55 on the build machine, over
 * a second in the emulated test hosts). A pool starts that work ahead of time:
 *
 * ```ts
 * const pool = new WorkerPool({ size: 2 });
 * const vm = new MicroVM({ kernel, workerPool: pool });   // its vCPU and I/O workers come from the pool
 * ...
 * await pool.close();                                      // ends the idle standbys
 * ```
 *
 * The pool belongs to whoever made it (there is no process-wide pool). Each
 * standby runs one job and is never reused: a VM terminates the workers it
 * took when it stops, exactly like the ones it would have spawned. When the
 * pool has no standby left (or is closed) a VM spawns its own workers; one
 * still importing is handed out too, since it is further along than a new
 * one. Ready standbys are unref'd: they do not keep the process alive.
 *
 * After a take, the pool starts a replacement: at once by default, or
 * `refillDelayMs` later; `warm()` starts missing standbys at once. A standby
 * starting keeps a CPU busy for a while (45 ms on the build machine, about a
 * second in the 1-CPU emulated test host). With spare CPUs that is free; on
 * one CPU an immediate refill competes with the VM that just started, and in
 * the test host it slowed that VM's Linux boot by more than the pool saved.
 * There, set `refillDelayMs` and call `warm()` when the process is idle.
 * Main thread only. Await `close()` before calling `process.exit()`: a
 * standby still loading koffi's native addon when the process exits can abort
 * it (the addon's init throws into the ending thread, which node treats as
 * fatal); `close()` lets such a standby finish its start first.
 */
import type { Worker } from 'node:worker_threads';
import { ConfigError } from './errors.js';
import { koffiWorkerArg } from './koffi.js';
import { log } from './log.js';
import { WORKER_BUNDLES, spawnStandby, spawnWorker, standbyFits, startEarlyStandby, type EarlyStandby, type StandbyKind } from './worker-spawn.js';
import type { StandbyAssignment, StandbyMessage } from './worker-standby.js';

export { DEFAULT_PRELOAD, VCPU_PRELOAD } from './worker-spawn.js';

const debug = log('pool');
const MAX_SIZE = 64;
/** After this many standbys in a row fail to start, the pool stops refilling (and says why). */
const MAX_CONSECUTIVE_FAILURES = 3;
/** Tells each worker which koffi addon to load directly (lib/koffi.ts): the same for every worker of the process. */
const KOFFI_ARG = koffiWorkerArg();
for (const b of Object.values(WORKER_BUNDLES)) if ('why' in b) debug(b.why);

/** Options of `new WorkerPool(options)`. */
export interface WorkerPoolOptions {
  /** How many ready workers to keep: 1-64. A VM takes one per vCPU, plus one if it has virtio devices. Default 2. */
  readonly size?: number;
  /** How long after a worker is taken the pool starts its replacement, in ms (0-600000). `warm()` starts it at once. Default 0. */
  readonly refillDelayMs?: number;
}

/** Counters of a {@link WorkerPool}, from `pool.stats`. */
export interface WorkerPoolStats {
  /** Workers handed out: ready (imports done), or still importing when none was ready. */
  readonly taken: number;
  /** Times a VM asked while no standby was ready, and spawned its own. */
  readonly missed: number;
  /** Standbys started so far, including those still starting. */
  readonly started: number;
}

/** How `adoptEarlyStandbys` hands its standbys to the constructor. */
const ADOPT = Symbol('adopt');
type InternalOptions = WorkerPoolOptions & { readonly [ADOPT]?: readonly EarlyStandby[] };

/** One standby of a pool: what it can become, and whether it said it is ready. */
interface Standby {
  readonly worker: Worker;
  readonly kind: StandbyKind;
  ready: boolean;
  /** Resolves once the pool has let it go: failed, died, or, the pool closed, terminated. */
  readonly ended: Promise<void>;
}

/** A pool of standby worker threads for MicroVMs. */
export class WorkerPool {
  readonly size: number;
  /** Ready standbys first (in the order they became ready), then those still importing. */
  private readonly standbys: Standby[] = [];
  /** The pool's own listeners on each standby, removed when it is taken. */
  private readonly listeners = new Map<Worker, () => void>();
  /** The settle of the promise `warm()` waits on, for each standby still importing. */
  private readonly starting = new Map<Worker, () => void>();
  private closed = false;
  private failures = 0;
  private counts = { taken: 0, missed: 0, started: 0 };
  private readonly settled = new Set<Promise<void>>();
  private readonly refillDelayMs: number;
  private readonly refill: boolean;
  private refillTimer: NodeJS.Timeout | undefined;

  constructor(options: WorkerPoolOptions = {}) {
    const size = options.size ?? 2;
    if (!Number.isInteger(size) || size < 1 || size > MAX_SIZE) {
      throw new ConfigError('workerPool.size', `must be an integer from 1 to ${MAX_SIZE} (workers kept ready)`, size);
    }
    this.size = size;
    const delay = options.refillDelayMs ?? 0;
    if (!Number.isInteger(delay) || delay < 0 || delay > 600_000) {
      throw new ConfigError('workerPool.refillDelayMs', 'must be an integer number of ms from 0 to 600000', delay);
    }
    this.refillDelayMs = delay;
    const adopting = (options as InternalOptions)[ADOPT];
    this.refill = !adopting;
    if (adopting) {
      for (const e of adopting) this.track(e.worker, e.kind, e.state());
      this.counts.started = adopting.length;
    } else {
      this.fill();
    }
  }

  /** Standbys ready to be taken now. */
  get idle(): number {
    return this.standbys.filter((s) => s.ready).length;
  }

  get stats(): WorkerPoolStats {
    return { ...this.counts };
  }

  /** Starts any missing standbys now and resolves once `size` are ready (or the pool gave up or closed). */
  async warm(): Promise<void> {
    this.fill();
    while (!this.closed && this.idle < this.size && this.starting.size > 0) {
      await Promise.race([...this.settled]);
    }
  }

  /**
   * Starts `entry` with `data` on a standby that can run it: a ready one, else one still importing (it takes
   * the job once its imports are in, which is sooner than a new worker's start); or returns null when there is
   * none (the caller spawns its own). The caller owns the worker from now on and must attach its listeners
   * before the current macrotask ends.
   */
  take(entry: URL, data: unknown): Worker | null {
    const at = this.closed ? -1 : this.standbys.findIndex((s) => standbyFits(s.kind, entry));
    if (at < 0) {
      this.counts.missed++;
      return null;
    }
    const [s] = this.standbys.splice(at, 1);
    const w = s!.worker;
    this.counts.taken++;
    debug('a %s standby (%s) takes %s', s!.kind, s!.ready ? 'ready' : 'still importing', entry.pathname.split('/').slice(-2).join('/'));
    // Only ours: Node's own 'newListener'/'removeListener' hooks on a Worker start and stop its message port.
    this.listeners.get(w)?.();
    this.listeners.delete(w);
    this.starting.get(w)?.();
    this.starting.delete(w);
    w.ref();
    w.postMessage({ type: 'flintvm-assign', entry: entry.href, data } satisfies StandbyAssignment);
    if (this.refill) this.scheduleFill();
    return w;
  }

  /**
   * Terminates every idle standby, and each one still importing once it has said it is ready (or failed): a
   * worker terminated while it loads koffi's native addon aborts the whole process (the addon's init throws
   * into the terminating thread, which node treats as fatal). Workers already taken belong to their VMs.
   * Resolves when they are all gone; a pending `warm()` returns as they settle. Idempotent.
   */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.refillTimer);
    const all = this.standbys.map((s) => s);
    await Promise.all(all.map((s) => {
      if (!s.ready) return s.ended;
      this.forget(s.worker);
      return s.worker.terminate();
    }));
    debug('closed (%d standbys ended)', all.length);
  }

  private scheduleFill(): void {
    if (this.refillDelayMs === 0) return void setImmediate(() => this.fill());
    if (this.refillTimer) return;
    this.refillTimer = setTimeout(() => {
      this.refillTimer = undefined;
      this.fill();
    }, this.refillDelayMs);
    // A pending refill must not keep the process alive.
    this.refillTimer.unref();
  }

  private fill(): void {
    while (this.refill && !this.closed && this.failures < MAX_CONSECUTIVE_FAILURES && this.standbys.length < this.size) {
      this.counts.started++;
      this.track(spawnStandby('any', KOFFI_ARG), 'any', { status: 'starting' });
    }
  }

  /** Follows a standby until it is taken or the pool closes: ready, failed (replaced), or dead while idle (replaced). */
  private track(w: Worker, kind: StandbyKind, initially: { readonly status: 'starting' | 'ready' | 'failed'; readonly why?: string }): void {
    let end!: () => void;
    const s: Standby = { worker: w, kind, ready: false, ended: new Promise<void>((r) => { end = r; }) };
    this.standbys.push(s);
    let settle!: () => void;
    const settled = new Promise<void>((r) => { settle = r; });
    this.settled.add(settled);
    void settled.then(() => this.settled.delete(settled));
    this.starting.set(w, settle);
    const done = (ok: boolean, why?: string) => {
      if (!this.starting.delete(w)) return;
      settle();
      if (ok && !this.closed) {
        this.failures = 0;
        s.ready = true;
        // Ready ones are taken first, in the order they became ready.
        this.standbys.splice(this.standbys.indexOf(s), 1);
        this.standbys.splice(this.standbys.filter((x) => x.ready).length, 0, s);
        // Idle, it must not keep the process alive (starting, it does: warm() may be waiting on it).
        w.unref();
        return;
      }
      if (!ok) {
        this.failures++;
        debug('a standby worker failed to start: %s%s', why, this.failures >= MAX_CONSECUTIVE_FAILURES ? ' (pool stops refilling)' : '');
      }
      this.forget(w);
      void w.terminate().then(end, end);
      this.fill();
    };
    const onMessage = (m: StandbyMessage) => {
      if (m.type === 'flintvm-standby-ready') done(true);
      else if (m.type === 'flintvm-standby-failed') done(false, m.message);
    };
    const onError = (e: Error) => done(false, e.message);
    // A ready standby that dies while idle leaves the pool (and is replaced).
    const onExit = (code: number) => {
      if (s.ready && this.forget(w)) this.fill();
      done(false, `exited with code ${code}`);
    };
    w.on('message', onMessage);
    w.on('error', onError);
    w.on('exit', onExit);
    this.listeners.set(w, () => {
      w.off('message', onMessage);
      w.off('error', onError);
      w.off('exit', onExit);
    });
    if (initially.status === 'ready') done(true);
    else if (initially.status === 'failed') done(false, initially.why);
  }

  /** Drops `w` from the pool (its listeners too); false when it was not in it. */
  private forget(w: Worker): boolean {
    const at = this.standbys.findIndex((s) => s.worker === w);
    if (at < 0) return false;
    this.standbys.splice(at, 1);
    this.listeners.get(w)?.();
    this.listeners.delete(w);
    return true;
  }
}

/**
 * Internal (bin/flintvm.ts; not exported by the package): a pool of the standbys bin/launch.cjs started before
 * the command loaded (worker-spawn.ts's `startEarlyStandby`), which starts no others: its size is theirs, a
 * take is never replaced, and `warm()` only waits for them.
 */
export function adoptEarlyStandbys(early: readonly EarlyStandby[]): WorkerPool {
  for (const e of early) e.detach();
  const options: InternalOptions = { size: Math.max(1, Math.min(MAX_SIZE, early.length)), [ADOPT]: early };
  return new WorkerPool(options);
}

/**
 * Internal (lib/vm/builder.ts): a pool of one vCPU standby started now, for a VM that has no pool of its own,
 * so that its first vCPU worker starts before the VM is built. It starts no other.
 */
export function vcpuStandbyPool(): WorkerPool {
  return adoptEarlyStandbys([startEarlyStandby(KOFFI_ARG)]);
}

/** A worker running `entry` with `data`: a standby from `pool` when one is ready, else a new one. */
export function startWorker(entry: URL, data: unknown, pool?: WorkerPool): Worker {
  return pool?.take(entry, data) ?? spawnWorker(entry, data, KOFFI_ARG);
}
