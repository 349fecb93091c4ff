/**
 * Spawning flintvm's worker threads: which script a worker runs (a worker
 * bundle's loader when the build made a current one, else the ES module of
 * its entry) and the standby workers of a {@link WorkerPool}.
 *
 * It imports only node builtins and two leaf modules: `npm run build` also
 * bundles it alone into dist/lib/worker-spawn.cjs, which bin/launch.cjs
 * requires to start the VM's vCPU worker before the command itself loads
 * ({@link startEarlyStandby}). A worker's start is the longest step of a cold
 * `flintvm run` after node's own, and on a host with a second CPU it then
 * runs while the main thread loads the command and builds the VM.
 */
import { statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { recordedWorkerArg } from './koffi-addon.js';
import { STANDBY_TAG } from './worker-data.js';

/** Options every flintvm worker is started with: its output goes through lib/log.ts, not worker stdio. */
const WORKER_OPTIONS = { stdout: false, stderr: false } as const;
const STANDBY_URL = new URL('./worker-standby.js', import.meta.url);
/** The vCPU worker's entry: the one job a standby of kind 'vcpu' can take. */
export const VCPU_ENTRY = new URL('./vcpu/worker.js', import.meta.url).href;
/** What every flintvm worker imports (module URLs): loading these is the slow part of a worker's start. Internal. */
export const DEFAULT_PRELOAD = ['./kvm/vcpu.js', './kvm/vm.js', './memory/host-memory.js', './bus/bus.js', './io/event-loop.js', './vm/wiring.js', './vm/io-wiring.js']
  .map((p) => new URL(p, import.meta.url).href);
/** What a vCPU worker imports: its own bundle's code cache is made from these (worker-vcpu-bundle.ts). Internal. */
export const VCPU_PRELOAD = ['./kvm/vcpu.js', './kvm/vm.js', './memory/host-memory.js', './bus/bus.js', './vm/wiring.js']
  .map((p) => new URL(p, import.meta.url).href);

/** The data a standby worker starts with (worker-standby.ts). */
export interface StandbyData {
  readonly tag: string;
  /** Module URLs imported while standing by. */
  readonly preload: readonly string[];
}

/**
 * What a standby can become: 'any' runs the whole worker bundle (any entry); 'vcpu' runs the vCPU worker's
 * smaller bundle, which holds only the vCPU loop's side, so it can only become a vCPU worker.
 */
export type StandbyKind = 'any' | 'vcpu';

/**
 * The loader of dist/lib/`name`-bundle.cjs when workers may start from that bundle: it and its loader exist
 * and are not older than the compiled file of the bundle's entry. A build by `tsc` alone rewrites that file but
 * not the bundle, which would then run the code from before. Otherwise why not (worker-pool.ts logs it).
 */
function bundleIfCurrent(name: string): { readonly loader: URL } | { readonly why: string } {
  const loader = new URL(`./${name}-loader.cjs`, import.meta.url);
  try {
    const built = Math.min(statSync(fileURLToPath(new URL(`./${name}-bundle.cjs`, import.meta.url))).mtimeMs, statSync(fileURLToPath(loader)).mtimeMs);
    const current = built >= statSync(fileURLToPath(new URL(`./${name}-bundle.js`, import.meta.url))).mtimeMs;
    return current ? { loader } : { why: `${name}-bundle.cjs is older than dist/lib/${name}-bundle.js (tsc alone?): its workers start from the ES modules` };
  } catch {
    return { why: `no ${name}-bundle.cjs (npm run build makes it): its workers start from the ES modules` };
  }
}

/**
 * The worker bundles and the loaders that run them (worker-loader.ts: from V8's code cache when the build
 * wrote one), built by `npm run build`: the whole one (worker-bundle.ts) for every worker but a vCPU worker,
 * which runs the vCPU worker's bundle (worker-vcpu-bundle.ts).
 */
export const WORKER_BUNDLES = { any: bundleIfCurrent('worker'), vcpu: bundleIfCurrent('worker-vcpu') } as const;

/**
 * A new worker running `entry` with `data`, told which koffi addon to load (`koffiArg`, lib/koffi.ts): through
 * a current worker bundle (the vCPU worker's own for the vCPU loop or a 'vcpu' standby, else the whole one),
 * else from the ES module itself.
 */
export function spawnWorker(entry: URL, data: unknown, koffiArg: string | undefined, kind: StandbyKind = entry.href === VCPU_ENTRY ? 'vcpu' : 'any'): Worker {
  // The entry's URL stays the last argv (worker-bundle.ts reads it there).
  const argv = koffiArg === undefined ? [] : [koffiArg];
  const vcpu = WORKER_BUNDLES.vcpu;
  const bundle = kind === 'vcpu' && 'loader' in vcpu ? vcpu : WORKER_BUNDLES.any;
  return 'loader' in bundle
    ? new Worker(bundle.loader, { ...WORKER_OPTIONS, argv: [...argv, entry.href], workerData: data })
    : new Worker(entry, { ...WORKER_OPTIONS, argv, workerData: data });
}

/** A new standby worker of `kind`: it imports what its jobs need, says it is ready, and waits for one job. */
export function spawnStandby(kind: StandbyKind, koffiArg: string | undefined): Worker {
  const data: StandbyData = { tag: STANDBY_TAG, preload: kind === 'vcpu' ? VCPU_PRELOAD : DEFAULT_PRELOAD };
  return spawnWorker(STANDBY_URL, data, koffiArg, kind);
}

/** Whether a standby of `kind` can run `entry`. */
export function standbyFits(kind: StandbyKind, entry: URL): boolean {
  return kind === 'any' || entry.href === VCPU_ENTRY;
}

/** A standby started before any pool: what worker-pool.ts's `adoptEarlyStandbys` takes. */
export interface EarlyStandby {
  readonly worker: Worker;
  readonly kind: StandbyKind;
  /** 'starting', 'ready' or 'failed' (then `why`), as its messages and events said so far. */
  readonly state: () => { readonly status: 'starting' | 'ready' | 'failed'; readonly why?: string };
  /** Removes the listeners this module put on the worker (the pool puts its own). */
  readonly detach: () => void;
}

/**
 * Starts the vCPU worker of a VM that does not exist yet: a standby of kind 'vcpu', told to load koffi's addon
 * `koffiArg` (by default the one the build recorded). Unref'd: it never keeps the process alive. Its listeners
 * keep its state (and keep an error from ending the process) until a pool adopts it.
 */
export function startEarlyStandby(koffiArg: string | undefined = recordedWorkerArg()): EarlyStandby {
  const worker = spawnStandby('vcpu', koffiArg);
  let status: 'starting' | 'ready' | 'failed' = 'starting';
  let why: string | undefined;
  const failed = (w: string) => {
    if (status === 'failed') return;
    status = 'failed';
    why = w;
  };
  const onMessage = (m: { type?: unknown; message?: unknown }) => {
    if (m?.type === 'flintvm-standby-ready' && status === 'starting') status = 'ready';
    else if (m?.type === 'flintvm-standby-failed') failed(String(m.message));
  };
  const onError = (e: Error) => failed(e.message);
  const onExit = (code: number) => failed(`exited with code ${code}`);
  worker.on('message', onMessage);
  worker.on('error', onError);
  worker.on('exit', onExit);
  // After the listeners: a 'message' listener refs the worker's port again.
  worker.unref();
  return {
    worker,
    kind: 'vcpu',
    state: () => (why === undefined ? { status } : { status, why }),
    detach: () => {
      worker.off('message', onMessage);
      worker.off('error', onError);
      worker.off('exit', onExit);
    },
  };
}

/**
 * How bin/launch.cjs hands the standby it started to the command it then loads: the command's bundle has its
 * own copy of this module, so the two meet on a global symbol, set once before the command loads and taken
 * (cleared) by the command. Nothing else sets it; the library never reads it.
 */
export const EARLY_STANDBY = Symbol.for('flintvm.earlyStandby');

/** The standby bin/launch.cjs started for this command, once (later calls get undefined). */
export function takeEarlyStandby(): EarlyStandby | undefined {
  const g = globalThis as Record<symbol, unknown>;
  const early = g[EARLY_STANDBY] as EarlyStandby | undefined;
  delete g[EARLY_STANDBY];
  return early;
}
