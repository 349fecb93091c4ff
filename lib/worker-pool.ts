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
 * pool is empty (or closed) a VM spawns its own workers. Ready standbys are
 * unref'd: they do not keep the process alive.
 *
 * After a take, the pool starts a replacement: at once by default, or
 * `refillDelayMs` later; `warm()` starts missing standbys at once. A standby
 * starting keeps a CPU busy for a while (45 ms on the build machine, about a
 * second in the 1-CPU emulated test host). With spare CPUs that is free; on
 * one CPU an immediate refill competes with the VM that just started, and in
 * the test host it slowed that VM's Linux boot by more than the pool saved.
 * There, set `refillDelayMs` and call `warm()` when the process is idle.
 * Main thread only.
 */
import { statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { ConfigError } from './errors.js';
import { koffiWorkerArg } from './koffi.js';
import { log } from './log.js';
import { STANDBY_TAG } from './worker-data.js';
import type { StandbyAssignment, StandbyData, StandbyMessage } from './worker-standby.js';

const debug = log('pool');
const STANDBY_URL = new URL('./worker-standby.js', import.meta.url);
/** What every flintvm worker imports (module URLs): loading these is the slow part of a worker's start. Internal. */
export const DEFAULT_PRELOAD = ['./kvm/vcpu.js', './kvm/vm.js', './memory/host-memory.js', './bus/bus.js', './io/event-loop.js', './vm/wiring.js', './vm/io-wiring.js']
  .map((p) => new URL(p, import.meta.url).href);
/** What a vCPU worker imports: its own bundle's code cache is made from these (worker-vcpu-bundle.ts). Internal. */
export const VCPU_PRELOAD = ['./kvm/vcpu.js', './kvm/vm.js', './memory/host-memory.js', './bus/bus.js', './vm/wiring.js']
  .map((p) => new URL(p, import.meta.url).href);
const MAX_SIZE = 64;
/** After this many standbys in a row fail to start, the pool stops refilling (and says why). */
const MAX_CONSECUTIVE_FAILURES = 3;

/** Options of `new WorkerPool(options)`. */
export interface WorkerPoolOptions {
  /** How many ready workers to keep: 1-64. A VM takes one per vCPU, plus one if it has virtio devices. Default 2. */
  readonly size?: number;
  /** How long after a worker is taken the pool starts its replacement, in ms (0-600000). `warm()` starts it at once. Default 0. */
  readonly refillDelayMs?: number;
}

/** Counters of a {@link WorkerPool}, from `pool.stats`. */
export interface WorkerPoolStats {
  /** Workers handed out ready (imports done). */
  readonly taken: number;
  /** Times a VM asked while no standby was ready, and spawned its own. */
  readonly missed: number;
  /** Standbys started so far, including those still starting. */
  readonly started: number;
}

/** Options every flintvm worker is started with: its output goes through lib/log.ts, not worker stdio. */
const WORKER_OPTIONS = { stdout: false, stderr: false } as const;

/** A pool of standby worker threads for MicroVMs. */
export class WorkerPool {
  readonly size: number;
  private readonly ready: Worker[] = [];
  /** The pool's own listeners on each standby, removed when it is taken. */
  private readonly listeners = new Map<Worker, () => void>();
  /** Standbys still importing, each with the settle of the promise `warm()` waits on. */
  private readonly starting = new Map<Worker, () => void>();
  private closed = false;
  private failures = 0;
  private counts = { taken: 0, missed: 0, started: 0 };
  private readonly settled = new Set<Promise<void>>();
  private readonly refillDelayMs: number;
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
    this.fill();
  }

  /** Standbys ready to be taken now. */
  get idle(): number {
    return this.ready.length;
  }

  get stats(): WorkerPoolStats {
    return { ...this.counts };
  }

  /** Starts any missing standbys now and resolves once `size` are ready (or the pool gave up or closed). */
  async warm(): Promise<void> {
    this.fill();
    while (!this.closed && this.ready.length < this.size && this.starting.size > 0) {
      await Promise.race([...this.settled]);
    }
  }

  /**
   * Starts `entry` with `data` on a ready standby, or returns null when none
   * is ready (the caller spawns its own). The caller owns the worker from now
   * on and must attach its listeners before the current macrotask ends.
   */
  take(entry: URL, data: unknown): Worker | null {
    const w = this.closed ? undefined : this.ready.shift();
    if (!w) {
      this.counts.missed++;
      return null;
    }
    this.counts.taken++;
    // Only ours: Node's own 'newListener'/'removeListener' hooks on a Worker start and stop its message port.
    this.listeners.get(w)?.();
    this.listeners.delete(w);
    w.ref();
    w.postMessage({ type: 'flintvm-assign', entry: entry.href, data } satisfies StandbyAssignment);
    this.scheduleFill();
    return w;
  }

  /** Terminates every idle or starting standby. Workers already taken belong to their VMs. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.refillTimer);
    const all = [...this.ready.splice(0), ...this.starting.keys()];
    // Let a pending warm() return.
    for (const settle of this.starting.values()) settle();
    this.starting.clear();
    await Promise.all(all.map((w) => w.terminate()));
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
    while (!this.closed && this.failures < MAX_CONSECUTIVE_FAILURES && this.ready.length + this.starting.size < this.size) {
      this.startOne();
    }
  }

  private startOne(): void {
    const wd: StandbyData = { tag: STANDBY_TAG, preload: DEFAULT_PRELOAD };
    const w = spawnWorker(STANDBY_URL, wd);
    this.counts.started++;
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
        this.ready.push(w);
        // Idle, it must not keep the process alive (starting, it does: warm() may be waiting on it).
        w.unref();
        return;
      }
      if (!ok) {
        this.failures++;
        debug('a standby worker failed to start: %s%s', why, this.failures >= MAX_CONSECUTIVE_FAILURES ? ' (pool stops refilling)' : '');
      }
      void w.terminate();
      this.fill();
    };
    const onMessage = (m: StandbyMessage) => {
      if (m.type === 'flintvm-standby-ready') done(true);
      else if (m.type === 'flintvm-standby-failed') done(false, m.message);
    };
    const onError = (e: Error) => done(false, e.message);
    // A ready standby that dies while idle leaves the pool (and is replaced).
    const onExit = (code: number) => {
      this.listeners.delete(w);
      const i = this.ready.indexOf(w);
      if (i >= 0) {
        this.ready.splice(i, 1);
        this.fill();
      }
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
  }
}

/** A worker running `entry` with `data`: a standby from `pool` when one is ready, else a new one. */
export function startWorker(entry: URL, data: unknown, pool?: WorkerPool): Worker {
  return pool?.take(entry, data) ?? spawnWorker(entry, data);
}

/**
 * The worker bundles and the loaders that run them (worker-loader.ts: from V8's code cache when the build
 * wrote one), built by `npm run build`: the whole one (worker-bundle.ts) for every worker but a freshly
 * spawned vCPU worker, which runs the vCPU worker's bundle (worker-vcpu-bundle.ts).
 */
const WHOLE = bundleIfCurrent('worker');
const VCPU = bundleIfCurrent('worker-vcpu');
const VCPU_ENTRY = new URL('./vcpu/worker.js', import.meta.url).href;
/** Tells each worker which koffi addon to load directly (lib/koffi.ts): the same for every worker of the process. */
const KOFFI_ARG = koffiWorkerArg();

/**
 * The loader of dist/lib/`name`-bundle.cjs when workers may start from that bundle: it and its loader exist
 * and are not older than the compiled file of the bundle's entry. A build by `tsc` alone rewrites that file but
 * not the bundle, which would then run the code from before.
 */
function bundleIfCurrent(name: string): { readonly loader: URL } | undefined {
  const loader = new URL(`./${name}-loader.cjs`, import.meta.url);
  try {
    const built = Math.min(statSync(fileURLToPath(new URL(`./${name}-bundle.cjs`, import.meta.url))).mtimeMs, statSync(fileURLToPath(loader)).mtimeMs);
    const current = built >= statSync(fileURLToPath(new URL(`./${name}-bundle.js`, import.meta.url))).mtimeMs;
    if (!current) debug('%s-bundle.cjs is older than dist/lib/%s-bundle.js (tsc alone?): its workers start from the ES modules', name, name);
    return current ? { loader } : undefined;
  } catch {
    debug('no %s-bundle.cjs (npm run build makes it): its workers start from the ES modules', name);
    return undefined;
  }
}

/**
 * A new worker running `entry` with `data`: through a current worker bundle (the vCPU worker's own for the vCPU
 * loop, else the whole one), else from the ES module itself.
 */
function spawnWorker(entry: URL, data: unknown): Worker {
  // The entry's URL stays the last argv (worker-bundle.ts reads it there).
  const argv = KOFFI_ARG === undefined ? [] : [KOFFI_ARG];
  const bundle = (entry.href === VCPU_ENTRY ? VCPU : undefined) ?? WHOLE;
  return bundle
    ? new Worker(bundle.loader, { ...WORKER_OPTIONS, argv: [...argv, entry.href], workerData: data })
    : new Worker(entry, { ...WORKER_OPTIONS, argv, workerData: data });
}
